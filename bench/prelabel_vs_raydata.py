"""segpipe against Ray Data (issue 16 point 6): the same model over the same JPEGs, the same processes.

``--images`` synthetic JPEGs (default 2,000 of 256², blocky street-like scenes) → LR-ASPP MobileNetV3
(random weights, 21 classes; speed does not depend on them) → one label map per image, two ways:

* **segpipe**: ``segpipe prelabel IMAGES -m lraspp.ckpt -o s.zarr --no-probs`` with default flags
  (one worker per core here), and again with ``-w N --threads 1`` spelled out; label maps in the Zarr
  store (stacked), receipts in its ledger;
* **Ray Data** (in ``.venv-peers``, ``make peers-ray``): ``ray.data.read_images`` → ``map_batches`` with
  an actor pool of N actors (one per worker, 1 torch thread each, the model loaded once per actor,
  the same weights and normalisation) that writes each label map as a PNG, run with
  ``ray.init(num_cpus=N + 1)``: one CPU per actor and one for the read tasks (with ``num_cpus=N`` the
  actors hold every CPU and ``read_images``' tasks never run).

Both are timed as whole processes (interpreter start, imports, cluster start, model load and the
writes included) and while running (segpipe: its report's task-phase rate; Ray: first batch start to
last batch end in the actors). The ratio segpipe / Ray Data is printed both ways (goal ≥ 1.0×).
The label maps of both are compared on ``--check`` images (the same model must give the same labels).

    python bench/prelabel_vs_raydata.py [--images 2000] [--size 256] [--workers 2]
    python bench/prelabel_vs_raydata.py --images 200        # smoke, ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from scale_manifest import run_driver  # noqa: E402  (bench/ is on sys.path: a sibling script)

ARCH = "lraspp_mobilenet_v3_large"
CLASSES = 21
RAY_PYTHON = REPO / ".venv-peers" / "bin" / "python"

RAY_SCRIPT = r'''
import json, os, sys, time
t_start = time.time()
import numpy as np
import ray
from PIL import Image

src, out, weights, workers, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class Predictor:
    """One per actor: the model loaded once, one torch thread; writes each label map as a PNG."""

    def __init__(self):
        import torch
        import torchvision.models.segmentation as seg
        torch.set_num_threads(1)
        self.torch = torch
        self.model = seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
        self.model.load_state_dict(torch.load(weights, map_location="cpu"))
        self.model.eval()

    def __call__(self, b):
        t0 = time.time()
        x = (b["image"].astype(np.float32) / 255.0 - MEAN) / STD        # (N, H, W, 3)
        x = self.torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        with self.torch.inference_mode():
            labels = self.model(x)["out"].argmax(1).to(self.torch.uint8).numpy()   # (N, H, W)
        names = []
        for path, lab in zip(b["path"], labels):
            name = os.path.splitext(os.path.basename(path))[0] + ".png"
            Image.fromarray(lab).save(os.path.join(out, name))
            names.append(name)
        return {"name": np.array(names), "t0": np.full(len(names), t0), "t1": np.full(len(names), time.time())}


# One CPU per actor, and one more for the read tasks: with num_cpus=workers the actors hold every CPU
# and read_images' tasks never get one (the run hangs with 0 rows).
ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
ds = ray.data.read_images(src, mode="RGB", include_paths=True)
ds = ds.map_batches(Predictor, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
rows = ds.select_columns(["t0", "t1"]).take_all()
t_end = time.time()
ray.shutdown()
print(json.dumps({"n": len(rows), "t_start": t_start, "t_end": t_end,
                  "first_t0": min(r["t0"] for r in rows), "last_t1": max(r["t1"] for r in rows)}))
'''


def make_images(folder: Path, n: int, size: int) -> None:
    """``n`` distinct blocky street-like JPEGs of ``size``² (quality 90), reused when complete."""
    stamp = folder / ".complete"
    if stamp.exists() and stamp.read_text() == f"{n} {size}":
        return
    import numpy as np
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    for i in range(n):
        cells = rng.integers(0, 12, (size // 32, size // 32))
        img = palette[np.kron(cells, np.ones((32, 32), np.int64))]
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    stamp.write_text(f"{n} {size}")


def make_models(work: Path, size: int) -> tuple[Path, Path]:
    """The segpipe checkpoint and the same weights as torchvision's plain state dict (for the Ray actors)."""
    ckpt, plain = work / "lraspp.ckpt", work / "lraspp_torchvision.pt"
    if ckpt.exists() and plain.exists():
        return ckpt, plain
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ARCH, CLASSES)
    cats = [{"index": i, "id": i, "name": f"class_{i}", "color": None, "isthing": False} for i in range(CLASSES)]
    save_checkpoint(ckpt, model, CheckpointMeta(arch=ARCH, task="semantic", num_classes=CLASSES, categories=cats,
                                                tile_size=[size, size], tile_overlap=0.0))
    torch.save(model.net.state_dict(), plain)  # the torchvision model inside segpipe's wrapper
    return ckpt, plain


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_segpipe(images: Path, ckpt: Path, out: Path, extra: list[str]) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "segpipe", "-q", "prelabel", str(images), "-m", str(ckpt), "-o", str(out),
           "--no-probs", *extra]
    res = run_driver(cmd, dict(os.environ, CI="1"))
    rep = json.loads(next((out / ".segpipe" / "runs").glob("*.json")).read_text())
    assert rep["images"]["done"] == len(list(images.glob("*.jpg"))), rep["images"]
    return {**res, "img_s_running": rep["throughput_img_s"], "workers": rep["workers"]}


