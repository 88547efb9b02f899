"""Clusters: an embedded LocalCluster by default, any existing scheduler by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from segpipe.errors import ExecutionError


@dataclass(frozen=True)
class ClusterSpec:
    """How to get workers.

    Attributes:
        workers: Worker processes for an embedded cluster; None = one per core (at most 8);
            0 = run in this process without Dask (for debugging and tiny jobs).
        scheduler: Address of an existing scheduler (``tcp://host:8786``); overrides ``workers``.
        threads_per_worker: Threads per worker process.
        dashboard: Start the dashboard on an embedded cluster (a free port).
        memory_limit: Per-worker memory limit for an embedded cluster (``"4GiB"``, ``"auto"`` or 0).
    """

    workers: int | None = None
    scheduler: str | None = None
    threads_per_worker: int = 1
    dashboard: bool = False
    memory_limit: str | int = 0

    def n_workers(self) -> int:
        """Workers an embedded cluster would start."""
        if self.workers is not None:
            return self.workers
        return max(1, min(os.cpu_count() or 1, 8))


class InProcessClient:
    """A stand-in with the small part of ``distributed.Client``'s API the runner uses, running each
    task immediately in this process. Used for ``--workers 0``.
    """

    dashboard_link: str | None = None

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> _DoneFuture:
        """Runs ``fn(*args)`` now."""
        kwargs.pop("key", None)
        kwargs.pop("pure", None)
        try:
            return _DoneFuture(fn(*args, **kwargs), None)
        except BaseException as e:  # delivered through .result(), as Dask would
            return _DoneFuture(None, e)


class _DoneFuture:
    def __init__(self, value: Any, error: BaseException | None) -> None:
        self._value = value
        self._error = error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        return True


@contextmanager
def open_client(spec: ClusterSpec) -> Iterator[Any]:
    """Yields a ``distributed.Client`` (or an :class:`InProcessClient` for ``workers=0``).

    Raises:
        ExecutionError: the scheduler cannot be reached, or the local cluster cannot start.
    """
    if spec.scheduler is None and spec.workers == 0:
        yield InProcessClient()
        return
    from distributed import Client, LocalCluster

    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout="15s")
        except (OSError, TimeoutError) as e:
            raise ExecutionError(
                f"cannot reach the Dask scheduler at {spec.scheduler}: {e}",
                hint="start one with `dask scheduler` and `dask worker ADDRESS`, or omit --scheduler",
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    try:
        cluster = LocalCluster(
            n_workers=spec.n_workers(),
            threads_per_worker=spec.threads_per_worker,
            processes=True,
            dashboard_address=":0" if spec.dashboard else None,
            memory_limit=spec.memory_limit,
            silence_logs=logging.ERROR,
            worker_class="distributed.Nanny",
        )
    except Exception as e:  # report as one line: which resource failed
        raise ExecutionError(f"cannot start a local Dask cluster: {e}") from None
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
