"""End-to-end pre-labeling throughput: segpipe vs the model-only bound vs a naive PyTorch loop.

A folder of JPEGs (default 200, 512×512, synthetic street view) → LR-ASPP MobileNetV3 at 512 (random
weights: speed does not depend on them) → outputs, on this machine's cores, three ways in one run:

* **model-only bound**: the same model, batch and threads on pre-decoded tensors, nothing else
  (as many processes × threads as segpipe uses);
* **segpipe**: ``segpipe prelabel`` through the embedded Dask cluster into Zarr (label maps + uint8
  probabilities), decoding on the workers;
* **naive**: a PyTorch ``DataLoader`` + PIL loop writing label PNGs (the usual script).

Prints images/s of each and the ratios the issue sets goals for (segpipe ≥ 0.85× bound, ≥ 1.5× naive),
plus 1 → 2 worker scaling and the Zarr mask-write rates against min(disk bandwidth, zstd × cores):
many 1024² label maps, each in its own image group, and 2048² blocks of one large (scene) label map.

    python bench/prelabel_e2e.py [--images 200] [--size 512] [--workers 2] [--repeat 3]
    python bench/prelabel_e2e.py --writes-only   # the Zarr write rates alone
    python3 bench/prelabel_e2e.py --device cuda  # on a GPU machine: one worker, bf16 (bound likewise)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARCH = "lraspp_mobilenet_v3_large"
BOUND_SECONDS = 8.0  # each model-only process runs this long (about as long as segpipe's run)


def make_checkpoint(path: Path, size: int) -> None:
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ARCH, 21)
    cats = [{"index": i, "id": i, "name": f"class_{i}", "color": None, "isthing": True} for i in range(21)]
    save_checkpoint(path, model, CheckpointMeta(arch=ARCH, task="semantic", num_classes=21, categories=cats,
                                                tile_size=[size, size], tile_overlap=0.0))


GATE = r"""
def wait_gate():
    import os, time
    gate, me = os.environ["BENCH_GATE"], os.environ["BENCH_ME"]
    open(f"{gate}.ready{me}", "w").close()
    while not os.path.exists(gate):  # every process starts its timed part together, imports done
        time.sleep(0.001)
"""


def run_gated(code: str, argvs: list[list[str]]) -> list[tuple[float, ...]]:
    """Runs ``code`` once per argv, releases all the processes together (each calls ``wait_gate()``
    once loaded) and returns the numbers each prints on its last line."""
    d = Path(tempfile.mkdtemp(prefix="segpipe-gate-"))
    gate = d / "gate"
    ps = [subprocess.Popen([sys.executable, "-c", GATE + code, *argv], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "BENCH_GATE": str(gate), "BENCH_ME": str(k)})
          for k, argv in enumerate(argvs)]
    while len(list(d.glob("gate.ready*"))) < len(ps):
        if any(p.poll() is not None for p in ps):
            raise RuntimeError("a benchmark process exited before it was ready")
        time.sleep(0.01)
    gate.touch()
    spans = [tuple(map(float, p.communicate()[0].strip().splitlines()[-1].split())) for p in ps]
    shutil.rmtree(d, ignore_errors=True)
    return spans


MODEL_ONLY = r"""
import os, sys, time, numpy as np, torch
from segpipe.models.checkpoint import load_checkpoint, build_from_checkpoint
torch.set_num_threads(int(sys.argv[2])); torch.set_num_interop_threads(1)
ck = load_checkpoint(sys.argv[1]); model = build_from_checkpoint(ck).eval()
n, batch, size = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
layout, dev = sys.argv[6], sys.argv[7]
cuda = dev.startswith("cuda")
x = torch.randn(batch, 3, size, size) if layout == "nchw" else torch.randn(batch, size, size, 3).permute(0, 3, 1, 2)
if cuda:  # segpipe's CUDA path: channels-last model and input on the device, bf16 autocast
    model = model.to(dev).to(memory_format=torch.channels_last)
    x = x.to(dev).contiguous(memory_format=torch.channels_last)
amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
with torch.inference_mode(), amp:
    for _ in range(3 if cuda else 1):
        model(x)  # warm-up
    if cuda:
        torch.cuda.synchronize()
    wait_gate()
    t0 = time.time()
    done = 0
    while time.time() < t0 + n:  # every process runs for the same n seconds: all of them all the time
        model(x).argmax(1)  # labels: the same output as `prelabel --no-probs` and the naive loop
        done += batch
        if cuda and done % (8 * batch) == 0:
            torch.cuda.synchronize()  # keep the clock honest: kernels are queued asynchronously
    if cuda:
        torch.cuda.synchronize()
print(t0, time.time(), done)
"""

NAIVE = r"""
import sys, time, numpy as np, torch
from pathlib import Path
from PIL import Image
from segpipe.models.checkpoint import load_checkpoint, build_from_checkpoint
torch.set_num_threads(int(sys.argv[2]))
ck = load_checkpoint(sys.argv[1]); model = build_from_checkpoint(ck).eval()
src, out, batch, dev = Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
model = model.to(dev)
out.mkdir(parents=True, exist_ok=True)
files = sorted(src.glob("*.jpg"))
mean = torch.tensor(ck.meta.mean, device=dev).view(1, 3, 1, 1)
std = torch.tensor(ck.meta.std, device=dev).view(1, 3, 1, 1)
amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.startswith("cuda") else torch.autocast("cpu", enabled=False)
class DS(torch.utils.data.Dataset):
    def __len__(self): return len(files)
    def __getitem__(self, i):
        a = np.asarray(Image.open(files[i]).convert("RGB"))
        return torch.from_numpy(a.copy()).permute(2, 0, 1), i
dl = torch.utils.data.DataLoader(DS(), batch_size=batch, num_workers=1)
t = time.perf_counter()
with torch.inference_mode(), amp:
    for x, idx in dl:
        x = x.to(dev)
        y = model(((x.float() / 255) - mean) / std).argmax(1).cpu().numpy().astype(np.uint8)
        for j, i in enumerate(idx.tolist()):
            Image.fromarray(y[j]).save(out / (files[i].stem + ".png"))
print(len(files) / (time.perf_counter() - t))
"""


def run_py(code: str, *args: str) -> tuple[float, float]:
    """``(the rate the script prints, the wall seconds of its whole process, start-up included)``."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def model_only(ckpt: Path, procs: int, threads: int, seconds: float, batch: int, size: int,
               device: str = "cpu") -> float:
    """Aggregate img/s of ``procs`` processes × ``threads`` threads running the model at the same time.

    The processes are released together once loaded and warmed up and each runs for the same
    ``seconds``, so all of them run all the time (with a fixed number of images each, one finished
    early and the other then ran alone, faster: 14-20% spread between runs). The bound is the sum of
    their rates, for the faster of two input layouts: NCHW-contiguous, and channels-last (what
    segpipe feeds: a permuted view of HWC images, on which convolutions run faster on this CPU).
    """
    best = 0.0
    for layout in ("nchw", "channels_last"):
        argv = [str(ckpt), str(threads), str(seconds), str(batch), str(size), layout, device]
        spans = run_gated(MODEL_ONLY, [argv] * procs)
        best = max(best, sum(d / (b - a) for a, b, d in spans))
    return best


def segpipe_run(src: Path, ckpt: Path, out: Path, workers: int, batch: int, probs: bool = True,
                device: str = "cpu") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, CI="1")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segpipe", "-q", "prelabel", str(src), "-m", str(ckpt), "-o", str(out),
                    "-w", str(workers), "--threads", str(max(1, (os.cpu_count() or 2) // workers)),
                    "--batch", str(batch), "--probs" if probs else "--no-probs", "--device", device], env=env,
                   check=True, capture_output=True)
    wall = time.perf_counter() - t
    rep = json.loads(next((out / ".segpipe" / "runs").glob("*.json")).read_text())
    return {"wall_s": wall, "img_s_run": rep["throughput_img_s"], "stages": rep["stage_seconds"]}


WRITER = r"""
import os, sys, time, numpy as np
from segpipe.storage.zarrstore import ZarrStore
path, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(first)
labels = np.kron((rng.random((64, 64)) * 6).astype(np.uint8), np.ones((16, 16), np.uint8))
store = ZarrStore(path)
wait_gate()
t0 = time.time()
for i in range(first, first + n):
    g = store.image_group(i, {"id": i})
    store.write_array(g, "labels", labels)
print(t0, time.time())
"""


