"""The Python API: each command as a function, ``import segpipe; segpipe.convert(...)`` (docs/api.md).

Each function takes the command's request (:mod:`segpipe.pipeline.requests`): its positional
arguments as on the command line (``segpipe.convert("coco.json", "voc", to="voc")``), every option as
a keyword named as in pipeline files (``on_error="skip"``, ``image_root=...``; ``from_`` for
``--from``), or a request object (``segpipe.convert(ConvertRequest(...))``). The same defaults as
the command line, the same checks, and the same one-line errors: a bad value raises
:class:`segpipe.errors.ConfigError` naming the field (``n: 0 is not >= 1``).

How to run is apart from what to run: ``workers`` (0 = in this process) and ``scheduler`` (an
existing Dask cluster) where the command runs on Dask, ``progress`` / ``log`` callbacks where it
reports progress.

The command line calls these same functions (``segpipe/cli/commands/``). ``import segpipe`` loads
none of this until a function is used, and each function loads only its own workflow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from segpipe.errors import ConfigError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline import run as runner
from segpipe.pipeline import validate as validation
from segpipe.pipeline import workflows
from segpipe.pipeline.convert import convert as run_convert
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
    Request,
    RunRequest,
    SynthRequest,
    TrainRequest,
    ValidateRequest,
    ViewRequest,
)
from segpipe.pipeline.specs import ConversionReport, ValidationReport

if TYPE_CHECKING:
    from segpipe.integrations.labelstudio.sync import PullReport, PushReport
    from segpipe.models.train import TrainResult
    from segpipe.pipeline.demo import DemoResult
    from segpipe.pipeline.eval_specs import EvaluationReport, Leaderboard
    from segpipe.pipeline.prelabel.report import FsckReport, PrelabelReport
    from segpipe.synth import SynthResult

R = TypeVar("R", bound=Request)
Progress = Callable[[int, int, int], None]
Log = Callable[[str], None]

__all__ = [
    "convert", "demo", "evaluate", "evaluate_checkpoints", "export", "fsck", "ingest", "prelabel", "pull", "push",
    "run", "synthesize", "train", "validate", "view_report",
]


def request(model: type[R], args: tuple[Any, ...], fields: dict[str, Any]) -> R:
    """The request of a call: a ``model`` instance given first (``fields`` override it), or built from the values.

    Raises:
        ConfigError: a value the request refuses, naming the field.
    """
    if args and isinstance(args[0], model):
        if len(args) > 1:
            raise ConfigError(f"a {model.__name__} is given: the rest goes by keyword")
        if not fields:
            return args[0]
        names = model.keys()  # an override by key (json=) or by name (json_out=) replaces the same field
        return model.parse({**args[0].model_dump(), **{names.get(k, k): v for k, v in fields.items()}})
    return model.build(*args, **fields)


def _cluster(workers: int | None, scheduler: str | None) -> ClusterSpec:
    return ClusterSpec(workers=workers, scheduler=scheduler)


def synthesize(*args: Any, **fields: Any) -> SynthResult:
    """``segpipe synth KIND OUT``: a synthetic collection with exact ground truth (fields: :class:`SynthRequest`).

    Named ``synthesize`` because ``segpipe.synth`` is the package that draws the data.
    """
    return workflows.synthesize(request(SynthRequest, args, fields))


def train(*args: Any, progress: bool = False, log: Log | None = None, **fields: Any) -> TrainResult:
    """``segpipe train DATASET --arch NAME --out DIR`` (fields: :class:`TrainRequest`).

    Args:
        *args: ``dataset``, or a :class:`TrainRequest`.
        progress: Show a progress bar on stderr.
        log: Receives one line per epoch.
        **fields: The request's other fields (``arch=``, ``out=``, ``epochs=`` ...).
    """
    return workflows.train(request(TrainRequest, args, fields), progress=progress, log=log)


def ingest(*args: Any, workers: int | None = None, scheduler: str | None = None, **fields: Any) -> int:
    """A collection's manifest (the ``ingest`` stage); returns its number of images (fields: :class:`IngestRequest`)."""
    return workflows.ingest(request(IngestRequest, args, fields), _cluster(workers, scheduler))


def prelabel(*args: Any, workers: int | None = None, scheduler: str | None = None, progress: Progress | None = None,
             log: Log | None = None, **fields: Any) -> PrelabelReport:
    """``segpipe prelabel SOURCE --model M --out STORE``: pre-labels into a Zarr store; returns the run report.

    Fields: :class:`PrelabelRequest`. ``progress(done, total, failed)`` counts tasks.

    Returns:
        The typed run report (``.images.done`` ...); ``.to_json()`` is the run file's JSON.
    """
    return workflows.prelabel(request(PrelabelRequest, args, fields), _cluster(workers, scheduler),
                              progress=progress, log=log)


def fsck(*args: Any, **fields: Any) -> FsckReport:
    """``segpipe fsck STORE``: checks a store's receipts against its outputs (fields: :class:`FsckRequest`).

    Returns:
        The typed findings (``.ok``, ``.bad``, ``.orphans`` ...); ``.model_dump(mode="json")`` is their JSON.
    """
    return workflows.fsck(request(FsckRequest, args, fields))