def compare_labels(store: Path, ray_out: Path, images: Path, k: int) -> float:
    """Fraction of pixels on which segpipe's and Ray's label maps agree, over ``k`` images."""
    import numpy as np
    from PIL import Image

    from segpipe.storage.manifest import stable_id
    from segpipe.storage.zarrstore import ZarrStore

    zs = ZarrStore.open(store)
    same = total = 0
    for p in sorted(images.glob("*.jpg"))[:k]:
        a = np.asarray(zs.read(stable_id(p.name), "labels"))
        b = np.asarray(Image.open(ray_out / (p.stem + ".png")))
        same += int((a == b).sum())
        total += a.size
    return same / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=8, help="Ray's batch_size (segpipe batches its own tasks)")
    ap.add_argument("--check", type=int, default=20, help="images whose label maps are compared")
    ap.add_argument("--workdir", default="/tmp/segpipe-vs-ray")
    ap.add_argument("--ray-first", action="store_true",
                    help="run Ray Data before segpipe (alternate the order between runs: load falls on the first)")
    args = ap.parse_args()
    if not RAY_PYTHON.exists():
        raise SystemExit(f"{RAY_PYTHON} is absent: run `make peers-ray`")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    images = work / f"jpg-{args.images}-{args.size}"
    make_images(images, args.images, args.size)
    ckpt, plain = make_models(work, args.size)
    print(f"machine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{args.images} JPEGs {args.size}^2, {ARCH}, {args.workers} workers x 1 thread; load {load()}", flush=True)

    def _segpipe_runs() -> Any:
        sp_default = run_segpipe(images, ckpt, work / "s.zarr", [])
        print(f"segpipe, default flags: {sp_default['wall_s']:.1f} s whole process, "
              f"{sp_default['img_s_running']:.1f} img/s while running ({sp_default['workers']} workers; load {load()})",
              flush=True)
        sp = run_segpipe(images, ckpt, work / "s.zarr", ["-w", str(args.workers), "--threads", "1"])
        print(f"segpipe -w {args.workers} --threads 1: {sp['wall_s']:.1f} s whole process, "
              f"{sp['img_s_running']:.1f} img/s while running (load {load()})", flush=True)
        return sp_default, sp

    def _ray_run() -> Any:
        ray_out = work / "ray-labels"
        shutil.rmtree(ray_out, ignore_errors=True)
        ray_out.mkdir()
        script = work / "ray_prelabel.py"
        script.write_text(RAY_SCRIPT)
        cmd = [str(RAY_PYTHON), str(script), str(images), str(ray_out), str(plain), str(args.workers), str(args.batch)]
        ray = run_driver(cmd, dict(os.environ, RAY_DEDUP_LOGS="0"), keep_output=True)
        times = json.loads(ray["output"].strip().splitlines()[-1])
        found = len(list(ray_out.glob("*.png")))
        if found != args.images or times["n"] != args.images:
            raise SystemExit(f"Ray wrote {found} label maps of {args.images}")
        ray_running = args.images / (times["last_t1"] - times["first_t0"])
        print(f"Ray Data: {ray['wall_s']:.1f} s whole process, {ray_running:.1f} img/s while running (load {load()})",
              flush=True)
        return ray, ray_running

    if args.ray_first:
        ray, ray_running = _ray_run()
        sp_default, sp = _segpipe_runs()
    else:
        sp_default, sp = _segpipe_runs()
        ray, ray_running = _ray_run()
    agree = compare_labels(work / "s.zarr", work / "ray-labels", images, args.check)

    n = args.images
    print()
    print("| run | whole process (s) | img/s whole process | img/s while running | driver peak RSS (MiB) "
          "| tree peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r, running in (("segpipe, default flags", sp_default, sp_default["img_s_running"]),
                             (f"segpipe -w {args.workers} --threads 1", sp, sp["img_s_running"]),
                             (f"Ray Data, {args.workers} actors x 1 thread", ray, ray_running)):
        print(f"| {name} | {r['wall_s']:.1f} | {n / r['wall_s']:.1f} | {running:.1f} | {r['driver_mb']:.0f} "
              f"| {r['tree_mb']:.0f} |")
    print(f"order: {'Ray first' if args.ray_first else 'segpipe first'}")
    print(f"segpipe / Ray Data, whole process: x{ray['wall_s'] / sp['wall_s']:.2f} "
          f"(default flags x{ray['wall_s'] / sp_default['wall_s']:.2f}); while running: "
          f"x{sp['img_s_running'] / ray_running:.2f} (default flags x{sp_default['img_s_running'] / ray_running:.2f}) "
          f"(goal >= 1.0)")
    print(f"label maps agree on {agree:.4%} of the pixels of {args.check} images")
    (work / "vs_ray.json").write_text(json.dumps({"segpipe_default": sp_default, "segpipe": sp, "ray": {
        k: v for k, v in ray.items() if k != "output"}, "ray_running_img_s": ray_running, "agree": agree,
        "load_end": load()}, indent=2))


if __name__ == "__main__":
    main()
