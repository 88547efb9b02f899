"""What the predictors return, per task, and the band-sink protocol they stream into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class BandSink(Protocol):
    """Receives finalised row bands: ``sink[y0:y1] = (h, W)`` or ``sink[:, y0:y1] = (C, h, W)``."""

    def __setitem__(self, key: Any, value: np.ndarray) -> None: ...  # noqa: D105


@dataclass
class SemanticPrediction:
    """Semantic output.

    Attributes:
        labels: ``(H, W)`` uint8/uint16 class indices, or None when written to a sink only.
        probs: ``(C, H, W) float16`` class probabilities, or None.
    """

    labels: np.ndarray | None
    probs: np.ndarray | None


@dataclass
class InstancePrediction:
    """Instance output for one image of size ``(height, width)``.

    Attributes:
        rles: COCO compressed RLEs (``counts`` is a str).
        boxes: ``(K, 4) float32`` xyxy pixels (tight around the mask).
        scores: ``(K,) float32``.
        labels: ``(K,) int64`` model label indices.
        category_ids: ``(K,) int64`` dataset category ids (from the checkpoint's categories).
    """

    height: int
    width: int
    rles: list[dict[str, Any]] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class PanopticPrediction:
    """Panoptic output: ``ids (H, W) int32`` (0 = void) and COCO-style ``segments`` (category ids)."""

    ids: np.ndarray
    segments: list[dict[str, Any]]


@dataclass
class LandmarkPrediction:
    """Landmark output.

    Attributes:
        heatmaps: ``(K, H, W) float16`` or None when written to a sink only.
        keypoints: ``(K, 3) float32`` rows ``(x, y, confidence)`` (the global peak of each heatmap;
            for Keypoint R-CNN the highest-scoring detection).
        instances: Keypoint R-CNN only: one ``(K, 3)`` array per detection.
    """

    heatmaps: np.ndarray | None
    keypoints: np.ndarray
    instances: list[np.ndarray] = field(default_factory=list)
