"""A corpus of bad COCO inputs: each yields exactly the expected problem line, naming file and field;
the reader refuses the same inputs with the same message (and never lets pycocotools see them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.core.panoptic import id2rgb
from segpipe.errors import FormatError, UnsafePathError
from segpipe.formats.coco import CocoPanopticReader, CocoReader, materialize_coco, validate_coco

BASE = {
    "info": {},
    "licenses": [],
    "categories": [
        {"id": 1, "name": "thing", "supercategory": ""},
        {"id": 2, "name": "person", "supercategory": "", "keypoints": ["a", "b"], "skeleton": [[1, 2]]},
    ],
    "images": [{"id": 1, "file_name": "a.png", "width": 5, "height": 4}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]],
            "area": 4,
            "bbox": [1, 1, 2, 2],
            "iscrowd": 0,
        }
    ],
}


def _ann(**kw):
    a = dict(BASE["annotations"][0])
    a.update(kw)
    return a


def _with(images=None, annotations=None, categories=None):
    d = copy.deepcopy(BASE)
    if images is not None:
        d["images"] = images
    if annotations is not None:
        d["annotations"] = annotations
    if categories is not None:
        d["categories"] = categories
    return d


IMG = BASE["images"][0]
# (case id, dataset, severity, where, message, raises-in-reader)
CASES = [
    (
        "polygon4",
        _with(annotations=[_ann(segmentation=[[0, 0, 1, 1]])]),
        "error",
        "annotations[0].segmentation[0]",
        "polygon needs >= 6 finite coordinates, got 4",
        FormatError,
    ),
    (
        "odd",
        _with(annotations=[_ann(segmentation=[[0, 0, 1, 1, 2, 2, 3]])]),
        "error",
        "annotations[0].segmentation[0]",
        "polygon needs an even number of coordinates, got 7",
        FormatError,
    ),
    (
        "nan",
        _with(annotations=[_ann(segmentation=[[0, 0, 1, float("nan"), 2, 2]])]),
        "error",
        "annotations[0].segmentation[0]",
        "polygon has non-finite coordinates (1 of 6)",
        FormatError,
    ),
    (
        "huge",
        _with(annotations=[_ann(segmentation=[[0, 0, 5e8, 1, 2, 2]])]),
        "error",
        "annotations[0].segmentation[0]",
        "polygon coordinate 5e+08 is out of range (|x| <= 1e+07)",
        FormatError,
    ),
    (
        "nonnumber",
        _with(annotations=[_ann(segmentation=[[0, 0, "1", 1, 2, 2]])]),
        "error",
        "annotations[0].segmentation[0]",
        "polygon has a non-number: '1'",
        FormatError,
    ),
    (
        "rle_short",
        _with(annotations=[_ann(segmentation={"size": [4, 5], "counts": [0, 10]})]),
        "error",
        "annotations[0].segmentation",
        "RLE counts sum to 10, expected height*width = 20",
        FormatError,
    ),
    (
        "rle_size",
        _with(annotations=[_ann(segmentation={"size": [5, 4], "counts": [0, 20]})]),
        "error",
        "annotations[0].segmentation",
        "RLE size 5x4 differs from the image size 4x5",
        FormatError,
    ),
    (
        "rle_string_short",
        _with(annotations=[_ann(segmentation={"size": [4, 5], "counts": "52"})]),
        "error",
        "annotations[0].segmentation",
        "RLE counts sum to 7, expected height*width = 20",
        FormatError,
    ),
    (
        "dup_ann",
        _with(annotations=[_ann(), _ann()]),
        "error",
        "annotations[1].id",
        "duplicate annotation id 1 (also annotations[0])",
        None,
    ),
    (
        "dup_image",
        _with(images=[IMG, IMG]),
        "error",
        "images[1].id",
        "duplicate image id 1 (also images[0])",
        FormatError,
    ),
    (
        "dangling_cat",
        _with(annotations=[_ann(category_id=9)]),
        "error",
        "annotations[0].category_id",
        "category_id 9 is not in categories",
        FormatError,
    ),
    (
        "dangling_image",
        _with(annotations=[_ann(image_id=9)]),
        "error",
        "annotations[0].image_id",
        "image_id 9 is not in images",
        FormatError,
    ),
    (
        "zero_width",
        _with(images=[{**IMG, "width": 0}], annotations=[]),
        "error",
        "images[0].width",
        "width must be positive, got 0",
        FormatError,
    ),
    (
        "neg_bbox",
        _with(annotations=[_ann(bbox=[1, 1, -2, 2])]),
        "error",
        "annotations[0].bbox",
        "bbox width and height must be >= 0, got -2x2",
        FormatError,
    ),
    (
        "bbox_off",
        _with(annotations=[_ann(bbox=[1, 1, 2, 9])]),
        "warning",
        "annotations[0].bbox",
        "bbox [1.0, 1.0, 2.0, 9.0] differs from the mask's box [1.0, 1.0, 2.0, 2.0] by 7.0 px",
        None,
    ),
    (
        "outside",
        _with(annotations=[_ann(segmentation=[[1, 1, 30, 1, 3, 3]], bbox=[1, 1, 29, 2])]),
        "warning",
        "annotations[0].segmentation[0]",
        "polygon extends outside the 5x4 image (x 1..30, y 1..3)",
        None,
    ),
    (
        "kp_len",
        _with(annotations=[_ann(category_id=2, keypoints=[1, 1, 2])]),
        "error",
        "annotations[0].keypoints",
        "keypoints has 3 values, expected 3 x 2 = 6",
        None,
    ),
    (
        "kp_v",
        _with(annotations=[_ann(category_id=2, keypoints=[1, 1, 3, 2, 2, 2])]),
        "error",
        "annotations[0].keypoints[2]",
        "visibility must be 0, 1 or 2, got 3",
        None,
    ),
    (
        "traversal",
        _with(images=[{**IMG, "file_name": "../../etc/passwd"}]),
        "error",
        "images[0].file_name",
        "file name escapes the dataset root: '../../etc/passwd'",
        UnsafePathError,
    ),
    (
        "absolute",
        _with(images=[{**IMG, "file_name": "/etc/passwd"}]),
        "error",
        "images[0].file_name",
        "file name is absolute: '/etc/passwd'",
        UnsafePathError,
    ),
    (
        "url",
        _with(images=[{**IMG, "file_name": "http://example.com/a.png"}]),
        "error",
        "images[0].file_name",
        "file name is a URL, not a path: 'http://example.com/a.png'",
        UnsafePathError,
    ),
    (
        "nul",
        _with(images=[{**IMG, "file_name": "a\x00.png"}]),
        "error",
        "images[0].file_name",
        "file name contains a NUL byte",
        UnsafePathError,
    ),
]


@pytest.fixture()
def dataset_dir(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (5, 4)).save(tmp_path / "images" / "a.png")
    return tmp_path


def _write(root: Path, d) -> Path:
    p = root / "data.json"
    p.write_text(json.dumps(d))
    return p


def test_base_is_clean(dataset_dir):
    assert list(validate_coco(_write(dataset_dir, BASE))) == []


@pytest.mark.parametrize(
    ("case", "data", "severity", "where", "message", "reader_error"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_yields_exactly_one_problem(
    dataset_dir, case, data, severity, where, message, reader_error
):
    path = _write(dataset_dir, data)
    problems = list(validate_coco(path))
    assert [str(p) for p in problems] == [f"{severity}: {path}: {where}: {message}"]
    if reader_error is None:
        return
    with pytest.raises(reader_error) as e:
        r = CocoReader(path)
        for s in r.samples():
            materialize_coco(s, r.meta)
    text = str(e.value)
    assert "\n" not in text and str(path) in text and where in text and message in text


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"images": [{"id": 1, "file_na', "invalid JSON at line 1"),
        (b"\x89PNG\r\n", "not UTF-8"),
        (b"hello", "invalid JSON"),
    ],
    ids=["truncated", "binary", "not_json"],
)
def test_unparseable_file_raises_one_line_format_error(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    for action in (lambda: list(validate_coco(p)), lambda: CocoReader(p)):
        with pytest.raises(FormatError) as e:
            action()
        assert str(e.value).startswith(f"{p}: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_missing_image_is_a_warning(tmp_path):
    path = _write(tmp_path, BASE)
    (p,) = validate_coco(path)
    assert p.severity == "warning" and p.where == "images[0].file_name" and p.code == "image.missing"
    r = CocoReader(path)
    assert [x.code for x in r.problems] == ["image.missing"]
    assert next(iter(r.samples())).image_path is None


def test_symlink_escaping_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "images" / "link").symlink_to(outside)
    path = _write(root, _with(images=[{**IMG, "file_name": "link/secret.png"}], annotations=[]))
    with pytest.raises(UnsafePathError):
        CocoReader(path)
    (p,) = validate_coco(path)
    assert p.severity == "error" and "outside the dataset root" in p.message


def _panoptic(tmp_path: Path, png_ids: np.ndarray, segments):
    d = {
        "categories": [{"id": 1, "name": "a", "isthing": 1}],
        "images": [{"id": 1, "file_name": "a.png", "width": 5, "height": 4}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
    }
    p = tmp_path / "pan.json"
    p.write_text(json.dumps(d))
    (tmp_path / "pan").mkdir(exist_ok=True)
    Image.fromarray(id2rgb(png_ids)).save(tmp_path / "pan" / "a.png")
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", (5, 4)).save(tmp_path / "images" / "a.png")
    return p


def test_panoptic_listed_and_unlisted_ids(tmp_path):
    ids = np.zeros((4, 5), np.int32)
    ids[0, :] = 3
    ids[1, :] = 4
    p = _panoptic(
        tmp_path,
        ids,
        [{"id": 3, "category_id": 1, "area": 5, "bbox": [0, 0, 5, 1]}, {"id": 9, "category_id": 1}],
    )
    lines = [str(x) for x in validate_coco(p)]
    assert lines == [
        f"error: {p}: annotations[0].segments_info[1].id: segment id 9 does not occur in the PNG",
        f"error: {p}: annotations[0].segments_info: PNG segment id 4 (5 pixels) is not listed",
    ]
    r = CocoPanopticReader(p)
    assert next(iter(r.samples())).panoptic_file.endswith("pan/a.png")


def test_panoptic_png_missing(tmp_path):
    p = _panoptic(tmp_path, np.zeros((4, 5), np.int32), [])
    (tmp_path / "pan" / "a.png").unlink()
    (line,) = [str(x) for x in validate_coco(p)]
    assert line.startswith(f"error: {p}: annotations[0].file_name: panoptic PNG not found: a.png")
