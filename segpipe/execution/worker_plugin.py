"""The Dask worker plugin that builds a worker's resources once (imports distributed)."""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

from segpipe.execution.plugins import PLUGIN_NAME, ZARR_CONCURRENCY, ResourceSetup, configure_worker, install_fast_exit
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
        """Builds the resources (runs on the worker), and forgets array metadata cached by an earlier run."""
        forget_metadata()
        configure_worker(self.zarr_concurrency)
        self.resources = self.recipe.build()
        if self.fast_exit:
            install_fast_exit()

    def teardown(self, worker: Any = None) -> None:
        """Releases what the resources hold (stops the decoder process)."""
        close = getattr(self.resources, "close", None)
        if close is not None:
            close()
