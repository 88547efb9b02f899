"""Stacked label-map writes: segpipe's shard writer against zarr-python, with and without the zarrs codec pipeline.

Issue 16 point 2 asks to consider the `zarrs`_ codec pipeline (Rust, ``zarrs-python``) before hand-written
chunk files. This bench writes the same thing three ways, each with as many writer processes as cores,
all released together once their imports are done, into a stack laid out by segpipe's own driver
(``plan_stacks``: ``labels (N, 1024, 1024)`` uint8, chunks ``(1, 1024, 1024)``, shards of ``SHARD`` images,
zstd level 0), each process writing whole shards (as a shard task does):

- **segpipe**: ``storage.stacks.ShardWriter`` (what a prelabel shard task runs);
- **zarr-python**: ``zarr.open_array(...)[s:s + SHARD] = labels`` with zarr's default codec pipeline;
- **zarr-python + zarrs**: the same call with ``codec_pipeline.path = "zarrs.ZarrsCodecPipeline"``.

Rates are MB/s of 1 MiB label maps; every way's stack is read back with plain zarr and compared.

    pip install --target /tmp/zarrs_pkg --no-deps zarrs     # not a segpipe dependency
    PYTHONPATH=/tmp/zarrs_pkg python bench/zarrs_pipeline.py [--per-writer 608] [--repeat 3]

.. _zarrs: https://github.com/zarrs/zarrs-python
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from prelabel_e2e import STACK_WRITER, run_gated  # noqa: E402  (bench/ is on the path above)

LABELS = "np.kron((rng.random((64, 64)) * 6).astype(np.uint8), np.ones((16, 16), np.uint8))"

ZARR_WRITER = r"""
import os, sys, time, numpy as np, zarr
from segpipe.storage.stacks import SHARD
path, first, n, pipeline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if pipeline == "zarrs":
    import zarrs  # noqa: F401  (fails here, before the gate, when it is not installed)
    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
rng = np.random.default_rng(first)
labels = """ + LABELS + r"""
block = np.broadcast_to(labels, (SHARD, 1024, 1024))
arr = zarr.open_array(path + "/stacks/1024x1024/labels", mode="r+")
arr[first:first + SHARD] = block  # warm: codecs, thread pools (rewritten below)
wait_gate()
t0 = time.time()
for s in range(first, first + n, SHARD):  # one shard task: its images' label maps in one write
    arr[s:s + SHARD] = block
print(t0, time.time())
"""


def _plan(path: Path, n: int) -> None:
    from segpipe.storage.stacks import plan_stacks
    from segpipe.storage.zarrstore import ZarrStore

    shutil.rmtree(path, ignore_errors=True)
    ZarrStore.create(path, {"task": "semantic", "categories": []})
    plan_stacks(path, [(i, 1024, 1024, {"id": i}) for i in range(n)], labels_dtype=np.uint8, n_classes=1,
                probs=False)


def _rate(way: str, tmp: Path, writers: int, per_writer: int) -> tuple[float, Path]:
    path = tmp / f"{way}.zarr"
    _plan(path, writers * per_writer)
    argvs = [[str(path), str(k * per_writer), str(per_writer)] for k in range(writers)]
    if way == "segpipe":
        spans = run_gated(STACK_WRITER, argvs)
    else:
        spans = run_gated(ZARR_WRITER, [[*a, way] for a in argvs])
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    return writers * per_writer / wall, path


def _check(paths: dict[str, Path], writers: int, per_writer: int) -> str:
    """Every way's stack holds the same label maps (read back by plain zarr, default pipeline)."""
    import zarr

    ref = None
    for way, p in paths.items():
        arr = zarr.open_array(str(p / "stacks" / "1024x1024" / "labels"), mode="r")
        sample = np.stack([arr[k * per_writer + j] for k in range(writers) for j in (0, per_writer - 1)])
        if ref is None:
            ref = sample
        elif not np.array_equal(sample, ref):
            return f"{way}'s label maps differ from segpipe's"
    return "the label maps read back by zarr are equal on every way"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-writer", type=int, default=608, help="1024² label maps per writer (a multiple of 8)")
    ap.add_argument("--writers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the ways take turns within each")
    args = ap.parse_args()
    try:
        import zarrs
        zarrs_version = getattr(zarrs, "__version__", "?")
    except ImportError:
        raise SystemExit("zarrs is not installed: pip install --target /tmp/zarrs_pkg --no-deps zarrs; "
                         "then PYTHONPATH=/tmp/zarrs_pkg") from None
    import zarr

    print(f"machine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, zarr "
          f"{zarr.__version__}, zarrs {zarrs_version}; {args.writers} writers x {args.per_writer} label maps "
          f"1024² uint8; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    ways = ["segpipe", "zarr", "zarrs"]
    rates: dict[str, list[float]] = {w: [] for w in ways}
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-zarrs-"))
    try:
        for r in range(args.repeat):
            paths = {}
            for way in ways[r % 3:] + ways[:r % 3]:  # the order turns: no way always runs first
                rate, paths[way] = _rate(way, tmp, args.writers, args.per_writer)
                rates[way].append(rate)
                print(f"  round {r + 1}: {way:8s} {rate:7.1f} MB/s", flush=True)
            print(f"  {_check(paths, args.writers, args.per_writer)}", flush=True)
            for p in paths.values():
                shutil.rmtree(p, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {w: statistics.median(v) for w, v in rates.items()}
    print()
    print("| way | median MB/s | runs | / segpipe |")
    print("| --- | --- | --- | --- |")
    for w in ways:
        print(f"| {w} | {med[w]:.0f} | {', '.join(f'{x:.0f}' for x in rates[w])} | x{med[w] / med['segpipe']:.2f} |")
    print(f"load at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
