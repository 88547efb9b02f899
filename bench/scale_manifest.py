"""Collections of 100k+ images (issue 16 point 5): the driver's memory and time as the collection grows.

A folder of N tiny images (16×16 PNGs, 1,000 per sub-folder, each one distinct) is pre-labeled with a
trivial model (a 1×1 convolution, a checkpoint whose arch is ``scale_manifest:SPEC``, this file) by ``segpipe prelabel``
with default flags, whole processes, at each size of ``--sizes``. For each size it measures:

- the run: wall time, the driver's peak RSS (the CLI's own process) and the whole tree's;
- planning: the driver's pure planning of N images in one process (manifest → ``plan_tasks`` →
  ``tasks_to_run`` against the store's ledger → ``batch_tasks``), seconds;
- resume with every receipt done: ``segpipe prelabel … --resume`` (whole process: listing, ingest,
  planning, nothing left to run), wall time and driver peak RSS;
- ``segpipe fsck`` of the store, wall time.

Each with its CPU seconds (user + system of the process and its children): wall times move with the
load of a shared machine, CPU seconds much less. A run of ``storage/ledger.py: PACK_MIN`` images or more
packs its ledger at its end (docs/design/packed-ledger.md): resume and fsck read the pack.

The goals compare the largest size with the first: driver peak RSS ratio ≤ 1.5; planning and resume
≤ 10 s; fsck ≤ 60 s at 100k. There is no peer here: the reference is segpipe itself at 10k.

    python bench/scale_manifest.py --sizes 1000,10000           # smoke, ~2 min on 2 cores
    python bench/scale_manifest.py --sizes 10000,100000         # the issue's sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from _measure import run_measured  # bench/ is on sys.path: this script's own folder, or the workers' PYTHONPATH

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SIDE = 16
PER_FOLDER = 1000


def _build(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> Any:
    """A 1×1 convolution, RGB → ``num_classes`` logits ``(N, C, H, W)``: the cheapest semantic model."""
    from torch import nn  # lazy: the driver and this script's parent process never need torch

    return nn.Conv2d(3, num_classes, 1)


def _spec() -> Any:
    from segpipe.models.registry import ModelSpec

    return ModelSpec("conv1x1", "semantic", _build, (SIDE, SIDE), "a 1x1 convolution (bench)", stride=1)


def __getattr__(name: str) -> Any:  # PEP 562: ``--arch scale_manifest:SPEC`` without importing segpipe here
    if name == "SPEC":
        return _spec()
    raise AttributeError(name)


# ------------------------------------------------------------------------------------------ the data


def _png(pixels: bytes, side: int) -> bytes:
    """A ``side``×``side`` 8-bit RGB PNG of ``pixels`` (rows of RGB bytes), written by hand: 100k of them
    through PIL would take longer than the run they feed."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + tag + data
                + zlib.crc32(tag + data).to_bytes(4, "big"))

    raw = b"".join(b"\0" + pixels[r * side * 3:(r + 1) * side * 3] for r in range(side))
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


def make_collection(folder: Path, n: int) -> Path:
    """``n`` distinct 16×16 PNGs under ``folder/images/dNNNN/`` (reused when complete)."""
    images = folder / "images"
    stamp = folder / "complete"
    if stamp.exists():
        return images
    import numpy as np

    rng = np.random.default_rng(n)
    base = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for i in range(n):
        d = images / f"d{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            d.mkdir(parents=True, exist_ok=True)
        px = base.copy()
        px[0, :4, :] = np.frombuffer(i.to_bytes(12, "big"), np.uint8).reshape(4, 3)  # distinct content
        (d / f"{i:07d}.png").write_bytes(_png(px.tobytes(), SIDE))
    stamp.write_text(str(n))
    print(f"  wrote {n} PNGs in {time.perf_counter() - t0:.1f} s", flush=True)
    # A file changed within 2 s of a run's start is hashed again by the next --resume (its modification
    # time cannot vouch for it: source.MTIME_MARGIN_NS), which would start a cluster there; no real
    # collection is written the moment before its run.
    time.sleep(2.5)
    return images


