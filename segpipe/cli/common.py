"""Options, choices and helpers shared by the commands: one definition per option.

Every option that more than one command takes (``--workers``, ``--scheduler``, ``--on-error``,
``--task``, ``--images``, ``--overwrite`` ...) is defined here once, and each command uses that
definition, so the name, short flag, choices, parse-time check and help cannot drift apart.
Closed sets of values are ``str`` enums: ``--help`` lists them and click refuses anything else
before the command starts (exit 2, one line).

A command's parameters are named as its request's fields (:mod:`segpipe.pipeline.requests`), and
:func:`build_request` turns them into the request; ``tests/cli/test_requests.py`` checks that every
option and its default agree with the request (and so with pipeline files and the Python API).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer._click.globals import get_current_context

from segpipe.cli import state

# The caps live in the execution layer (the library API refuses the same); the CLI checks them at parse time.
from segpipe.execution.cluster import (
    THREADS_PER_CORE,
    WORKERS_PER_CORE,
    ClusterSpec,
    cores,
    max_threads,
    max_workers,
)

if TYPE_CHECKING:
    from segpipe.pipeline.requests import Request

R = TypeVar("R", bound="Request")

WORKERS_HELP = "Worker processes of the embedded Dask cluster (default: one per core; 0 = in this process)."
SCHEDULER_HELP = "Address of an existing Dask scheduler (tcp://HOST:PORT) to run on instead."


def _check_workers(value: int | None) -> int | None:
    if value is None:
        return None
    cap = max_workers()
    if not 0 <= value <= cap:
        raise typer.BadParameter(
            f"{value} is not in 0..{cap} (0 = in this process; at most {WORKERS_PER_CORE} per core of the "
            f"{cores()} here, within the open-files limit)")
    return value


def _check_threads(value: int | None) -> int | None:
    if value is None:
        return None
    cap = max_threads()
    if not 1 <= value <= cap:
        raise typer.BadParameter(f"{value} is not in 1..{cap} ({THREADS_PER_CORE} per core of the {cores()} here)")
    return value


def _check_fraction(value: float | None) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise typer.BadParameter(f"{value} is not a fraction of the tile in [0, 1), e.g. 0.25")
    return value


def _check_unit(value: float | None) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise typer.BadParameter(f"{value} is not a score in [0, 1]")
    return value


#: Largest ``--seed``: numpy and torch both take it (torch's seed derivations stay in 64 bits); the same
#: as :data:`segpipe.pipeline.requests.MAX_SEED` (checked by the tests: that module loads pydantic).
MAX_SEED = 2**32 - 1


def _check_seed(value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise typer.BadParameter(f"{value} is not in 0..{MAX_SEED}")
    return value


def seed_option(help: str = "Random seed.") -> Any:
    """The ``--seed`` option: 0 up to :data:`MAX_SEED` (numpy refuses a negative seed, torch a huge one)."""
    return typer.Option(0, "--seed", callback=_check_seed, help=help)


def _check_positive(value: float | None) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number > 0")
    return value


_DEVICE = re.compile(r"(auto|cpu|cuda)(:\d+)?")


def check_device(value: str) -> str:
    """Checks a ``--device`` value before anything starts: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    A CUDA device must exist here (torch is imported only to count them); a worker would otherwise
    fail with torch's own message after the cluster started.

    Raises:
        typer.BadParameter: a malformed name, or a CUDA device this machine does not have.
    """
    m = _DEVICE.fullmatch(value.strip().lower())
    if m is None or (m.group(2) and m.group(1) != "cuda"):
        raise typer.BadParameter(f"{value!r} is not auto, cpu, cuda or cuda:N")
    if m.group(1) == "cuda":
        # lazy: torch (~2 s) only to count the CUDA devices of a cuda:N
        from segpipe.models.devices import cuda_device_count

        n = cuda_device_count()
        index = int(m.group(2)[1:]) if m.group(2) else 0
        if index >= n:
            have = "no CUDA device" if n == 0 else f"CUDA devices 0..{n - 1}"
            raise typer.BadParameter(f"{value!r}: this machine has {have} (use auto or cpu)")
    return value.strip().lower()


def workers_option(default: int | None = None, help: str = WORKERS_HELP) -> Any:
    """The ``--workers`` option: 0 (in this process) up to :func:`max_workers`."""
    return typer.Option(default, "--workers", "-w", callback=_check_workers, help=help)


def threads_option(help: str = "torch threads per worker (at most 4 per core).") -> Any:
    """The ``--threads`` option: 1 up to :data:`THREADS_PER_CORE` × cores."""
    return typer.Option(None, "--threads", callback=_check_threads, help=help)


def overlap_option(help: str = "Tile overlap as a fraction of the tile, in [0, 1) (default: checkpoint's).") -> Any:
    """The ``--overlap`` option: a fraction of the tile in [0, 1)."""
    return typer.Option(None, "--overlap", callback=_check_fraction, help=help)


def score_option(default: float, help: str) -> Any:
    """The ``--min-score`` option: a finite score in [0, 1] (NaN would keep or drop everything silently)."""
    return typer.Option(default, "--min-score", callback=_check_unit, help=help)


def device_option(help: str = "auto | cpu | cuda | cuda:N (checked before anything starts).") -> Any:
    """The ``--device`` option, checked by :func:`check_device`."""
    return typer.Option("auto", "--device", callback=check_device, help=help)


def positive_float_option(default: float | None, *decls: str, help: str) -> Any:
    """A float option that must be finite and > 0 (``--lr``, ``--max-minutes``)."""
    return typer.Option(default, *decls, callback=_check_positive, help=help)


def scheduler_option() -> Any:
    """The ``--scheduler`` option."""
    return typer.Option(None, "--scheduler", help=SCHEDULER_HELP)


# ------------------------------------------------------------------------------------------ choices


class Task(str, Enum):
    """``--task``: what a model predicts, under one name in every command.

    ``landmarks`` is the name checkpoints, stores and ``segpipe models`` record. ``keypoints``, the
    name ``evaluate`` and ``evaluate-checkpoints`` took before, is accepted for it on every command
    (see :data:`TASK_ALIASES`); ``--help`` shows only the one name.
    """

    SEMANTIC = "semantic"
    INSTANCE = "instance"
    PANOPTIC = "panoptic"
    LANDMARKS = "landmarks"

    def evaluation_name(self) -> str:
        """The name the evaluation library and its reports use: landmarks are scored as COCO keypoints."""
        return "keypoints" if self is Task.LANDMARKS else self.value


#: Other names accepted for a task: the one ``evaluate`` used (COCO's ``iouType``).
TASK_ALIASES: dict[str, Task] = {"keypoints": Task.LANDMARKS}


def parse_task(value: str | Task) -> Task:
    """Reads a ``--task`` value: a :class:`Task` name or an alias from :data:`TASK_ALIASES`.

    Raises:
        typer.BadParameter: any other value (click names the option and exits 2).
    """
    if isinstance(value, Task):
        return value
    if value in TASK_ALIASES:
        return TASK_ALIASES[value]
    try:
        return Task(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(t.value for t in Task)}") from None


class OnError(str, Enum):
    """``--on-error``: what a command does with an item (image, sample) it cannot read."""

    SKIP = "skip"
    FAIL = "fail"


class ImagesMode(str, Enum):
    """``--images`` of convert and export: what happens to the source image files."""

    COPY = "copy"
    LINK = "link"
    NONE = "none"


class ImageCheck(str, Enum):
    """``--images`` of validate: how far each image file is checked."""

    VERIFY = "verify"
    DECODE = "decode"
    NONE = "none"


class Layout(str, Enum):
    """``--layout``: the folder layout of a COCO (split, single) or VOC (devkit, flat) target."""

    SPLIT = "split"
    SINGLE = "single"
    DEVKIT = "devkit"
    FLAT = "flat"


class Stretch(str, Enum):
    """``--stretch``: how a GeoTIFF scene's values become 8-bit model input."""

    AUTO = "auto"
    PERCENTILE = "percentile"
    MINMAX = "minmax"
    NONE = "none"


