"""Tile-grid properties (hypothesis) and blend weights; segpipe.core.tiles is pure numpy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.core.tiles import (
    blend_weights,
    gaussian_weights,
    linear_weights,
    overlap_pixels,
    tile_grid,
    tile_starts,
)


@settings(max_examples=100, deadline=None)
@given(
    h=st.integers(1, 600),
    w=st.integers(1, 600),
    tile=st.integers(1, 256),
    frac=st.floats(0, 0.9),
)
def test_grid_covers_flush_and_bounded(h: int, w: int, tile: int, frac: float) -> None:
    ov = min(int(frac * tile), tile - 1)
    tiles = tile_grid(h, w, tile, ov)
    cover = np.zeros((h, w), dtype=np.int32)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w
        assert t.height == min(tile, h) and t.width == min(tile, w)
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert (cover >= 1).all()
    assert max(t.y1 for t in tiles) == h and max(t.x1 for t in tiles) == w  # last tile flush
    ys = tile_starts(h, tile, ov)
    assert ys == sorted(set(ys)) and ys[0] == 0
    # consecutive tiles are at most one stride apart, so overlap is at least `ov`
    assert all(b - a <= tile - ov for a, b in zip(ys, ys[1:]))
    # minimal: dropping any interior start would leave a gap or exceed the stride
    assert len(ys) == (1 if h <= tile else -(-(h - tile) // (tile - ov)) + 1)


def test_rectangular_tiles() -> None:
    tiles = tile_grid(100, 300, (64, 128), (16, 32))
    assert {(t.height, t.width) for t in tiles} == {(64, 128)}
    assert tiles[-1].y1 == 100 and tiles[-1].x1 == 300


def test_overlap_pixels() -> None:
    assert overlap_pixels(512, 0.25) == 128
    assert overlap_pixels(512, 64) == 64
    with pytest.raises(ValueError):
        overlap_pixels(64, 64)


@pytest.mark.parametrize("fraction", [1.0, 1.5, 64.0, -0.25, float("nan"), float("inf")])
def test_overlap_pixels_never_reads_a_float_as_pixels(fraction: float) -> None:
    """User input arrives as a float fraction: 1.5 once meant a 1-pixel overlap, silently."""
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        overlap_pixels(128, fraction)
    assert overlap_pixels(128, 1) == 1  # an int is pixels, for internal callers that mean them


def test_min_stride_bounds_the_overlap() -> None:
    from segpipe.core.tiles import max_overlap_fraction, min_stride

    assert min_stride(128) == 8 and min_stride(16) == 1 and min_stride(17) == 2
    for tile in (16, 17, 64, 100, 128, 512, 1000):
        assert tile - overlap_pixels(tile, max_overlap_fraction(tile)) >= min_stride(tile)


def test_weights_positive_and_peaked() -> None:
    g = gaussian_weights(64, 48)
    assert g.dtype == np.float32 and g.shape == (64, 48)
    assert g.min() > 0 and g.max() == 1.0
    assert g[32, 24] > g[0, 0]
    lin = linear_weights(64, 64, 16)
    assert lin.min() > 0 and lin[32, 32] == 1.0 and lin[0, 32] < lin[8, 32]
    assert (blend_weights(8, 8, "constant") == 1).all()
    with pytest.raises(ValueError):
        blend_weights(8, 8, "nope")


def test_core_tiles_imports_numpy_only() -> None:
    code = (
        "import sys, segpipe.core.tiles\n"
        "print(sorted(m for m in ('torch', 'dask', 'typer', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