def make_checkpoint(path: Path) -> None:
    """A segpipe checkpoint of the 1×1 convolution (2 classes, seeded): its metadata is read without torch
    on the driver, as a user's trained model's would be."""
    if path.exists():
        return
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(0)
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": False} for i, n in enumerate(("bg", "fg"))]
    meta = CheckpointMeta(arch="scale_manifest:SPEC", task="semantic", num_classes=2, categories=cats,
                          tile_size=[SIDE, SIDE], tile_overlap=0.0)
    save_checkpoint(path, _build(2), meta)


# ------------------------------------------------------------------------------------------ measuring


def run_driver(cmd: list[str], env: dict[str, str], interval: float = 0.05,
               keep_output: bool = False) -> dict[str, Any]:
    """Runs ``cmd``; its wall time, the peak RSS of its own process (the driver) and of its whole tree
    (and its output with ``keep_output``): :func:`_measure.run_measured`, exiting on a failure."""
    try:
        m = run_measured(cmd, env=env, interval=interval)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{' '.join(cmd)} failed ({e.returncode}):\n{(e.output or '')[-3000:]}") from None
    res: dict[str, Any] = {"wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "driver_mb": m["driver_rss_mb"],
                           "tree_mb": m["peak_rss_mb"]}
    if keep_output:
        res["output"] = m["output"]
    return res


PLAN = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from segpipe.pipeline.prelabel.plan import batch_tasks, plan_tasks
from segpipe.pipeline.prelabel.store import tasks_to_run
from segpipe.storage.ledger import Ledger
from segpipe.storage.manifest import read_manifest
from segpipe.storage.zarrstore import ZarrStore
t_imp = time.perf_counter()
c_imp = time.process_time()
store = ZarrStore.open(Path(sys.argv[1]))
cfg = store.attrs()["config_hash"]
entries = list(read_manifest(store.private / "manifest.jsonl"))
t1 = time.perf_counter()
planned = plan_tasks(entries, cfg)
t2 = time.perf_counter()
todo = tasks_to_run(store, Ledger(store.private), planned)
t3 = time.perf_counter()
batches = batch_tasks(planned, 2)
t4 = time.perf_counter()
print(json.dumps({"cpu_s": time.process_time() - c_imp, "imports_s": t_imp - t0, "manifest_s": t1 - t_imp,
                  "plan_tasks_s": t2 - t1,
                  "tasks_to_run_s": t3 - t2, "batch_tasks_s": t4 - t3, "planned": len(planned),
                  "todo": len(todo), "batches": len(batches)}))
