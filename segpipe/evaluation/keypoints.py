"""Keypoint evaluation: COCO OKS AP (pycocotools rules) and PCK / NME for heatmap models.

OKS AP is :func:`segpipe.evaluation.cocoeval.evaluate_coco` with ``iou_type="keypoints"``;
:func:`evaluate_keypoints_coco` only names the knobs (per-keypoint sigmas, ``maxDets``).

PCK and NME go through :class:`LandmarkAccumulator`, which keeps sums (per keypoint correct counts
for each threshold, per-sample normalised errors) so shards merge exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from segpipe.core.metrics import decode_heatmaps
from segpipe.evaluation.cocoeval import CocoResult, evaluate_coco

__all__ = ["LandmarkAccumulator", "evaluate_heatmaps", "evaluate_keypoints_coco"]


def evaluate_keypoints_coco(
    gt_dict: Mapping[str, Any],
    dt_list: Sequence[Mapping[str, Any]],
    *,
    kpt_oks_sigmas: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    shards: int = 1,
    client: Any | None = None,
    **kwargs: Any,
) -> CocoResult:
    """COCO keypoint AP (OKS), identical to pycocotools.

    Args:
        gt_dict: COCO person-keypoints ground truth.
        dt_list: Keypoint results (``keypoints`` flat ``x, y, v`` and ``score``).
        kpt_oks_sigmas: ``(K,)`` per-keypoint sigmas; COCO's 17 by default. Must match the number of
            keypoints of the category.
        max_dets: Detections per image (pycocotools' default ``[20]``; ``summarize`` reads 20).
        shards: Number of image shards.
        client: Optional executor with ``submit``.
        **kwargs: Further :func:`segpipe.evaluation.cocoeval.make_params` keywords.

    Returns:
        The keypoints :class:`CocoResult` (10 stats).
    """
    params: dict[str, Any] = dict(kwargs)
    if kpt_oks_sigmas is not None:
        params["kpt_oks_sigmas"] = kpt_oks_sigmas
    if max_dets is not None:
        params["max_dets"] = max_dets
    return evaluate_coco(gt_dict, dt_list, ("keypoints",), shards, client, **params)["keypoints"]


class LandmarkAccumulator:
    """Mergeable PCK (at several thresholds) and NME sums.

    Args:
        num_keypoints: ``K``.
        alphas: PCK thresholds as fractions of the per-sample normalisation length.
    """

    def __init__(self, num_keypoints: int, alphas: Sequence[float] = (0.05, 0.1, 0.2)) -> None:
        self.num_keypoints = int(num_keypoints)
        self.alphas = tuple(float(a) for a in alphas)
        self.correct = np.zeros((len(self.alphas), self.num_keypoints), dtype=np.int64)
        self.visible = np.zeros(self.num_keypoints, dtype=np.int64)
        self.nme_sum = 0.0
        self.nme_count = 0

    def update(
        self,
        pred: npt.ArrayLike,
        gt: npt.ArrayLike,
        visible: npt.ArrayLike,
        norm: npt.ArrayLike,
    ) -> None:
        """Adds a batch.

        Args:
            pred: ``(N, K, 2)`` predicted ``(x, y)``.
            gt: ``(N, K, 2)`` ground-truth ``(x, y)``.
            visible: ``(N, K)`` bool — keypoints that count.
            norm: ``(N,)`` positive normalisation lengths.
        """
        p = np.asarray(pred, dtype=np.float64)
        g = np.asarray(gt, dtype=np.float64)
        vis = np.asarray(visible).astype(bool)
        nrm = np.asarray(norm, dtype=np.float64).reshape(-1)
        if p.shape != g.shape or p.ndim != 3 or p.shape[1:] != (self.num_keypoints, 2):
            raise ValueError(f"pred and gt must be (N, {self.num_keypoints}, 2), got {p.shape} and {g.shape}")
        if vis.shape != p.shape[:2] or nrm.shape != (p.shape[0],):
            raise ValueError(f"visible must be {p.shape[:2]} and norm ({p.shape[0]},)")
        if (nrm[vis.any(axis=1)] <= 0).any():
            raise ValueError("normalisation lengths must be > 0")
        d = np.sqrt(((p - g) ** 2).sum(axis=-1))  # (N, K)
        for i, a in enumerate(self.alphas):
            self.correct[i] += ((d <= a * nrm[:, None]) & vis).sum(axis=0)
        self.visible += vis.sum(axis=0)
        cnt = vis.sum(axis=1)
        keep = cnt > 0
        if keep.any():
            self.nme_sum += float(((d * vis).sum(axis=1)[keep] / cnt[keep] / nrm[keep]).sum())
            self.nme_count += int(keep.sum())

    def merge(self, other: LandmarkAccumulator) -> LandmarkAccumulator:
        """Folds ``other`` in and returns ``self``."""
        if other.alphas != self.alphas or other.num_keypoints != self.num_keypoints:
            raise ValueError("cannot merge landmark accumulators with different keypoints or thresholds")
        self.correct += other.correct
        self.visible += other.visible
        self.nme_sum += other.nme_sum
        self.nme_count += other.nme_count
        return self

    def compute(self) -> dict[str, Any]:
        """``{"pck": {alpha: overall}, "pck_per_keypoint": {alpha: [K]}, "nme": float}`` (NaN if empty)."""
        total = int(self.visible.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            per_kp = self.correct / self.visible[None, :]
        return {
            "pck": {
                a: (float(self.correct[i].sum() / total) if total else math.nan) for i, a in enumerate(self.alphas)
            },
            "pck_per_keypoint": {a: per_kp[i].tolist() for i, a in enumerate(self.alphas)},
            "nme": self.nme_sum / self.nme_count if self.nme_count else math.nan,
        }


def evaluate_heatmaps(
    items: Iterable[tuple[Any, Any, Any, Any]],
    num_keypoints: int,
    alphas: Sequence[float] = (0.05, 0.1, 0.2),
    stride: float = 1.0,
) -> dict[str, Any]:
    """PCK / NME of a heatmap model.

    Args:
        items: ``(heatmaps (K, H, W), gt (K, 2) x, y in image pixels, visible (K,), norm)`` per sample.
        num_keypoints: ``K``.
        alphas: PCK thresholds.
        stride: Image pixels per heatmap pixel (decoded coordinates are multiplied by it).

    Returns:
        :meth:`LandmarkAccumulator.compute`'s dictionary.
    """
    acc = LandmarkAccumulator(num_keypoints, alphas)
    for hm, gt, vis, norm in items:
        dec = decode_heatmaps(hm)[:, :2] * stride
        acc.update(dec[None], np.asarray(gt, dtype=np.float64)[None], np.asarray(vis)[None], [norm])
    return acc.compute()
