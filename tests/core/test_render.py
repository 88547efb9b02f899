from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.core import rle as rle_ops
from segpipe.core.records import Instance, InstanceMask
from segpipe.core.render import (
    instances_from_maps,
    instances_from_maps_detailed,
    regions_from_class_map,
    render_maps,
)


def _im(k: int, cat: int, mask: np.ndarray | None, crowd: bool = False) -> InstanceMask:
    return InstanceMask(
        Instance(k, 1, cat, iscrowd=crowd), rle_ops.encode(mask) if mask is not None else None
    )


def _rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_render_counts_each_loss_exactly() -> None:
    h, w = 6, 8
    a = _rect(h, w, 1, 1, 4, 5)  # 12 px, 4 covered by b
    b = _rect(h, w, 2, 3, 6, 8)  # 20 px
    c = _rect(h, w, 0, 0, 1, 1)  # crowd, 1 px
    d = _rect(h, w, 3, 4, 4, 6)  # fully under e
    e = _rect(h, w, 3, 4, 5, 7)
    ims = [_im(1, 3, a), _im(2, 5, b), _im(3, 7, c, crowd=True), _im(4, 9, None), _im(5, 3, d), _im(6, 4, e)]
    names = {3: "cat", 4: "dog", 5: "person", 7: "crowd", 9: "boxonly"}
    cm, om, losses = render_maps(ims, h, w, names=names)
    assert cm.dtype == np.uint8 and om.dtype == np.uint8
    assert cm[0, 0] == 255 and om[0, 0] == 255
    assert cm[1, 1] == 3 and om[1, 1] == 1 and om[2, 3] == 2 and cm[2, 3] == 5
    assert om[3, 4] == 6 and cm[3, 4] == 4
    assert (cm[om == 0] == 0).all()
    assert losses.losses[("overlap_flattened_pixels", "cat")] == 4 + 2  # a under b; d under e
    assert losses.losses[("overlap_flattened_pixels", "person")] == 6  # b under e (2x3 block)
    assert losses.losses[("crowd_to_void", "crowd")] == 1
    assert losses.losses[("box_only_no_mask", "boxonly")] == 1
    assert losses.losses[("instance_fully_occluded", "cat")] == 1
    assert set(losses.notes) >= {"overlap_flattened_pixels", "crowd_to_void", "box_only_no_mask"}


def test_label_of_and_void_collision() -> None:
    m = _rect(3, 3, 0, 0, 2, 2)
    cm, _, _ = render_maps([_im(1, 90, m)], 3, 3, label_of={90: 7})
    assert cm[0, 0] == 7
    with pytest.raises(ValueError, match="void"):
        render_maps([_im(1, 255, m)], 3, 3)
    cm16, _, _ = render_maps([_im(1, 300, m)], 3, 3)
    assert cm16.dtype == np.uint16 and cm16[0, 0] == 300


def test_object_index_overflow_counted_and_uint16_when_asked() -> None:
    h, w = 1, 300
    ims = [_im(k + 1, 1, _rect(h, w, 0, k, 1, k + 1)) for k in range(300)]
    cm, om, losses = render_maps(ims, h, w)
    assert om.dtype == np.uint8 and om[0, 253] == 254 and om[0, 254] == 255 and om[0, 299] == 255
    assert losses.totals()["object_index_overflow"] == 300 - 254
    cm, om, losses = render_maps(ims, h, w, void_value=65535, max_object_index=65534)
    assert om.dtype == np.uint16 and om[0, 299] == 300 and losses.lossless


def test_mask_size_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="size"):
        render_maps([_im(1, 1, np.ones((2, 2), np.uint8))], 3, 3)


def test_instances_from_maps_majority_and_mixed() -> None:
    cm = np.array([[1, 1, 2, 0], [2, 2, 2, 255]], dtype=np.uint8)
    om = np.array([[1, 1, 1, 0], [2, 2, 2, 255]], dtype=np.uint8)
    d = instances_from_maps_detailed(cm, om)
    assert [(r.category, r.object_index, r.pixels, r.mixed_pixels) for r in d] == [(1, 1, 3, 1), (2, 2, 3, 0)]
    np.testing.assert_array_equal(rle_ops.decode(d[0].rle), om == 1)
    # ties go to the smallest class value
    tie = instances_from_maps(np.array([[3, 2]], np.uint8), np.array([[1, 1]], np.uint8))
    assert tie[0][0] == 2
    # without an object map: one region per class value, background and void excluded
    regions = instances_from_maps(cm, None)
    assert [(c, i) for c, _, i in regions] == [(1, 1), (2, 2)]


def test_regions_from_class_map_uint16() -> None:
    cm = np.array([[0, 27001, 27001], [27002, 255, 3]], dtype=np.uint16)
    got = regions_from_class_map(cm)
    assert [v for v, _ in got] == [3, 27001, 27002]
    np.testing.assert_array_equal(rle_ops.decode(got[1][1]), cm == 27001)


@st.composite
def scenes(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, np.ndarray, bool]]]:
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    n = draw(st.integers(0, 7))
    out = []
    for _ in range(n):
        cat = draw(st.integers(1, 6))
        bits = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
        crowd = draw(st.booleans()) and draw(st.booleans())
        out.append((cat, np.array(bits, dtype=np.uint8).reshape(h, w), crowd))
    return h, w, out


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_render_then_recover_is_pixel_identical(
    scene: tuple[int, int, list[tuple[int, np.ndarray, bool]]],
) -> None:
    h, w, items = scene
    ims = [_im(k + 1, cat, m, crowd) for k, (cat, m, crowd) in enumerate(items)]
    cm, om, losses = render_maps(ims, h, w)
    # reference: paint in order with plain numpy
    owner = np.full((h, w), -1)
    for k, (_, m, _) in enumerate(items):
        owner[m.astype(bool)] = k
    expected_overlap = 0
    for k, (_, m, _crowd) in enumerate(items):
        visible = owner == k
        expected_overlap += int(m.sum() - visible.sum())
    assert losses.totals().get("overlap_flattened_pixels", 0) == expected_overlap
    crowd_px = sum(int((owner == k).sum()) for k, (_, _, c) in enumerate(items) if c)
    assert losses.totals().get("crowd_to_void", 0) == crowd_px
    recovered = {idx: (cat, rle) for cat, rle, idx in instances_from_maps(cm, om)}
    for k, (cat, _, crowd) in enumerate(items):
        visible = owner == k
        if crowd:
            assert (cm[visible] == 255).all() and (om[visible] == 255).all()
            assert k + 1 not in recovered
            continue
        if not visible.any():
            assert k + 1 not in recovered
            continue
        got_cat, got_rle = recovered[k + 1]
        assert got_cat == cat
        np.testing.assert_array_equal(rle_ops.decode(got_rle).astype(bool), visible)


def test_speed_many_instances() -> None:
    # 50 instances on 512x512: render and recover in well under a second each.
    rng = np.random.default_rng(0)
    h = w = 512
    ims = []
    for k in range(50):
        y, x = rng.integers(0, 400, 2)
        ims.append(_im(k + 1, int(rng.integers(1, 20)), _rect(h, w, y, x, y + 100, x + 100)))
    t = time.perf_counter()
    cm, om, _ = render_maps(ims, h, w)
    got = instances_from_maps(cm, om)
    assert time.perf_counter() - t < 2.0
    assert len(got) == len(np.unique(om)) - (1 if (om == 0).any() else 0)
