"""Clusters: an embedded LocalCluster by default, any existing scheduler by address."""

from __future__ import annotations

import logging
import os
import re
import weakref
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


#: Log level of the embedded cluster's scheduler and workers. Their errors reach the user as one line
#: each through the runner (a task's exception, a plugin that failed to load the model); distributed
#: would also print them with tracebacks. ``segpipe --verbose`` lowers it to ERROR.
WORKER_LOG_LEVEL = logging.CRITICAL

_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|ucx)://[^\s/:]+(:\d{1,5})$")
CONNECT_TIMEOUT_S = 10.0


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """Connects a ``distributed.Client`` to an existing scheduler, with a hard deadline.

    The handshake runs in a helper thread: a service on that port that is not a Dask scheduler (a web
    server, the dashboard's port) can otherwise hang the handshake or send bytes that decode as an
    absurd frame size. Every failure becomes one :class:`ExecutionError` line.

    Raises:
        ExecutionError: a malformed address, nothing listening, not a scheduler, or no answer in time.
    """
    import queue
    import threading

    if not _ADDRESS.match(address):
        raise ExecutionError(f"not a scheduler address: {address!r}", hint="write it as tcp://HOST:PORT")
    hint = "start one with `dask scheduler` and `dask worker ADDRESS`, or omit --scheduler"

    box: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def attempt() -> None:
        try:
            from distributed import Client

            box.put((True, Client(address, timeout=f"{int(timeout)}s")))
        except BaseException as e:  # delivered to the caller below
            box.put((False, e))

    # A daemon thread: a handshake that never returns must not keep the process alive at exit.
    threading.Thread(target=attempt, name="segpipe-connect", daemon=True).start()
    try:
        ok, value = box.get(timeout=timeout + 2)
    except queue.Empty:
        raise ExecutionError(f"no Dask scheduler answered at {address} within {timeout:.0f} s", hint=hint) from None
    if ok:
        return value
    if isinstance(value, (OSError, TimeoutError)):
        raise ExecutionError(f"cannot reach the Dask scheduler at {address}: {value}", hint=hint)
    # garbage from a non-Dask service: MemoryError, ValueError, protocol errors
    raise ExecutionError(f"{address} did not answer as a Dask scheduler ({type(value).__name__})", hint=hint)


@contextmanager
def use_client(spec: ClusterSpec, client: Any = None) -> Iterator[Any]:
    """Yields ``client`` when one is given (left open), else opens one for ``spec`` (closed after).

    Lets a job of several steps (evaluate-checkpoints: decode ground truth, then pre-label and
    evaluate each checkpoint) run every step on one cluster instead of starting one per step.
    """
    if client is not None:
        yield client
        return
    with open_client(spec) as c:
        yield c


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
        client = connect(spec.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # distributed's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 so that they hand memory
    # back quickly. Setting it at all turns glibc's dynamic mmap threshold off, so every large torch
    # buffer is a fresh mmap that page-faults on each forward pass: inference measured 2× slower in a
    # worker than in-process. None unsets it (documented by distributed for this config key).
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    # The workers' statistical profiler samples every thread's stack every 10 ms: it took 4-5% of
    # LR-ASPP's CPU inference time in a worker (bench/RESULTS.md). Users who want the dashboard's
    # profile page can turn it back on with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True.
    if os.environ.get("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED") is None:
        dask.config.set({"distributed.worker.profile.enabled": False})
    try:
        cluster = LocalCluster(
            n_workers=spec.n_workers(),
            threads_per_worker=spec.threads_per_worker,
            processes=True,
            # a free port: two runs (or a user's own dashboard on 8787) never collide
            dashboard_address=":0",
            memory_limit=spec.memory_limit,
            silence_logs=WORKER_LOG_LEVEL,
            worker_class="distributed.Nanny",
        )
    except Exception as e:  # report as one line: which resource failed
        raise ExecutionError(f"cannot start a local Dask cluster: {e}") from None
    _OWNED.add(cluster)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


#: The local clusters :func:`open_client` started: their worker processes are segpipe's own.
_OWNED: weakref.WeakSet[Any] = weakref.WeakSet()


def owns_workers(client: Any) -> bool:
    """Whether ``client``'s workers are processes of a local cluster that segpipe started (not a user's)."""
    cluster = getattr(client, "cluster", None)
    return cluster is not None and cluster in _OWNED
