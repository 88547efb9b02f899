"""Predicting one 2-D image and writing its arrays into its group, one function per task."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image

from segpipe.errors import ConfigError
from segpipe.kernels.prelabel.sinks import LabelSink, QuantSink, category_lut, digest_stream, label_void
from segpipe.kernels.prelabel.tasks import OutputSettings
from segpipe.storage.images import exif_orientation
from segpipe.storage.location import is_url
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
#: An image's semantic outputs from a pass it shared (:func:`predict_stacked`): ``(labels (H, W)
#: class indices, probs (C, H, W) uint8 | None, its share of the pass in seconds)``.
Predicted = tuple[np.ndarray, np.ndarray | None, float]


def predict_and_write(predictor: Predictor, image: Any, group: Any, store: ZarrStore,
                      outputs: OutputSettings, predicted: Predicted | None = None) -> Written:
    """Predicts ``image`` and writes the outputs of the predictor's task into ``group``.

    Args:
        predictor: The model.
        image: ``(H, W, 3)`` uint8 (a numpy array, or a tensor on the model's device when it was
            decoded there and goes through the model whole).
        group: The image's group (or a stacked image's pending slot).
        store: The store (label attributes, array writes).
        outputs: What to store.
        predicted: Semantic outputs already computed in a pass shared with other images
            (:func:`predict_stacked`): only written.

    Returns:
        ``({array path: digest}, seconds in the forward passes)``.

    Raises:
        ConfigError: a task no pre-labeling writes.
    """
    write = _WRITERS.get(predictor.task)
    if write is None:
        raise ConfigError(f"unsupported task {predictor.task!r}")
    if predicted is not None and predictor.task == "semantic":
        return _semantic_write(predictor, group, store, *predicted)
    return write(predictor, image, group, store, outputs)


def stackable(predictor: Predictor, height: int, width: int) -> bool:
    """Whether a ``height × width`` image goes through the model whole (one tile, not streamed).

    Such images of one size share forward passes (:func:`predict_stacked`); any other image is
    predicted on its own (tiled, streamed, or a task other than semantic).
    """
    return (predictor.task == "semantic" and getattr(predictor, "dims", 2) == 2
            and height * width <= STREAM_PIXELS and height <= predictor.tile[0] and width <= predictor.tile[1])


def predict_stacked(predictor: Predictor, images: list[Any], probs: bool) -> list[Predicted]:
    """Same-size images, each within one tile, through the model ``predictor.batch_size`` at a time.

    Each image's outputs are computed from its own logits exactly as :func:`single_tile` does: only
    the forward pass is shared (its result for an image does not depend on the others in the pass,
    up to float rounding of the kernels torch picks for the batch size).

    Args:
        predictor: A semantic predictor (:func:`stackable` for every image).
        images: ``(H, W, 3)`` uint8 numpy arrays or tensors on the model's device, all one size.
        probs: Also compute the quantised probabilities.

    Returns:
        One :data:`Predicted` per image, in order.
    """
    # lazy: the predictor machinery (~0.1 s) stays off the driver, which imports this module to submit it
    from segpipe.models.predict import labels_and_quantised_probs

    out: list[Predicted] = []
    step = max(1, predictor.batch_size)
    for s in range(0, len(images), step):
        part = images[s : s + step]
        t = time.perf_counter()
        logits = predictor._run(predictor._to_tensor(part))
        if isinstance(logits, dict):  # torchvision-style outputs
            logits = logits["out"]
        if logits.device.type != "cpu":
            done = outputs_on_device(logits, probs)
        else:
            done = [labels_and_quantised_probs(logits[j].float(), probs) for j in range(len(part))]
        share = (time.perf_counter() - t) / len(part)
        out.extend((labels, q, share) for labels, q in done)
    return out


def outputs_on_device(logits: Any, probs: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each image's labels and quantised probabilities from a pass's logits, reduced where they are.

    On an accelerator the whole pass is reduced at once and copied back once per output (not once
    per image), with the arithmetic of
    :func:`~segpipe.models.predictors.ops.labels_and_quantised_probs` for one image on a device.

    Args:
        logits: ``(N, C, h, w)`` tensor (any float dtype; any device: the CPU path of
            :func:`predict_stacked` uses the per-image kernels tuned for the CPU instead).
        probs: Also the probabilities.

    Returns:
        Per image ``(labels (h, w) uint8/uint16, probs (C, h, w) uint8 | None)``.
    """
    x = logits.float()
    dt = np.uint8 if x.shape[1] <= 256 else np.uint16
    labels = x.argmax(1).int().cpu().numpy().astype(dt)
    q = x.softmax(1).mul_(255.0).round_().byte().contiguous().cpu().numpy() if probs else None
    return [(labels[j], q[j] if q is not None else None) for j in range(labels.shape[0])]


def _semantic_write(predictor: Any, group: Any, store: ZarrStore, labels: np.ndarray, q: np.ndarray | None,
                    infer: float) -> Written:
    """Writes labels ``(H, W)`` (class indices, stored as category ids) and probabilities ``(C, H, W)``."""
    lut = category_lut(cast("SemanticPredictor", predictor))
    digests = {"labels": store.write_array(group, "labels", lut[labels], attributes=store.label_attributes())}
    if q is not None:
        digests["probs"] = store.write_array(group, "probs", q)
    return digests, infer


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
    return _semantic_write(predictor, group, store, labels, q, infer)


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
    labels, q, _ = predict_stacked(predictor, [image], probs)[0]
    return labels, q


def device_decodable(path: str, width: int, height: int) -> bytes | None:
    """The bytes of a local JPEG the GPU decoder takes as it is, or None (the CPU decoder reads it).

    Only a JPEG in RGB or grayscale (the GPU decoder's RGB output converts both as the CPU decoder
    does), upright (EXIF orientation 1: the GPU decoder applies none) and of the size the manifest
    recorded. Only its header is parsed here; the pixels are decoded on the GPU.

    Args:
        path: The image file (an object-storage URL is left to the CPU decoder).
        width: Its width in the manifest.
        height: Its height.
    """
    if is_url(path):
        return None
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            ok = (im.format == "JPEG" and im.mode in ("RGB", "L") and im.size == (width, height)
                  and exif_orientation(im) == 1)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None  # the CPU decoder reads it again and reports what is wrong
    return data if ok else None


def decode_on_device(predictor: Predictor, files: Sequence[tuple[str, int, int]]) -> dict[int, Any]:
    """JPEGs decoded on the predictor's device in one batch (``--gpu-decode``).

    Args:
        predictor: Its ``device`` decodes.
        files: ``(path, width, height)`` per image (the manifest's).

    Returns:
        ``{index in files: (H, W, 3) uint8 tensor on the device}`` for the files the device decoded;
        the others (not a plain upright JPEG, or refused by the GPU decoder) are left to the CPU
        decoder.
    """
    # lazy: torch loads on the workers, not in the driver that imports this module to submit it
    from segpipe.models.devices import decode_jpegs

    datas = {i: device_decodable(path, w, h) for i, (path, w, h) in enumerate(files)}
    todo = [i for i, d in datas.items() if d is not None]
    if not todo:
        return {}
    try:
        images = decode_jpegs([cast(bytes, datas[i]) for i in todo], predictor.device)
    except RuntimeError:  # one file the GPU decoder refuses fails its batch: all go to the CPU decoder
        return {}
    return {i: im for i, im in zip(todo, images, strict=True)
            if tuple(im.shape) == (files[i][2], files[i][1], 3)}
