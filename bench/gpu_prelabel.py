"""``segpipe prelabel`` on a GPU: images/s against the model-only bf16 bound, and how busy the GPU was.

.venv/bin/python bench/gpu_prelabel.py                       # a GPU where there is one, else the CPU (said so)
.venv/bin/python bench/gpu_prelabel.py --n 1024 --size 512 --batch 32 --batches 1,32 --json gpu.json

What it measures, on the same model (random weights, one tile per image, so that the images of a task
are stacked into shared forward passes):

* **segpipe**: ``segpipe prelabel`` of ``--n`` JPEGs of ``--size``² (``--device cuda``, ``--precision
  auto`` = bf16 autocast, ``--gpu-decode auto``), whole process (start-up, ingest, cluster, writes)
  and while its tasks ran (the run report's ``throughput_img_s``), once per ``--batches`` value
  (``--batch`` images per pass: 1 is one image per pass, the path before stacking);
* **model-only bound**: the same model's forward passes on preloaded device tensors (uint8 → normalised
  float, channels-last, bf16 autocast: what segpipe's CUDA path runs), ``--batch`` images per pass;
* **busy fraction**: the GPU's utilisation sampled every 0.2 s while ``segpipe prelabel`` runs
  (pynvml where installed, else ``nvidia-smi --query-gpu=utilization.gpu``): the mean, and the
  share of samples above 50 %.

Without CUDA the same measurement runs on the CPU (``--device cpu``, float32: ``--precision auto``
there) with the CPU's utilisation (psutil) as the busy fraction, and the output says so. On the CPU
segpipe runs one image per pass whatever ``--batch`` says (byte-identical outputs whatever the
batch: resources.CPU_TILES_PER_PASS), so ``--batches`` changes nothing there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._measure import run_measured  # noqa: E402


def make_collection(root: Path, n: int, size: int) -> Path:
    """``n`` street-view JPEGs of ``size``² (quality 90), as a camera would store them."""
    from segpipe.synth import synth

    synth("streetview", root / "synth", n=min(n, 64), seed=7, size=(size, size))
    pngs = sorted((root / "synth" / "images").iterdir())
    out = root / "images"
    out.mkdir()
    for i in range(n):  # the synthetic set repeated: decoding and inference cost the same per image
        rgb = np.asarray(Image.open(pngs[i % len(pngs)]).convert("RGB"))
        Image.fromarray(rgb).save(out / f"{i:06d}.jpg", quality=90)
    return out


def make_checkpoint(root: Path, arch: str, size: int, classes: int) -> Path:
    """A random-weight checkpoint of ``arch`` whose tile is the image size (one pass per image)."""
    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    meta = CheckpointMeta.for_arch(arch, classes, tile_size=[size, size], tile_overlap=0.25)
    path = root / f"{arch}.ckpt"
    save_checkpoint(path, build_model(arch, classes), meta)
    return path


class BusySampler:
    """Samples the GPU's (or, without CUDA, the CPU's) utilisation in % every ``interval`` seconds."""

    def __init__(self, cuda: bool, interval: float = 0.2) -> None:
        self.cuda, self.interval = cuda, interval
        self.samples: list[float] = []
        self.source = "none"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._read = self._reader()

    def _reader(self) -> Any:
        if not self.cuda:
            import psutil

            psutil.cpu_percent()
            self.source = "psutil cpu_percent"
            return lambda: psutil.cpu_percent()
        index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            handle = (pynvml.nvmlDeviceGetHandleByUUID(index) if not index.isdigit()
                      else pynvml.nvmlDeviceGetHandleByIndex(int(index)))
            self.source = "pynvml"
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # not installed or no NVML: the command-line tool reads the same counter
            if shutil.which("nvidia-smi") is None:
                self.source = "unavailable"
                return None
            self.source = "nvidia-smi"

            def smi() -> float:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", index], capture_output=True, text=True, timeout=5).stdout
                return float(out.strip().splitlines()[0])

            return smi

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(float(self._read()))
            except Exception:  # a sample missed (the tool busy): the others still count
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> BusySampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        """Mean utilisation and the share of samples above 50 %."""
        s = self.samples
        return {"source": self.source, "samples": len(s),
                "mean_pct": round(statistics.fmean(s), 1) if s else None,
                "busy_fraction": round(sum(v > 50 for v in s) / len(s), 3) if s else None}


def model_bound(ckpt: Path, device: str, batch: int, size: int, seconds: float) -> float:
    """images/s of the model alone on preloaded device tensors, as segpipe's path runs it."""
    from segpipe.models.predict import Predictor

    # precision auto: bf16 on CUDA. On the CPU one thread, as each of segpipe's forward passes runs
    # (resources.INFERENCE_THREADS): torch's threads spin and collapse on a shared, busy machine
    pred = Predictor.from_checkpoint(ckpt, device=device, batch_size=batch, threads=None if device == "cuda" else 1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    x = pred._to_tensor(images)  # normalised, channels-last on CUDA, on the device
    cuda = device == "cuda"
    for _ in range(3):
        pred._run(x)
    if cuda:
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while True:
        pred._run(x)
        n += 1
        if cuda and n % 4:
            continue
        if cuda:
            torch.cuda.synchronize()
        el = time.perf_counter() - t0
        if el >= seconds and n >= 2:
            return n * batch / el


def run_segpipe(src: Path, ckpt: Path, out: Path, device: str, batch: int, workers: str | None,
                cuda: bool, probs: bool) -> dict[str, Any]:
    """``segpipe prelabel`` as a user runs it, with the busy fraction sampled while it runs."""
    cmd = [sys.executable, "-m", "segpipe", "-q", "prelabel", str(src), "-m", str(ckpt), "-o", str(out),
           "--device", device, "--batch", str(batch), "--precision", "auto", "--gpu-decode", "auto",
           "--probs" if probs else "--no-probs"]
    if workers is not None:
        cmd += ["--workers", workers]
    with BusySampler(cuda) as busy:
        res = run_measured(cmd)
    rep = json.loads(max((out / ".segpipe" / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())
    done = rep["images"]["done"]
    return {"batch": batch, "images": done, "wall_s": round(res["wall_s"], 2),
            "img_s_whole_process": round(done / res["wall_s"], 2),
            "img_s_while_running": rep["throughput_img_s"], "peak_rss_mb": round(res["peak_rss_mb"]),
            "busy": busy.summary()}


def kernel_stacking(src: Path, ckpt: Path, root: Path, device: str, batches: list[int],
                    repeat: int) -> dict[int, float]:
    """images/s of the worker kernel alone (decode, forward, write, receipt) with ``b`` images per pass.

    On one worker in this process, into a real store: the store is made once by ``segpipe prelabel``
    and its tasks are then rerun by ``prelabel_batch`` with the predictor's batch set to each value
    (on the CPU segpipe itself keeps one per pass, so this is where stacking is measured there).
    """
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.kernels.prelabel.batch import prelabel_batch
    from segpipe.kernels.prelabel.resources import PredictorOptions, PredictorSetup
    from segpipe.kernels.prelabel.tasks import OutputSettings, PrelabelSettings
    from segpipe.models.ref import ModelRef
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
    from segpipe.pipeline.prelabel.plan import plan_tasks
    from segpipe.pipeline.prelabel.store import place_in_stacks
    from segpipe.storage.ledger import Ledger
    from segpipe.storage.manifest import read_manifest
    from segpipe.storage.zarrstore import ZarrStore

    out = root / "kernel.zarr"
    prelabel(PrelabelRequest(source=str(src), model=str(ckpt), out=out, device=device, probs=False),
             ClusterSpec(workers=0))
    ref = ModelRef(str(ckpt), None)
    planned = plan_tasks(read_manifest(out / ".segpipe" / "manifest.jsonl"), ZarrStore.open(out).attrs()["config_hash"])
    planned = place_in_stacks(ZarrStore.open(out), planned, ref.meta(), 2, False)
    resources = PredictorSetup(ref, PredictorOptions(device=device)).build()
    settings = PrelabelSettings(ZarrStore(out), OutputSettings(probs=False))
    ledger = Ledger(out / ".segpipe")
    rates: dict[int, list[float]] = {b: [] for b in batches}
    try:
        for _ in range(repeat):  # alternated, so that a busy spell of the machine hits every setting
            for b in batches:
                ledger.remove_many(ledger.keys())  # loose or packed (a run of 2,000 images or more packs them)
                resources.predictor.batch_size = b
                t0 = time.perf_counter()
                done = prelabel_batch(resources, settings, planned)
                rates[b].append(len(done) / (time.perf_counter() - t0))
    finally:
        resources.close()
        shutil.rmtree(out, ignore_errors=True)
    return {b: round(max(r), 2) for b, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512, help="images")
    ap.add_argument("--size", type=int, default=512, help="image side")
    ap.add_argument("--arch", default="lraspp_mobilenet_v3_large")
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--batch", type=int, default=32, help="images per pass of the model-only bound (GPU)")
    ap.add_argument("--batches", default=None, help="segpipe --batch values, e.g. 1,32 (default: --batch)")
    ap.add_argument("--workers", default=None, help="segpipe --workers (default: its own choice)")
    ap.add_argument("--probs", action="store_true", help="store probabilities too (the bound computes none)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the model-only measurement")
    ap.add_argument("--kernel-batches", default=None,
                    help="also time the worker kernel alone with these images per pass, e.g. 1,8 (best of 3)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    card = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    if not cuda:
        print("no CUDA device: measuring on the CPU (float32, one image per pass) instead", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="segpipe-gpu-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        src = make_collection(root, args.n, args.size)
        ckpt = make_checkpoint(root, args.arch, args.size, args.classes)
        # on the CPU segpipe runs one image per pass (and a larger batch is slower there): so does its bound
        bound_batch = args.batch if cuda else 1
        bound = model_bound(ckpt, device, bound_batch, args.size, args.seconds)
        kernel = (kernel_stacking(src, ckpt, root, device, [int(v) for v in args.kernel_batches.split(",")], 3)
                  if args.kernel_batches else {})
        runs = []
        for b in [int(v) for v in (args.batches or str(args.batch)).split(",")]:
            out = root / f"b{b}.zarr"
            runs.append(run_segpipe(src, ckpt, out, device, b, args.workers, cuda, args.probs))
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    result = {"device": card, "cuda": cuda, "torch": torch.__version__, "arch": args.arch, "n": args.n,
              "size": args.size, "precision": "bf16 autocast" if cuda else "fp32",
              "model_only_img_s": round(bound, 2), "model_only_batch": bound_batch, "probs": args.probs,
              "segpipe": runs, "kernel_img_s_by_images_per_pass": kernel}
    print(f"{card}: {args.arch}, {args.n} JPEGs of {args.size}², {result['precision']}")
    print(f"  model-only bound (batch {bound_batch}, preloaded device tensors{'' if cuda else ', 1 thread'}): "
          f"{bound:8.1f} img/s")
    for r in runs:
        b = r["busy"]
        print(f"  segpipe prelabel --batch {r['batch']:<3}: {r['img_s_whole_process']:8.1f} img/s whole process, "
              f"{r['img_s_while_running']:8.1f} while running ({r['img_s_while_running'] / bound:.2f}x bound); "
              f"{'GPU' if cuda else 'CPU'} busy: mean {b['mean_pct']} %, >50 % in {b['busy_fraction']} "
              f"of {b['samples']} samples ({b['source']})")
    for b, rate in kernel.items():
        print(f"  worker kernel alone, {b:>3} images per pass: {rate:8.1f} img/s (decode, forward, write; best of 3)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
