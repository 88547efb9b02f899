"""Batched, tiled predictors for every task: the public entry point.

Use::

    pred = Predictor.from_checkpoint("best.ckpt", device="auto")
    out = pred.predict(image)                       # (H, W, 3) uint8, any size

``Predictor(model, meta, ...)`` and ``Predictor.from_checkpoint`` build the predictor of the model's
task; the code lives in :mod:`segpipe.models.predictors` (one tiler, one class per task). Images of
any size go through a sliding window (tile size and overlap from the checkpoint or the arguments;
the last tile is flush with the edge). What each task returns:

* ``semantic`` → :class:`SemanticPrediction`: ``labels (H, W)`` uint8 (uint16 above 256 classes) and
  ``probs (C, H, W) float16``. Probabilities are stored as float16 (documented choice): half the bytes
  of float32 and ~1e-3 precision, ample for soft labels, confidence maps and blending.
  ``predict_volume`` runs 3-D models on ``(Z, H, W)`` slabs.
* ``instance`` → :class:`InstancePrediction`: COCO RLE masks (``pycocotools.mask.encode``), ``boxes
  (K, 4) xyxy``, ``scores``, ``labels`` (model indices) and ``category_ids`` (dataset ids).
* ``panoptic`` → :class:`PanopticPrediction`: ``ids (H, W) int32`` + ``segments`` (one pass, untiled).
* ``landmarks`` → :class:`LandmarkPrediction`: ``heatmaps (K, H, W) float16`` + ``keypoints (K, 3)``
  ``(x, y, confidence)``.

**Streaming (the sink protocol).** Soft outputs are Gaussian-blended tile row by tile row into a band
buffer of ``tile_h × W × C``; as soon as no later tile touches a band of rows it is finalised and
written with ``label_sink[y0:y1] = labels_band`` (``(h, W)``) and ``prob_sink[:, y0:y1] = probs_band``
(``(C, h, W) float16``; heatmaps likewise). Any object with that ``__setitem__`` works: a numpy array, a
``np.memmap``, a zarr array of shape ``(H, W)`` / ``(C, H, W)``, or a writer of chunk-aligned regions.
Memory is ``O(tile_h × W × C)``, never ``O(H × W × C)``. The image itself may be any array-like
supporting ``image[y0:y1, x0:x1]`` (numpy, memmap, zarr, a lazy reader).

Instances cut by tile borders are merged: two detections of one class from different tiles whose
masks agree where both tiles saw the image are one object and are unioned; of what remains, one
whose mask IoU with a better detection of its class exceeds ``nms_iou`` is a duplicate and dropped
(:mod:`segpipe.models.predictors.merge`).
"""

from __future__ import annotations

from segpipe.models.predictors import (
    InstancePredictor,
    KeypointRCNNPredictor,
    LandmarkPredictor,
    PanopticPredictor,
    Predictor,
    SemanticPredictor,
    predictor_class,
    predictor_for,
    register_predictor,
)
from segpipe.models.predictors.base import model_dims, select_device
from segpipe.models.predictors.merge import crop_to_rle as _crop_to_rle
from segpipe.models.predictors.ops import argmax_channels as _argmax_channels
from segpipe.models.predictors.ops import labels_and_quantised_probs
from segpipe.models.predictors.results import (
    BandSink,
    InstancePrediction,
    LandmarkPrediction,
    PanopticPrediction,
    SemanticPrediction,
)

__all__ = [
    "BandSink",
    "InstancePrediction",
    "InstancePredictor",
    "KeypointRCNNPredictor",
    "LandmarkPrediction",
    "LandmarkPredictor",
    "PanopticPrediction",
    "PanopticPredictor",
    "Predictor",
    "SemanticPrediction",
    "SemanticPredictor",
    "_argmax_channels",
    "_crop_to_rle",
    "labels_and_quantised_probs",
    "model_dims",
    "predictor_class",
    "predictor_for",
    "register_predictor",
    "select_device",
]
