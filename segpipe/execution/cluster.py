"""Clusters: an embedded LocalCluster by default, any existing scheduler by address."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from segpipe.errors import ConfigError, ExecutionError
from segpipe.execution.gpus import GPU_RESOURCE, parse_gpus, plan_workers, visible_gpus, worker_specs

_resource: ModuleType | None
try:
    import resource as _resource
except ImportError:  # pragma: no cover - no resource module (Windows)
    _resource = None

#: Worker processes per core above which an embedded cluster is refused: more only thrash.
WORKERS_PER_CORE = 4
#: Threads per worker (task threads, or torch threads) per core above which a request is capped:
#: torch's OpenMP pool segfaulted when asked for 100000.
THREADS_PER_CORE = 4
#: File descriptors the driver holds per embedded worker: measured 9 (24, 51 and 87 more open files
#: with 1, 4 and 8 workers: nanny and worker sockets, pipes), with margin. ``--workers 10000`` died of
#: "Too many open files" once the cluster had started.
FDS_PER_WORKER = 16
#: File descriptors kept for the driver's own files and sockets.
FDS_RESERVED = 64


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS has no affinity
        return max(1, os.cpu_count() or 1)


def open_files_limit() -> int | None:
    """This process's soft limit on open files, or None when there is none (or no way to know)."""
    if _resource is None:  # pragma: no cover - Windows
        return None
    try:
        soft = _resource.getrlimit(_resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # pragma: no cover - no limit to read
        return None
    return None if soft == _resource.RLIM_INFINITY else int(soft)


def max_workers() -> int:
    """The most worker processes an embedded cluster may start here.

    :data:`WORKERS_PER_CORE` × cores, and no more than the open-files limit leaves room for
    (:data:`FDS_PER_WORKER` each after :data:`FDS_RESERVED`); at least 1.
    """
    cap = WORKERS_PER_CORE * cores()
    limit = open_files_limit()
    if limit is not None:
        cap = min(cap, (limit - FDS_RESERVED) // FDS_PER_WORKER)
    return max(1, cap)


def max_threads() -> int:
    """The most threads per worker used here: :data:`THREADS_PER_CORE` × cores."""
    return THREADS_PER_CORE * cores()


@dataclass(frozen=True)
class ClusterSpec:
    """How to get workers.

    Checked when made, so that the library refuses what the CLI refuses: ``workers`` below 0, or above
    :func:`max_workers` for an embedded cluster, is a :class:`~segpipe.errors.ConfigError` naming
    ``--workers``; ``threads_per_worker`` below 1 likewise (``--threads``), and above
    :func:`max_threads` it is capped there.

    Attributes:
        workers: Worker processes for an embedded cluster; None = one per core (at most 8);
            0 = run in this process without Dask (for debugging and tiny jobs).
        scheduler: Address of an existing scheduler (``tcp://host:8786``); overrides ``workers``.
        threads_per_worker: Threads per worker process (tasks it runs at once); with ``workers=0``,
            tasks run at once in this process.
        dashboard: Start the dashboard on an embedded cluster (a free port).
        memory_limit: Per-worker memory limit for an embedded cluster (``"4GiB"``, ``"auto"`` or 0).
        gpus: GPUs (``CUDA_VISIBLE_DEVICES`` names) for an embedded cluster of model work: one worker
            per GPU, pinned to it (:mod:`segpipe.execution.gpus`); empty = CPU workers. Set by
            :meth:`for_model`, never for work without a model.

    Raises:
        ConfigError: ``workers`` or ``threads_per_worker`` out of range.
    """

    workers: int | None = None
    scheduler: str | None = None
    threads_per_worker: int = 1
    dashboard: bool = False
    memory_limit: str | int = 0
    gpus: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.workers is not None:
            check_workers(self.workers, embedded=self.scheduler is None)
        # frozen: the capped value is set the way dataclasses set fields
        object.__setattr__(self, "threads_per_worker", cap_threads(self.threads_per_worker))

    def n_workers(self) -> int:
        """Workers an embedded cluster would start."""
        if self.gpus and self.scheduler is None and self.workers != 0:
            return len(self.gpus)
        if self.workers is not None:
            return self.workers
        return max(1, min(cores(), 8))

    def for_model(self, device: str, gpus: str | None = None, *,
                  environ: dict[str, str] | None = None) -> ClusterSpec:
        """This spec for model work on ``device``: GPU workers where the machine has GPUs.

        An embedded cluster gets one worker per GPU (``gpus``, e.g. ``"0,2"``, picks some) unless the
        device is ``cpu``, the user asked for a number of workers, or the job runs in this process
        (``--workers 0``: it uses the process's own device). A user's scheduler keeps its workers.

        Raises:
            ConfigError: ``gpus`` names a GPU this machine does not show, or is given with ``--device cpu``.
        """
        if gpus is not None and device == "cpu":
            raise ConfigError("--gpus with --device cpu: pick one (the GPUs, or the CPU)")
        if self.scheduler is not None or self.workers == 0 or device == "cpu":
            return self
        visible = visible_gpus(environ)
        chosen = parse_gpus(gpus, visible) if gpus is not None else visible
        if not chosen or (self.workers is not None and gpus is None):
            return self
        # --gpus given: exactly those workers (like --workers); found: right-sized like the CPU workers
        return dataclasses.replace(self, gpus=tuple(chosen), workers=len(chosen) if gpus is not None else None)

    def worker_threads(self, requested: int | None = None) -> int:
        """Threads per worker for a job: ``requested`` (capped), else the cores left to each worker.

        Workers × threads ≈ cores by default (``workers=0`` and a scheduler's address count as one
        worker here).
        """
        if requested is not None:
            return cap_threads(requested)
        n = self.n_workers() if not self.scheduler and self.workers != 0 else 1
        return cap_threads(max(1, cores() // max(1, n)))


    def sized(self, estimate_s: float, *, threads: int | None = None) -> ClusterSpec:
        """This spec, or in-process when the user chose no workers and the job would not gain from them.

        An embedded cluster takes 3-7 s to start on 2 cores (its workers import torch and numpy), and
        more under load; a job that runs in less in this process would only wait for it (``segpipe
        evaluate`` of 1,500 COCO segm images: 14.3 s with a cluster, 7.1 s without). ``--workers N`` or
        ``--scheduler`` always get what they ask for.

        Args:
            estimate_s: The job's estimated time in this process, one thread (a rough, per-workflow
                figure: see :data:`IN_PROCESS_SECONDS`).
            threads: Tasks to run at once in this process (default: one per core); 1 for work whose
                tasks are not safe to run on threads of one process.

        Returns:
            ``workers=0`` with ``threads`` (a thread per core) when ``workers`` is unset, there is no
            scheduler and what a cluster of n workers would save, ``estimate_s`` x (n - 1) / n, is at
            most :data:`IN_PROCESS_SECONDS`; else this spec unchanged.
        """
        if self.workers is not None or self.scheduler is not None:
            return self
        # What a cluster of n workers saves is the parallel part's (n - 1)/n; it costs its start.
        n = max(1, self.n_workers())
        if estimate_s * (n - 1) / n > IN_PROCESS_SECONDS:
            return self
        # in this process a model runs on the process's own device (the first GPU, where there is one)
        return dataclasses.replace(self, workers=0, gpus=(),
                                   threads_per_worker=threads or max(self.threads_per_worker, cores()))

    def in_process(self) -> bool:
        """Whether jobs of this spec run in this process (no Dask)."""
        return self.scheduler is None and self.workers == 0


#: A job estimated to take at most this long in one process runs there when the user chose no worker
#: count (:meth:`ClusterSpec.sized`): about what starting the embedded cluster costs on 2 cores.
IN_PROCESS_SECONDS = 4.0


def check_workers(workers: int, *, embedded: bool = True) -> int:
    """``workers`` when an embedded cluster may start that many here (see :func:`max_workers`).

    Raises:
        ConfigError: below 0, or (``embedded``) above :func:`max_workers`.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"--workers must be 0 (in this process) or more, got {workers!r}")
    if embedded and workers > (cap := max_workers()):
        limit = open_files_limit()
        files = f", within the open-files limit of {limit}" if limit is not None else ""
        raise ConfigError(f"--workers {workers} is more than this machine takes: at most {cap} "
                          f"({WORKERS_PER_CORE} per core of the {cores()} here{files})")
    return workers


def cap_threads(threads: int) -> int:
    """``threads`` capped at :func:`max_threads`.

    Raises:
        ConfigError: not an integer of at least 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads must be 1 or more, got {threads!r}")
    return min(threads, max_threads())


class InProcessClient:
    """A stand-in with the small part of ``distributed.Client``'s API the runner uses, running each
    task immediately in this process. Used for ``--workers 0``.

    Args:
        threads: Tasks :func:`~segpipe.execution.runner.run_tasks` runs at once (on threads of this
            process), as a worker with that many threads would.
    """

    dashboard_link: str | None = None

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, threads)

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
    if not _ADDRESS.match(address):
        raise ExecutionError(f"not a scheduler address: {address!r}", hint="write it as tcp://HOST:PORT")
    hint = "start one with `dask scheduler` and `dask worker ADDRESS`, or omit --scheduler"

    box: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def attempt() -> None:
        try:
            from distributed import Client  # lazy: distributed costs 0.7 s; the CLI imports this module at start

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
        yield InProcessClient(spec.threads_per_worker)
        return
    # lazy: distributed and dask cost 0.7 s to import; the CLI imports this module at start
    from distributed import Client, LocalCluster

    if spec.scheduler:
        client = connect(spec.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask  # lazy: as distributed above

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
    # The scheduler runs in the driver, and its batched sends to each worker keep their last
    # `low-level-log-length` (1,000) messages for debugging: each holds a batch task's arguments (its
    # images' tasks and manifest entries), ≈ 10 MiB of the driver's memory at 100k images.
    if os.environ.get("DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH") is None:
        dask.config.set({"distributed.admin.low-level-log-length": 32})
    try:
        cluster = _gpu_cluster(spec) if spec.gpus else LocalCluster(
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


def _gpu_cluster(spec: ClusterSpec) -> Any:
    """An embedded cluster of one worker per GPU of ``spec.gpus``, each pinned to its GPU.

    dask-cuda's ``LocalCUDACluster`` where installed (it also sets each worker's CPU affinity to its
    GPU's NUMA node); else the same rotation as ``distributed.SpecCluster`` worker specs.
    """
    plan = plan_workers(0, spec.threads_per_worker, gpus=list(spec.gpus), cores=cores())
    try:
        from dask_cuda import LocalCUDACluster  # lazy: optional, and imports distributed (0.7 s)
    except ImportError:
        from distributed import Scheduler, SpecCluster  # lazy: distributed costs 0.7 s to import

        return SpecCluster(
            workers=worker_specs(plan, memory_limit=spec.memory_limit, silence_logs=WORKER_LOG_LEVEL),
            scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
            silence_logs=WORKER_LOG_LEVEL,
        )
    return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(spec.gpus), threads_per_worker=plan[0].nthreads,
                            dashboard_address=":0", memory_limit=spec.memory_limit,
                            resources={GPU_RESOURCE: 1}, silence_logs=WORKER_LOG_LEVEL)


#: The local clusters :func:`open_client` started: their worker processes are segpipe's own.
_OWNED: weakref.WeakSet[Any] = weakref.WeakSet()


def owns_workers(client: Any) -> bool:
    """Whether ``client``'s workers are processes of a local cluster that segpipe started (not a user's)."""
    cluster = getattr(client, "cluster", None)
    return cluster is not None and cluster in _OWNED


def worker_count(client: Any) -> int:
    """The workers ``client`` has now (a user's cluster may still be scaling up); 1 in this process."""
    if not hasattr(client, "scheduler_info"):
        return 1
    return len(client.scheduler_info().get("workers", ()))
