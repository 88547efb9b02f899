"""Semantic segmentation: tiled, blended class probabilities and label maps (2-D and 3-D)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segpipe.errors import ConfigError
from segpipe.models.predictors.base import Predictor, register_predictor
from segpipe.models.predictors.ops import argmax_channels, div_into, exp_shifted, softmax_channels
from segpipe.models.predictors.results import BandSink, SemanticPrediction


@register_predictor("semantic")
class SemanticPredictor(Predictor):
    """Per-pixel classes for images of any size (and volumes, with a 3-D model).

    ``labels (H, W)`` are uint8 (uint16 above 256 classes); ``probs (C, H, W)`` are float16 (a
    documented choice: half the bytes of float32 and ~1e-3 precision, ample for soft labels,
    confidence maps and blending). Both stream to sinks in row bands (see
    :mod:`segpipe.models.predictors.tiler`).
    """

    channels_last_input = True

    def predict(self, image: Any, **kw: Any) -> SemanticPrediction:
        """:meth:`predict_semantic`."""
        return self.predict_semantic(image, **kw)

    def predict_batch(self, images: Sequence[Any]) -> list[Any]:
        """Predicts several images; small same-size images share forward passes.

        An image within one tile is predicted whole; grouped by size, up to ``batch_size`` of them
        go through the model at once. Larger images are tiled one by one.
        """
        out: list[Any] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            if h <= self.tile[0] and w <= self.tile[1]:
                groups.setdefault((h, w), []).append(i)
            else:
                out[i] = self.predict_semantic(im)
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                part = idx[s : s + self.batch_size]
                logits = self._forward([np.asarray(images[i])[..., :3] for i in part])
                probs = softmax_channels(logits).cpu().numpy()
                for j, i in enumerate(part):
                    out[i] = SemanticPrediction(self._argmax(probs[j]), probs[j].astype(np.float16))
        return out

    def _argmax(self, probs: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` → ``(h, w)`` class indices (first maximum wins, as ``np.argmax``)."""
        return argmax_channels(probs)

    def predict_semantic(
        self,
        image: Any,
        *,
        label_sink: BandSink | None = None,
        prob_sink: BandSink | None = None,
        keep_probs: bool = True,
        blend_logits: bool | None = None,
    ) -> SemanticPrediction:
        """Tiled semantic prediction.

        Args:
            image: ``(H, W, 3) uint8`` array-like.
            label_sink: Receives ``label_sink[y0:y1] = (h, W)`` bands; an in-memory array when None.
            prob_sink: Receives ``prob_sink[:, y0:y1] = (C, h, W) float16`` bands; an in-memory array
                when None and ``keep_probs``.
            keep_probs: Produce probabilities at all.
            blend_logits: Blend the tiles' logits instead of their softmax probabilities (only when
                no probabilities are produced; ``self.blend_logits`` when None). It skips a softmax
                per tile, the largest cost of tiled CPU inference with a cheap model, but the label
                map can differ from probability blending where overlapping tiles disagree (the
                weighted mean of logits is not the weighted mean of probabilities); inside a single
                tile, and for tiled vs untiled with a translation-equivariant model, both agree.

        Returns:
            The in-memory arrays it allocated (None for outputs that went to a sink).
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        h, w = image.shape[:2]
        c = self.meta.num_classes
        labels = None
        probs = None
        if label_sink is None:
            labels = np.zeros((h, w), dtype=np.uint8 if c <= 256 else np.uint16)
            label_sink = labels
        if prob_sink is None and keep_probs:
            probs = np.zeros((c, h, w), dtype=np.float16)
            prob_sink = probs
        want_probs = prob_sink is not None
        logits_only = not want_probs and (self.blend_logits if blend_logits is None else blend_logits)

        def soft(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            x = logits.float().cpu()
            if logits_only:
                return x, None
            return exp_shifted(x)

        def on_band(y0: int, y1: int, acc: torch.Tensor, wsum: torch.Tensor) -> None:
            # A positive per-pixel factor does not change the argmax: no division for the labels.
            label_sink[y0:y1] = argmax_channels(acc)
            if prob_sink is not None:
                _write_probs(prob_sink, y0, y1, acc, wsum)

        self.tiler.blend_rows(image, c, self._forward, soft, on_band, need_weights=want_probs)
        return SemanticPrediction(labels, probs)

    def predict_volume(self, slab: np.ndarray, *, keep_probs: bool = True) -> SemanticPrediction:
        """3-D sliding-window prediction of a stack of slices with a 3-D model.

        Tiles of :attr:`tile3` (clipped to the slab), overlapping by :attr:`overlap` along every axis,
        blended in probability space with separable weights (Gaussian by default), as the 2-D path.
        Memory is that of the slab: a caller bounds it by predicting a volume slab by slab with a
        context margin (``segpipe prelabel`` does, one task per slab).

        Args:
            slab: ``(Z, H, W) uint8`` windowed intensities.
            keep_probs: Also return the class probabilities.

        Returns:
            ``labels (Z, H, W)`` uint8/uint16 class indices and ``probs (C, Z, H, W) float16`` or None.

        Raises:
            ConfigError: A 2-D model, or a slab that is not 3-D.
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        if self.dims != 3:
            raise ConfigError(f"{self.meta.arch} is a 2-D model; predict volumes slice by slice")
        if slab.ndim != 3:
            raise ConfigError(f"expected a (Z, H, W) stack of slices, got shape {slab.shape}")
        mean, std = float(self.meta.mean[0]) * 255.0, float(self.meta.std[0]) * 255.0

        def forward(windows: list[np.ndarray]) -> Any:
            x = torch.from_numpy(np.stack(windows))[:, None].float()  # (N, 1, z, h, w)
            x.sub_(mean).div_(std)
            return self._run(x.to(self.device))

        def soft(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return exp_shifted(logits.float().cpu())

        acc, wsum = self.tiler.blend_volume(slab, self.tile3, self.meta.num_classes, forward, soft)
        labels = argmax_channels(acc)
        probs = torch.div(acc, wsum).to(torch.float16).numpy() if keep_probs else None
        return SemanticPrediction(labels, probs)


def _write_probs(sink: BandSink, y0: int, y1: int, acc: Any, wsum: Any) -> None:
    """``sink[:, y0:y1] = acc / wsum`` as float16: normalise, convert and (if HWC-backed) transpose in one pass."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    if isinstance(sink, np.ndarray) and sink.dtype == np.float16:
        # An in-memory float16 array: straight into it, no band-sized temporary.
        div_into(acc, wsum, torch.from_numpy(sink[:, y0:y1]))
        return
    band = torch.empty(acc.shape, dtype=torch.float16)
    div_into(acc, wsum, band)
    sink[:, y0:y1] = band.numpy()
