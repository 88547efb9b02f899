"""RLE and polygon geometry: bit-exact against pycocotools, validation before pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mu

from segpipe.core import rle as R

masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda hw: arrays(np.uint8, hw, elements=st.integers(0, 1))
)


def _runs_fortran(mask: np.ndarray) -> list[int]:
    """Run lengths of the column-major flattening, starting with a (possibly empty) run of zeros."""
    flat = mask.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    return runs


@settings(max_examples=150, deadline=None)
@given(masks)
def test_encode_decode_bit_exact_and_equal_to_pycocotools(mask):
    r = R.encode(mask)
    assert isinstance(r["counts"], str)
    ref = mu.encode(np.asfortranarray(mask))
    assert r["counts"].encode() == ref["counts"] and r["size"] == list(ref["size"])
    assert np.array_equal(R.decode(r), mask)
    assert R.area(r) == int(mask.sum())
    assert R.check_rle(r, *mask.shape) is None


@settings(max_examples=150, deadline=None)
@given(masks)
def test_decode_counts_string_equals_fortran_runs(mask):
    r = R.encode(mask)
    assert R.decode_counts_string(r["counts"]) == _runs_fortran(mask)
    # The uncompressed form of the same runs decodes to the same mask.
    unc = {"size": list(mask.shape), "counts": _runs_fortran(mask)}
    assert R.check_rle(unc) is None
    assert np.array_equal(R.decode(unc), mask)


@settings(max_examples=60, deadline=None)
@given(st.lists(masks, min_size=1, max_size=1).flatmap(lambda m: st.just(m[0])))
def test_encode_labels_matches_per_value_encode(mask):
    labels = mask.astype(np.int32) * 3 + (np.arange(mask.size).reshape(mask.shape) % 2)
    values = [0, 1, 3, 4, 9]
    got = R.encode_labels(labels, values)
    assert got == [R.encode(labels == v) for v in values]


def test_check_rle_rejects_too_short_and_wrong_size():
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 2:4] = 1
    r = R.encode(mask)
    short = {"size": [4, 5], "counts": r["counts"][:-1]}
    why = R.check_rle(short)
    assert why is not None and ("sum to" in why or "malformed" in why)
    assert "sum to 19" in R.check_rle({"size": [4, 5], "counts": [0, 19]})
    assert "differs from the image size" in R.check_rle(r, 5, 4)
    assert R.check_rle({"size": [4, 5], "counts": [0, -1, 21]}) == "RLE counts must be non-negative"
    assert "string or a list" in R.check_rle({"size": [4, 5], "counts": 3})
    assert "size must be" in R.check_rle({"size": [4], "counts": []})
    assert "malformed" in R.check_rle({"size": [4, 5], "counts": "\x01\x02"})


@pytest.mark.parametrize(
    ("poly", "needle"),
    [
        ([0, 0, 1, 1], "needs >= 6 finite coordinates, got 4"),
        ([0, 0, 1, 1, 2], "got 5"),
        ([0, 0, 1, 1, 2, 2, 3], "even number of coordinates, got 7"),
        ([0, 0, 1, float("nan"), 2, 2], "non-finite"),
        ([0, 0, 1, float("inf"), 2, 2], "non-finite"),
        ([0, 0, 5e8, 1, 2, 2], "out of range"),
        ([0, "1", 1, 1, 2, 2], "non-number"),
        ([0, True, 1, 1, 2, 2], "non-number"),
        ("0 0 1 1 2 2", "must be a list"),
    ],
)
def test_check_polygon_rejects(poly, needle):
    why = R.check_polygon(poly)
    assert why is not None and needle in why


def test_check_polygon_accepts_and_rasterises_like_pycocotools():
    poly = [1.5, 1.0, 8.2, 2.0, 6.0, 7.5, 0.5, 6.0]
    assert R.check_polygon(poly) is None
    ours = R.polygons_to_rle([poly], 10, 12)
    ref = mu.merge(mu.frPyObjects([poly], 10, 12))
    assert ours["counts"].encode() == ref["counts"]
    assert R.to_bbox(ours) == tuple(float(v) for v in mu.toBbox(ref))


def test_rle_vectors_from_faster_coco_eval(testdata):
    import json

    vec = json.loads((testdata / "derived" / "faster_coco_eval_rle_vectors.json").read_text())
    fb = vec["frBbox"]
    for box, exp, a in zip(fb["bboxes_xywh"], fb["expected_rles"], fb["pycocotools_areas"], strict=True):
        r = mu.frPyObjects(np.array([box], dtype=np.float64), fb["h"], fb["w"])[0]
        assert r["counts"].decode() == exp["counts"]
        assert R.check_rle(exp, fb["h"], fb["w"]) is None
        assert R.area(exp) == a
