"""COCO adapters against the peers' own test assets (../shared/testdata) and the figures they state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from segpipe.core import rle as R
from segpipe.errors import FormatError, SegpipeError
from segpipe.formats import detect_format, get_format
from segpipe.formats.coco import (
    CocoPanopticReader,
    CocoReader,
    CocoResultsReader,
    materialize_coco,
    materialize_panoptic,
    validate_coco,
)

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
pytestmark = pytest.mark.skipif(
    not (TESTDATA / "expected.json").exists(), reason=f"peer test assets not found at {TESTDATA}"
)
DM = TESTDATA / "datumaro/tests/assets/coco_dataset"
VAL100 = TESTDATA / "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json"


@pytest.fixture(scope="module")
def expected():
    return json.loads((TESTDATA / "expected.json").read_text())


def _by_image(reader, meta=None):
    meta = meta or reader.meta
    return {s.image.id: s for s in reader.samples()}


# ------------------------------------------------------------------------------------------ datumaro


def test_datumaro_coco_instances(expected):
    assert "one bbox [2,2,3,1]" in expected["datumaro_assets"]["coco_instances"]["train(a, id 5, 10x5)"]
    r = CocoReader(DM / "coco_instances")
    assert detect_format(DM / "coco_instances") == "coco"
    assert [c.id for c in r.meta.categories] == [1, 2, 4]
    assert [c.name for c in r.meta.categories] == ["a", "b", "c"]
    samples = _by_image(r)
    assert set(samples) == {5, 40}
    a, b = samples[5], samples[40]
    assert (a.image.width, a.image.height, a.image.split) == (10, 5, "train")
    assert a.image_path and a.image_path.endswith("images/train/a.jpg")
    (box,) = a.instances
    assert box.bbox == (2.0, 2.0, 3.0, 1.0) and box.category_id == 2
    assert materialize_coco(a, r.meta).instances[0].rle is None  # empty segmentation: box only
    m = materialize_coco(b, r.meta)
    poly, crowd = m.instances
    assert poly.instance.area == 2.0 and poly.instance.bbox == (0.0, 0.0, 1.0, 2.0)
    assert poly.instance.attributes == {"attributes": {"x": 1, "y": "hello"}}
    assert crowd.instance.iscrowd and crowd.instance.segmentation.kind == "rle_uncompressed"
    mask = R.decode(crowd.rle)
    exp = np.zeros((10, 5), np.uint8)
    exp[:, 0:2] = 1  # "columns 0-1 of all 10 rows (20 px)"
    assert np.array_equal(mask, exp)
    assert R.to_bbox(crowd.rle) == (0.0, 0.0, 2.0, 10.0)


def test_datumaro_keypoints():
    r = CocoReader(DM / "coco_person_keypoints")
    inst = _by_image(r)[5].instances[0]
    assert inst.keypoints == (0, 0, 0, 0, 2, 1, 4, 1, 2) and inst.num_keypoints == 2
    assert r.meta.categories[0].skeleton == ((0, 1), (1, 2))


def test_datumaro_stuff_masks():
    r = CocoReader(DM / "coco_stuff")
    s = _by_image(r)
    ma = R.decode(materialize_coco(s[5], r.meta).instances[0].rle)
    assert ma.tolist() == [[0, 0, 1, 1, 0, 1, 1, 0, 0, 0]] * 5
    mb = materialize_coco(s[40], r.meta).instances[0]
    assert R.decode(mb.rle).tolist() == [[1, 1, 0, 0, 0]] * 10 and mb.instance.category_id == 2


def test_datumaro_panoptic_consistent_copy():
    r = CocoPanopticReader(DM / "coco")
    assert detect_format(DM / "coco_panoptic") == "coco_panoptic"
    s = _by_image(r)
    ids, segs = materialize_panoptic(s[40], r.meta).panoptic
    assert ids.shape == (10, 5)
    by = {seg.id: seg for seg in segs}
    assert by[20].iscrowd and by[20].category_id == 2 and by[7].category_id == 1
    assert np.array_equal(ids == 7, np.tile([1, 1, 0, 0, 0], (10, 1)).astype(bool))
    assert np.array_equal(ids == 20, np.tile([0, 0, 1, 1, 0], (10, 1)).astype(bool))
    assert (ids[:, 4] == 0).all()  # void column
    ida, _ = materialize_panoptic(s[5], r.meta).panoptic
    assert (ida == 7).astype(int).tolist() == [[0, 0, 1, 1, 0, 1, 1, 0, 0, 0]] * 5


def test_datumaro_inconsistent_panoptic_asset_is_flagged():
    r = CocoPanopticReader(DM / "coco_panoptic")
    with pytest.raises(FormatError) as e:
        materialize_panoptic(_by_image(r)[5], r.meta)
    assert "panoptic PNG is 5x5, image 5 is 10x5" in str(e.value) and "\n" not in str(e.value)
    problems = [p for p in validate_coco(DM / "coco_panoptic") if p.severity == "error"]
    assert [p.code for p in problems] == ["panoptic.size_mismatch"]
    assert problems[0].where == "annotations[0].file_name" and "panoptic_train.json" in problems[0].file


# ------------------------------------------------------------------------------------- val2014 x100


def test_val2014_subset_every_mask_matches_ann_to_mask(expected):
    r = CocoReader(VAL100)
    gt = COCO(str(VAL100))
    assert len(r) == 100 and len(r.meta.categories) == 80
    n = 0
    for s in r.samples():
        m = materialize_coco(s, r.meta)
        for im in m.instances:
            ref = gt.annToMask(gt.anns[im.instance.id])
            assert np.array_equal(R.decode(im.rle), ref), im.instance.id
            n += 1
    assert n == 839  # expected.json: "100 val2014 images ... 839 anns, 80 cats"
    assert "839 anns" in expected["cocoapi_fake_results"]["gt_note"]
    # No image files ship with the subset: one warning each, nothing else.
    assert len(r.problems) == 100 and {p.code for p in r.problems} == {"image.missing"}


def test_val2014_validates_with_warnings_only():
    errors = [p for p in validate_coco(VAL100) if p.severity == "error"]
    assert errors == []


def test_fake_results_read_with_ground_truth():
    res = TESTDATA / "cocoapi/results/instances_val2014_fakesegm100_results.json"
    assert detect_format(res) == "coco_results"
    r = CocoResultsReader(res, gt=VAL100)
    n = 0
    for s in r.samples():
        for im in materialize_coco(s, r.meta).instances:
            assert im.instance.score is not None and im.rle["size"] == [s.image.height, s.image.width]
            n += 1
    assert n == len(json.loads(res.read_text()))


# --------------------------------------------------------------------------------------------- solaris


@pytest.mark.parametrize("name", ["coco_sample_1.json", "coco_sample_2.json"])
def test_solaris_samples_read_with_documented_repairs(name):
    path = TESTDATA / "solaris/solaris/data" / name
    try:
        r = CocoReader(path)
        samples = list(r.samples())
        ms = [materialize_coco(s, r.meta) for s in samples]
    except SegpipeError as e:  # a one-line error is acceptable, a traceback is not
        assert "\n" not in str(e)
        return
    codes = {p.code for p in r.repairs}
    assert "repair.flat_polygon" in codes
    if name == "coco_sample_1.json":
        areas = [R.area(im.rle) for m in ms for im in m.instances]
        assert areas == [218, 230, 852]  # expected.json: wrapping as [seg] gives areas 218/230/852
    else:
        assert "repair.name_number" in codes
        assert [c.name for c in r.meta.categories][:1] == ["1.0"]


def test_solaris_validator_names_the_flat_polygon():
    path = TESTDATA / "solaris/solaris/data/coco_sample_1.json"
    problems = [p for p in validate_coco(path) if p.code == "polygon.flat"]
    assert problems and problems[0].where == "annotations[0].segmentation"


# ----------------------------------------------------------------------------------------- panopticapi


def test_panopticapi_sample_pixel_counts(expected):
    path = TESTDATA / "panopticapi/sample_data/panoptic_examples.json"
    r = CocoPanopticReader(path)  # PNG folder = the JSON path without .json
    obs = expected["panopticapi_sample"]["observed"]
    for s in r.samples():
        assert s.panoptic_file and Path(s.panoptic_file).parent.name == "panoptic_examples"
        ids, segs = materialize_panoptic(s, r.meta).panoptic
        o = obs[str(s.image.id)]
        assert len(segs) == o["segments"]
        assert int((ids == 0).sum()) == o["void_px"]
        sem: dict[str, int] = {"0": int((ids == 0).sum())}
        for seg in segs:
            n = int((ids == seg.id).sum())
            assert n == seg.area
            ys, xs = np.nonzero(ids == seg.id)
            assert seg.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            sem[str(seg.category_id)] = sem.get(str(seg.category_id), 0) + n
        for cat, px in o["semantic_px"].items():
            assert sem[cat] == px
        assert sorted(seg.id for seg in segs if seg.iscrowd) == o["crowd_segments"]
    problems = [p for p in validate_coco(path) if p.severity == "error"]
    assert problems == []


def test_registry_has_the_three_formats():
    for name in ("coco", "coco_results", "coco_panoptic"):
        spec = get_format(name)
        assert spec.reader and spec.writer and spec.materialize and spec.validate