class MatchClasses(str, Enum):
    """``--match-classes``: how evaluate pairs the prediction's classes with the ground truth's."""

    ID = "id"
    NAME = "name"


class SynthFormat(str, Enum):
    """``--format`` of synth: the files a synthetic collection is written as."""

    PNG = "png"
    JPG = "jpg"
    GEOTIFF = "geotiff"
    NIFTI = "nifti"
    DICOM = "dicom"


def value_of(choice: Enum | None) -> Any:
    """``choice.value``, or ``None``: what the library requests take."""
    return None if choice is None else choice.value


# --------------------------------------------------------------------------- options of several commands


TASK_HELP = "What the model predicts."
FORMAT_HELP = "Format name (see `segpipe formats`), or auto to detect it."


def task_option(default: Task | None = Task.SEMANTIC, help: str = TASK_HELP) -> Any:
    """The ``--task`` / ``-t`` option: a :class:`Task`, aliases accepted (:func:`parse_task`)."""
    return typer.Option(default, "--task", "-t", parser=parse_task, help=help)


def on_error_option(default: OnError, help: str) -> Any:
    """The ``--on-error`` option: ``skip`` (report the item, go on, exit 1) or ``fail`` (stop at the first).

    The default differs by design and is shown in each command's ``--help``: ``convert`` writes a
    dataset that others train on, so by default it is complete or not written (``fail``, exit 2,
    nothing in DST); ``prelabel`` and ``evaluate`` record each failed image in their report and go
    on (``skip``, exit 1), and a pre-label run resumes.
    """
    return typer.Option(default, "--on-error", help=help)


