"""Predictors by task over one tiler.

* :mod:`.tiler`: tile grids (over :mod:`segpipe.core.tiles`), batches of tiles, weighted blending
  streamed in row bands, and 3-D windows.
* :mod:`.base`: :class:`Predictor`, the model on its device and its forward pass, and the factory:
  ``Predictor(model, meta)`` builds the predictor registered for ``meta.task``.
* One module per task: :mod:`.semantic`, :mod:`.instance` (with :mod:`.merge` for objects cut by
  tile borders), :mod:`.panoptic`, :mod:`.landmarks`.
* :mod:`.ops`: the tensor kernels they share; :mod:`.results`: what they return.

:mod:`segpipe.models.predict` is the public entry point and re-exports these names.

torch is imported inside the functions that use it, never at module level: importing a predictor
module (the CLI, planning code, a pipeline file check) must not pay for torch before a worker runs
a model.
"""

# Importing the task modules registers their predictors: Predictor(...) can build any of them as soon
# as this package is imported, whichever of its modules the caller named.
from segpipe.models.predictors.base import Predictor, predictor_class, predictor_for, register_predictor
from segpipe.models.predictors.instance import InstancePredictor
from segpipe.models.predictors.landmarks import KeypointRCNNPredictor, LandmarkPredictor
from segpipe.models.predictors.panoptic import PanopticPredictor
from segpipe.models.predictors.semantic import SemanticPredictor

__all__ = [
    "InstancePredictor",
    "KeypointRCNNPredictor",
    "LandmarkPredictor",
    "PanopticPredictor",
    "Predictor",
    "SemanticPredictor",
    "predictor_class",
    "predictor_for",
    "register_predictor",
]
