"""Batched, tiled predictors for every task.

Use::

    pred = Predictor.from_checkpoint("best.ckpt", device="auto")
    out = pred.predict(image)                       # (H, W, 3) uint8, any size

Images of any size go through a sliding window (tile size and overlap from the checkpoint or the
arguments; the last tile is flush with the edge). What each task returns:

* ``semantic`` → :class:`SemanticPrediction`: ``labels (H, W)`` uint8 (uint16 above 256 classes) and
  ``probs (C, H, W) float16``. Probabilities are stored as float16 (documented choice): half the bytes
  of float32 and ~1e-3 precision, ample for soft labels, confidence maps and blending.
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

Instances cut by tile borders are merged: detections from all tiles are ranked (complete before cut,
then by score); a detection that overlaps a kept one of the same class with mask IoU above
``nms_iou`` is a duplicate and dropped; one that is mostly contained in a kept one (intersection over
the smaller area > 0.5) while either touches an inner tile border is a piece of the same object and
is unioned into it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segpipe.core.tiles import Tile, blend_weights, blend_weights_nd, overlap_pixels, tile_starts
from segpipe.errors import ConfigError


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


@dataclass
class _Det:
    label: int
    score: float
    y0: int
    x0: int
    crop: np.ndarray  # (h, w) bool, tight
    cut: bool  # touches a tile border that is inside the image
    tile: tuple[int, int, int, int]  # the window it came from: y0, x0, y1, x1

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x0 + self.crop.shape[1], self.y0 + self.crop.shape[0]


def select_device(device: str = "auto") -> Any:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else is passed to ``torch.device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _cpu_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, threads))
        return
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        avail = os.cpu_count() or 1
    # Oversubscription (torch's default counts all host cores, not this process's share) slows
    # everything down; never use more threads than cores we may run on.
    if torch.get_num_threads() > avail:
        torch.set_num_threads(avail)


class Predictor:
    """A model plus everything needed to run it on images of any size.

    Args:
        model: The ``nn.Module`` (eval mode is set here).
        meta: Its :class:`~segpipe.models.checkpoint.CheckpointMeta`.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        batch_size: Tiles per forward pass.
        tile: Tile ``(h, w)`` or side; the checkpoint's when None.
        overlap: A float is a fraction of the tile in [0, 1); an ``int`` is pixels (internal callers);
            the checkpoint's when None.
        blend: ``gaussian`` (default), ``linear`` or ``constant``.
        amp: Autocast on CUDA (bf16 where supported, else fp16). Ignored on CPU.
        threads: CPU threads (default: the cores this process may use).
        score_thresh: Instances below this score are dropped.
        mask_thresh: Instance mask probability threshold.
        nms_iou: Mask IoU above which two same-class detections are duplicates.
        blend_logits: Semantic label maps without probabilities blend logits rather than
            probabilities (faster; see :meth:`predict_semantic`). Off by default.
    """

    def __init__(
        self,
        model: Any,
        meta: Any,
        *,
        device: str = "auto",
        batch_size: int = 4,
        tile: int | tuple[int, int] | None = None,
        overlap: float | int | None = None,
        blend: str = "gaussian",
        amp: bool = True,
        threads: int | None = None,
        score_thresh: float = 0.5,
        mask_thresh: float = 0.5,
        nms_iou: float = 0.5,
        blend_logits: bool = False,
    ) -> None:
        import torch

        self.meta = meta
        self.task = meta.task
        self.device = select_device(device)
        self.batch_size = max(1, batch_size)
        self.dims = model_dims(meta.arch)
        t = tile if tile is not None else tuple(meta.tile_size[-2:])
        self.tile: tuple[int, int] = (t, t) if isinstance(t, int) else (int(t[0]), int(t[1]))
        #: 3-D models: tile ``(depth, height, width)``; the depth comes from the checkpoint.
        depth = int(meta.tile_size[0]) if len(meta.tile_size) == 3 else self.tile[0]
        self.tile3: tuple[int, int, int] = (depth, *self.tile)
        # A float is a fraction of the tile; an int (internal callers only) is pixels: see overlap_pixels.
        self.overlap: float | int = (overlap if type(overlap) is int
                                     else float(meta.tile_overlap if overlap is None else overlap))
        self.blend = blend
        self.score_thresh = score_thresh
        self.mask_thresh = mask_thresh
        self.nms_iou = nms_iou
        self.blend_logits = blend_logits
        self.cuda = self.device.type == "cuda"
        if not self.cuda:
            _cpu_threads(threads)
        self.model = model.eval().to(self.device)
        if self.cuda and self.task in ("semantic", "landmarks"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = None
        if self.cuda and amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        mean = torch.tensor(meta.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(meta.std, device=self.device).view(1, 3, 1, 1) * 255.0
        # (x − mean) / std as x · scale + bias: one fused pass in _to_tensor
        self._scale = 1.0 / std
        self._bias = -mean / std
        self.category_ids = np.array(
            [int(c.get("id", c.get("index", i))) for i, c in enumerate(meta.categories)] or range(meta.num_classes),
            dtype=np.int64,
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, arch: str | None = None, **kw: Any) -> Predictor:
        """Loads a checkpoint safely (see :mod:`segpipe.models.checkpoint`) and wraps it."""
        from segpipe.models.checkpoint import build_from_checkpoint, load_checkpoint

        ck = load_checkpoint(path, arch=arch)
        return cls(build_from_checkpoint(ck, path=path), ck.meta, **kw)

    # -- plumbing ---------------------------------------------------------------------------------

    def _to_tensor(self, tiles: list[np.ndarray]) -> Any:
        """``list[(h, w, 3) uint8]`` → normalised ``(N, 3, h, w)`` float on the device."""
        import torch

        batch = torch.from_numpy(np.stack(tiles))
        if self.cuda:
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        # One fused pass uint8 → normalised float, ``x · (1/std) − mean/std`` (within 2.4e-7 of
        # ``(x − mean) / std``): half the time of convert-then-normalise, and the result keeps the
        # channels-last strides of the HWC view.
        x = torch.addcmul(self._bias, batch.permute(0, 3, 1, 2), self._scale)
        if x.dtype != torch.float32:  # float64 tiles from a library caller: the model takes float32
            x = x.float()
        if self.cuda and self.task in ("semantic", "landmarks"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _run(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():
            if self.amp_dtype is not None:
                with torch.autocast("cuda", dtype=self.amp_dtype):
                    return self.model(x if self.task in ("semantic", "landmarks", "panoptic") else list(x))
            return self.model(x if self.task in ("semantic", "landmarks", "panoptic") else list(x))

    def _grid(self, h: int, w: int) -> tuple[list[int], list[int], int, int, int, int]:
        th, tw = min(self.tile[0], h), min(self.tile[1], w)
        oy = overlap_pixels(self.tile[0], self.overlap) if th == self.tile[0] else 0
        ox = overlap_pixels(self.tile[1], self.overlap) if tw == self.tile[1] else 0
        return tile_starts(h, th, oy), tile_starts(w, tw, ox), th, tw, oy, ox

    def _batches(self, image: Any, tiles: Sequence[Tile]) -> Iterator[tuple[list[Tile], Any]]:
        for i in range(0, len(tiles), self.batch_size):
            chunk = list(tiles[i : i + self.batch_size])
            arrs = [np.asarray(image[t.y0 : t.y1, t.x0 : t.x1])[..., :3] for t in chunk]
            yield chunk, self._to_tensor(arrs)

    # -- public API -------------------------------------------------------------------------------

    def predict(self, image: Any, **kw: Any) -> Any:
        """Predicts one image ``(H, W, 3) uint8`` (any array-like supporting 2-D slicing)."""
        fns: dict[str, Callable[..., Any]] = {
            "semantic": self.predict_semantic,
            "instance": self.predict_instances,
            "panoptic": self.predict_panoptic,
            "landmarks": self.predict_landmarks,
        }
        fn = fns[self.task]
        return fn(image, **kw)

    def predict_batch(self, images: Sequence[Any]) -> list[Any]:
        """Predicts several images; small same-size semantic images share forward passes."""
        if self.task != "semantic":
            return [self.predict(im) for im in images]
        out: list[Any] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            if h <= self.tile[0] and w <= self.tile[1]:
                groups.setdefault((h, w), []).append(i)
            else:
                out[i] = self.predict_semantic(im)
        for (_h, _w), idx in groups.items():
            for s in range(0, len(idx), self.batch_size):
                part = idx[s : s + self.batch_size]
                logits = self._run(self._to_tensor([np.asarray(images[i])[..., :3] for i in part]))
                probs = _softmax_channels(logits).cpu().numpy()
                for j, i in enumerate(part):
                    out[i] = SemanticPrediction(self._argmax(probs[j]), probs[j].astype(np.float16))
        return out

    def _argmax(self, probs: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` → ``(h, w)`` class indices (first maximum wins, as ``np.argmax``)."""
        return _argmax_channels(probs)

    def _blend_stream(
        self,
        image: Any,
        channels: int,
        soft: Callable[[Any], tuple[Any, Any]],
        on_band: Callable[[int, int, Any, Any], None],
        *,
        need_weights: bool = True,
    ) -> None:
        """Sliding window with weighted blending, finalising row bands as soon as they are complete.

        Everything runs in torch on two buffers allocated once per image: ``acc (C, tile_h, W)`` and
        ``wsum (tile_h, W)`` float32 on the CPU. Each tile is added with one fused multiply-add
        (``acc += values · weight``) and no tile-sized temporaries.

        Args:
            image: ``(H, W, 3)`` array-like.
            channels: C of the soft output.
            soft: Model output batch → ``(values (N, C, th, tw) float32 CPU tensor, denom)``; ``denom``
                is None or ``(N, th, tw)``: the tile is then added as ``values · weight / denom``
                (a softmax's normalisation fused into the blend).
            on_band: Called with ``(y0, y1, acc (C, y1 − y0, W), wsum (y1 − y0, W))`` for each finished
                band: weighted sums, not yet divided by the weights (views into the reused buffers:
                copy what must outlive the call).
            need_weights: Accumulate ``wsum``; when False (labels only: the argmax needs no
                normalisation) ``on_band`` gets a zero ``wsum``.
        """
        import torch

        h, w = image.shape[:2]
        ys, xs, th, tw, oy, ox = self._grid(h, w)
        wt = torch.from_numpy(blend_weights(th, tw, self.blend, (oy, ox)))
        # The buffers take the memory layout of the model's output, which follows its input: a
        # channels-last output (the CPU default here, the input being an HWC view) is accumulated into
        # an HWC-backed buffer, so the multiply-add streams both operands contiguously (5x faster than
        # mixing layouts: bench/RESULTS_models.md). Allocated at the first batch, when the layout is known.
        acc: torch.Tensor | None = None  # (C, th, W) rows [y, y + th) of this tile row
        wsum = torch.zeros((th, w), dtype=torch.float32)
        with torch.inference_mode():
            for r, y in enumerate(ys):
                row = [Tile(y, x, y + th, x + tw, r, c) for c, x in enumerate(xs)]
                for chunk, x in self._batches(image, row):
                    vals, denom = soft(self._run(x))
                    if acc is None:
                        acc = _band_buffer(channels, th, w, channels_last=_is_channels_last(vals))
                    for i, t in enumerate(chunk):
                        scale = wt if denom is None else torch.div(wt, denom[i])
                        acc[:, :, t.x0 : t.x1].addcmul_(vals[i], scale)
                        if need_weights:
                            wsum[:, t.x0 : t.x1] += wt
                assert acc is not None
                done = (ys[r + 1] if r + 1 < len(ys) else h) - y  # rows no later tile touches
                on_band(y, y + done, acc[:, :done], wsum[:done])
                # Move the unfinished rows to the top of the buffers (they start the next tile row).
                rest = th - done
                if rest > 0:
                    src_a, src_w = acc[:, done:], wsum[done:]
                    if rest > done:  # overlapping ranges: copy through a temporary
                        src_a, src_w = src_a.clone(), src_w.clone()
                    acc[:, :rest].copy_(src_a)
                    wsum[:rest].copy_(src_w)
                acc[:, rest:].zero_()
                wsum[rest:].zero_()

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
        import torch

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
            return _exp_shifted(x)

        def on_band(y0: int, y1: int, acc: torch.Tensor, wsum: torch.Tensor) -> None:
            # A positive per-pixel factor does not change the argmax: no division for the labels.
            label_sink[y0:y1] = _argmax_channels(acc)
            if isinstance(prob_sink, np.ndarray) and prob_sink.dtype == np.float16:
                # An in-memory float16 array: normalise, convert and transpose straight into it.
                _div_into(acc, wsum, torch.from_numpy(prob_sink[:, y0:y1]))
            elif prob_sink is not None:
                band = torch.empty(acc.shape, dtype=torch.float16)
                _div_into(acc, wsum, band)  # normalise, convert and (if HWC-backed) transpose in one pass
                prob_sink[:, y0:y1] = band.numpy()

        self._blend_stream(image, c, soft, on_band, need_weights=prob_sink is not None)
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
        """
        import itertools

        import torch

        if self.dims != 3:
            raise ConfigError(f"{self.meta.arch} is a 2-D model; predict volumes slice by slice")
        if slab.ndim != 3:
            raise ConfigError(f"expected a (Z, H, W) stack of slices, got shape {slab.shape}")
        shape = tuple(int(v) for v in slab.shape)
        tile = tuple(min(t, n) for t, n in zip(self.tile3, shape, strict=True))
        ovs = tuple(overlap_pixels(t, self.overlap) if t == full else 0
                    for t, full in zip(tile, self.tile3, strict=True))
        starts = [tile_starts(n, t, o) for n, t, o in zip(shape, tile, ovs, strict=True)]
        wt = torch.from_numpy(blend_weights_nd(tile, self.blend, ovs))
        c = self.meta.num_classes
        acc = torch.zeros((c, *shape), dtype=torch.float32)
        wsum = torch.zeros(shape, dtype=torch.float32)
        mean, std = float(self.meta.mean[0]) * 255.0, float(self.meta.std[0]) * 255.0
        corners = list(itertools.product(*starts))
        with torch.inference_mode():
            for i in range(0, len(corners), self.batch_size):
                chunk = corners[i : i + self.batch_size]
                cuts = [tuple(slice(a, a + t) for a, t in zip(k, tile, strict=True)) for k in chunk]
                x = torch.from_numpy(np.stack([slab[cut] for cut in cuts]))[:, None].float()
                x.sub_(mean).div_(std)
                logits, denom = _exp_shifted(self._run(x.to(self.device)).float().cpu())
                for j, cut in enumerate(cuts):
                    acc[(slice(None), *cut)].addcmul_(logits[j], torch.div(wt, denom[j]))
                    wsum[cut] += wt
        labels = _argmax_channels(acc)
        probs = torch.div(acc, wsum).to(torch.float16).numpy() if keep_probs else None
        return SemanticPrediction(labels, probs)

    def predict_landmarks(self, image: Any, *, heatmap_sink: BandSink | None = None) -> LandmarkPrediction:
        """Tiled heatmap prediction with streaming peak decoding (stacked hourglass), or Keypoint R-CNN.

        Args:
            image: ``(H, W, 3) uint8`` array-like.
            heatmap_sink: Receives ``heatmap_sink[:, y0:y1] = (K, h, W) float16``; in memory when None.
        """
        import torch
        import torch.nn.functional as F

        if self.meta.arch.startswith("keypointrcnn"):
            return self._predict_keypointrcnn(image)
        h, w = image.shape[:2]
        k = self.meta.num_classes
        heat = None
        if heatmap_sink is None:
            heat = np.zeros((k, h, w), dtype=np.float16)
            heatmap_sink = heat
        best = np.full(k, -np.inf, dtype=np.float32)
        best_xy = np.zeros((k, 2), dtype=np.float32)

        tiles_h, tiles_w = self._grid(h, w)[2:4]

        def soft_cropped(hm: torch.Tensor) -> tuple[torch.Tensor, None]:
            hm = hm.float()
            size = (hm.shape[-2] * 4, hm.shape[-1] * 4)
            up = F.interpolate(hm, size=size, mode="bilinear", align_corners=False).cpu()
            return up[..., :tiles_h, :tiles_w], None

        def on_band(y0: int, y1: int, acc: torch.Tensor, wsum: torch.Tensor) -> None:
            band = torch.div(acc, wsum).contiguous().numpy()
            heatmap_sink[:, y0:y1] = _to_float16(band)
            flat = band.reshape(k, -1)
            idx = flat.argmax(1)
            val = flat[np.arange(k), idx]
            for j in np.nonzero(val > best)[0]:
                yy, xx = divmod(int(idx[j]), band.shape[2])
                # Quarter-pixel shift towards the larger neighbour (the usual heatmap refinement).
                dx = 0.25 * np.sign(band[j, yy, min(xx + 1, w - 1)] - band[j, yy, max(xx - 1, 0)])
                dy = 0.25 * np.sign(band[j, min(yy + 1, band.shape[1] - 1), xx] - band[j, max(yy - 1, 0), xx])
                best[j] = val[j]
                best_xy[j] = (xx + 0.5 + dx, y0 + yy + 0.5 + dy)

        self._blend_stream(image, k, soft_cropped, on_band)
        kps = np.concatenate([best_xy, best[:, None]], axis=1).astype(np.float32)
        return LandmarkPrediction(heat, kps)

    def _predict_keypointrcnn(self, image: Any) -> LandmarkPrediction:
        x = self._to_tensor([np.asarray(image)[..., :3]])
        out = self._run(x)[0]
        keep = (out["scores"] >= self.score_thresh).cpu().numpy()
        kps = out["keypoints"].float().cpu().numpy()[keep]
        ksc = out["keypoints_scores"].float().cpu().numpy()[keep]
        inst = [
            np.concatenate([kp[:, :2], s[:, None]], axis=1).astype(np.float32) for kp, s in zip(kps, ksc, strict=True)
        ]
        top = inst[0] if inst else np.zeros((self.meta.num_classes, 3), np.float32)
        return LandmarkPrediction(None, top, inst)

    def predict_panoptic(self, image: Any) -> PanopticPrediction:
        """Whole-image panoptic prediction (no tiling yet) fused by UPSNet's parameter-free head."""
        x = self._to_tensor([np.asarray(image)[..., :3]])
        out = self._run(x)[0]
        ids, segs = self.model.fuse(out, score_thresh=self.score_thresh)
        for s in segs:
            s["category_id"] = (
                int(self.category_ids[s["category_id"]])
                if s["category_id"] < len(self.category_ids)
                else s["category_id"]
            )
        return PanopticPrediction(ids.cpu().numpy().astype(np.int32), segs)

    def predict_instances(self, image: Any) -> InstancePrediction:
        """Tiled instance prediction with cross-tile merging and duplicate suppression."""
        h, w = image.shape[:2]
        ys, xs, th, tw, _, _ = self._grid(h, w)
        tiles = [Tile(y, x, y + th, x + tw, r, c) for r, y in enumerate(ys) for c, x in enumerate(xs)]
        dets: list[_Det] = []
        for chunk, x in self._batches(image, tiles):
            for t, o in zip(chunk, self._run(x), strict=True):
                dets.extend(self._tile_dets(t, o, h, w))
        return self._merge(dets, h, w)

    def _tile_dets(self, t: Tile, o: dict[str, Any], h: int, w: int) -> list[_Det]:
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
            out.append(
                _Det(
                    int(lab),
                    float(sc),
                    t.y0 + int(r0),
                    t.x0 + int(c0),
                    m[r0:r1, c0:c1].copy(),
                    bool(cut),
                    (t.y0, t.x0, t.y1, t.x1),
                )
            )
        return out

    def _merge(self, dets: list[_Det], h: int, w: int) -> InstancePrediction:
        # 1. Detections of one object seen by two tiles agree inside the windows' common area:
        #    group them (union-find) when their masks there have IoU > 0.5, and union each group.
        parent = list(range(len(dets)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, a in enumerate(dets):
            for j in range(i + 1, len(dets)):
                b = dets[j]
                if a.label == b.label and a.tile != b.tile and _window_iou(a, b) > 0.5:
                    parent[find(j)] = find(i)
        groups: dict[int, _Det] = {}
        for i in sorted(range(len(dets)), key=lambda i: (dets[i].cut, -dets[i].score)):
            r = find(i)
            if r in groups:
                _union_into(groups[r], dets[i])
            else:
                groups[r] = dets[i]
        # 2. Remaining duplicates (same class, global mask IoU above nms_iou): keep the better one.
        kept: list[_Det] = []
        for d in sorted(groups.values(), key=lambda d: (d.cut, -d.score)):
            if not any(
                k.label == d.label
                and (inter := _intersection(k, d))
                and inter / (k.area + d.area - inter) > self.nms_iou
                for k in kept
            ):
                kept.append(d)
        kept.sort(key=lambda d: -d.score)
        res = InstancePrediction(h, w)
        res.rles = [_crop_to_rle(d.crop, d.y0, d.x0, h, w) for d in kept]
        res.boxes = np.array([d.box for d in kept], dtype=np.float32).reshape(-1, 4)
        res.scores = np.array([d.score for d in kept], dtype=np.float32)
        res.labels = np.array([d.label for d in kept], dtype=np.int64)
        res.category_ids = np.array(
            [self.category_ids[lab] if lab < len(self.category_ids) else lab for lab in res.labels], dtype=np.int64
        )
        return res


def _window_iou(a: _Det, b: _Det) -> float:
    """Mask IoU of two detections restricted to the area both of their tiles saw."""
    y0, x0 = max(a.tile[0], b.tile[0]), max(a.tile[1], b.tile[1])
    y1, x1 = min(a.tile[2], b.tile[2]), min(a.tile[3], b.tile[3])
    if y0 >= y1 or x0 >= x1:
        return 0.0

    def window(d: _Det) -> np.ndarray:
        m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        dx0, dy0, dx1, dy1 = d.box
        cx0, cy0, cx1, cy1 = max(dx0, x0), max(dy0, y0), min(dx1, x1), min(dy1, y1)
        if cx0 < cx1 and cy0 < cy1:
            m[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = d.crop[cy0 - dy0 : cy1 - dy0, cx0 - dx0 : cx1 - dx0]
        return m

    ma, mb = window(a), window(b)
    union = int((ma | mb).sum())
    return int((ma & mb).sum()) / union if union else 0.0


def _exp_shifted(x: Any) -> tuple[Any, Any]:
    """An unnormalised softmax over dim 1, in place: ``(exp(x − max), Σ exp(x − max))``.

    softmax = the first / the second; callers fold the division into their blend weight, so no
    normalised-probability pass is made. ``x`` (the logits) is overwritten.
    """
    x.sub_(x.amax(1, keepdim=True))
    x.exp_()
    return x, x.sum(1)


def _softmax_channels(logits: Any) -> Any:
    """Softmax over dim 1 of ``(N, C, h, w)`` in float32.

    torch's CPU ``softmax(1)`` on NCHW is a strided reduction and was the largest cost of tiled
    inference (bench/RESULTS_models.md); max / exp / sum as element-wise ops are vectorised.
    """
    x = logits.float()
    x = x - x.amax(1, keepdim=True)
    x.exp_()
    x /= x.sum(1, keepdim=True)
    return x


def labels_and_quantised_probs(logits: Any, probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One tile's outputs from its logits: ``(labels (h, w), probs (C, h, w) uint8 | None)``.

    Labels are the argmax of the logits, which is the argmax of their softmax without the ties that
    float rounding makes there, so ``--probs`` and ``--no-probs`` give the same label maps.
    Probabilities are ``round(255 · softmax)``. On the CPU both reductions run along the axis the
    model's output keeps contiguous: for channels-last logits of 21 × 512² that is 11 + 10 ms,
    against 44 ms for the argmax of the probabilities and 18 ms for a strided softmax (bench/RESULTS.md,
    session 5).

    Args:
        logits: ``(C, h, w)`` float tensor, planar or channels-last, on any device.
        probs: Also return the quantised probabilities.

    Returns:
        ``labels (h, w)`` uint8 (uint16 above 256 classes) class indices, and ``(C, h, w)`` uint8
        probabilities, C-contiguous, or None.
    """
    import torch

    if logits.device.type != "cpu":  # reductions are cheap on an accelerator: copy back the results only
        dt = np.uint8 if logits.shape[0] <= 256 else np.uint16
        labels = logits.argmax(0).to(torch.int32).cpu().numpy().astype(dt)
        qa = (torch.softmax(logits, 0).mul_(255.0).round_().to(torch.uint8).contiguous().cpu().numpy()
              if probs else None)
        return labels, qa
    labels = _argmax_channels(logits)
    if not probs:
        return labels, None
    if logits.shape[0] > 1 and logits.stride(0) == 1:  # channels-last: the channels are innermost
        p = torch.softmax(logits.permute(1, 2, 0), -1)
        qt = p.mul_(255.0).round_().to(torch.uint8).permute(2, 0, 1).contiguous()
    else:
        qt = torch.softmax(logits, 0).mul_(255.0).round_().to(torch.uint8)
    return labels, qt.numpy()


def _argmax_channels(a: Any) -> np.ndarray:
    """``(C, h, w)`` → ``(h, w)`` uint8/uint16 indices of the maximum (the first one on ties).

    An HWC-backed torch tensor (channels innermost) is reduced by torch along its contiguous axis.
    Planar data get a pass per channel over contiguous planes with preallocated masks: several times
    faster than numpy's strided reduction over axis 0 or torch's ``argmax(0)`` for such bands.
    """
    dt = np.uint8 if a.shape[0] <= 256 else np.uint16
    if not isinstance(a, np.ndarray):
        if a.shape[0] > 1 and a.stride(0) == 1:
            # ``max(0).indices``: the first maximum, as argmax, and 25% faster than torch's argmax.
            return a.max(0).indices.numpy().astype(dt)  # type: ignore[no-any-return]
        a = a.contiguous().numpy()
    best = a[0].copy()
    idx = np.zeros(best.shape, dtype=dt)
    better = np.empty(best.shape, dtype=bool)
    for c in range(1, a.shape[0]):
        np.greater(a[c], best, out=better)
        np.maximum(best, a[c], out=best)
        np.copyto(idx, dt(c), where=better)
    if a.dtype.kind == "f":
        # A NaN wins, as in np.argmax and torch's max (the HWC path): ``best`` is NaN exactly where a
        # channel was, and those few pixels take np.argmax's answer.
        nan = np.isnan(best)
        if nan.any():
            idx[nan] = np.argmax(a[:, nan], axis=0)
    return idx


def _div_into(acc: Any, wsum: Any, out: Any) -> None:
    """``out (C, h, w) = acc / wsum`` in ``out``'s dtype and layout.

    When ``acc`` is HWC-backed and ``out`` planar, the division is also a transposition: done in
    blocks of rows of about 1 MiB, which stay in cache, it is 5x faster than one strided pass.
    """
    c, h, w = acc.shape
    if acc.stride(0) != 1 or c == 1:
        _torch_div(acc, wsum, out)
        return
    rows = max(1, (1 << 20) // max(1, w * c * 4))
    for r in range(0, h, rows):
        _torch_div(acc[:, r : r + rows], wsum[r : r + rows], out[:, r : r + rows])


def _torch_div(a: Any, b: Any, out: Any) -> None:
    """``torch.div(a, b, out=out)`` (a separate name keeps profiles readable)."""
    import torch

    torch.div(a, b, out=out)


def model_dims(arch: str) -> int:
    """Spatial dimensions of a registered architecture (2 for names the registry does not know)."""
    from segpipe.models.registry import arch_dims

    return arch_dims(arch)


def _is_channels_last(x: Any) -> bool:
    """Whether an ``(N, C, h, w)`` tensor stores its channels innermost (and C > 1)."""
    import torch

    return bool(x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) and x.stride(1) == 1)


def _band_buffer(channels: int, h: int, w: int, *, channels_last: bool) -> Any:
    """A zeroed float32 ``(C, h, w)`` tensor, backed by ``(h, w, C)`` storage when ``channels_last``."""
    import torch

    if channels_last:
        return torch.zeros((h, w, channels), dtype=torch.float32).permute(2, 0, 1)
    return torch.zeros((channels, h, w), dtype=torch.float32)


def _to_float16(a: np.ndarray) -> np.ndarray:
    """float32 → float16 via torch (multi-threaded and faster than ``ndarray.astype``)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).numpy()


def _intersection(a: _Det, b: _Det) -> int:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x0 >= x1 or y0 >= y1:
        return 0
    return int(
        (a.crop[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0] & b.crop[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]).sum()
    )


def _union_into(k: _Det, d: _Det) -> None:
    ax0, ay0, ax1, ay1 = k.box
    bx0, by0, bx1, by1 = d.box
    x0, y0, x1, y1 = min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1)
    m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    m[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] |= k.crop
    m[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] |= d.crop
    k.crop, k.y0, k.x0 = m, y0, x0
    k.score = max(k.score, d.score)
    k.cut = k.cut and d.cut


def _crop_to_rle(crop: np.ndarray, y0: int, x0: int, h: int, w: int) -> dict[str, Any]:
    """Compressed COCO RLE of a full ``h × w`` mask that is ``crop`` at ``(y0, x0)`` and 0 elsewhere.

    Runs are computed from the crop alone (column-major, as COCO counts), so a small object in a huge
    image never materialises an ``h × w`` array.
    """
    from pycocotools import mask as mask_utils

    ch, cw = crop.shape
    # Column-major run boundaries inside the crop, shifted to global column-major positions.
    padded = np.zeros((ch + 2, cw), dtype=np.int8)
    padded[1:-1] = crop
    diff = np.diff(padded, axis=0)  # (ch + 1, cw): +1 at a run start, −1 after a run end
    # np.nonzero on the transpose walks column by column, rows in order within: COCO's order.
    s_col, s_row = np.nonzero((diff == 1).T)
    e_col, e_row = np.nonzero((diff == -1).T)
    starts = (x0 + s_col).astype(np.int64) * h + y0 + s_row
    ends = (x0 + e_col).astype(np.int64) * h + y0 + e_row
    if starts.size > 1:  # a run reaching the bottom of one column may continue at the top of the next
        join = starts[1:] == ends[:-1]
        if join.any():
            starts = np.concatenate([starts[:1], starts[1:][~join]])
            ends = np.concatenate([ends[:-1][~join], ends[-1:]])
    counts: list[int] = []
    pos = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        counts.extend((s - pos, e - s))
        pos = e
    counts.append(h * w - pos)
    rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return rle


def predictor_for(arch: str, num_classes: int, *, model: Any = None, **kw: Any) -> Predictor:
    """A predictor for an architecture without a checkpoint (random weights unless ``model`` given)."""
    from segpipe.models.checkpoint import CheckpointMeta
    from segpipe.models.registry import build_model

    meta = CheckpointMeta.for_arch(arch, num_classes)
    if model is None:
        model = build_model(arch, num_classes)
    return Predictor(model, meta, **kw)
