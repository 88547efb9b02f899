"""Landmarks: tiled heatmaps with streaming peak decoding, or Keypoint R-CNN detections."""

from __future__ import annotations

from typing import Any

import numpy as np

from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.predictors.base import Predictor, register_predictor
from segpipe.models.predictors.ops import to_float16
from segpipe.models.predictors.results import BandSink, LandmarkPrediction

#: Heatmap models (stacked hourglass) predict at a quarter of the input resolution.
HEATMAP_STRIDE = 4


@register_predictor("landmarks")
class LandmarkPredictor(Predictor):
    """One heatmap per keypoint over images of any size, and each heatmap's peak.

    Heatmaps are upsampled to the tile, blended like semantic probabilities and streamed in row
    bands; the peaks are tracked band by band, so the whole heatmap never needs to be in memory.
    Keypoint R-CNN checkpoints get :class:`KeypointRCNNPredictor`.
    """

    channels_last_input = True

    @classmethod
    def variant(cls, meta: CheckpointMeta) -> type[Predictor]:
        """Keypoint R-CNN detects people, it makes no heatmaps: :class:`KeypointRCNNPredictor`."""
        return KeypointRCNNPredictor if meta.arch.startswith("keypointrcnn") else cls

    def predict(self, image: Any, **kw: Any) -> LandmarkPrediction:
        """:meth:`predict_landmarks`."""
        return self.predict_landmarks(image, **kw)

    def predict_landmarks(self, image: Any, *, heatmap_sink: BandSink | None = None) -> LandmarkPrediction:
        """Tiled heatmap prediction with streaming peak decoding (stacked hourglass).

        Args:
            image: ``(H, W, 3) uint8`` array-like.
            heatmap_sink: Receives ``heatmap_sink[:, y0:y1] = (K, h, W) float16``; in memory when None.

        Returns:
            ``heatmaps (K, H, W) float16`` (None with a sink) and ``keypoints (K, 3)``.
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors
        import torch.nn.functional as F  # lazy: torch loads on the workers, not in the driver that imports predictors

        h, w = image.shape[:2]
        k = self.meta.num_classes
        heat = None
        if heatmap_sink is None:
            heat = np.zeros((k, h, w), dtype=np.float16)
            heatmap_sink = heat
        peaks = _Peaks(k, w)
        tiler = self.tiler
        grid = tiler.grid(h, w)

        def soft_cropped(hm: torch.Tensor) -> tuple[torch.Tensor, None]:
            # Back to the tile's resolution, cropped where the stride rounded the tile up.
            hm = hm.float()
            size = (hm.shape[-2] * HEATMAP_STRIDE, hm.shape[-1] * HEATMAP_STRIDE)
            up = F.interpolate(hm, size=size, mode="bilinear", align_corners=False).cpu()
            return up[..., : grid.th, : grid.tw], None

        def on_band(y0: int, y1: int, acc: torch.Tensor, wsum: torch.Tensor) -> None:
            band = torch.div(acc, wsum).contiguous().numpy()
            heatmap_sink[:, y0:y1] = to_float16(band)
            peaks.update(y0, band)

        tiler.blend_rows(image, k, self._forward, soft_cropped, on_band)
        return LandmarkPrediction(heat, peaks.keypoints())


class _Peaks:
    """The running maximum of each of K heatmaps, fed band by band.

    Args:
        k: Heatmaps.
        width: Image width W.
    """

    def __init__(self, k: int, width: int) -> None:
        self.width = width
        self.best = np.full(k, -np.inf, dtype=np.float32)
        self.best_xy = np.zeros((k, 2), dtype=np.float32)

    def update(self, y0: int, band: np.ndarray) -> None:
        """Takes the peaks of a ``(K, h, W) float32`` band starting at image row ``y0``."""
        k = band.shape[0]
        flat = band.reshape(k, -1)
        idx = flat.argmax(1)
        val = flat[np.arange(k), idx]
        w = self.width
        for j in np.nonzero(val > self.best)[0]:
            yy, xx = divmod(int(idx[j]), band.shape[2])
            # Quarter-pixel shift towards the larger neighbour (the usual heatmap refinement).
            dx = 0.25 * np.sign(band[j, yy, min(xx + 1, w - 1)] - band[j, yy, max(xx - 1, 0)])
            dy = 0.25 * np.sign(band[j, min(yy + 1, band.shape[1] - 1), xx] - band[j, max(yy - 1, 0), xx])
            self.best[j] = val[j]
            self.best_xy[j] = (xx + 0.5 + dx, y0 + yy + 0.5 + dy)

    def keypoints(self) -> np.ndarray:
        """``(K, 3) float32`` rows ``(x, y, peak value)``."""
        return np.concatenate([self.best_xy, self.best[:, None]], axis=1).astype(np.float32)


class KeypointRCNNPredictor(LandmarkPredictor):
    """Keypoint R-CNN: one untiled pass; the people above ``score_thresh``, the best one first."""

    def predict_landmarks(self, image: Any, *, heatmap_sink: BandSink | None = None) -> LandmarkPrediction:
        """Keypoints of every detected person (no heatmaps: ``heatmap_sink`` is not written).

        Args:
            image: ``(H, W, 3) uint8`` array-like, read whole.
            heatmap_sink: Ignored (accepted so that every landmark predictor takes the same call).

        Returns:
            ``keypoints (K, 3)`` of the highest-scoring person (zeros when none) and ``instances``,
            one ``(K, 3)`` per person, rows ``(x, y, keypoint score)``.
        """
        out = self._forward([np.asarray(image)[..., :3]])[0]
        keep = (out["scores"] >= self.score_thresh).cpu().numpy()
        kps = out["keypoints"].float().cpu().numpy()[keep]
        ksc = out["keypoints_scores"].float().cpu().numpy()[keep]
        inst = [
            np.concatenate([kp[:, :2], s[:, None]], axis=1).astype(np.float32) for kp, s in zip(kps, ksc, strict=True)
        ]
        top = inst[0] if inst else np.zeros((self.meta.num_classes, 3), np.float32)
        return LandmarkPrediction(None, top, inst)