SCENE_WRITER = r"""
import os, sys, time, numpy as np, zarr
from segpipe.storage import zarrfast
from segpipe.storage.zarrstore import array_digest, local_folder
path, first, n, per_row = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(first)
block = np.kron((rng.random((128, 128)) * 6).astype(np.uint8), np.ones((16, 16), np.uint8))  # 2048²
arr = zarr.open_array(path, mode="r+")
wait_gate()
t0 = time.time()
for b in range(first, first + n):  # each task owns whole chunks, as prelabel's block tasks do
    y, x = (b // per_row) * 2048, (b % per_row) * 2048
    assert zarrfast.write_region(local_folder(arr), block, (y, x))
    array_digest(block)  # the block task's receipt digest, as in prelabel
print(t0, time.time())
"""


STACK_WRITER = r"""
import os, sys, time, numpy as np
from segpipe.storage.stacks import SHARD, ShardWriter
path, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(first)
labels = np.kron((rng.random((64, 64)) * 6).astype(np.uint8), np.ones((16, 16), np.uint8))
class NoReceipts:  # mask writes only, as the other writers: receipts are the ledger's cost
    def write(self, key, receipt): pass
wait_gate()
t0 = time.time()
for s in range(first, first + n, SHARD):  # one shard task: its images' label maps, then the shard file
    w = ShardWriter(path)
    for slot in range(s, s + SHARD):
        pending = w.slot("1024x1024", slot)
        pending.put("labels", labels)
        w.done(pending, str(slot), {})
    w.flush(NoReceipts())
print(t0, time.time())
"""


ZSTD_WORKER = r"""
import sys, time, numpy as np, numcodecs
rng = np.random.default_rng(0)
labels = np.kron((rng.random((64, 64)) * 6).astype(np.uint8), np.ones((16, 16), np.uint8))
z, n = numcodecs.Zstd(level=0), int(sys.argv[1])
z.encode(labels)
wait_gate()
t0 = time.time()
for _ in range(n):
    z.encode(labels)
print(t0, time.time())
"""


def zstd_parallel_rate(processes: int, per_process: int = 1216) -> float:
    """MB/s of ``processes`` processes compressing 1024² label maps at once, started together: what
    "zstd × cores" really is on this machine (two vCPUs of a VM may not compress twice as fast as one)."""
    spans = run_gated(ZSTD_WORKER, [[str(per_process)] for _ in range(processes)])
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    return processes * per_process * 1.0 / wall


def zarr_stack_rate(tmp: Path, writers: int, per_writer: int = 1216, tag: str = "") -> float:
    """MB/s of ``writers`` processes writing 1024² label maps into a stack (layout 2), a shard per task.

    The driver's plan (slots, the stack's metadata) is made first, as prelabel makes it. Each writer
    writes 1.2 GiB (about 1.6 s): with 304 MiB each (0.4 s) the skew of the processes' start and end
    weighed on the rate (1,091–1,450 MB/s against 1,468–1,566 MB/s for the long runs, interleaved).
    """
    from segpipe.storage.stacks import plan_stacks
    from segpipe.storage.zarrstore import ZarrStore

    path = tmp / f"stack{writers}{tag}.zarr"
    ZarrStore.create(path, {"task": "semantic", "categories": []})
    n = writers * per_writer
    plan_stacks(path, [(i, 1024, 1024, {"id": i}) for i in range(n)], labels_dtype=np.uint8, n_classes=1,
                probs=False)
    spans = run_gated(STACK_WRITER, [[str(path), str(k * per_writer), str(per_writer)] for k in range(writers)])
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    return n * 1.0 / wall  # 1024² uint8 = 1 MiB each


def zarr_scene_rate(tmp: Path, writers: int, blocks_per_writer: int = 64) -> float:
    """MB/s of ``writers`` processes writing 2048² blocks of one large label map at once.

    The array (chunked as prelabel chunks a scene's label map) is created first, as the driver does;
    each writer then writes its own chunk-aligned blocks through the path prelabel's block tasks take.
    """
    import zarr

    from segpipe.pipeline.prelabel import SCENE_LABEL_CHUNK

    per_row = 8
    n = writers * blocks_per_writer
    path = tmp / f"scene{writers}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    zarr.create_array(str(path), shape=(2048 * -(-n // per_row), 2048 * per_row), dtype="uint8",
                      chunks=(SCENE_LABEL_CHUNK, SCENE_LABEL_CHUNK), fill_value=0)
    spans = run_gated(SCENE_WRITER, [[str(path), str(k * blocks_per_writer), str(blocks_per_writer), str(per_row)]
                                     for k in range(writers)])
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    return n * 4.0 / wall  # 2048² uint8 = 4 MiB per block