def images_option(default: ImagesMode, help: str) -> Any:
    """The ``--images`` option of convert and export: :class:`ImagesMode`."""
    return typer.Option(default, "--images", help=help)


def format_option(*decls: str, help: str = FORMAT_HELP) -> Any:
    """A dataset-format option (``--from``, ``--gt-format``, ``--format``), ``auto`` by default.

    The names come from the format registry, which plugins extend, so they are checked by the
    library (one line listing the known names), not by a closed choice here.
    """
    return typer.Option("auto", *decls, help=help)


def to_option(help: str) -> Any:
    """The required ``--to`` option: the target format (checked against the registry by the library)."""
    return typer.Option(..., "--to", help=help)


def layout_option() -> Any:
    """The ``--layout`` option: :class:`Layout`; which target takes which is checked by the library."""
    return typer.Option(None, "--layout", help="coco: split (default: annotations/instances_<split>.json + "
                        "images/<split>/) or single (annotations.json); voc: devkit (default: VOCdevkit/VOC2012/, "
                        "JPEG images) or flat.")


def polygons_option(help: str) -> Any:
    """The ``--polygons/--rle`` switch: masks written as polygons or as exact RLE (the default)."""
    return typer.Option(False, "--polygons/--rle", help=help)


def overwrite_option(help: str) -> Any:
    """The ``--overwrite`` flag: replace an earlier segpipe output (never anything else)."""
    return typer.Option(False, "--overwrite", help=help)


def resume_option(help: str) -> Any:
    """The ``--resume`` flag."""
    return typer.Option(False, "--resume", help=help)


def image_root_option(help: str = "Folder holding the source images.") -> Any:
    """The ``--image-root`` option."""
    return typer.Option(None, "--image-root", help=help)


def categories_option(help: str) -> Any:
    """The ``--categories`` option: a category map or class-name file."""
    return typer.Option(None, "--categories", help=help)


def arch_option(help: str = "Architecture of a plain state-dict checkpoint (see `segpipe models`).") -> Any:
    """The optional ``--arch`` option (``train`` makes it required with :func:`required_arch_option`)."""
    return typer.Option(None, "--arch", help=help)


def required_arch_option(help: str) -> Any:
    """The required ``--arch`` option of ``train``."""
    return typer.Option(..., "--arch", help=help)


