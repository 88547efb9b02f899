"""Tile grids and blend weights for sliding-window inference (pure numpy).

A grid covers an ``H × W`` image with tiles of at most ``tile`` pixels per side, consecutive tiles
``tile − overlap`` apart, the first at 0 and the last flush with the far edge (so it may overlap its
neighbour more than ``overlap``). An image side shorter than the tile gets one tile of that side.
Blend weights are positive everywhere, so every pixel gets a defined weighted average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Tile:
    """One window ``[y0, y1) × [x0, x1)`` of the grid, with its grid row and column."""

    y0: int
    x0: int
    y1: int
    x1: int
    row: int
    col: int

    @property
    def height(self) -> int:
        """``y1 − y0``."""
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        """``x1 − x0``."""
        return self.x1 - self.x0


#: The smallest stride as a fraction of the tile: at most 16 × 16 times the tiles of a grid without
#: overlap. An overlap of 0.99 on a 128-pixel tile (a stride of 1 pixel) once planned ~50k tiles for
#: a 256 × 512 image and ran effectively forever.
MIN_STRIDE_FRACTION = 1 / 16


def min_stride(tile: int) -> int:
    """The smallest stride a ``tile``-pixel side may have: ``ceil(tile / 16)``, at least 1."""
    return max(1, math.ceil(tile * MIN_STRIDE_FRACTION))


def max_overlap_fraction(tile: int) -> float:
    """The largest overlap fraction (3 decimals, rounded down) whose stride is at least :func:`min_stride`."""
    return math.floor((tile - min_stride(tile)) / tile * 1000) / 1000


def overlap_pixels(tile: int, overlap: float | int) -> int:
    """An overlap in pixels: a ``float`` is a fraction of the tile (``0 <= f < 1``), an ``int`` is pixels.

    Every user-facing value (``--overlap``, a checkpoint's ``tile_overlap``, a pipeline's ``overlap``)
    arrives as a float fraction, so only internal callers that pass an ``int`` on purpose mean pixels;
    a float of 1 or more is refused rather than read as pixels.

    Raises:
        ValueError: a fraction outside [0, 1), or an overlap that leaves no stride (``>= tile``) or is
            negative.
    """
    if isinstance(overlap, bool):
        raise ValueError(f"overlap {overlap!r} is neither a fraction nor pixels")
    if isinstance(overlap, int):
        px = overlap
    else:
        if not (math.isfinite(overlap) and 0 <= overlap < 1):
            raise ValueError(f"overlap {overlap} is not a fraction of the tile in [0, 1)")
        px = int(round(overlap * tile))
    if px < 0 or px >= tile:
        raise ValueError(f"overlap {overlap} must be in [0, tile) pixels or [0, 1) of the tile {tile}")
    return px


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis.

    Args:
        length: Image side (> 0).
        tile: Tile side (> 0).
        overlap: Overlap in pixels, ``0 <= overlap < tile``.

    Returns:
        Sorted starts; the first is 0, the last is ``max(length − tile, 0)``.
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got {length}, {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    starts = [i * stride for i in range(n - 1)]
    starts.append(length - tile)
    return starts


def tile_grid(height: int, width: int, tile: int | tuple[int, int], overlap: int | tuple[int, int] = 0) -> list[Tile]:
    """All tiles of an image, row-major (rows top to bottom, then columns left to right).

    Args:
        height: Image height.
        width: Image width.
        tile: Tile side, or ``(th, tw)``.
        overlap: Overlap in pixels, or ``(oy, ox)``.

    Returns:
        Tiles covering every pixel; each is ``min(th, height) × min(tw, width)``.
    """
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    oy, ox = (overlap, overlap) if isinstance(overlap, int) else overlap
    ys = tile_starts(height, th, oy)
    xs = tile_starts(width, tw, ox)
    h, w = min(th, height), min(tw, width)
    return [Tile(y, x, y + h, x + w, r, c) for r, y in enumerate(ys) for c, x in enumerate(xs)]


def gaussian_weights(height: int, width: int, sigma_scale: float = 0.125, min_weight: float = 1e-3) -> np.ndarray:
    """A separable Gaussian centred on the tile, as nnU-Net and MONAI blend.

    Args:
        height: Tile height.
        width: Tile width.
        sigma_scale: Sigma as a fraction of the side.
        min_weight: Floor (relative to the peak 1) so border pixels covered by one tile stay defined.

    Returns:
        ``(height, width) float32`` in ``[min_weight, 1]``.
    """

    def axis(n: int) -> np.ndarray:
        c = (n - 1) / 2.0
        s = max(sigma_scale * n, 1e-6)
        return np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2)

    w = np.outer(axis(height), axis(width))
    w /= w.max()
    return np.maximum(w, min_weight).astype(np.float32)


def linear_weights(height: int, width: int, overlap: int | tuple[int, int], min_weight: float = 1e-3) -> np.ndarray:
    """A tent that ramps linearly over the overlap at each side and is flat (1) in the middle.

    Args:
        height: Tile height.
        width: Tile width.
        overlap: Ramp length in pixels, or ``(oy, ox)``; 0 gives uniform weights.
        min_weight: Floor, as in :func:`gaussian_weights`.

    Returns:
        ``(height, width) float32``.
    """
    oy, ox = (overlap, overlap) if isinstance(overlap, int) else overlap

    def axis(n: int, o: int) -> np.ndarray:
        if o <= 0:
            return np.ones(n)
        i = np.arange(n)
        d = np.minimum(i + 1, n - i).astype(np.float64)  # distance to the nearer edge, 1-based
        return np.clip(d / (o + 1), 0.0, 1.0)

    w = np.outer(axis(height, oy), axis(width, ox))
    return np.maximum(w, min_weight).astype(np.float32)


def blend_weights(height: int, width: int, mode: str = "gaussian", overlap: int | tuple[int, int] = 0) -> np.ndarray:
    """Weights by name: ``gaussian``, ``linear`` or ``constant``; ``(height, width) float32``."""
    if mode == "gaussian":
        return gaussian_weights(height, width)
    if mode == "linear":
        return linear_weights(height, width, overlap)
    if mode == "constant":
        return np.ones((height, width), dtype=np.float32)
    raise ValueError(f"unknown blend mode {mode!r}; known: constant, gaussian, linear")


def blend_weights_nd(shape: tuple[int, ...], mode: str = "gaussian", overlaps: tuple[int, ...] | None = None,
                     min_weight: float = 1e-3) -> np.ndarray:
    """:func:`blend_weights` for any number of axes (3-D tiles of volumes): a separable product.

    Args:
        shape: Tile shape, e.g. ``(depth, height, width)``.
        mode: ``gaussian`` (sigma 1/8 of each side), ``linear`` (ramps over each axis' overlap) or
            ``constant``.
        overlaps: Overlap per axis in pixels (``linear`` only).
        min_weight: Floor relative to the peak 1.

    Returns:
        ``shape`` float32 in ``[min_weight, 1]``.
    """
    if mode not in ("gaussian", "linear", "constant"):
        raise ValueError(f"unknown blend mode {mode!r}; known: constant, gaussian, linear")
    ovs = overlaps or (0,) * len(shape)

    def axis(n: int, o: int) -> np.ndarray:
        if mode == "gaussian":
            c, s = (n - 1) / 2.0, max(0.125 * n, 1e-6)
            return np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2)
        if mode == "linear" and o > 0:
            d = np.minimum(np.arange(n) + 1, n - np.arange(n)).astype(np.float64)
            return np.clip(d / (o + 1), 0.0, 1.0)
        return np.ones(n)

    w = np.ones((), dtype=np.float64)
    for n, o in zip(shape, ovs, strict=True):
        w = np.multiply.outer(w, axis(n, o))
    w /= w.max()
    return np.maximum(w, min_weight).astype(np.float32)


def rows_done_after(starts: list[int], row: int, height: int) -> int:
    """First image row that a tile row after ``row`` still touches (``height`` after the last one).

    Rows above it are final once tile row ``row`` has been blended: a streaming predictor can hand
    them to its sink and free them.
    """
    return starts[row + 1] if row + 1 < len(starts) else height
