"""Per-worker resources: built once per worker process from a small setup record, found by the tasks.

A model is never pickled into task closures. The driver sends a *setup* (any picklable object with a
``build()`` method, e.g. :class:`~segpipe.kernels.prelabel.resources.PredictorSetup`: a model reference
and options); :class:`~segpipe.execution.worker_plugin.ResourcePlugin` builds the resources from it on
each worker (also on a worker that the nanny restarted after a crash), and
:func:`~segpipe.execution.resources.provide_resources` registers it for the duration of a run. A task
function that takes the resources as its first argument is submitted wrapped in
:class:`WithResources`, which hands them over on the worker. In-process runs build them once in this
process (:func:`local_resources`).

This module does not import distributed (0.7 s), which an in-process run never needs.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

PLUGIN_NAME = "segpipe-predictor"
#: zarr's async concurrency in a process that runs tasks (total I/O ≈ its threads × this).
ZARR_CONCURRENCY = 4

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
P = ParamSpec("P")
T = TypeVar("T")


class ResourceSetup(Protocol[R_co]):
    """How a worker builds its resources: small and picklable (it travels to every worker)."""

    def build(self) -> R_co:
        """Builds the resources (on the worker)."""
        ...


def configure_worker(zarr_concurrency: int = ZARR_CONCURRENCY) -> None:
    """Caps zarr's async concurrency in this process (a worker, or the driver of an in-process run)."""
    import zarr  # lazy: zarr costs ~0.5 s to import; a driver that plans imports this module first

    zarr.config.set({"async.concurrency": zarr_concurrency})


#: distributed's nannies start every worker with ``MALLOC_TRIM_THRESHOLD_`` set to this
#: (``distributed.nanny.pre-spawn-environ`` in distributed.yaml).
NANNY_TRIM_THRESHOLD = 65536
#: glibc's own ceiling for its dynamic mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``), and
#: the trim threshold glibc pairs with it (twice the mmap threshold): where a process that frees large
#: buffers settles when nothing is set.
GLIBC_MMAP_THRESHOLD = 32 * 2**20
GLIBC_TRIM_THRESHOLD = 2 * GLIBC_MMAP_THRESHOLD
#: mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def restore_malloc_thresholds(nanny_value: object = NANNY_TRIM_THRESHOLD) -> bool:
    """Gives this process glibc's default allocation behaviour back when a nanny started it with its trim setting.

    distributed's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes
    back to the OS at once and a worker's RSS tracks what it holds (its memory limit acts on RSS). Any
    value set at all, by the variable or by ``mallopt``, also switches glibc's *dynamic* mmap threshold
    off for good: every buffer above 128 KiB (each torch activation, each decoded image) is then a
    fresh ``mmap`` that page-faults on every forward pass. Inference measured 2× slower in such a
    worker than in-process; a 1 MiB numpy buffer costs 257 page faults and 1.2 ms instead of none and
    0.04 ms. Setting ``M_TRIM_THRESHOLD`` back to 128 KiB does not undo it (the dynamic threshold stays
    off: measured, 257 faults); setting both thresholds to where glibc's dynamic scheme settles does
    (0 faults). A worker then keeps up to :data:`GLIBC_TRIM_THRESHOLD` of freed memory per heap, as
    any process does by default. The embedded cluster never sets the variable
    (:func:`~segpipe.execution.cluster.open_client`); this covers a user's ``dask worker``.

    Args:
        nanny_value: The value the nanny sets (the worker's dask config); a different value in the
            environment is the user's own choice and is kept.

    Returns:
        True when the thresholds were set here; False when the environment does not carry the nanny's
        value, or the C library is not glibc.
    """
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if value is None or nanny_value is None or value.strip() != str(nanny_value).strip():
        return False
    if platform.libc_ver()[0] != "glibc":  # musl's and macOS's allocators ignore the variable
        return False
    libc = ctypes.CDLL(None)
    # the mmap threshold first: each call switches the dynamic scheme off, which it already is
    ok = libc.mallopt(_M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD) == 1
    return bool(ok and libc.mallopt(_M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD) == 1)


#: The resources of in-process runs (``--workers 0``): ``[setup, resources]`` of the last one built.
_LOCAL: list[Any] = []


def local_resources(setup: ResourceSetup[R]) -> R:
    """The resources ``setup`` builds, built once in this process (again when the setup changes)."""
    if not _LOCAL or _LOCAL[0] != setup:
        _LOCAL.clear()
        configure_worker()
        _LOCAL.extend([setup, setup.build()])
    resources: R = _LOCAL[1]
    return resources


def worker_resources(setup: ResourceSetup[R]) -> R:
    """The resources of the worker this task runs on (or of this process for in-process runs).

    Raises:
        RuntimeError: on a Dask worker without the plugin (the run did not provide it).
    """
    # Not on a worker unless distributed is loaded: an in-process run never imports it (0.7 s).
    dist = sys.modules.get("distributed")
    try:
        w = dist.get_worker() if dist is not None else None
    except ValueError:
        w = None
    if w is None:
        return local_resources(setup)
    plugin: Any = w.plugins.get(PLUGIN_NAME)
    if plugin is None:
        raise RuntimeError("segpipe resource plugin is not registered on this worker")
    if plugin.resources is None:
        plugin.setup(w)
    resources: R = plugin.resources
    return resources


@dataclass(frozen=True)
class WithResources(Generic[R, P, T]):
    """A task function that receives its worker's resources first; submitted as ``fn(*args)``.

    Attributes:
        fn: A picklable top-level function ``fn(resources, *args)``.
        setup: What the resources are built from (in this process, when no plugin holds them).
    """

    fn: Callable[Concatenate[R, P], T]
    setup: ResourceSetup[R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs ``fn`` with the resources of the process it runs in."""
        return self.fn(worker_resources(self.setup), *args, **kwargs)


_FAST_EXIT = False


def install_fast_exit() -> None:
    """Makes this worker process skip Python's finalisation when it exits (workers of an embedded cluster).

    Unloading torch and torchvision's thousands of modules made every run's cluster shutdown take
    1.1 s on 2 cores; without it, 0.06 s (bench/RESULTS.md, session 5). When the process exits its
    worker has closed: its plugins are torn down (the decoder process is stopped), and every output
    and receipt was written (atomically and durably) before its task reported. Registered after the
    handlers of the libraries it imported, this one runs first: it flushes the standard streams and
    ends the process with status 0 (the nanny uses a worker's status for a log line only). Only the
    embedded cluster's workers, which segpipe owns, get it; the workers of a user's scheduler
    finalise as usual.
    """
    global _FAST_EXIT
    if _FAST_EXIT:
        return

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or broken stream: nothing left to save
                pass
        os._exit(0)

    atexit.register(leave)
    _FAST_EXIT = True
