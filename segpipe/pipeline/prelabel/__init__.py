"""``segpipe prelabel``: model-assisted pre-labeling of an image collection into a Zarr store, on Dask.

Flow: ingest (stable ids, sizes, content hashes → ``STORE/.segpipe/manifest.jsonl``) → plan (one task per
image; its key hashes the image content, the model and the config) → run (the model is loaded once per
worker by a plugin; images are decoded on the workers in an isolated process; each task writes only its
own image's arrays, then a durable receipt into the ledger, and returns the small receipt) → report.

Resume: tasks whose receipt exists are skipped; a re-executed task rewrites its image from scratch, so
outputs are idempotent (same key → same bytes) whether Dask ran a task once or twice.

The modules, by concept (the worker side lives in :mod:`segpipe.kernels.prelabel`):

* :mod:`.request` — :class:`PrelabelRequest`, what was asked.
* :mod:`.config` — the request checked against the model; the config hashed into every task key.
* :mod:`.source` — the source listed on the driver, then measured and hashed on the workers (ingest).
* :mod:`.plan` — keyed tasks and their batches (pure: no I/O, no Dask).
* :mod:`.store` — the store created or resumed, scenes' and stacks' arrays laid out, a replaced store
  swapped in.
* :mod:`.driver` — :func:`prelabel`: the workflow that drives them.
* :mod:`.report` — the typed run report (and fsck's).
* :mod:`.fsck` — :func:`fsck`: receipts against outputs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segpipe.kernels.prelabel.scene import SCENE_LABEL_CHUNK
    from segpipe.kernels.prelabel.tasks import BLOCK, SLAB, PrelabelTask, slice_id
    from segpipe.models.ref import ModelRef
    from segpipe.pipeline.prelabel.config import check_tiling, config_hash
    from segpipe.pipeline.prelabel.driver import prelabel, run_prelabel
    from segpipe.pipeline.prelabel.fsck import check_store, fsck, read_runs
    from segpipe.pipeline.prelabel.plan import (
        BATCH_IMAGES,
        BATCH_PIXELS,
        batch_key,
        batch_tasks,
        plan_tasks,
        task_key,
    )
    from segpipe.pipeline.prelabel.report import FsckReport, PrelabelReport
    from segpipe.pipeline.prelabel.request import PrelabelRequest
    from segpipe.pipeline.prelabel.source import SourceListing, estimate_prelabel_s, ingest, list_source
    from segpipe.pipeline.prelabel.store import prepare_store

#: Public name → the module that defines it, imported on first use (PEP 562): a command loads only what
#: it runs (``segpipe fsck`` neither the kernels nor the driver; a request, nothing else).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("SCENE_LABEL_CHUNK",), "segpipe.kernels.prelabel.scene"),
    **dict.fromkeys(("BLOCK", "SLAB", "PrelabelTask", "slice_id"), "segpipe.kernels.prelabel.tasks"),
    "ModelRef": "segpipe.models.ref",
    **dict.fromkeys(("check_tiling", "config_hash"), "segpipe.pipeline.prelabel.config"),
    **dict.fromkeys(("prelabel", "run_prelabel"), "segpipe.pipeline.prelabel.driver"),
    **dict.fromkeys(("check_store", "fsck", "read_runs"), "segpipe.pipeline.prelabel.fsck"),
    **dict.fromkeys(("BATCH_IMAGES", "BATCH_PIXELS", "batch_key", "batch_tasks", "plan_tasks", "task_key"),
                    "segpipe.pipeline.prelabel.plan"),
    **dict.fromkeys(("FsckReport", "PrelabelReport"), "segpipe.pipeline.prelabel.report"),
    "PrelabelRequest": "segpipe.pipeline.prelabel.request",
    **dict.fromkeys(("SourceListing", "estimate_prelabel_s", "ingest", "list_source"),
                    "segpipe.pipeline.prelabel.source"),
    "prepare_store": "segpipe.pipeline.prelabel.store",
}

__all__ = [
    "BATCH_IMAGES",
    "BATCH_PIXELS",
    "BLOCK",
    "SCENE_LABEL_CHUNK",
    "SLAB",
    "FsckReport",
    "ModelRef",
    "PrelabelReport",
    "PrelabelRequest",
    "PrelabelTask",
    "SourceListing",
    "batch_key",
    "batch_tasks",
    "check_store",
    "check_tiling",
    "config_hash",
    "estimate_prelabel_s",
    "fsck",
    "ingest",
    "list_source",
    "plan_tasks",
    "prelabel",
    "prepare_store",
    "read_runs",
    "run_prelabel",
    "slice_id",
    "task_key",
]


def __getattr__(name: str) -> Any:
    """Loads a public name from its module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
