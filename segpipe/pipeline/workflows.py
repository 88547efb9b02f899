"""The library call behind each command, taking that command's request (:mod:`segpipe.pipeline.requests`).

The command line (through :mod:`segpipe.api`), pipeline files (:mod:`segpipe.pipeline.run`) and Python
users all end here, so a command behaves the same whichever way it was asked. Conversion and export
are :func:`segpipe.pipeline.convert.convert`, validation :func:`segpipe.pipeline.validate.validate`;
``push`` and ``pull`` are in :mod:`segpipe.integrations.labelstudio.sync` (a sibling layer).

Each function imports its workflow when called: a conversion never loads torch, and
``import segpipe`` loads none of them.

Every workflow takes its command's typed request itself; a task is passed on as the user names it
(``landmarks``) and evaluated under the metrics' name (:func:`evaluation_task`: ``keypoints``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.requests import (
    DemoRequest,
    EvaluateCheckpointsRequest,
    EvaluateRequest,
    FsckRequest,
    IngestRequest,
    PrelabelRequest,
    SynthRequest,
    TrainRequest,
)
from segpipe.pipeline.requests import evaluation_task as evaluation_task  # where callers of this module find it

if TYPE_CHECKING:
    from segpipe.models.train import TrainResult
    from segpipe.pipeline.demo import DemoResult
    from segpipe.pipeline.eval_specs import EvaluationReport, Leaderboard
    from segpipe.pipeline.prelabel.report import FsckReport, PrelabelReport
    from segpipe.synth import SynthResult

Progress = Callable[[int, int, int], None]
Log = Callable[[str], None]


def synthesize(req: SynthRequest) -> SynthResult:
    """Writes a synthetic collection (``segpipe synth``): photos, or a native format (GeoTIFF, NIfTI, DICOM)."""
    # lazy: the synthetic kinds import numpy and the writers
    from segpipe.synth import synth, synth_native

    fmt = req.format or ("jpg" if req.exif else "png")
    if fmt in ("png", "jpg") and not req.exif:
        return synth(req.kind, req.out, n=req.n, seed=req.seed, size=req.size, image_format=fmt,
                     overwrite=req.overwrite)
    return synth_native(req.kind, req.out, n=req.n, seed=req.seed, size=req.size, fmt=fmt, exif=req.exif,
                        depth=req.depth, overwrite=req.overwrite)


def train(req: TrainRequest, *, progress: bool = False, log: Log | None = None) -> TrainResult:
    """Trains a model (``segpipe train``); ``progress`` shows a progress bar on stderr."""
    # lazy: training imports torch
    from segpipe.models.train import train as run

    return run(req.dataset, req.arch, req.out, epochs=req.epochs, max_minutes=req.max_minutes, val_dir=req.val,
               resume=req.resume, overwrite=req.overwrite, seed=req.seed, batch_size=req.batch, lr=req.lr,
               device=req.device, model_kwargs=dict(req.model_arg) or None, crop=req.crop, progress=progress, log=log)


def ingest(req: IngestRequest, cluster: ClusterSpec, *, inputs: Sequence[Path] = ()) -> int:
    """Writes a collection's manifest (stable ids, sizes, content hashes); returns its number of images.

    Args:
        req: The source and the manifest file.
        cluster: Where the images are measured and hashed.
        inputs: Other paths the manifest may not replace (what a pipeline's other stages read).
    """
    # lazy: ingestion runs on Dask and reads images
    from segpipe.execution.cluster import open_client
    from segpipe.pipeline.prelabel import ingest as measure
    from segpipe.storage.manifest import write_manifest
    from segpipe.storage.outputs import check_output, resolved

    # Never over, in or around what is read (the manifest itself aside: a later stage may read it), nor
    # over a file segpipe did not write (an earlier manifest is replaced).
    others = [p for p in inputs if resolved(p) != resolved(req.out)]
    check_output(req.out, [Path(req.source), *others], option="ingest.out", command="ingest", kind="file")
    with open_client(cluster) as client:
        entries = measure(req.source, client)
    req.out.parent.mkdir(parents=True, exist_ok=True)
    return write_manifest(req.out, entries)


def prelabel(req: PrelabelRequest, cluster: ClusterSpec, *, progress: Progress | None = None,
             log: Log | None = None) -> PrelabelReport:
    """Pre-labels a collection into a store (``segpipe prelabel``); returns the typed run report.

    Its JSON (the run file's content) is :meth:`PrelabelReport.to_json`.
    """
    # lazy: pre-labeling imports zarr and the predictors
    from segpipe.pipeline.prelabel import run_prelabel

    return run_prelabel(req, cluster, progress=progress, log=log)


def fsck(req: FsckRequest) -> FsckReport:
    """Checks a store's receipts against its outputs (``segpipe fsck``); returns the typed findings."""
    # lazy: the store's checks import zarr
    from segpipe.pipeline.prelabel import check_store

    return check_store(req.store, repair=req.repair)


def evaluate(req: EvaluateRequest, cluster: ClusterSpec, *, progress: Progress | None = None) -> EvaluationReport:
    """Evaluates predictions against ground truth (``segpipe evaluate``); returns the typed report.

    Its JSON (``--json``, ``report.json``) is :meth:`EvaluationReport.to_json`.
    """
    # lazy: the metric engines import pycocotools and numpy
    from segpipe.pipeline.evaluate import evaluate_report

    return evaluate_report(req, cluster, progress=progress)


def evaluate_checkpoints(req: EvaluateCheckpointsRequest, cluster: ClusterSpec, *,
                         log: Log = print) -> Leaderboard:
    """Evaluates many checkpoints on one archive (``segpipe evaluate-checkpoints``); returns the typed leaderboard.

    Its JSON (``leaderboard.json``) is :meth:`Leaderboard.to_json`.
    """
    # lazy: pre-labeling and the metric engines
    from segpipe.pipeline.checkpoints import checkpoint_leaderboard

    return checkpoint_leaderboard(req, cluster, log=log)


def demo(req: DemoRequest, cluster: ClusterSpec, *, log: Log = print) -> DemoResult:
    """The quickstart end to end (``segpipe demo``)."""
    # lazy: the demo imports every workflow
    from segpipe.pipeline.demo import run_demo

    return run_demo(req.out, n_new=req.n, train_epochs=req.epochs, train_seconds=req.train_seconds, cluster=cluster,
                    log=log)