def export(*args: Any, workers: int | None = None, scheduler: str | None = None, progress: Progress | None = None,
           **fields: Any) -> ConversionReport:
    """``segpipe export STORE DST --to FORMAT``: a store's pre-labels as files (fields: :class:`ExportRequest`).

    Returns:
        The conversion report (also ``DST/conversion_report.json``).
    """
    return run_convert(request(ExportRequest, args, fields), _cluster(workers, scheduler), progress)


def convert(*args: Any, workers: int | None = None, scheduler: str | None = None, progress: Progress | None = None,
            **fields: Any) -> ConversionReport:
    """``segpipe convert SRC DST --to FORMAT``: a dataset in another format (fields: :class:`ConvertRequest`).

    Returns:
        The conversion report (also ``DST/conversion_report.json``): every loss, counted.
    """
    return run_convert(request(ConvertRequest, args, fields), _cluster(workers, scheduler), progress)


def evaluate(*args: Any, workers: int | None = None, scheduler: str | None = None, progress: Progress | None = None,
             **fields: Any) -> EvaluationReport:
    """``segpipe evaluate GT PRED``: mIoU, COCO AP, PQ or keypoint AP (fields: :class:`EvaluateRequest`).

    Returns:
        The typed report (``.semantic.mean_iou`` ...); ``.to_json()`` is the JSON ``--json`` writes.
    """
    return workflows.evaluate(request(EvaluateRequest, args, fields), _cluster(workers, scheduler),
                              progress=progress)


def evaluate_checkpoints(*args: Any, workers: int | None = None, scheduler: str | None = None, log: Log = print,
                         **fields: Any) -> Leaderboard:
    """``segpipe evaluate-checkpoints GT CKPT...``: the leaderboard (fields: :class:`EvaluateCheckpointsRequest`).

    Returns:
        The typed leaderboard (``.best``, ``.rows`` ...); ``.to_json()`` is ``leaderboard.json``.
    """
    return workflows.evaluate_checkpoints(request(EvaluateCheckpointsRequest, args, fields),
                                          _cluster(workers, scheduler), log=log)


def validate(*args: Any, **fields: Any) -> ValidationReport:
    """``segpipe validate PATH``: every problem of a dataset or a pipeline file (fields: :class:`ValidateRequest`)."""
    return validation.validate(request(ValidateRequest, args, fields))


def view_report(*args: Any, workers: int | None = None, scheduler: str | None = None,
                progress: Progress | None = None, **fields: Any) -> dict[str, Any]:
    """``segpipe view SOURCE --out REPORT``: a self-contained HTML report (fields: :class:`ViewRequest`).

    Named ``view_report`` because ``segpipe.view`` is the package that renders it. Returns a summary:
    ``index`` (the page), ``images``, ``items``, ``failed``, ``problems``, ``pages``, ``elapsed_s``.
    """
    # lazy: rendering imports numpy, Pillow and the format registry
    from segpipe.pipeline.view import view

    return view(request(ViewRequest, args, fields), _cluster(workers, scheduler), progress)


def push(*args: Any, progress: Progress | None = None, log: Log | None = None, **fields: Any) -> PushReport:
    """``segpipe push labelstudio STORE --url URL --project P``: pre-labels into Label Studio (:class:`PushRequest`)."""
    # lazy: the Label Studio client (and zarr, to read the store) only for a push
    from segpipe.integrations.labelstudio import connect
    from segpipe.integrations.labelstudio.sync import push as send

    req = request(PushRequest, args, fields)
    client = connect(req.url, req.token.get_secret_value() if req.token else None)
    return send(req.store, client, req.project, batch_size=req.batch, image_url_prefix=req.image_url_prefix,
                model_version=req.model_version, resend=req.resend, progress=progress, log=log)


def pull(*args: Any, **fields: Any) -> PullReport:
    """``segpipe pull labelstudio OUT --url URL --project P``: a project's annotations (:class:`PullRequest`)."""
    # lazy: the Label Studio client only for a pull
    from segpipe.integrations.labelstudio import connect
    from segpipe.integrations.labelstudio.sync import pull as fetch

    req = request(PullRequest, args, fields)
    client = connect(req.url, req.token.get_secret_value() if req.token else None)
    return fetch(client, req.project, req.out, overwrite=req.overwrite)


def demo(*args: Any, workers: int | None = 2, scheduler: str | None = None, log: Log = print,
         **fields: Any) -> DemoResult:
    """``segpipe demo``: the quickstart end to end on generated data (fields: :class:`DemoRequest`)."""
    return workflows.demo(request(DemoRequest, args, fields), _cluster(workers, scheduler), log=log)


def run(*args: Any, log: Log = print, **fields: Any) -> list[dict[str, Any]]:
    """``segpipe run PIPELINE.yaml``: a pipeline file's stages; one summary per stage (fields: :class:`RunRequest`)."""
    return runner.run(request(RunRequest, args, fields), log=log)
