"""Panoptic segmentation: one untiled pass fused by the model's parameter-free head."""

from __future__ import annotations

from typing import Any

import numpy as np

from segpipe.models.predictors.base import Predictor, register_predictor
from segpipe.models.predictors.results import PanopticPrediction


@register_predictor("panoptic")
class PanopticPredictor(Predictor):
    """Segment ids and COCO-style segments of whole images (no tiling yet)."""

    def predict(self, image: Any, **kw: Any) -> PanopticPrediction:
        """:meth:`predict_panoptic`."""
        return self.predict_panoptic(image, **kw)

    def predict_panoptic(self, image: Any) -> PanopticPrediction:
        """Whole-image panoptic prediction (no tiling yet) fused by UPSNet's parameter-free head.

        Args:
            image: ``(H, W, 3) uint8`` array-like, read whole.

        Returns:
            ``ids (H, W) int32`` (0 = void) and segments whose ``category_id`` is the dataset's.
        """
        out = self._forward([np.asarray(image)[..., :3]])[0]
        ids, segs = self.model.fuse(out, score_thresh=self.score_thresh)
        for s in segs:
            s["category_id"] = self._category_id(s["category_id"])
        return PanopticPrediction(ids.cpu().numpy().astype(np.int32), segs)
