"""The Dask worker plugin that builds a worker's resources once (imports distributed)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import dask.config
from distributed import WorkerPlugin

from segpipe.execution.plugins import (
    PLUGIN_NAME,
    ZARR_CONCURRENCY,
    ResourceSetup,
    configure_worker,
    install_fast_exit,
    restore_malloc_thresholds,
)
from segpipe.storage.zarrfast import forget_metadata


class ResourcePlugin(WorkerPlugin):
    """Builds the resources of ``setup`` on each worker (a predictor and an isolated decoder ...).

    Args:
        setup: What the resources are built from (small, picklable): e.g. a
            :class:`~segpipe.kernels.prelabel.resources.PredictorSetup`.
        zarr_concurrency: zarr's async concurrency inside the worker (total I/O ≈ threads × this).
        fast_exit: The worker skips Python's finalisation at exit
            (:func:`~segpipe.execution.plugins.install_fast_exit`): for the workers of an embedded cluster only.
    """

    name = PLUGIN_NAME
    # Not idempotent: registering another model under the same name must replace the loaded one (a
    # shared cluster runs several checkpoints one after another).
    idempotent = False

    def __init__(self, setup: ResourceSetup[Any], zarr_concurrency: int = ZARR_CONCURRENCY,
                 fast_exit: bool = False) -> None:
        self.recipe = setup
        self.zarr_concurrency = zarr_concurrency
        self.fast_exit = fast_exit
        self.resources: Any = None

    def setup(self, worker: Any = None) -> None:
        """Builds the resources on the worker, after applying segpipe's worker settings (:func:`tune_worker`).

        Array metadata cached by an earlier run is forgotten first.
        """
        forget_metadata()
        if worker is not None:
            tune_worker(worker)
        configure_worker(self.zarr_concurrency)
        self.resources = self.recipe.build()
        if self.fast_exit:
            install_fast_exit()

    def teardown(self, worker: Any = None) -> None:
        """Releases what the resources hold (stops the decoder process)."""
        close = getattr(self.resources, "close", None)
        if close is not None:
            close()


#: The worker's periodic callbacks of distributed's statistical profiler (``Worker.__init__``).
PROFILER_CALLBACKS = ("profile", "profile-cycle")
#: What :func:`tune_worker` did in this process (read back by :func:`worker_settings`).
_TUNED: dict[str, bool] = {}


def profiler_wanted() -> bool:
    """Whether the user asked for distributed's worker profiler (environment or a dask config file)."""
    if os.environ.get("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED") is not None:
        return True
    # what the user's files and environment say, without distributed's defaults
    profile = dask.config.collect().get("distributed", {}).get("worker", {}).get("profile", {})
    return isinstance(profile, dict) and "enabled" in profile


def tune_worker(worker: Any) -> None:
    """Applies the settings segpipe's tasks need to any Dask worker (an embedded cluster's or a user's).

    * The statistical profiler is stopped: it samples every task thread's stack every 10 ms, which
      took 4-5% of LR-ASPP's CPU inference time in a worker (bench/RESULTS.md). A user who set
      ``distributed.worker.profile.enabled`` (``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True`` or a
      dask config file) keeps it for the dashboard's profile page.
    * glibc's default allocation behaviour is restored when the nanny set distributed's
      ``MALLOC_TRIM_THRESHOLD_`` (:func:`~segpipe.execution.plugins.restore_malloc_thresholds`).

    Runs on the worker (the plugin's ``setup``); idempotent.

    Args:
        worker: The ``distributed.Worker`` of this process.
    """
    if not profiler_wanted():
        def stop() -> None:
            for name in PROFILER_CALLBACKS:
                pc = worker.periodic_callbacks.pop(name, None)
                if pc is not None:
                    pc.stop()

        try:
            on_loop = asyncio.get_running_loop() is worker.loop.asyncio_loop
        except RuntimeError:  # a task thread (the plugin built again by worker_resources)
            on_loop = False
        if on_loop:
            stop()
        else:  # tornado's callbacks belong to the event loop's thread
            worker.loop.add_callback(stop)
    if not _TUNED.get("malloc_restored"):
        nanny = dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_", default=None)
        _TUNED["malloc_restored"] = restore_malloc_thresholds(nanny)


def worker_settings(dask_worker: Any) -> dict[str, Any]:
    """The settings of a worker as :func:`tune_worker` left them: ``client.run(worker_settings)``.

    Args:
        dask_worker: The worker (``client.run`` passes it under this name).

    Returns:
        ``profiler``: names of the profiler's periodic callbacks still registered;
        ``MALLOC_TRIM_THRESHOLD_``: the environment's value (or None); ``malloc_restored``: whether the
        thresholds were set back here; ``plugin``: whether segpipe's plugin is registered.
    """
    return {
        "profiler": sorted(n for n in PROFILER_CALLBACKS if n in dask_worker.periodic_callbacks),
        "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "malloc_restored": bool(_TUNED.get("malloc_restored")),
        "plugin": PLUGIN_NAME in dask_worker.plugins,
    }
