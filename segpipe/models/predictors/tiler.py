"""The sliding window: tile grids, batches of tiles, and weighted blending with streamed row bands.

Every tiled predictor runs through one :class:`Tiler`, so the geometry (:mod:`segpipe.core.tiles`:
starts, overlap, the last tile flush with the edge) and the blending arithmetic exist once. The
tiler knows nothing about models: a predictor hands it ``forward`` (tiles → model output) and
``soft`` (model output → values to blend), and receives finished bands through ``on_band``.

**Streaming.** Soft outputs are blended tile row by tile row into a band buffer of ``tile_h × W × C``;
as soon as no later tile touches a band of rows it is handed to ``on_band`` and the buffer is reused,
so memory is ``O(tile_h × W × C)``, never ``O(H × W × C)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.core.tiles import Tile, blend_weights, blend_weights_nd, overlap_pixels, rows_done_after, tile_starts

#: Tiles (``(h, w, 3)`` image windows or ``(z, h, w)`` volume windows) → the model's output for them.
Forward = Callable[[list[np.ndarray]], Any]
#: Model output → ``(values (N, C, ...) float32 CPU tensor, denom (N, ...) | None)``: the tile is
#: blended as ``values · weight / denom`` (a softmax's normalisation fused into the blend).
Soft = Callable[[Any], tuple[Any, Any]]
#: ``(y0, y1, acc (C, y1 − y0, W), wsum (y1 − y0, W))`` of a finished band of rows.
OnBand = Callable[[int, int, Any, Any], None]


@dataclass(frozen=True)
class Grid:
    """The tiles of one ``height × width`` image.

    Attributes:
        height: Image height H.
        width: Image width W.
        ys: Tile row starts.
        xs: Tile column starts.
        th: Tile height (the tile, or H where the image is smaller).
        tw: Tile width (likewise).
        oy: Vertical overlap in pixels (0 when the image is one tile high).
        ox: Horizontal overlap in pixels.
    """

    height: int
    width: int
    ys: list[int]
    xs: list[int]
    th: int
    tw: int
    oy: int
    ox: int

    def row(self, r: int) -> list[Tile]:
        """The tiles of tile row ``r``, left to right."""
        y = self.ys[r]
        return [Tile(y, x, y + self.th, x + self.tw, r, c) for c, x in enumerate(self.xs)]

    def tiles(self) -> list[Tile]:
        """All tiles, row-major."""
        return [t for r in range(len(self.ys)) for t in self.row(r)]

    def rows_final(self, r: int) -> int:
        """How many rows from the top of tile row ``r`` no later tile row touches."""
        return rows_done_after(self.ys, r, self.height) - self.ys[r]


@dataclass(frozen=True)
class Tiler:
    """Sliding-window settings and the loops over them.

    Args:
        tile: Tile ``(h, w)``; an image side shorter than the tile gets one tile of that side.
        overlap: A float is a fraction of the tile in [0, 1); an ``int`` is pixels (internal callers;
            see :func:`~segpipe.core.tiles.overlap_pixels`).
        blend: ``gaussian``, ``linear`` or ``constant`` weights.
        batch_size: Tiles per forward pass.
    """

    tile: tuple[int, int]
    overlap: float | int
    blend: str = "gaussian"
    batch_size: int = 1

    def grid(self, h: int, w: int) -> Grid:
        """The grid of an ``h × w`` image; a side clipped to the image has no overlap."""
        th, tw = min(self.tile[0], h), min(self.tile[1], w)
        oy = overlap_pixels(self.tile[0], self.overlap) if th == self.tile[0] else 0
        ox = overlap_pixels(self.tile[1], self.overlap) if tw == self.tile[1] else 0
        return Grid(h, w, tile_starts(h, th, oy), tile_starts(w, tw, ox), th, tw, oy, ox)

    def batches(self, image: Any, tiles: Sequence[Tile]) -> Iterator[tuple[list[Tile], list[np.ndarray]]]:
        """Groups of up to ``batch_size`` tiles with their ``(th, tw, 3)`` pixels (extra bands dropped).

        Args:
            image: ``(H, W, C >= 3)`` array-like supporting ``image[y0:y1, x0:x1]``; only the tiles'
                windows are read.
            tiles: The tiles, in the order they are run.
        """
        for i in range(0, len(tiles), self.batch_size):
            chunk = list(tiles[i : i + self.batch_size])
            yield chunk, [np.asarray(image[t.y0 : t.y1, t.x0 : t.x1])[..., :3] for t in chunk]

    def blend_rows(self, image: Any, channels: int, forward: Forward, soft: Soft, on_band: OnBand, *,
                   need_weights: bool = True) -> None:
        """Sliding window with weighted blending, finalising row bands as soon as they are complete.

        Everything runs in torch on two buffers allocated once per image: ``acc (C, tile_h, W)`` and
        ``wsum (tile_h, W)`` float32 on the CPU. Each tile is added with one fused multiply-add
        (``acc += values · weight``) and no tile-sized temporaries.

        Args:
            image: ``(H, W, 3)`` array-like.
            channels: C of the soft output.
            forward: ``list[(th, tw, 3)]`` tiles → model output.
            soft: Model output → ``(values (N, C, th, tw) float32 CPU tensor, denom)``; ``denom`` is
                None or ``(N, th, tw)``: the tile is then added as ``values · weight / denom``.
            on_band: Called with ``(y0, y1, acc (C, y1 − y0, W), wsum (y1 − y0, W))`` for each finished
                band: weighted sums, not yet divided by the weights (views into the reused buffers:
                copy what must outlive the call).
            need_weights: Accumulate ``wsum``; when False (labels only: the argmax needs no
                normalisation) ``on_band`` gets a zero ``wsum``.
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        h, w = image.shape[:2]
        g = self.grid(h, w)
        wt = torch.from_numpy(blend_weights(g.th, g.tw, self.blend, (g.oy, g.ox)))
        # The buffers take the memory layout of the model's output, which follows its input: a
        # channels-last output (the CPU default here, the input being an HWC view) is accumulated into
        # an HWC-backed buffer, so the multiply-add streams both operands contiguously (5x faster than
        # mixing layouts: bench/RESULTS_models.md). Allocated at the first batch, when the layout is known.
        acc: torch.Tensor | None = None  # (C, th, W) rows [y, y + th) of this tile row
        wsum = torch.zeros((g.th, w), dtype=torch.float32)
        with torch.inference_mode():
            for r, y in enumerate(g.ys):
                for chunk, arrays in self.batches(image, g.row(r)):
                    vals, denom = soft(forward(arrays))
                    if acc is None:
                        acc = band_buffer(channels, g.th, w, channels_last=is_channels_last(vals))
                    for i, t in enumerate(chunk):
                        scale = wt if denom is None else torch.div(wt, denom[i])
                        acc[:, :, t.x0 : t.x1].addcmul_(vals[i], scale)
                        if need_weights:
                            wsum[:, t.x0 : t.x1] += wt
                assert acc is not None
                done = g.rows_final(r)
                on_band(y, y + done, acc[:, :done], wsum[:done])
                _shift_up(acc, wsum, done)

    def volume_windows(self, shape: tuple[int, ...], tile: tuple[int, ...]) -> tuple[list[tuple[slice, ...]], Any]:
        """The windows of a volume and their blend weights.

        Args:
            shape: ``(Z, H, W)`` of the volume.
            tile: ``(depth, height, width)`` of the model's tile; clipped to the volume, and an axis
                clipped so has no overlap.

        Returns:
            Every window as a tuple of slices (row-major over the corners), and the ``(z, h, w)``
            float32 torch blend weights of a window.
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        clipped = tuple(min(t, n) for t, n in zip(tile, shape, strict=True))
        ovs = tuple(overlap_pixels(t, self.overlap) if t == full else 0
                    for t, full in zip(clipped, tile, strict=True))
        starts = [tile_starts(n, t, o) for n, t, o in zip(shape, clipped, ovs, strict=True)]
        wt = torch.from_numpy(blend_weights_nd(clipped, self.blend, ovs))
        cuts = [tuple(slice(a, a + t) for a, t in zip(k, clipped, strict=True)) for k in itertools.product(*starts)]
        return cuts, wt

    def blend_volume(self, volume: np.ndarray, tile: tuple[int, ...], channels: int, forward: Forward,
                     soft: Soft) -> tuple[Any, Any]:
        """3-D sliding window with separable blend weights, held whole (the caller bounds the slab).

        Args:
            volume: ``(Z, H, W)`` array.
            tile: ``(depth, height, width)`` of the model's tile.
            channels: C of the soft output.
            forward: ``list[(z, h, w)]`` windows → model output.
            soft: As for :meth:`blend_rows`, with ``(N, C, z, h, w)`` values and ``(N, z, h, w)`` denom.

        Returns:
            ``acc (C, Z, H, W)`` weighted sums and ``wsum (Z, H, W)`` weights, float32 torch tensors.
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        shape = tuple(int(v) for v in volume.shape)
        cuts, wt = self.volume_windows(shape, tile)
        acc = torch.zeros((channels, *shape), dtype=torch.float32)
        wsum = torch.zeros(shape, dtype=torch.float32)
        with torch.inference_mode():
            for i in range(0, len(cuts), self.batch_size):
                chunk = cuts[i : i + self.batch_size]
                vals, denom = soft(forward([volume[cut] for cut in chunk]))
                for j, cut in enumerate(chunk):
                    acc[(slice(None), *cut)].addcmul_(vals[j], wt if denom is None else torch.div(wt, denom[j]))
                    wsum[cut] += wt
        return acc, wsum


def _shift_up(acc: Any, wsum: Any, done: int) -> None:
    """Moves the unfinished rows below ``done`` to the top of the band buffers and zeroes the rest.

    They start the next tile row, which overlaps this one by exactly those rows.
    """
    rest = acc.shape[1] - done
    if rest > 0:
        src_a, src_w = acc[:, done:], wsum[done:]
        if rest > done:  # overlapping ranges: copy through a temporary
            src_a, src_w = src_a.clone(), src_w.clone()
        acc[:, :rest].copy_(src_a)
        wsum[:rest].copy_(src_w)
    acc[:, rest:].zero_()
    wsum[rest:].zero_()


def is_channels_last(x: Any) -> bool:
    """Whether an ``(N, C, h, w)`` tensor stores its channels innermost (and C > 1)."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    return bool(x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) and x.stride(1) == 1)


def band_buffer(channels: int, h: int, w: int, *, channels_last: bool) -> Any:
    """A zeroed float32 ``(C, h, w)`` tensor, backed by ``(h, w, C)`` storage when ``channels_last``."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    if channels_last:
        return torch.zeros((h, w, channels), dtype=torch.float32).permute(2, 0, 1)
    return torch.zeros((channels, h, w), dtype=torch.float32)
