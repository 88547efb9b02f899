"""Options and helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
from segpipe.execution.cluster import ClusterSpec

WORKERS_HELP = "Worker processes of the embedded Dask cluster (default: one per core; 0 = in this process)."
SCHEDULER_HELP = "Address of an existing Dask scheduler (tcp://HOST:PORT) to run on instead."


def workers_option() -> int | None:
    """The ``--workers`` option."""
    return typer.Option(None, "--workers", "-w", min=0, help=WORKERS_HELP)  # type: ignore[no-any-return]


def scheduler_option() -> str | None:
    """The ``--scheduler`` option."""
    return typer.Option(None, "--scheduler", help=SCHEDULER_HELP)  # type: ignore[no-any-return]


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