def json_option(help: str) -> Any:
    """The ``--json FILE`` option: also write the result as JSON."""
    return typer.Option(None, "--json", help=help)


def report_dir_option(default: Path | None, help: str) -> Any:
    """The ``--report-dir`` option."""
    return typer.Option(default, "--report-dir", help=help)


# Label Studio server options (push, pull) and pre-annotation options (convert, push).
TOKEN_HELP = "API token: a personal access token or a legacy token (default: $LABEL_STUDIO_API_KEY); never printed."


def url_option() -> Any:
    """The required ``--url`` of a Label Studio server."""
    return typer.Option(..., "--url", help="The Label Studio server, e.g. http://localhost:8080.")


def project_option(help: str) -> Any:
    """The required ``--project`` option: a Label Studio project id or title."""
    return typer.Option(..., "--project", help=help)


def token_option() -> Any:
    """The ``--token`` option, never shown (its default comes from the environment)."""
    return typer.Option(None, "--token", help=TOKEN_HELP, show_default=False)


def image_url_prefix_option(help: str) -> Any:
    """The ``--image-url-prefix`` option of Label Studio pre-annotations."""
    return typer.Option(None, "--image-url-prefix", help=help)


def model_version_option(help: str) -> Any:
    """The ``--model-version`` option of Label Studio pre-annotations."""
    return typer.Option(None, "--model-version", help=help)


def build_request(model: type[R], params: Mapping[str, Any]) -> R:
    """The running command's request from its parameters (``locals()`` at the top of the command).

    Parameters that are no field of ``model`` (``workers``, ``scheduler``) are left out; enum choices
    become their values. A value the request refuses is a usage error naming the option, as click's
    own are (``invalid value for --size: 'axb' is not HxW ... (see `segpipe synth --help`)``), raised
    before anything runs.

    Raises:
        typer.BadParameter: the first value the request refuses.
    """
    # lazy: pydantic and the request models load when a command runs, not for `segpipe --help`
    from segpipe.pipeline.requests import RequestError

    data = {k: value_of(v) if isinstance(v, Enum) else v for k, v in params.items() if k in model.model_fields}
    try:
        return model.parse(data)
    except RequestError as e:
        raise typer.BadParameter(e.message, param_hint=_option_name(e.field)) from e


def _option_name(param: str) -> str:
    """How ``--help`` names the running command's parameter ``param``: its long option, or an argument's metavar."""
    ctx = get_current_context(silent=True)
    for p in getattr(ctx.command, "params", []) if ctx is not None else []:
        if p.name == param:
            if getattr(p, "param_type_name", "") == "argument":
                return str(p.metavar or p.name).upper()
            return next((o for o in p.opts if o.startswith("--")), p.opts[0])
    return f"--{param.replace('_', '-')}"


def cluster_spec(workers: int | None, scheduler: str | None) -> ClusterSpec:
    """Builds the cluster spec from the common options."""
    return ClusterSpec(workers=workers, scheduler=scheduler)


@contextmanager
def progress_bar(description: str, unit: str = "images") -> Iterator[Callable[[int, int, int], None]]:
    """A rich progress bar (rate, ETA, done/failed) on stderr; yields ``update(done, total, failed)``."""
    if not state.show_progress():
        yield lambda done, total, failed: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    t0 = time.perf_counter()
    prog = Progress(*columns, console=state.err_console, transient=False)
    tasks: list[TaskID] = []

    def update(done: int, total: int, failed: int) -> None:
        # The bar starts with the first report of work: an input refused before any (a bad option, an
        # output that overlaps an input) stays one error line, with no empty bar drawn above it.
        if not tasks:
            prog.start()
            tasks.append(prog.add_task(description, total=None, rate="", failed=0))
        dt = max(time.perf_counter() - t0, 1e-9)
        prog.update(tasks[0], completed=done, total=total or None, failed=failed, rate=f"{done / dt:,.1f}/s")

    try:
        yield update
    finally:
        if tasks:
            prog.stop()
