"""Instance segmentation: tiled detection with masks, merged across tile borders."""

from __future__ import annotations

from typing import Any

import numpy as np

from segpipe.core.tiles import Tile
from segpipe.models.predictors.base import Predictor, register_predictor
from segpipe.models.predictors.merge import Det, crop_to_rle, merge_detections
from segpipe.models.predictors.results import InstancePrediction


@register_predictor("instance")
class InstancePredictor(Predictor):
    """COCO RLE masks, boxes, scores and labels of the objects in images of any size.

    Each tile goes through the detector; detections below ``score_thresh`` are dropped, masks are
    thresholded at ``mask_thresh``, and objects cut by tile borders are merged
    (:mod:`segpipe.models.predictors.merge`).
    """

    list_input = True  # torchvision-style detectors take a list of (3, h, w) images

    def predict(self, image: Any, **kw: Any) -> InstancePrediction:
        """:meth:`predict_instances`."""
        return self.predict_instances(image, **kw)

    def predict_instances(self, image: Any) -> InstancePrediction:
        """Tiled instance prediction with cross-tile merging and duplicate suppression.

        Args:
            image: ``(H, W, 3) uint8`` array-like.

        Returns:
            The merged objects by descending score, masks as RLEs of the whole ``H × W`` image.
        """
        h, w = image.shape[:2]
        tiler = self.tiler
        dets: list[Det] = []
        for chunk, arrays in tiler.batches(image, tiler.grid(h, w).tiles()):
            for t, o in zip(chunk, self._forward(arrays), strict=True):
                dets.extend(self._tile_dets(t, o, h, w))
        return self._result(merge_detections(dets, self.nms_iou), h, w)

    def _tile_dets(self, t: Tile, o: dict[str, Any], h: int, w: int) -> list[Det]:
        """One tile's detections above ``score_thresh``, cropped to their masks in image coordinates.

        Args:
            t: The tile.
            o: The detector's output for it: ``scores (K,)``, ``masks (K, 1, th, tw)`` probabilities,
                ``labels (K,)``.
            h: Image height (a mask touching the image's own border is not cut).
            w: Image width.
        """
        scores = o["scores"].float().cpu().numpy()
        keep = scores >= self.score_thresh
        if not keep.any():
            return []
        masks = (o["masks"][keep, 0].float() > self.mask_thresh).cpu().numpy()
        labels = o["labels"].cpu().numpy()[keep]
        out = []
        for m, lab, sc in zip(masks, labels, scores[keep], strict=True):
            rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            if rows.size == 0:
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            cut = (
                (r0 == 0 and t.y0 > 0)
                or (c0 == 0 and t.x0 > 0)
                or (r1 == t.height and t.y1 < h)
                or (c1 == t.width and t.x1 < w)
            )
            crop = m[r0:r1, c0:c1].copy()
            window = (t.y0, t.x0, t.y1, t.x1)
            out.append(Det(int(lab), float(sc), t.y0 + int(r0), t.x0 + int(c0), crop, bool(cut), window))
        return out

    def _result(self, kept: list[Det], h: int, w: int) -> InstancePrediction:
        """The kept detections as arrays, labels also mapped to dataset category ids."""
        res = InstancePrediction(h, w)
        res.rles = [crop_to_rle(d.crop, d.y0, d.x0, h, w) for d in kept]
        res.boxes = np.array([d.box for d in kept], dtype=np.float32).reshape(-1, 4)
        res.scores = np.array([d.score for d in kept], dtype=np.float32)
        res.labels = np.array([d.label for d in kept], dtype=np.int64)
        res.category_ids = np.array([self._category_id(lab) for lab in res.labels], dtype=np.int64)
        return res
