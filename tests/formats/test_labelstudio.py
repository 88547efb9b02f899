"""Label Studio export: brush RLE bit-exact with label-studio-converter, tasks, and pixel-exact masks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

from segpipe.execution.cluster import ClusterSpec
from segpipe.formats import get_format
from segpipe.formats.labelstudio import decode_rle, encode_rle, mask_to_rle, rle_to_mask
from segpipe.pipeline.convert import Conversion, convert
from tests.datagen import make_coco


def reference_encode(arr: np.ndarray) -> list[int]:
    """label_studio_converter.brush.encode_rle re-derived as bit strings (wordsize 8, sizes 3/4/8/16)."""
    bits = f"{len(arr):032b}" + f"{8 - 1:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    i = 0
    while i < len(arr):
        j = i
        while j < len(arr) and arr[j] == arr[i]:
            j += 1
        n, v = j - i, f"{int(arr[i]):08b}"
        if n == 1:
            bits += "0" + "00" + "000" + v
        elif n <= 8:
            bits += "1" + "00" + f"{n - 1:03b}" + v
        elif n <= 16:
            bits += "1" + "01" + f"{n - 1:04b}" + v
        elif n <= 256:
            bits += "1" + "10" + f"{n - 1:08b}" + v
        else:
            while n > 2**16:
                bits += "1" + "11" + f"{2**16 - 1:016b}" + v
                n -= 2**16
            bits += "1" + "11" + f"{n - 1:016b}" + v
        i = j
    bits += "0" * (8 - len(bits) % 8)  # the converter pads a full byte when already aligned
    return [int(bits[k : k + 8], 2) for k in range(0, len(bits), 8)]


def test_known_vector():
    # A 1x2 mask [0, 1] as RGBA: 4 zeros, 4 x 255. Header: 8 values, word 8, sizes 3/4/8/16; two runs of
    # 4 (flag 1, size index 00, length-1 = 011); 81 bits padded to 88.
    arr = np.array([0, 0, 0, 0, 255, 255, 255, 255], np.uint8)
    expected = [0, 0, 0, 8, 0b00111001, 0b00011011, 0b11111100, 0b01100000, 0b00010001, 0b11111111, 0b10000000]
    assert encode_rle(arr) == expected == reference_encode(arr)
    assert mask_to_rle(np.array([[0, 1]], bool)) == expected
    assert np.array_equal(decode_rle(expected), arr)


runs = st.lists(st.tuples(st.integers(1, 700), st.integers(0, 255)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(runs)
def test_encode_matches_reference_and_round_trips(spec):
    arr = np.concatenate([np.full(n, v, np.uint8) for n, v in spec]) if spec else np.zeros(0, np.uint8)
    enc = encode_rle(arr)
    assert enc == reference_encode(arr)
    assert np.array_equal(decode_rle(enc), arr)


def test_long_runs_split_like_the_converter():
    arr = np.zeros(200_003, np.uint8)
    arr[131_072:] = 255  # one run of exactly 2 x 65536, then a long one
    enc = encode_rle(arr)
    assert enc == reference_encode(arr)
    assert np.array_equal(decode_rle(enc), arr)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_mask_round_trip_bit_exact(h, w, seed):
    m = np.random.default_rng(seed).random((h, w)) < 0.4
    rle = mask_to_rle(m)
    assert rle == encode_rle(np.repeat((m * 255).astype(np.uint8).ravel(), 4))
    assert np.array_equal(rle_to_mask(rle, h, w), m)


def test_decoder_rejects_truncation():
    enc = encode_rle(np.arange(50, dtype=np.uint8))
    with pytest.raises(ValueError):
        decode_rle(enc[:10])


@pytest.fixture(scope="module")
def coco_src(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("src"), n_images=5, objects=5)


def _brushes(task: dict) -> list[dict]:
    return [r for r in task["predictions"][0]["result"] if r["type"] == "brushlabels"]


def test_coco_to_labelstudio_brushes_are_pixel_identical(coco_src, tmp_path):
    assert get_format("labelstudio").writer is not None
    out = tmp_path / "ls"
    rep = convert(Conversion(coco_src, out, to="labelstudio"), ClusterSpec(workers=0))
    gt = COCO(str(coco_src))
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == len(gt.getImgIds())
    by_file = {t["data"]["file_name"]: t for t in tasks}
    n = 0
    for img in gt.dataset["images"]:
        task = by_file[img["file_name"]]
        assert task["data"]["image"] == "/data/local-files/?d=images/" + img["file_name"]
        assert (out / "images" / img["file_name"]).exists()
        pred = task["predictions"][0]
        assert pred["model_version"] == "segpipe" and "score" not in pred  # ground truth has no scores
        regions = {r["id"]: r for r in _brushes(task)}
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]])):
            r = regions[str(ann["id"])]
            assert r["from_name"] == "brush" and r["to_name"] == "image" and r["image_rotation"] == 0
            assert (r["original_width"], r["original_height"]) == (img["width"], img["height"])
            assert r["value"]["format"] == "rle"
            assert r["value"]["brushlabels"] == [gt.cats[ann["category_id"]]["name"]]
            mask = rle_to_mask(r["value"]["rle"], img["height"], img["width"])
            assert np.array_equal(mask, gt.annToMask(ann).astype(bool)), ann["id"]
            n += 1
    assert n == len(gt.dataset["annotations"])
    totals = rep["losses"]["totals"]
    assert set(totals) <= {"crowd_flag_dropped", "keypoints_dropped"}
    assert totals["crowd_flag_dropped"] == sum(a["iscrowd"] for a in gt.dataset["annotations"])
    assert rep["losses"]["counts_out"] == rep["losses"]["counts_in"]
    config = ET.fromstring((out / "label_config.xml").read_text())
    labels = [lab.get("value") for lab in config.find("BrushLabels")]
    assert labels == [c["name"] for c in gt.dataset["categories"]]
    assert all(lab.get("background", "").startswith("#") for lab in config.iter("Label"))
    meta = json.loads((out / "segpipe_meta.json").read_text())
    assert [c["id"] for c in meta["categories"]] == [1, 3, 7]


def test_polygons_boxes_and_scores(coco_src, tmp_path):
    data = json.loads(coco_src.read_text())
    img = data["images"][0]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == img["id"]][:2]
    for k, a in enumerate(data["annotations"]):
        a["score"] = 0.5 + 0.25 * k
    data["annotations"].append(
        {"id": 999, "image_id": img["id"], "category_id": 3, "bbox": [4.0, 6.0, 10.0, 8.0], "area": 80.0,
         "iscrowd": 0, "score": 1.0}
    )
    data["images"] = [img]
    (tmp_path / "src").mkdir()  # a dataset file occupies its folder: the output goes beside it
    src = tmp_path / "src" / "one.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "ls"
    rep = convert(
        Conversion(src, out, to="labelstudio", copy_images="none", writer_options={"polygons": True}),
        ClusterSpec(workers=0),
    )
    task = json.loads((out / "tasks.json").read_text())[0]
    pred = task["predictions"][0]
    assert pred["score"] == pytest.approx(np.mean([0.5, 0.75, 1.0]))
    types = {r["type"] for r in pred["result"]}
    assert types <= {"polygonlabels", "rectanglelabels", "brushlabels"} and "rectanglelabels" in types
    box = next(r for r in pred["result"] if r["type"] == "rectanglelabels")
    w, h = img["width"], img["height"]
    assert box["id"] == "999" and box["score"] == 1.0
    assert box["value"]["x"] == pytest.approx(400 / w) and box["value"]["height"] == pytest.approx(800 / h)
    for r in pred["result"]:
        if r["type"] == "polygonlabels":
            assert r["from_name"] == "polygon" and r["value"]["closed"]
            assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in r["value"]["points"])
    assert "PolygonLabels" in (out / "label_config.xml").read_text()
    assert rep["losses"]["counts_out"] == rep["losses"]["counts_in"]


def test_semantic_class_maps_become_one_brush_per_class(coco_src, tmp_path):
    voc = tmp_path / "voc"
    convert(Conversion(coco_src, voc, to="voc"), ClusterSpec(workers=0))
    out = tmp_path / "ls"
    rep = convert(Conversion(voc, out, to="labelstudio", copy_images="none"), ClusterSpec(workers=0))
    tasks = json.loads((out / "tasks.json").read_text())
    class_regions = [r for t in tasks for r in _brushes(t) if r["id"].startswith("class_")]
    assert class_regions
    spec = get_format("voc")
    reader = spec.reader(voc)
    names = {c.id: c.name for c in reader.meta.categories}
    by_id = {t["data"]["image_id"]: t for t in tasks}
    void = 0
    for sample in reader.samples():
        m = spec.materialize(sample, reader.meta)
        cm = np.asarray(m.class_map)
        void += int((cm == m.void_value).sum())
        regions = [r for r in _brushes(by_id[sample.image.id]) if r["id"].startswith("class_")]
        assert sorted(int(r["id"].removeprefix("class_")) for r in regions) == sorted(
            int(v) for v in np.unique(cm) if v not in (0, m.void_value)
        )
        for r in regions:
            v = int(r["id"].removeprefix("class_"))
            assert r["value"]["brushlabels"] == [names[v]]
            got = rle_to_mask(r["value"]["rle"], r["original_height"], r["original_width"])
            assert np.array_equal(got, cm == v)
    assert void > 0 and rep["losses"]["totals"]["void_pixels_dropped"] == void
