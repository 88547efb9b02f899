"""Masks → COCO polygons: pycocotools re-rasterises them exactly, and the fidelity counts are exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mu

from segpipe.core.contours import mask_to_polygons, polygon_fidelity, polygonize, rasterize


def _coco_raster(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """pycocotools' own union of polygons (frPyObjects + merge + decode), independent of ``rasterize``."""
    if not polygons:
        return np.zeros((h, w), bool)
    return mu.decode(mu.merge(mu.frPyObjects(polygons, h, w))).astype(bool)


def _smooth(m: np.ndarray, rounds: int) -> np.ndarray:
    for _ in range(rounds):  # majority filter: blobs with holes, islands and diagonal touches
        p = np.pad(m, 1).astype(int)
        m = (p[1:-1, 1:-1] + p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) >= 3
    return m


@st.composite
def blobs(draw: st.DrawFn) -> np.ndarray:
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    m = draw(arrays(np.bool_, (h, w)))
    return _smooth(m, draw(st.integers(0, 2)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs())
def test_random_blobs_reproduce_exactly_with_keyhole_cuts(m):
    r = polygonize(m)
    assert r.exact and r.holes_dropped == 0
    assert np.array_equal(_coco_raster(r.polygons, *m.shape), m)
    for p in r.polygons:
        assert len(p) >= 6 and len(p) % 2 == 0
        xs, ys = np.array(p[0::2]), np.array(p[1::2])
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= m.shape[1] and ys.max() <= m.shape[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs(), st.sampled_from([0.0, 0.7, 1.5, 3.0]), st.sampled_from(["keyhole", "drop"]))
def test_fidelity_counts_are_exact(m, tol, holes):
    r = polygonize(m, tolerance=tol, holes=holes)
    got = _coco_raster(r.polygons, *m.shape)
    assert r.lost_pixels == int((m & ~got).sum())
    assert r.added_pixels == int((got & ~m).sum())
    assert polygon_fidelity(m, r.polygons) == (r.lost_pixels, r.added_pixels)
    assert np.array_equal(rasterize(r.polygons, *m.shape), got)
    if holes == "drop" and tol == 0:
        assert r.lost_pixels == 0  # dropping holes only ever adds pixels
        assert (r.added_pixels > 0) == (r.holes > 0)
        assert r.holes_dropped == r.holes


def test_solid_convex_shapes_are_exact_and_minimal():
    m = np.zeros((20, 30), bool)
    m[3:11, 5:25] = True
    assert mask_to_polygons(m) == [[5.0, 3.0, 25.0, 3.0, 25.0, 11.0, 5.0, 11.0]]
    yy, xx = np.mgrid[:60, :80]
    disc = ((yy - 30) / 25.0) ** 2 + ((xx - 40) / 33.0) ** 2 <= 1
    r = polygonize(disc)
    assert r.exact and len(r.polygons) == 1 and r.holes == 0
    full = np.ones((7, 9), bool)  # touching every border
    assert mask_to_polygons(full) == [[0.0, 0.0, 9.0, 0.0, 9.0, 7.0, 0.0, 7.0]]
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_holes_keyhole_versus_drop():
    m = np.zeros((12, 12), np.uint8)
    m[1:11, 1:11] = 1
    m[3:5, 3:5] = 0  # a hole
    m[6:9, 6:9] = 0  # a second hole ...
    m[7, 7] = 1  # ... with an island inside: a separate polygon
    key = polygonize(m)
    assert key.exact and key.holes == 2 and key.holes_dropped == 0
    assert len(key.polygons) == 2
    drop = polygonize(m, holes="drop")
    assert drop.holes_dropped == 2 and drop.lost_pixels == 0
    assert drop.added_pixels == 4 + 8  # both holes filled (the island was foreground already)


def test_diagonal_touch_and_nested_holes():
    m = np.zeros((6, 6), bool)
    m[1, 1] = m[2, 2] = True  # touching only at a corner: one 8-connected polygon
    assert polygonize(m).exact
    rings = np.zeros((15, 15), bool)
    for k in range(0, 7, 2):  # concentric rings: holes inside islands inside holes
        rings[k : 15 - k, k : 15 - k] = k % 4 == 0
    r = polygonize(rings)
    assert r.exact and r.holes == 2


def test_tolerance_simplifies_and_counts():
    yy, xx = np.mgrid[:100, :120]
    m = ((yy - 50) / 40.0) ** 2 + ((xx - 60) / 50.0) ** 2 <= 1
    exact = polygonize(m)
    simple = polygonize(m, tolerance=1.5)
    assert len(simple.polygons[0]) < len(exact.polygons[0]) / 3
    assert simple.lost_pixels + simple.added_pixels > 0
    assert (simple.lost_pixels + simple.added_pixels) < 0.05 * m.sum()


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        polygonize(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError):
        polygonize(np.zeros((2, 2), bool), holes="fill")  # type: ignore[arg-type]


def test_large_noisy_mask_is_fast_enough():
    rng = np.random.default_rng(0)
    m = _smooth(rng.random((400, 400)) < 0.5, 1)
    r = polygonize(m)  # thousands of loops and holes
    assert r.exact and r.holes > 100