"""


def load() -> str:
    """The 1-, 5- and 15-minute load averages, for the record beside every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(size: int, work: Path, weights: Path, env: dict[str, str], keep: bool) -> dict[str, Any]:
    """One size: the run, planning, resume and fsck."""
    images = make_collection(work / f"c{size}", size)
    store = work / f"c{size}" / "s.zarr"
    segpipe = [sys.executable, "-m", "segpipe", "-q"]
    base = [*segpipe, "prelabel", str(images), "-m", str(weights), "-o", str(store), "--no-probs"]
    res: dict[str, Any] = {"size": size, "load_before": load()}
    run = run_driver([*base, "--overwrite"], env)
    res["run"] = run
    res["load_after_run"] = load()
    reports = sorted((store / ".segpipe" / "runs").glob("*.json"))
    counts = json.loads(reports[-1].read_text())["images"]
    if counts["done"] != size or counts["failed"]:
        raise SystemExit(f"the run did not pre-label every image: {counts}")
    print(f"  run: {run['wall_s']:.1f} s, {size / run['wall_s']:.0f} img/s, driver {run['driver_mb']:.0f} MiB, "
          f"tree {run['tree_mb']:.0f} MiB (load {res['load_after_run']})", flush=True)
    from segpipe.storage.ledger import Ledger  # lazy: segpipe is put on sys.path by main()

    ledger = Ledger(store / ".segpipe")
    res["ledger_files"] = ledger.loose_count()
    res["ledger_packs"] = ledger.pack_count()
    res["receipts"] = len(ledger.contents().receipts)
    r = subprocess.run([sys.executable, "-c", PLAN, str(store)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    plan = json.loads(r.stdout.strip().splitlines()[-1])
    res["plan"] = plan
    plan_s = plan["manifest_s"] + plan["plan_tasks_s"] + plan["tasks_to_run_s"] + plan["batch_tasks_s"]
    res["plan_s"] = plan_s
    print(f"  ledger: {res['receipts']} receipts, {res['ledger_files']} loose files, {res['ledger_packs']} packs",
          flush=True)
    print(f"  planning {plan['planned']} tasks: {plan_s:.2f} s, cpu {plan['cpu_s']:.2f} s "
          f"(manifest {plan['manifest_s']:.2f}, "
          f"plan_tasks {plan['plan_tasks_s']:.2f}, tasks_to_run {plan['tasks_to_run_s']:.2f}, "
          f"batch_tasks {plan['batch_tasks_s']:.2f}); left to run: {plan['todo']}", flush=True)
    resume = run_driver([*base, "--resume"], env)
    res["resume"] = resume
    print(f"  resume, all done: {resume['wall_s']:.1f} s, cpu {resume['cpu_s']:.1f} s, "
          f"driver {resume['driver_mb']:.0f} MiB "
          f"(load {load()})", flush=True)
    fsck = run_driver([*segpipe, "fsck", str(store)], env)
    res["fsck"] = fsck
    print(f"  fsck: {fsck['wall_s']:.1f} s, cpu {fsck['cpu_s']:.1f} s, {fsck['driver_mb']:.0f} MiB (load {load()})",
          flush=True)
    if not keep:
        import shutil

        shutil.rmtree(store)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="collection sizes, comma-separated (first = reference)")
    ap.add_argument("--workdir", default="/tmp/segpipe-scale")
    ap.add_argument("--keep", action="store_true", help="keep the stores (the collections are always kept)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "conv1x1.ckpt"
    # the driver and the workers import this file's SPEC (the checkpoint's arch) from PYTHONPATH
    env = dict(os.environ, CI="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    sys.path.insert(0, str(REPO))
    make_checkpoint(weights)
    print(f"machine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load {load()}", flush=True)
    results = []
    for size in sizes:
        print(f"{size} images:", flush=True)
        results.append(measure(size, work, weights, env, args.keep))
    ref, big = results[0], results[-1]
    print()
    print(f"| measure | {' | '.join(str(r['size']) for r in results)} | ratio / goal |")
    print(f"| --- | {' | '.join('---' for _ in results)} | --- |")
    rows = [
        ("run wall (s)", lambda r: f"{r['run']['wall_s']:.1f}", ""),
        ("run img/s", lambda r: f"{r['size'] / r['run']['wall_s']:.0f}", ""),
        ("driver peak RSS, run (MiB)", lambda r: f"{r['run']['driver_mb']:.0f}",
         f"x{big['run']['driver_mb'] / ref['run']['driver_mb']:.2f} (goal <= 1.5)"),
        ("tree peak RSS, run (MiB)", lambda r: f"{r['run']['tree_mb']:.0f}", ""),
        ("planning (s)", lambda r: f"{r['plan_s']:.2f}", f"{big['plan_s']:.2f} s (goal <= 10)"),
        ("planning CPU (s)", lambda r: f"{r['plan']['cpu_s']:.2f}", ""),
        ("resume, all done, whole process (s)", lambda r: f"{r['resume']['wall_s']:.1f}",
         f"{big['resume']['wall_s']:.1f} s (goal <= 10)"),
        ("resume CPU (s)", lambda r: f"{r['resume']['cpu_s']:.1f}", ""),
        ("driver peak RSS, resume (MiB)", lambda r: f"{r['resume']['driver_mb']:.0f}",
         f"x{big['resume']['driver_mb'] / ref['resume']['driver_mb']:.2f}"),
        ("fsck (s)", lambda r: f"{r['fsck']['wall_s']:.1f}", f"{big['fsck']['wall_s']:.1f} s (goal <= 60)"),
        ("fsck CPU (s)", lambda r: f"{r['fsck']['cpu_s']:.1f}", ""),
        ("driver peak RSS, fsck (MiB)", lambda r: f"{r['fsck']['driver_mb']:.0f}", ""),
        ("receipts: loose files / packs", lambda r: f"{r['ledger_files']} / {r['ledger_packs']}", ""),
        ("load before", lambda r: r["load_before"], ""),
    ]
    for name, cell, goal in rows:
        print(f"| {name} | {' | '.join(cell(r) for r in results)} | {goal} |")
    (work / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
