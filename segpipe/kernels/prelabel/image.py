"""Predicting one 2-D image and writing its arrays into its group, one function per task."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segpipe.errors import ConfigError
from segpipe.kernels.prelabel.sinks import LabelSink, QuantSink, category_lut, digest_stream, label_void
from segpipe.kernels.prelabel.tasks import OutputSettings
from segpipe.storage.zarrstore import ZarrStore, dimension_names, quantise_probs

if TYPE_CHECKING:  # the driver imports the kernels to submit them: the predictors load on the workers
    from segpipe.models.predict import (
        InstancePredictor,
        LandmarkPredictor,
        PanopticPredictor,
        Predictor,
        SemanticPredictor,
    )

#: Images above this many pixels stream their outputs into the store band by band.
STREAM_PIXELS = 4096 * 4096

#: ``(array path → digest, seconds in the forward passes)``
Written = tuple[dict[str, str], float]


def predict_and_write(predictor: Predictor, image: np.ndarray, group: Any, store: ZarrStore,
                      outputs: OutputSettings) -> Written:
    """Predicts ``image`` and writes the outputs of the predictor's task into ``group``.

    Args:
        predictor: The model.
        image: ``(H, W, 3)`` uint8.
        group: The image's group (or a stacked image's pending slot).
        store: The store (label attributes, array writes).
        outputs: What to store.

    Returns:
        ``({array path: digest}, seconds in the forward passes)``.

    Raises:
        ConfigError: a task no pre-labeling writes.
    """
    write = _WRITERS.get(predictor.task)
    if write is None:
        raise ConfigError(f"unsupported task {predictor.task!r}")
    return write(predictor, image, group, store, outputs)


def _semantic(predictor: Any, image: np.ndarray, group: Any, store: ZarrStore, outputs: OutputSettings) -> Written:
    """Labels ``(H, W)`` as category ids, and probabilities ``(C, H, W)`` uint8 when asked for."""
    predictor = cast("SemanticPredictor", predictor)
    h, w = image.shape[:2]
    lut = category_lut(predictor)
    t = time.perf_counter()
    if h * w > STREAM_PIXELS:  # stream bands into chunked arrays: memory independent of image size
        return _semantic_streamed(predictor, image, group, store, outputs, lut)
    if h <= predictor.tile[0] and w <= predictor.tile[1]:
        labels, q = single_tile(predictor, image, outputs.probs)
    else:
        pred = predictor.predict_semantic(image, keep_probs=outputs.probs)
        labels = pred.labels
        q = quantise_probs(pred.probs.astype(np.float32)) if outputs.probs and pred.probs is not None else None
    infer = time.perf_counter() - t
    digests = {"labels": store.write_array(group, "labels", lut[labels], attributes=store.label_attributes())}
    if q is not None:
        digests["probs"] = store.write_array(group, "probs", q)
    return digests, infer


def _semantic_streamed(predictor: SemanticPredictor, image: np.ndarray, group: Any, store: ZarrStore,
                       outputs: OutputSettings, lut: np.ndarray) -> Written:
    """A large image: bands go straight into chunked arrays (labels ``(H, W)``, probs ``(C, H, W)``)."""
    h, w = image.shape[:2]
    t = time.perf_counter()
    void = label_void(lut.dtype)
    labels = group.create_array("labels", shape=(h, w), dtype=lut.dtype, chunks=(1024, 1024), fill_value=void,
                                dimension_names=dimension_names("labels", 2),
                                attributes={**store.label_attributes(), "void_value": void})
    probs = None
    if outputs.probs:
        probs = group.create_array("probs", shape=(len(lut), h, w), dtype="uint8",
                                   chunks=(len(lut), 512, 512), fill_value=0,
                                   dimension_names=dimension_names("probs", 3))
    predictor.predict_semantic(image, label_sink=LabelSink(labels, lut),
                               prob_sink=QuantSink(probs) if probs is not None else None,
                               keep_probs=outputs.probs)
    infer = time.perf_counter() - t
    return {"labels": digest_stream(labels)}, infer


def _instances(predictor: Any, image: np.ndarray, group: Any, store: ZarrStore, outputs: OutputSettings) -> Written:
    """Instances at or above ``min_score``: RLE counts, boxes ``(K, 4)`` xywh, scores and category ids."""
    t = time.perf_counter()
    pred = cast("InstancePredictor", predictor).predict_instances(image)
    infer = time.perf_counter() - t
    keep = pred.scores >= outputs.min_score
    idx = np.flatnonzero(keep)
    boxes = pred.boxes[idx].astype(np.float32)
    xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) \
        if len(idx) else np.zeros((0, 4), np.float32)
    rles = np.array([pred.rles[i]["counts"] for i in idx], dtype=str)
    ig = group.require_group("instances")
    return {
        "instances/rle": store.write_array(ig, "rle", rles) if len(idx) else "",
        "instances/boxes": store.write_array(ig, "boxes", xywh.astype(np.float32)),
        "instances/scores": store.write_array(ig, "scores", pred.scores[idx].astype(np.float32)),
        "instances/labels": store.write_array(ig, "labels", pred.category_ids[idx].astype(np.int32)),
    }, infer


def _panoptic(predictor: Any, image: np.ndarray, group: Any, store: ZarrStore, outputs: OutputSettings) -> Written:
    """Panoptic ids ``(H, W)`` int32, and the segments in the group's attributes."""
    t = time.perf_counter()
    pred = cast("PanopticPredictor", predictor).predict_panoptic(image)
    infer = time.perf_counter() - t
    digests = {"panoptic": store.write_array(group, "panoptic", pred.ids.astype(np.int32))}
    group.attrs["segments"] = [dict(s) for s in pred.segments]
    return digests, infer


def _landmarks(predictor: Any, image: np.ndarray, group: Any, store: ZarrStore, outputs: OutputSettings) -> Written:
    """Keypoints ``(N, K, 3)`` (the first set, then any further instances) and heatmaps ``(K, H, W)``."""
    t = time.perf_counter()
    pred = cast("LandmarkPredictor", predictor).predict_landmarks(image)
    infer = time.perf_counter() - t
    digests: dict[str, str] = {}
    if outputs.heatmaps and pred.heatmaps is not None:
        digests["heatmaps"] = store.write_array(group, "heatmaps", pred.heatmaps.astype(np.float16))
    kp = np.asarray(pred.keypoints, dtype=np.float32)
    kps = np.stack([kp, *pred.instances]) if pred.instances else kp[None]
    digests["keypoints"] = store.write_array(group, "keypoints", kps.astype(np.float32))
    return digests, infer


_WRITERS: dict[str, Callable[[Any, np.ndarray, Any, ZarrStore, OutputSettings], Written]] = {
    "semantic": _semantic,
    "instance": _instances,
    "panoptic": _panoptic,
    "landmarks": _landmarks,
}


def single_tile(predictor: Any, image: np.ndarray, probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One forward pass for an image that fits in one tile.

    No blending buffers; the outputs come straight from the logits (see
    :func:`~segpipe.models.predict.labels_and_quantised_probs`), never through float16 and float32
    copies of the probabilities.

    Returns:
        ``(labels (H, W) uint8/uint16, probs (C, H, W) uint8 | None)``.
    """
    # lazy: the predictor machinery (~0.1 s) stays off the driver, which imports this module to submit it
    from segpipe.models.predict import labels_and_quantised_probs

    logits = predictor._run(predictor._to_tensor([image]))
    if isinstance(logits, dict):  # torchvision-style outputs
        logits = logits["out"]
    return labels_and_quantised_probs(logits[0].float(), probs)
