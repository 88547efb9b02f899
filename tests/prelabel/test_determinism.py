"""Stored probabilities and labels do not depend on the worker count, the threads or the batch.

torch chooses a convolution's CPU kernel by its thread count and by the batch (a 1×1 convolution runs
on oneDNN with more than one thread, on its GEMM path with one; a small input runs on oneDNN only in a
batch of more than one), and oneDNN's own results depend on both for some layers. Before the fix, a
ResNet-50 DeepLabV3 stored other probabilities for every image with ``-w 2`` (1 torch thread per
worker on 2 cores) than with ``-w 0`` or ``-w 1`` (2 threads), and ``--batch 1`` flipped a label.
Now each forward pass runs on one torch thread with one tile (a worker runs as many images at once
as it has threads instead), so every way of running a collection stores the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.manifest import read_manifest
from segpipe.storage.zarrstore import ZarrStore


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 street-view images of 64×64 (the categories of the session's checkpoint)."""
    from segpipe.synth import synth

    out = tmp_path_factory.mktemp("small")
    synth("streetview", out, n=10, seed=5, size=(64, 64))
    return out / "images"


def _outputs(store: Path) -> dict[int, tuple[bytes, bytes]]:
    """``{image id: (labels bytes, probs bytes)}`` of every image of a store, read as an image group."""
    s = ZarrStore.open(store)
    out = {}
    for e in read_manifest(store / ".segpipe" / "manifest.jsonl"):
        g = s.group(e.id)
        labels, probs = np.asarray(g["labels"][...]), np.asarray(g["probs"][...])
        out[e.id] = (labels.dtype.str.encode() + labels.tobytes(), probs.dtype.str.encode() + probs.tobytes())
    return out


# (workers, threads per worker, tiles per pass asked for): in this process with 2 threads, one worker
# process with 2 threads, two with 1 (workers × threads = the default on 2 cores) and with 2.
RUNS = [(0, 2, 4), (1, 2, 3), (2, 1, 1), (2, 2, 2)]


@pytest.mark.parametrize("tile", [None, 48], ids=["one-tile", "tiled"])
def test_outputs_do_not_depend_on_workers_threads_or_batch(tmp_path: Path, small: Path, checkpoint: Path,
                                                           tile: int | None) -> None:
    """The same collection stores byte-identical labels and probabilities however it is run.

    ``tile=48`` cuts each 64² image into 2 × 2 overlapping tiles, so a batch of 3 tiles leaves a short
    last pass, as at the end of every tile row of a large image.
    """
    stores: dict[tuple[int, int, int], dict[int, tuple[bytes, bytes]]] = {}
    for workers, threads, batch in RUNS:
        out = tmp_path / f"w{workers}t{threads}b{batch}.zarr"
        rep = prelabel(PrelabelRequest(source=str(small), model=str(checkpoint), out=out, threads=threads,
                                       batch=batch, tile=tile), ClusterSpec(workers=workers))
        assert rep["images"]["done"] == 10 and not rep["failed"]
        assert rep["threads_per_worker"] == threads
        stores[(workers, threads, batch)] = _outputs(out)
    first, *others = RUNS
    for run in others:
        diff = [i for i in stores[first] if stores[run][i] != stores[first][i]]
        assert not diff, f"{run} stored other bytes than {first} for images {diff}"


def test_resume_with_another_worker_count_continues_the_same_outputs(tmp_path: Path, small: Path,
                                                                     checkpoint: Path) -> None:
    """Half a run with 2 workers, resumed in this process with 1 thread: as one uninterrupted run."""
    whole = tmp_path / "whole.zarr"
    prelabel(PrelabelRequest(source=str(small), model=str(checkpoint), out=whole, threads=1),
             ClusterSpec(workers=2))
    mixed = tmp_path / "mixed.zarr"
    prelabel(PrelabelRequest(source=str(small), model=str(checkpoint), out=mixed, threads=2, limit=5),
             ClusterSpec(workers=0))
    rep = prelabel(PrelabelRequest(source=str(small), model=str(checkpoint), out=mixed, threads=1, resume=True),
                   ClusterSpec(workers=2))
    assert rep["images"]["skipped_already_done"] == 5 and rep["images"]["done"] == 5
    assert _outputs(mixed) == _outputs(whole)


def test_worker_state_runs_one_thread_and_one_tile_per_pass(checkpoint: Path) -> None:
    """Whatever threads a worker has and ``--batch`` says, a CPU forward pass has 1 torch thread, 1 tile."""
    import torch

    from segpipe.kernels.prelabel.resources import PredictorOptions, PredictorSetup
    from segpipe.models.ref import ModelRef

    before = torch.get_num_threads()
    try:
        state = PredictorSetup(ModelRef(str(checkpoint)), PredictorOptions(device="cpu", batch_size=4)).build()
        try:
            assert state.predictor.batch_size == 1
            assert torch.get_num_threads() == 1
        finally:
            state.close()
    finally:
        torch.set_num_threads(before)
