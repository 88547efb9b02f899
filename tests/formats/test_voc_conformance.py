"""Datumaro's VOC, common-semantic-segmentation and Cityscapes assets decode to what its tests state.

Figures come from ``shared/testdata/expected.json`` (``datumaro_assets``). One documented difference:
Datumaro keeps VOC boxes as ``x = xmin, w = xmax - xmin``; segpipe uses the 1-based inclusive pixel
convention ``x = xmin - 1, w = xmax - xmin + 1`` (see ``segpipe/formats/voc/xml.py``), so our box is
Datumaro's shifted by one pixel and one pixel wider/taller.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segpipe.core import rle as rle_ops
from segpipe.core.labelmap import VOC_CLASSES
from segpipe.core.render import instances_from_maps, regions_from_class_map
from segpipe.formats import detect_format
from segpipe.formats.maskdir import MaskDirReader, materialize_maskdir
from segpipe.formats.voc import VocReader, materialize_voc
from segpipe.storage.images import read_label_map

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
ASSETS = TESTDATA / "datumaro" / "tests" / "assets"

pytestmark = pytest.mark.skipif(
    not (TESTDATA / "expected.json").exists(), reason=f"peer test assets not found at {TESTDATA}"
)


@pytest.fixture(scope="module")
def expected() -> dict:
    assert "datumaro" in (TESTDATA / "MANIFEST.md").read_text()
    return json.loads((TESTDATA / "expected.json").read_text())["datumaro_assets"]


def _datumaro_box(bbox: tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    assert bbox is not None
    x, y, w, h = bbox
    return (x + 1, y + 1, w - 1, h - 1)


def _dec(r: dict | None) -> np.ndarray:
    assert r is not None
    return rle_ops.decode(r)


def test_voc_dataset1(expected: dict) -> None:
    e = expected["voc_dataset1"]
    assert "label 8 (cat)" in e["2007_000001 (20x10)"] and "label 15" in e["2007_000001 (20x10)"]
    root = ASSETS / "voc_dataset/voc_dataset1"
    assert detect_format(root) == "voc"
    r = VocReader(root)
    s1, s2 = list(r.samples())
    # ImageSets: train=2007_000001, test=2007_000002 (image only)
    assert (s1.image.file_name, s1.image.split, s1.image.width, s1.image.height) == (
        "2007_000001.jpg",
        "train",
        20,
        10,
    )
    assert (s2.image.file_name, s2.image.split, s2.instances) == ("2007_000002.jpg", "test", ())
    cat, person = s1.instances
    # Datumaro: Bbox(x=1, y=2, w=2, h=2) label 8 (cat), truncated
    assert cat.category_id == 8 and VOC_CLASSES[8] == "cat"
    assert _datumaro_box(cat.bbox) == (1, 2, 2, 2)
    assert cat.attributes["truncated"] == 1 and cat.attributes["pose"] == "Unspecified"
    # person bbox 4,5,6,7 -> label 15, a head part 5.5,6,7.5,8 and 11 action flags (odd ones true)
    assert person.category_id == 15 and _datumaro_box(person.bbox) == (4, 5, 2, 2)
    assert person.attributes["part"] == {
        "name": "head",
        "bndbox": {"xmin": "5.5", "ymin": "6", "xmax": "7.5", "ymax": "8"},
    }
    actions = person.attributes["actions"]
    assert len(actions) == 11 and [int(v) for v in actions.values()] == [1, 0] * 5 + [1]
    # image-level labels: Datumaro's Label annotations for the odd VOC labels
    labels = s1.image.attributes["voc_image_labels"]
    assert sorted(k for k, v in labels.items() if v == 1 and k in VOC_CLASSES) == sorted(
        VOC_CLASSES[i] for i in range(len(VOC_CLASSES)) if i % 2 == 1
    )

    # SegmentationClass: RGB PNG, all 200 px = (0,128,0) = class 2 bicycle; object map all instance 1
    assert "bicycle" in e["SegmentationClass/2007_000001.png"]
    m = materialize_voc(s1, r.meta)
    assert m.class_map.shape == (10, 20) and (m.class_map == 2).all()
    mask = _dec(m.instances[0].rle)
    assert mask.sum() == 200 and m.instances[1].rle is None  # the person object has no pixels
    assert materialize_voc(s2, r.meta).class_map is None


def test_voc_dataset2_custom_labelmap_and_detection(expected: dict) -> None:
    assert "22 labels" in expected["voc_dataset2"]
    root = ASSETS / "voc_dataset/voc_dataset2"
    assert detect_format(root) == "voc"  # @.xml has no objects and must not confuse detection
    r = VocReader(root)
    names = [c.name for c in r.meta.categories]
    assert len(names) == 22 and names[-1] == "ignored" and r.meta.categories[-1].color == (224, 224, 192)
    got = {s.image.file_name: s for s in r.samples()}
    assert sorted(got) == ["@.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert got["@.jpg"].instances == ()
    # float coordinates like 1.0 read as numbers
    a = got["a.jpg"].instances[0]
    assert (a.category_id, _datumaro_box(a.bbox), a.attributes["occluded"]) == (0, (1, 2, 3, 4), 1)
    assert _datumaro_box(got["c.jpg"].instances[0].bbox) == (3, 1, 8, 5)


def test_voc_dataset3_comments_in_imagesets() -> None:
    r = VocReader(ASSETS / "voc_dataset/voc_dataset3")
    (s,) = r.samples()
    assert s.image.split == "train" and _datumaro_box(s.instances[0].bbox) == (1, 2, 2, 2)


def test_common_semantic_segmentation() -> None:
    root = ASSETS / "common_semantic_segmentation_dataset/dataset"
    assert detect_format(root) == "maskdir"
    r = MaskDirReader(root)
    assert [c.name for c in r.meta.categories] == ["Void", "Animal", "Archway", "Bicyclist", "Child", "Road"]
    maps = {s.image.file_name: materialize_maskdir(s, r.meta).class_map for s in r.samples()}
    # Datumaro's test: 0001 -> Mask([[1,1,0,1,1]]) label 3, Mask([[0,0,1,0,0]]) label 5;
    #                  0002 -> Mask([[1,1,1,0,0]]) label 1, Mask([[0,0,0,1,1]]) label 4
    regions = {
        k: {v: rle_ops.decode(rl)[0].tolist() for v, rl in regions_from_class_map(cm)}
        for k, cm in maps.items()
    }
    assert regions == {
        "0001.png": {3: [1, 1, 0, 1, 1], 5: [0, 0, 1, 0, 0]},
        "0002.png": {1: [1, 1, 1, 0, 0], 4: [0, 0, 0, 1, 1]},
    }


def test_cityscapes_instance_ids(expected: dict) -> None:
    assert "[[3,3,27,27,27]]" in expected["cityscapes_dataset/dataset"]
    f = ASSETS / (
        "cityscapes_dataset/dataset/gtFine/test/defaultcity/defaultcity_000001_000031_gtFine_instanceIds.png"
    )
    ids = read_label_map(f)
    np.testing.assert_array_equal(ids, [[3, 3, 27, 27, 27]])
    got = {v: rle_ops.decode(rl)[0].tolist() for v, rl in regions_from_class_map(ids)}
    assert got == {3: [1, 1, 0, 0, 0], 27: [0, 0, 1, 1, 1]}
    # 16-bit ids class*1000+inst (27001, 27002) as in Datumaro's train_dataset: one instance per id,
    # class = id // 1000
    ids16 = np.array([[3, 3, 27001, 27002, 27002]], dtype=np.uint16)
    inst = instances_from_maps(ids16, ids16, void_value=65535)
    assert [(c // 1000 if c >= 1000 else c, rle_ops.area(rl)) for c, rl, _ in inst] == [
        (3, 2),
        (27, 1),
        (27, 2),
    ]