def zarr_parallel_rate(tmp: Path, writers: int, per_writer: int = 300, tag: str = "") -> float:
    """MB/s of ``writers`` processes writing 1024² label maps into one store at once (as workers do).

    Timed from the moment all of them, imports done, are released together to the last one's end.
    """
    from segpipe.storage.zarrstore import ZarrStore

    path = tmp / f"par{writers}{tag}.zarr"
    ZarrStore.create(path, {"task": "semantic", "categories": []})
    spans = run_gated(WRITER, [[str(path), str(k * per_writer), str(per_writer)] for k in range(writers)])
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    return writers * per_writer * 1.0 / wall  # 1024² uint8 = 1 MiB each


def zarr_write_rate(tmp: Path) -> dict:
    """Label-map writes through the store vs zstd single-core rate × cores and raw disk bandwidth."""
    import numcodecs

    from segpipe.storage.zarrstore import ZarrStore

    rng = np.random.default_rng(0)
    base = (rng.random((64, 64)) * 6).astype(np.uint8)
    labels = np.kron(base, np.ones((16, 16), np.uint8))  # 1024² blocky label map
    n = 40  # the one-writer group rate below
    store = ZarrStore.create(tmp / "w.zarr", {"task": "semantic", "categories": []})
    t = time.perf_counter()
    for i in range(n):
        g = store.image_group(i, {"id": i})
        store.write_array(g, "labels", labels)
    zarr_mb_s = n * labels.nbytes / 2**20 / (time.perf_counter() - t)
    cores = os.cpu_count() or 1
    # The writers run before the disk test: its 768 MB written, fsynced and deleted leave the file
    # system discarding blocks for seconds (this VM mounts it with `discard`), which slowed the
    # metadata operations of writers run right after it 2-5×.
    par = max(zarr_parallel_rate(tmp, cores, tag=f"-{k}") for k in range(3))  # best of three, as the bound's rates
    stacked = max(zarr_stack_rate(tmp, cores, tag=f"-{k}") for k in range(3))
    scene = max(zarr_scene_rate(tmp, cores) for _ in range(3))
    # The bound's two rates are capabilities: the best of three tries each (the VM's disk is noisy).
    z = numcodecs.Zstd(level=0)  # the store's codec (zarr's default ZstdCodec)
    zstd_mb_s = 0.0
    n_zstd = 400  # 0.4 s per try, as long as a writer's share of the rates above
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n_zstd):
            z.encode(labels)
        zstd_mb_s = max(zstd_mb_s, n_zstd * labels.nbytes / 2**20 / (time.perf_counter() - t))
    blob = os.urandom(256 * 2**20)
    disk_mb_s = 0.0
    for k in range(3):
        t = time.perf_counter()
        with open(tmp / f"disk{k}.bin", "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        disk_mb_s = max(disk_mb_s, 256 / (time.perf_counter() - t))
        (tmp / f"disk{k}.bin").unlink()
    del blob
    bound = min(disk_mb_s, zstd_mb_s * cores)
    # zstd in `cores` processes at once, as the writers run (best of three): the formula's "× cores"
    # measured instead of assumed; the stacked writers' rate against it shows their own overhead.
    zstd_par = max(zstd_parallel_rate(cores) for _ in range(3))
    return {"zstd_mb_s_parallel": zstd_par,
            f"stacked_ratio_to_parallel_zstd_{cores}_writers": stacked / min(disk_mb_s, zstd_par),
            "zarr_mb_s_one_writer": zarr_mb_s, f"zarr_mb_s_{cores}_writers": par, "zstd_mb_s_one_core": zstd_mb_s,
            "disk_mb_s": disk_mb_s, "bound_mb_s": bound, f"ratio_{cores}_writers": par / bound,
            f"stacked_mb_s_{cores}_writers": stacked, f"stacked_ratio_{cores}_writers": stacked / bound,
            f"scene_mb_s_{cores}_writers": scene, f"scene_ratio_{cores}_writers": scene / bound}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the bound and segpipe's labels run N times")
    ap.add_argument("--writes-only", action="store_true", help="measure the Zarr mask-write rates only")
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda: one worker on the GPU with bf16 autocast, and the bound likewise")
    args = ap.parse_args()
    dev = args.device
    if args.writes_only:
        tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-writes-"))
        zw = zarr_write_rate(tmp)
        print("zarr mask writes: " + ", ".join(f"{k} {v:.2f}" for k, v in zw.items()))
        shutil.rmtree(tmp, ignore_errors=True)
        return
    from segpipe.synth import synth

    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-e2e-"))
    print(f"synthesising {args.images} JPEGs {args.size}² in {tmp} ...", flush=True)
    synth("streetview", tmp / "data", n=args.images, seed=0, size=(args.size, args.size), image_format="jpg")
    src = tmp / "data" / "images"
    ckpt = tmp / "lraspp.ckpt"
    make_checkpoint(ckpt, args.size)
    cores = os.cpu_count() or 1
    w = 1 if dev.startswith("cuda") else args.workers  # one worker per GPU
    # The bound and the labels run alternate --repeat times; each keeps its best (the VM is noisy, and
    # a capability is the best a configuration achieves).
    bound = 0.0
    labels_only: dict = {}
    for _ in range(max(1, args.repeat)):
        bound = max(bound, model_only(ckpt, w, max(1, cores // w), BOUND_SECONDS, args.batch, args.size, dev))
        run = segpipe_run(src, ckpt, tmp / "l.zarr", w, args.batch, probs=False, device=dev)
        print(f"  try: bound so far {bound:.2f} img/s, segpipe labels {run['img_s_run']:.2f} img/s while running, "
              f"{args.images / run['wall_s']:.2f} end to end", flush=True)
        if not labels_only or run["img_s_run"] > labels_only["img_s_run"]:
            labels_only = run
    print(f"model-only bound ({w} procs × {max(1, cores // w)} threads, batch {args.batch}): {bound:.2f} img/s")
    print(f"segpipe prelabel -w {w} --no-probs (labels, as the bound computes): "
          f"{args.images / labels_only['wall_s']:.2f} img/s end to end, {labels_only['img_s_run']:.2f} img/s while "
          f"running ({labels_only['img_s_run'] / bound:.2f}× bound); stage seconds {labels_only['stages']}")
    seg = segpipe_run(src, ckpt, tmp / "s.zarr", w, args.batch, device=dev)
    seg_img_s = args.images / seg["wall_s"]
    print(f"segpipe prelabel -w {w} (labels + 21 uint8 probability maps): {seg_img_s:.2f} img/s end to end "
          f"(wall incl. start-up), {seg['img_s_run']:.2f} img/s while running; stage seconds {seg['stages']}")
    naive, naive_wall = run_py(NAIVE, str(ckpt), str(cores), str(src), str(tmp / "naive"), str(args.batch), dev)
    naive_e2e = args.images / naive_wall
    print(f"naive DataLoader + PIL loop ({cores} threads): {naive:.2f} img/s in its loop, {naive_e2e:.2f} img/s "
          f"end to end (its imports and model load included)")
    # Like for like: the bound and the naive loop produce label maps only, as `--no-probs` does.
    lab_e2e = args.images / labels_only["wall_s"]
    print(f"segpipe (labels) / bound = {labels_only['img_s_run'] / bound:.2f} while running, "
          f"{lab_e2e / bound:.2f} end to end")
    # Like for like: both while running (start-up excluded), both end to end (start-up included).
    print(f"segpipe (labels) / naive = {labels_only['img_s_run'] / naive:.2f} while running, "
          f"{lab_e2e / naive_e2e:.2f} end to end (against the loop alone: {lab_e2e / naive:.2f})")
    if w > 1:
        one = segpipe_run(src, ckpt, tmp / "s1.zarr", 1, args.batch, device=dev)
        print(f"scaling: 1 worker {one['img_s_run']:.2f} img/s → {w} workers {seg['img_s_run']:.2f} img/s "
              f"(× {seg['img_s_run'] / max(one['img_s_run'], 1e-9):.2f})")
    zw = zarr_write_rate(tmp)
    print("zarr mask writes: " + ", ".join(f"{k} {v:.1f}" for k, v in zw.items()))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
