"""COCO converters, readers and writers: round trips that keep every field, and safe paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

from segpipe.core import rle as R
from segpipe.core.panoptic import panoptic_to_class_map
from segpipe.core.records import DatasetMeta, ImageInfo, Instance, Materialized, Sample, Segmentation
from segpipe.errors import FormatError, UnsafePathError
from segpipe.formats.base import WriteOptions
from segpipe.formats.coco import (
    CocoPanopticReader,
    CocoPanopticWriter,
    CocoReader,
    CocoResultsReader,
    CocoResultsWriter,
    CocoWriter,
    coco_dict_to_records,
    instance_to_coco,
    materialize_coco,
    materialize_panoptic,
    records_to_coco_dict,
)
from tests.datagen import make_coco

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"

# ------------------------------------------------------------------------------ hypothesis round trip

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
small_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)


def extras(reserved):
    return st.dictionaries(
        st.sampled_from(["x_note", "source", "flags", "attributes", "z"]), small_json, max_size=2
    ).map(lambda d: {k: v for k, v in d.items() if k not in reserved})


@st.composite
def categories(draw):
    ids = draw(st.lists(st.integers(1, 300), min_size=1, max_size=4, unique=True))
    cats = []
    for cid in ids:
        c = {"id": cid, "name": f"c{cid}"}
        if draw(st.booleans()):
            c["supercategory"] = draw(st.text(max_size=3))
        if draw(st.booleans()):
            c["isthing"] = draw(st.sampled_from([0, 1]))
        if draw(st.booleans()):
            c["keypoints"] = ["a", "b"]
            c["skeleton"] = [[1, 2]]
        c.update(draw(extras({"id", "name", "supercategory", "isthing", "keypoints", "skeleton", "color"})))
        cats.append(c)
    return cats


@st.composite
def segmentation(draw, h, w):
    kind = draw(st.sampled_from(["poly", "rle", "rle_u", "empty"]))
    if kind == "empty":
        return []
    if kind == "poly":
        n = draw(st.integers(1, 3))
        coord = st.floats(0, max(h, w), allow_nan=False)
        return [
            draw(st.lists(coord, min_size=6, max_size=10).filter(lambda p: len(p) % 2 == 0)) for _ in range(n)
        ]
    mask = np.array(draw(st.lists(st.integers(0, 1), min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w)
    r = R.encode(mask)
    if kind == "rle":
        return r
    return {"size": [h, w], "counts": R.decode_counts_string(r["counts"])}


@st.composite
def coco_dicts(draw):
    cats = draw(categories())
    n_img = draw(st.integers(0, 3))
    iids = draw(st.lists(st.integers(1, 10**6), min_size=n_img, max_size=n_img, unique=True))
    images = []
    for iid in iids:
        im = {
            "id": iid,
            "file_name": f"d/{iid}.jpg",
            "width": draw(st.integers(1, 6)),
            "height": draw(st.integers(1, 6)),
        }
        if draw(st.booleans()):
            im["split"] = draw(st.sampled_from(["train", "val"]))
        im.update(draw(extras({"id", "file_name", "width", "height", "split"})))
        images.append(im)
    anns = []
    aid = draw(st.integers(1, 100))
    for im in images:
        for _ in range(draw(st.integers(0, 3))):
            cat = draw(st.sampled_from(cats))
            a = {"id": aid, "image_id": im["id"], "category_id": cat["id"]}
            aid += draw(st.integers(1, 5))
            if draw(st.booleans()):
                a["segmentation"] = draw(segmentation(im["height"], im["width"]))
            if draw(st.booleans()):
                a["area"] = draw(st.floats(0, 100, allow_nan=False))
            if draw(st.booleans()):
                a["bbox"] = [draw(finite), draw(finite), draw(st.floats(0, 50)), draw(st.floats(0, 50))]
            a["iscrowd"] = draw(st.sampled_from([0, 1]))
            if draw(st.booleans()):
                a["score"] = draw(st.floats(0, 1))
            if draw(st.booleans()):
                k = draw(st.integers(0, 3))
                a["keypoints"] = [
                    v
                    for _ in range(k)
                    for v in (draw(finite), draw(finite), draw(st.sampled_from([0, 1, 2])))
                ]
                a["num_keypoints"] = sum(1 for v in a["keypoints"][2::3] if v > 0)
            a.update(
                draw(
                    extras(
                        {
                            "id",
                            "image_id",
                            "category_id",
                            "segmentation",
                            "area",
                            "bbox",
                            "iscrowd",
                            "score",
                            "keypoints",
                            "num_keypoints",
                        }
                    )
                )
            )
            anns.append(a)
    d = {"categories": cats, "images": images, "annotations": anns}
    if draw(st.booleans()):
        d["info"] = {"description": draw(st.text(max_size=5))}
    if draw(st.booleans()):
        d["licenses"] = [{"id": 1, "name": "x"}]
    if draw(st.booleans()):
        d["extra_top"] = draw(small_json)
    return d


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(coco_dicts())
def test_dict_records_dict_round_trip(d):
    meta, items = coco_dict_to_records(d, source="mem.json")
    back = records_to_coco_dict(meta, items.values())
    # Documented normalisation: key order (dict equality ignores it), ints as floats (equal as numbers),
    # annotations grouped by image in image order (generated that way here).
    assert back == d
    again = json.loads(json.dumps(back))
    assert records_to_coco_dict(*_pair(coco_dict_to_records(again))) == d


def _pair(res):
    meta, items = res
    return meta, items.values()


# ------------------------------------------------------------------------------ field-level guarantees


def test_fields_are_preserved():
    d = {
        "info": {"year": 2024},
        "licenses": [{"id": 3}],
        "categories": [
            {
                "id": 5,
                "name": "p",
                "supercategory": "h",
                "keypoints": ["a", "b"],
                "skeleton": [[1, 2]],
                "color": [1, 2, 3],
                "custom": {"x": 1},
            }
        ],
        "images": [{"id": 9, "file_name": "x.jpg", "width": 4, "height": 3, "coco_url": "u", "license": 3}],
        "annotations": [
            {
                "id": 1,
                "image_id": 9,
                "category_id": 5,
                "segmentation": [[0, 0, 2, 0, 2, 2], [3, 0, 4, 0, 4, 1]],
                "area": 3.5,
                "bbox": [0, 0, 4, 2],
                "iscrowd": 0,
                "keypoints": [1, 1, 2, 0, 0, 0],
                "num_keypoints": 1,
                "occluded": True,
            },
            {
                "id": 2,
                "image_id": 9,
                "category_id": 5,
                "segmentation": {"size": [3, 4], "counts": [1, 3, 8]},
                "area": 3,
                "bbox": [0, 0, 2, 3],
                "iscrowd": 1,
                "score": 0.5,
            },
        ],
        "video": {"fps": 3},
    }
    meta, items = coco_dict_to_records(d)
    img, (a, b) = items[9]
    assert img.attributes == {"coco_url": "u", "license": 3}
    assert a.segmentation.kind == "polygons" and len(a.segmentation.polygons) == 2
    assert a.keypoints == (1, 1, 2, 0, 0, 0) and a.num_keypoints == 1 and a.attributes == {"occluded": True}
    assert b.segmentation.kind == "rle_uncompressed" and b.iscrowd and b.score == 0.5
    assert meta.extra["video"] == {"fps": 3} and meta.categories[0].color == (1, 2, 3)
    assert records_to_coco_dict(meta, items.values()) == d
    assert instance_to_coco(b)["segmentation"] == {"size": [3, 4], "counts": [1, 3, 8]}


def test_flat_polygon_repair_is_reported():
    d = {
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": 1, "file_name": "a", "width": 9, "height": 9}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [0, 0, 5, 0, 5, 5]}],
    }
    repairs = []
    _, items = coco_dict_to_records(d, repairs=repairs)
    assert items[1][1][0].segmentation.polygons == ((0, 0, 5, 0, 5, 5),)
    assert {r.code for r in repairs} == {"repair.flat_polygon", "repair.iscrowd_missing"}
    assert repairs[0].where == "annotations[0].segmentation"


def test_pure_converter_refuses_malformed_before_pycocotools():
    d = {
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": 1, "file_name": "a", "width": 9, "height": 9}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 4.3e8, 0, 5, 5]]}],
    }
    with pytest.raises(
        FormatError, match=r"annotations\[0\]\.segmentation\[0\]: polygon coordinate 4.3e\+08"
    ):
        coco_dict_to_records(d, source="x.json")


# ---------------------------------------------------------------------------------- file round trips


def _convert(reader, materialize, writer_cls, out, shards=2, options=None):
    samples = list(reader.samples())
    w = writer_cls(out, reader.meta, options or WriteOptions())
    w.prepare()
    results = []
    for k in range(shards):  # deliberately finalised out of order: finalize sorts by index
        part = samples[k::shards]
        results.append(w.write_shard(k, (materialize(s, reader.meta) for s in part)))
    files = w.finalize(list(reversed(results)))
    return w, results, files


def test_coco_files_round_trip(tmp_path):
    src = make_coco(tmp_path / "src", n_images=5)
    r = CocoReader(src)
    # The single-file form (``layout: single``); the default split layout is tested below and in
    # tests/formats/test_layout_conformance.py.
    w, results, files = _convert(r, materialize_coco, CocoWriter, tmp_path / "out", shards=1,
                                 options=WriteOptions(extra={"layout": "single"}))
    assert files == [tmp_path / "out" / "annotations.json"]
    a, b = json.loads(src.read_text()), json.loads(files[0].read_text())
    key = lambda x: x["id"]  # noqa: E731
    assert sorted(b["annotations"], key=key) == sorted(a["annotations"], key=key)
    assert b["images"] == sorted(a["images"], key=key) and b["categories"] == a["categories"]
    assert b["info"] == a["info"] and b["licenses"] == a["licenses"]
    assert all(res.losses.lossless for res in results) and w.repairs == []
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == sorted(
        i["file_name"] for i in a["images"]
    )
    gt_a, gt_b = COCO(str(src)), COCO(str(files[0]))
    for ann_id, ann in gt_a.anns.items():
        assert np.array_equal(gt_a.annToMask(ann), gt_b.annToMask(gt_b.anns[ann_id]))


def test_sharded_output_equals_one_pass_and_renumbers_duplicates(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6, images=False)
    r = CocoReader(src)
    _, _, f1 = _convert(r, materialize_coco, CocoWriter, tmp_path / "one", shards=1)
    _, _, f3 = _convert(r, materialize_coco, CocoWriter, tmp_path / "three", shards=3)
    one, three = json.loads(f1[0].read_text()), json.loads(f3[0].read_text())
    assert {a["id"]: a for a in one["annotations"]} == {a["id"]: a for a in three["annotations"]}
    d = json.loads(src.read_text())
    d["annotations"][1]["id"] = d["annotations"][0]["id"]
    src.write_text(json.dumps(d))
    r = CocoReader(src)
    assert any(p.code == "repair.annotation_ids" for p in r.repairs)
    w, _, f = _convert(r, materialize_coco, CocoWriter, tmp_path / "dup", shards=2)
    ids = [a["id"] for a in json.loads(f[0].read_text())["annotations"]]
    assert ids == list(range(1, len(ids) + 1)) and w.repairs[0].code == "repair.annotation_ids"


def test_missing_area_and_bbox_are_computed_and_reported(tmp_path):
    src = make_coco(tmp_path / "src", n_images=1, images=False, crowd=False)
    d = json.loads(src.read_text())
    for a in d["annotations"]:
        del a["area"], a["bbox"]
    src.write_text(json.dumps(d))
    r = CocoReader(src)
    _, results, f = _convert(r, materialize_coco, CocoWriter, tmp_path / "out", shards=1)
    out = json.loads(f[0].read_text())
    for a in out["annotations"]:
        r_ = R.to_rle(
            Segmentation.from_rle(a["segmentation"])
            if isinstance(a["segmentation"], dict)
            else Segmentation.from_polygons(a["segmentation"]),
            48,
            64,
        )
        assert a["area"] == R.area(r_) and tuple(a["bbox"]) == R.to_bbox(r_)
    assert {p.code for p in results[0].problems} == {"repair.area_computed", "repair.bbox_computed"}


def test_writer_never_writes_outside_out(tmp_path):
    meta = DatasetMeta("coco", ())
    src_img = tmp_path / "a.png"
    src_img.write_bytes(b"not really a png")
    out = tmp_path / "out"
    for bad in ("../../evil.png", "/tmp/evil.png", "sub/../../evil.png"):
        s = Sample(image=ImageInfo(1, bad, 4, 4), image_path=str(src_img))
        w = CocoWriter(out, meta, WriteOptions())
        w.prepare()
        with pytest.raises(UnsafePathError):
            w.write_shard(0, [Materialized(s)])
    # An output sub-folder that is a symlink to elsewhere is refused too.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out2 = tmp_path / "out2"
    out2.mkdir()
    (out2 / "images").symlink_to(elsewhere)
    s = Sample(image=ImageInfo(1, "ok.png", 4, 4), image_path=str(src_img))
    with pytest.raises(UnsafePathError):
        CocoWriter(out2, meta, WriteOptions()).write_shard(0, [Materialized(s)])
    assert not list(elsewhere.iterdir())
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_unsafe_names_refused_by_reader_before_open(tmp_path):
    d = {
        "categories": [],
        "images": [{"id": 1, "file_name": "../../etc/passwd", "width": 1, "height": 1}],
        "annotations": [],
    }
    p = tmp_path / "a.json"
    p.write_text(json.dumps(d))
    with pytest.raises(UnsafePathError, match=r"images\[0\]\.file_name: file name escapes the dataset root"):
        CocoReader(p)


def test_datumaro_layout_is_read_and_split_kept(tmp_path):
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    for split, iid in (("train", 1), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "images" / split / f"{split}.jpg").write_bytes(b"x")
        d = {
            "categories": [{"id": 1, "name": "a"}],
            "images": [{"id": iid, "file_name": f"{split}.jpg", "width": 2, "height": 2}],
            "annotations": [],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(d))
    r = CocoReader(root)
    ss = list(r.samples())
    assert [(s.image.id, s.image.split) for s in ss] == [(1, "train"), (2, "val")]
    assert all(s.image_path for s in ss) and r.problems == []
    _, _, f = _convert(r, materialize_coco, CocoWriter, tmp_path / "out", shards=1)
    # The default layout is this one: one JSON per split, images under images/<split>/
    assert f == [tmp_path / "out/annotations" / f"instances_{s}.json" for s in ("train", "val")]
    assert [json.loads(p.read_text())["images"][0]["split"] for p in f] == ["train", "val"]
    assert all((tmp_path / "out/images" / s / f"{s}.jpg").is_file() for s in ("train", "val"))
    again = CocoReader(tmp_path / "out")
    assert [s.image.split for s in again.samples()] == ["train", "val"] and again.problems == []


# ------------------------------------------------------------------------------------------- panoptic

needs_testdata = pytest.mark.skipif(not (TESTDATA / "expected.json").exists(), reason=f"no {TESTDATA}")
PAN = TESTDATA / "panopticapi/sample_data/panoptic_examples.json"


@needs_testdata
def test_panoptic_to_coco_with_semantic_keeps_every_pixel_class(tmp_path):
    r = CocoPanopticReader(PAN)
    _, results, f = _convert(r, materialize_panoptic, CocoWriter, tmp_path / "coco")
    d = json.loads(f[0].read_text())
    # No split: train; the label maps sit beside the JSON in semantic_train/ (the key names the folder)
    assert d["segpipe_semantic"] == {"folder": "semantic_train", "void_value": 255}
    assert f == [tmp_path / "coco/annotations/instances_train.json"]
    assert any((tmp_path / "coco/annotations/semantic_train").iterdir())
    back = CocoReader(tmp_path / "coco")
    orig = {s.image.id: materialize_panoptic(s, r.meta) for s in r.samples()}
    things = {c.id for c in r.meta.categories if c.isthing}
    for s in back.samples():
        m = materialize_coco(s, back.meta)
        ids, segs = orig[s.image.id].panoptic
        assert np.array_equal(m.class_map, panoptic_to_class_map(ids, segs))
        thing_segs = [seg for seg in segs if seg.category_id in things]
        assert len(m.instances) == len(thing_segs)
        for im, seg in zip(m.instances, thing_segs, strict=True):
            assert np.array_equal(R.decode(im.rle), (ids == seg.id).astype(np.uint8))
            assert im.instance.iscrowd == seg.iscrowd
    # COCO + semantic → panoptic again: same class per pixel.
    _, _, f2 = _convert(back, materialize_coco, CocoPanopticWriter, tmp_path / "pan2")
    again = CocoPanopticReader(tmp_path / "pan2")
    for s in again.samples():
        ids2, segs2 = materialize_panoptic(s, again.meta).panoptic
        ids, segs = orig[s.image.id].panoptic
        assert np.array_equal(panoptic_to_class_map(ids2, segs2), panoptic_to_class_map(ids, segs))


@needs_testdata
def test_panoptic_to_panoptic_is_exact(tmp_path):
    r = CocoPanopticReader(PAN)
    _, results, f = _convert(r, materialize_panoptic, CocoPanopticWriter, tmp_path / "p")
    a, b = json.loads(PAN.read_text()), json.loads(f[0].read_text())
    key = lambda x: x["image_id"]  # noqa: E731
    assert sorted(b["annotations"], key=key) == sorted(a["annotations"], key=key)
    assert b["categories"] == a["categories"] and b["info"] == a["info"]
    again = CocoPanopticReader(tmp_path / "p")
    for s1, s2 in zip(r.samples(), again.samples(), strict=True):
        assert np.array_equal(
            materialize_panoptic(s1, r.meta).panoptic[0], materialize_panoptic(s2, again.meta).panoptic[0]
        )
    assert all(res.losses.lossless for res in results)


def test_instances_to_panoptic_counts_losses(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3, images=False)
    r = CocoReader(src)
    _, results, f = _convert(r, materialize_coco, CocoPanopticWriter, tmp_path / "p", shards=1)
    totals = results[0].losses.totals()
    assert totals.get("overlap_flattened_pixels", 0) > 0 and totals.get("keypoints_dropped", 0) > 0
    assert results[0].losses.notes["overlap_flattened_pixels"]
    pan = CocoPanopticReader(tmp_path / "p")
    for s in pan.samples():
        ids, segs = materialize_panoptic(s, pan.meta).panoptic
        assert sorted(int(v) for v in np.unique(ids) if v) == [seg.id for seg in segs]


# -------------------------------------------------------------------------------------------- results


@needs_testdata
def test_results_round_trip(tmp_path):
    src = TESTDATA / "cocoapi/results/instances_val2014_fakesegm100_results.json"
    r = CocoResultsReader(src)
    _, results, f = _convert(r, materialize_coco, CocoResultsWriter, tmp_path / "r", shards=3)
    a, b = json.loads(src.read_text()), json.loads(f[0].read_text())
    key = lambda x: (x["image_id"], json.dumps(x, sort_keys=True))  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key)
    assert all(res.losses.lossless for res in results)


def test_dataset_to_results_counts_assumed_scores(tmp_path):
    src = make_coco(tmp_path / "src", n_images=2, images=False)
    r = CocoReader(src)
    _, results, f = _convert(r, materialize_coco, CocoResultsWriter, tmp_path / "r", shards=1)
    out = json.loads(f[0].read_text())
    assert all(d["score"] == 1.0 for d in out)
    assert results[0].losses.totals()["scores_assumed"] == len(out)
    gt = COCO(str(src))
    dt = gt.loadRes(str(f[0]))  # pycocotools accepts what we wrote
    assert len(dt.anns) == len(out)


def test_results_scores_dropped_option_is_counted(tmp_path):
    meta = DatasetMeta("coco", ())
    inst = Instance(id=1, image_id=1, category_id=1, bbox=(0, 0, 1, 1), score=0.3)
    m = Materialized(Sample(ImageInfo(1, "", 4, 4), instances=(inst,)), instances=())
    from segpipe.core.records import InstanceMask

    m = Materialized(m.sample, instances=(InstanceMask(inst, None),))
    w = CocoWriter(tmp_path, meta, WriteOptions(extra={"scores": "drop"}))
    res = w.write_shard(0, [m])
    assert res.losses.totals() == {"scores_dropped": 1}
    (frag,) = res.fragments
    assert "score" not in frag[1][0] and frag[1][0]["area"] == 1.0
