"""Validation metrics of a training run, one per task: the number ``best.ckpt`` is chosen by.

- semantic: ``mean_iou`` (and ``pixel_accuracy``) from the shared confusion matrix and FCN metrics
  of :mod:`segpipe.core.metrics` (255 ignored, classes absent from both maps left out of the mean);
- instance: COCO mask ``ap`` and ``ap50`` (pycocotools' ``COCOeval``), masks encoded through
  :mod:`segpipe.core.rle`;
- landmarks: ``pck``, the share of labelled keypoints found (see :func:`eval_landmarks`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from segpipe.core import rle as rle_ops
from segpipe.core.metrics import ConfusionMatrix
from segpipe.models.training.batches import ToInput
from segpipe.models.training.data import IGNORE, SemanticSet, Target

#: The metric each task's best checkpoint is chosen by.
METRIC_NAMES = {"semantic": "mean_iou", "instance": "ap", "landmarks": "pck"}


def eval_semantic(model: nn.Module, val_set: SemanticSet, to_input: ToInput, n: int) -> dict[str, float]:
    """``mean_iou`` and ``pixel_accuracy`` of whole validation images (NaN when nothing is labelled).

    Args:
        model: Returns ``(1, n, H, W)`` logits.
        val_set: Validation images and label maps.
        to_input: Image → model input.
        n: Number of classes.
    """
    cm = ConfusionMatrix(n, ignore_index=IGNORE)
    with torch.inference_mode():
        for i in range(len(val_set)):
            img, mask = val_set[i]
            pred = model(to_input([img])).argmax(1)[0].cpu().numpy()
            cm.update(mask.astype(np.int64), pred.astype(np.int64))
    res = cm.compute()
    return {"mean_iou": float(res["mean_iou"]), "pixel_accuracy": float(res["pixel_accuracy"])}


def eval_instance(
    model: nn.Module, imgs: Sequence[np.ndarray], targets: Sequence[Target], to_input: ToInput
) -> dict[str, float]:
    """COCO mask AP (``ap``, IoU .50:.95) and ``ap50`` of a torchvision-style instance model.

    Args:
        model: Takes a list of ``(3, H, W)`` inputs; returns per image ``masks (K, 1, H, W)``
            probabilities, ``labels (K,)`` and ``scores (K,)``.
        imgs: ``(H, W, 3) uint8`` validation images.
        targets: Their targets (``masks``, ``labels``).
        to_input: Image → model input.

    Returns:
        ``ap`` and ``ap50``, 0 when there is no ground truth or no detection (never COCO's -1).
    """
    images: list[dict[str, Any]] = []
    gt_anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    with torch.inference_mode():
        for i, (im, t) in enumerate(zip(imgs, targets, strict=True)):
            h, w = im.shape[:2]
            images.append({"id": i + 1, "width": w, "height": h})
            gt_anns.extend(_gt_annotations(t, i + 1, first_id=len(gt_anns) + 1))
            dets.extend(_detections(model(list(to_input([im])))[0], i + 1))
    if not gt_anns:
        return {"ap": 0.0, "ap50": 0.0}
    return _mask_ap(images, gt_anns, dets)


def _gt_annotations(t: Target, image_id: int, first_id: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if t["masks"] is None:  # an image that annotations.json does not list: no ground truth
        return out
    for m, lab in zip(t["masks"], t["labels"], strict=True):
        rle = rle_ops.encode(m)
        out.append(
            {
                "id": first_id + len(out),
                "image_id": image_id,
                "category_id": int(lab),
                "segmentation": rle,
                "area": float(m.sum()),
                "bbox": list(rle_ops.to_bbox(rle)),
                "iscrowd": 0,
            }
        )
    return out


def _detections(o: dict[str, torch.Tensor], image_id: int) -> list[dict[str, Any]]:
    masks = o["masks"][:, 0].float().cpu().numpy() > 0.5
    labels = o["labels"].cpu().numpy()
    scores = o["scores"].float().cpu().numpy()
    return [
        {"image_id": image_id, "category_id": int(lab), "segmentation": rle_ops.encode(m), "score": float(sc)}
        for m, lab, sc in zip(masks, labels, scores, strict=True)
    ]


def _mask_ap(
    images: list[dict[str, Any]], gt_anns: list[dict[str, Any]], dets: list[dict[str, Any]]
) -> dict[str, float]:
    """COCOeval ``segm`` over the given ground truth and detections (pycocotools' printing silenced)."""
    cats = sorted({a["category_id"] for a in gt_anns} | {d["category_id"] for d in dets})
    gt = {"images": images, "annotations": gt_anns, "categories": [{"id": c} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        if not dets:
            return {"ap": 0.0, "ap50": 0.0}
        ev = COCOeval(cg, cg.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap": max(float(ev.stats[0]), 0.0), "ap50": max(float(ev.stats[1]), 0.0)}


def eval_landmarks(
    model: nn.Module, imgs: Sequence[np.ndarray], targets: Sequence[Target], to_input: ToInput, arch: str
) -> dict[str, float]:
    """PCK over the labelled (visibility > 0) keypoints of the validation images.

    A heatmap model finds a keypoint when its heatmap exceeds 0.5 within 1 output pixel (stride 4)
    of it; Keypoint R-CNN when one detected instance puts it within 5 % of the image's longer side.

    Args:
        model: Heatmap model (``(1, K, H/4, W/4)`` maps) or ``keypointrcnn*``.
        imgs: ``(H, W, 3) uint8`` validation images.
        targets: Their targets (``kps (N, K, 3)`` or None).
        to_input: Image → model input.
        arch: The architecture.

    Returns:
        ``pck`` in [0, 1], 0 without labelled keypoints.
    """
    hit = total = 0
    with torch.inference_mode():
        for im, t in zip(imgs, targets, strict=True):
            if t["kps"] is None:
                continue
            if arch.startswith("keypointrcnn"):
                pred = model(list(to_input([im])))[0]["keypoints"].cpu().numpy()
                found = _found_by_instances(pred, t["kps"], 0.05 * max(im.shape[:2]))
            else:
                found = _found_in_heatmaps(model(to_input([im]))[0].float().cpu().numpy(), t["kps"])
            hit += sum(found)
            total += len(found)
    return {"pck": hit / total if total else 0.0}


def _found_by_instances(pred: np.ndarray, kps: np.ndarray, radius: float) -> list[bool]:
    """Per labelled keypoint: whether some predicted instance ``(M, K, 3)`` has it within ``radius``."""
    found = []
    for inst in kps:
        for j, (x, y, v) in enumerate(inst):
            if v > 0:
                d = np.hypot(pred[:, j, 0] - x, pred[:, j, 1] - y) if len(pred) else np.array([np.inf])
                found.append(bool(d.min() <= radius))
    return found


def _found_in_heatmaps(hm: np.ndarray, kps: np.ndarray) -> list[bool]:
    """Per labelled keypoint: whether ``hm (K, h, w)`` exceeds 0.5 in the 3×3 output pixels around it."""
    found = []
    for inst in kps:
        for j, (x, y, v) in enumerate(inst):
            if v > 0:
                cx, cy = int(x // 4), int(y // 4)
                win = hm[j, max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2]
                found.append(bool(win.size > 0 and win.max() > 0.5))
    return found
