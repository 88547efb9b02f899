"""Options and helpers shared by several commands."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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
from segpipe.formats.splits import LAYOUT_TARGETS, layout_option  # noqa: F401 - re-exported for the commands

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


#: Largest ``--seed``: numpy and torch both take it (torch's seed derivations stay in 64 bits).
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
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
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
    import time

    t0 = time.perf_counter()
    with Progress(*columns, console=state.err_console, transient=False) as prog:
        task = prog.add_task(description, total=None, rate="", failed=0)

        def update(done: int, total: int, failed: int) -> None:
            dt = max(time.perf_counter() - t0, 1e-9)
            prog.update(task, completed=done, total=total or None, failed=failed, rate=f"{done / dt:,.1f}/s")

        yield update
