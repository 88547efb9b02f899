"""segpipe: batch annotation and dataset processing for image segmentation.

Every command is a function here too (docs/api.md)::

    import segpipe

    segpipe.synthesize("streetview", "data", n=8, size="64x128")
    report = segpipe.convert("data", "voc", to="voc", workers=0)
    print(report.losses.lossless, report["images"]["converted"])

The functions (:mod:`segpipe.api`) and the request models (:mod:`segpipe.pipeline.requests`) load on
first use, so ``import segpipe`` stays light (no pydantic, numpy, Dask or torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from segpipe.api import (
        convert,
        demo,
        evaluate,
        evaluate_checkpoints,
        export,
        fsck,
        ingest,
        prelabel,
        pull,
        push,
        run,
        synthesize,
        train,
        validate,
        view_report,
    )
    from segpipe.errors import ConfigError, SegpipeError
    from segpipe.pipeline.requests import (
        ConvertRequest,
        DemoRequest,
        EvaluateCheckpointsRequest,
        EvaluateRequest,
        ExportRequest,
        FsckRequest,
        IngestRequest,
        PrelabelRequest,
        PullRequest,
        PushRequest,
        RunRequest,
        SynthRequest,
        TrainRequest,
        ValidateRequest,
        ViewRequest,
    )

__all__ = [
    "ConfigError", "ConvertRequest", "DemoRequest", "EvaluateCheckpointsRequest", "EvaluateRequest", "ExportRequest",
    "FsckRequest", "IngestRequest", "PrelabelRequest", "PullRequest", "PushRequest", "RunRequest", "SegpipeError",
    "SynthRequest", "TrainRequest", "ValidateRequest", "ViewRequest", "__version__", "convert", "demo", "evaluate",
    "evaluate_checkpoints", "export", "fsck", "ingest", "prelabel", "pull", "push", "run", "synthesize", "train",
    "validate", "view_report",
]


def _home(name: str) -> str | None:
    """The module that defines the public ``name`` (imported on first use), or None."""
    if name in ("ConfigError", "SegpipeError"):
        return "segpipe.errors"
    if name.endswith("Request"):
        return "segpipe.pipeline.requests"
    return "segpipe.api" if name in __all__ and name[0].islower() and name != "__version__" else None


def __getattr__(name: str) -> Any:
    """Loads a public function or request model on first use (PEP 562)."""
    module = _home(name)
    if module is None or name not in __all__:
        raise AttributeError(f"module 'segpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
