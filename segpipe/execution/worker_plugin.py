"""The Dask worker plugin that loads the predictor on each worker (imports distributed)."""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

from segpipe.execution.plugins import PLUGIN_NAME, build_state, install_fast_exit


class PredictorPlugin(WorkerPlugin):
    """Builds a predictor and an isolated decoder on each worker.

    Args:
        model_ref: A :class:`~segpipe.pipeline.prelabel.ModelRef` (small, picklable).
        options: Predictor keyword options (tile, overlap, batch, device ...).
        threads: Tasks each worker runs at once (a forward pass runs on one torch thread: see
            :data:`INFERENCE_THREADS`).
        zarr_concurrency: zarr's async concurrency inside the worker (total I/O ≈ threads × this).
    """

    name = PLUGIN_NAME
    # Not idempotent: registering another model under the same name must replace the loaded one (a
    # shared cluster runs several checkpoints one after another).
    idempotent = False

    def __init__(self, model_ref: Any, options: dict[str, Any], threads: int, zarr_concurrency: int = 4,
                 fast_exit: bool = False) -> None:
        self.model_ref = model_ref
        self.options = dict(options)
        self.threads = threads
        self.zarr_concurrency = zarr_concurrency
        self.fast_exit = fast_exit
        self.state: dict[str, Any] = {}

    def setup(self, worker: Any = None) -> None:
        """Loads the model (runs on the worker), and forgets array metadata cached by an earlier run."""
        from segpipe.storage.zarrfast import forget_metadata

        forget_metadata()
        self.state = build_state(self.model_ref, self.options, self.threads, self.zarr_concurrency)
        if self.fast_exit:
            install_fast_exit()

    def teardown(self, worker: Any = None) -> None:
        """Stops the decoder process."""
        dec = self.state.get("decoder")
        if dec is not None:
            dec.close()
