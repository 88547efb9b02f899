"""Panoptic ids, masks and label maps; instances painted into a panoptic map with counted losses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segpipe.core import rle as R
from segpipe.core.panoptic import (
    id2rgb,
    instances_to_panoptic,
    panoptic_to_class_map,
    panoptic_to_instances,
    rgb2id,
)
from segpipe.core.records import Category, Instance, InstanceMask, PanopticSegment


@settings(max_examples=100, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 256**3 - 1)))
def test_rgb_id_round_trip(ids):
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (*ids.shape, 3)
    assert np.array_equal(rgb2id(rgb), ids)


def test_rgb2id_formula():
    rgb = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert rgb2id(rgb)[0, 0] == 1 + 256 * 2 + 65536 * 3
    with pytest.raises(ValueError):
        id2rgb(np.array([[256**3]]))


def _segments():
    ids = np.array([[0, 7, 7, 20], [0, 7, 20, 20], [99, 99, 0, 0]], dtype=np.int32)
    segs = [PanopticSegment(7, 1), PanopticSegment(20, 2, iscrowd=True), PanopticSegment(5, 3)]
    return ids, segs


def test_panoptic_to_instances_lists_every_segment():
    ids, segs = _segments()
    out = panoptic_to_instances(ids, segs)
    assert [s.id for s, _ in out] == [7, 20, 5]
    for s, r in out:
        assert np.array_equal(R.decode(r), (ids == s.id).astype(np.uint8))
    assert R.area(out[2][1]) == 0  # listed but absent: empty mask, still returned


def test_panoptic_to_class_map_void_for_unlisted_and_zero():
    ids, segs = _segments()
    cm = panoptic_to_class_map(ids, segs)
    assert cm.dtype == np.uint8
    assert cm.tolist() == [[255, 1, 1, 2], [255, 1, 2, 2], [255, 255, 255, 255]]
    big = panoptic_to_class_map(ids, [PanopticSegment(7, 300)])
    assert big.dtype == np.uint16 and big[0, 1] == 300
    with pytest.raises(ValueError):
        panoptic_to_class_map(ids, [PanopticSegment(7, 255)])


CATS = [
    Category(1, "person"),
    Category(2, "car"),
    Category(5, "sky", isthing=False),
    Category(6, "road", isthing=False),
]


def _inst(k, cat, mask, crowd=False):
    return InstanceMask(
        Instance(id=k, image_id=1, category_id=cat, iscrowd=crowd, attributes={"k": k}), R.encode(mask)
    )


def test_instances_to_panoptic_overlaps_stuff_and_ids():
    h, w = 6, 8
    a = np.zeros((h, w), np.uint8)
    a[0:3, 0:4] = 1  # 12 px
    b = np.zeros((h, w), np.uint8)
    b[2:4, 2:6] = 1  # 8 px, 2 of them over a
    c = np.zeros((h, w), np.uint8)
    c[0:1, 0:1] = 1  # fully under nothing; painted after a: wins its pixel
    cm = np.full((h, w), 255, np.uint8)
    cm[4:, :] = 5  # sky: 16 px
    cm[3, :] = 6  # road: 8 px, 4 of them under b
    cm[5, 7] = 2  # a car pixel with no instance
    insts = [_inst(1, 1, a), _inst(2, 2, b, crowd=True), _inst(3, 1, c)]
    ids, segs, losses = instances_to_panoptic(insts, cm, CATS, h, w)
    assert ids.dtype == np.int32
    assert [s.id for s in segs] == [1, 2, 3, 4, 5]  # sequential from 1: things in order, then stuff
    assert [s.category_id for s in segs] == [1, 2, 1, 5, 6]
    assert segs[1].iscrowd and segs[0].attributes == {"k": 1}
    areas = {s.id: s.area for s in segs}
    assert areas == {sid: int((ids == sid).sum()) for sid in areas}
    assert areas[1] == 12 - 2 - 1 and areas[2] == 8 and areas[3] == 1
    assert losses.losses[("overlap_flattened_pixels", "person")] == 3
    assert losses.losses[("stuff_under_thing_pixels", "road")] == 4
    assert losses.losses[("thing_pixels_without_instance", "car")] == 1
    assert areas[4] == 15 and areas[5] == 4
    for s in segs:
        ys, xs = np.nonzero(ids == s.id)
        assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    again = instances_to_panoptic(insts, cm, CATS, h, w)
    assert np.array_equal(again[0], ids) and again[1] == segs  # deterministic


def test_fully_occluded_instance_is_counted_and_ids_stay_dense():
    m = np.ones((3, 3), np.uint8)
    ids, segs, losses = instances_to_panoptic([_inst(1, 1, m), _inst(2, 2, m)], None, CATS, 3, 3)
    assert [s.id for s in segs] == [1] and segs[0].category_id == 2
    assert int(ids.max()) == 1
    assert losses.losses[("instance_fully_occluded", "person")] == 1
    assert losses.losses[("overlap_flattened_pixels", "person")] == 9


def test_round_trip_panoptic_instances_panoptic():
    ids, segs = _segments()
    segs = segs[:2]
    cats = [Category(1, "a"), Category(2, "b")]
    pairs = panoptic_to_instances(ids, segs)
    insts = [
        InstanceMask(Instance(id=s.id, image_id=1, category_id=s.category_id, iscrowd=s.iscrowd), r)
        for s, r in pairs
    ]
    ids2, segs2, losses = instances_to_panoptic(insts, None, cats, *ids.shape)
    assert losses.lossless
    assert np.array_equal(panoptic_to_class_map(ids2, segs2), panoptic_to_class_map(ids, segs))
