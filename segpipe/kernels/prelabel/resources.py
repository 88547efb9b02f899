"""What a pre-label worker holds for all its tasks: the predictor and the isolated image decoder.

A model is never pickled into tasks: the driver sends a :class:`PredictorSetup` (the model *reference*
and the predictor options, small), and each worker builds its :class:`PrelabelResources` from it once,
through the plugin of :mod:`segpipe.execution.plugins` (also on a worker that the nanny restarted after
a crash; in this process for in-process runs). Kernels receive the built resources as an argument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segpipe.models.devices import gpu_decode_enabled
from segpipe.models.ref import ModelRef
from segpipe.models.tta import TTASpec, averaged_predictor
from segpipe.storage.isolated import IsolatedDecoder

if TYPE_CHECKING:  # built on the workers (ModelRef.predictor): the driver never loads the predictors
    from segpipe.models.predict import Predictor

#: torch threads of one forward pass on the CPU. A worker runs as many tasks at once as it has
#: threads instead, each forward pass on one thread: torch's choice of convolution kernel depends on
#: its thread count (a 1×1 convolution runs on oneDNN with more than one thread, on its GEMM path with
#: one), and oneDNN's own results on it for some layers, so the probabilities a run stored used to
#: depend on ``--workers`` (workers × threads ≈ cores). See tests/prelabel/test_determinism.py.
INFERENCE_THREADS = 1
#: Tiles per forward pass on the CPU, whatever ``--batch`` says: a small input runs on oneDNN only in
#: a batch of more than one, and oneDNN picks other kernels by batch size, so a tile's result
#: depended on how many tiles shared its pass (a row's last batch is short). ``--batch`` still sets
#: the tiles per pass on a GPU, where batching is what makes it fast.
CPU_TILES_PER_PASS = 1


@dataclass(frozen=True)
class PredictorOptions:
    """The predictor's keyword options (:class:`~segpipe.models.predict.Predictor`).

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` ...
        batch_size: Tiles per forward pass on a GPU (``--batch``).
        tile: Tile side (None: the checkpoint's).
        overlap: Tile overlap fraction (None: the checkpoint's).
        score_thresh: Instance models only: detections below it are dropped (``--min-score``).
        precision: ``--precision`` (:func:`~segpipe.models.devices.autocast_dtype`).
        gpu_decode: ``--gpu-decode`` (:func:`~segpipe.models.devices.gpu_decode_enabled`).
        tta: Test-time views averaged (``--tta``), or None.
        ensemble: More models whose probabilities are averaged with the run's model (``--ensemble``).
    """

    device: str = "auto"
    batch_size: int = 4
    tile: int | None = None
    overlap: float | None = None
    score_thresh: float | None = None
    precision: str = "auto"
    gpu_decode: str = "auto"
    tta: TTASpec | None = None
    ensemble: tuple[ModelRef, ...] = ()

    def kwargs(self) -> dict[str, Any]:
        """The options as the predictor takes them."""
        kw: dict[str, Any] = {"device": self.device, "batch_size": self.batch_size, "tile": self.tile,
                              "overlap": self.overlap, "precision": self.precision}
        if self.score_thresh is not None:
            kw["score_thresh"] = self.score_thresh
        return kw


@dataclass
class PrelabelResources:
    """A worker's predictor and isolated decoder, shared by every task it runs.

    Attributes:
        predictor: The model, ready to predict (its forward passes on :data:`INFERENCE_THREADS`).
        decoder: Decodes images in a child process (a malformed file cannot crash the worker).
        gpu_decode: JPEGs are decoded on the predictor's CUDA device (``--gpu-decode``), the decoder
            taking any file the GPU's refuses.
    """

    predictor: Predictor
    decoder: IsolatedDecoder
    gpu_decode: bool = False

    def close(self) -> None:
        """Stops the decoder process."""
        self.decoder.close()


@dataclass(frozen=True)
class PredictorSetup:
    """How a worker builds its :class:`PrelabelResources` (small and picklable: sent, not the model).

    Attributes:
        model: The model.
        options: The predictor's options.
    """

    model: ModelRef
    options: PredictorOptions

    def build(self) -> PrelabelResources:
        """Loads the model and starts the decoder (on the worker)."""
        # before torch is first imported here: its OpenMP pool starts at this size
        os.environ.setdefault("OMP_NUM_THREADS", str(INFERENCE_THREADS))
        kw = {"threads": INFERENCE_THREADS, **self.options.kwargs()}
        if self.options.tta is not None or self.options.ensemble:  # one model averaging every view and member
            predictor = averaged_predictor((self.model, *self.options.ensemble), self.options.tta, **kw)
        else:
            predictor = self.model.predictor(**kw)
        if not getattr(predictor, "cuda", False):
            predictor.batch_size = CPU_TILES_PER_PASS
        gpu_decode = gpu_decode_enabled(self.options.gpu_decode, predictor.device)
        if predictor.task == "semantic":
            # lazy: the doubt record's connected components (kernels/prelabel/doubt.py) need scipy.ndimage
            # (≈ 0.2 s to import): imported with the model, not on the clock of the first image written
            import scipy.ndimage  # noqa: F401
        return PrelabelResources(predictor, IsolatedDecoder(), gpu_decode=gpu_decode)
