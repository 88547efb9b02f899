"""`segpipe train` on malformed datasets: one error line naming the file and the field, nothing written.

The COCO masks of instance and landmark training go through the validated path of segpipe.core.rle, so a
polygon pycocotools would crash on (coordinates near 4.3e8) or an RLE whose counts do not cover the image
is refused before it reaches pycocotools; label maps are checked against labelmap.txt before a loss sees
them. Every case runs the real CLI through check_bad_input (the corpus promise: exit 2, exactly one
``error:`` line, no traceback, the dataset byte-identical, no output folder left behind).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segpipe.synth import synth
from tests.badinput._corpus import check_bad_input
from tests.conftest import run_cli

LANDMARKS = ("-q", "train", "ds", "--arch", "hourglass", "--out", "t", "--epochs", "1",
             "--model-arg", "channels=8", "--model-arg", "num_stacks=1", "--device", "cpu")
SEMANTIC = ("-q", "train", "ds", "--arch", "unet", "--out", "t", "--epochs", "1",
            "--model-arg", "base=4", "--model-arg", "depth=1", "--device", "cpu")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``landmarks/`` and ``street/``: two 32×32 synthetic images each, with COCO annotations and masks."""
    root = tmp_path_factory.mktemp("train_inputs")
    synth("landmarks", root / "landmarks", n=2, seed=0, size=(32, 32))
    synth("streetview", root / "street", n=2, seed=0, size=(32, 32))
    return root


def _copy(base: Path, kind: str, tmp_path: Path) -> Path:
    shutil.copytree(base / kind, tmp_path / "ds")
    return tmp_path


def _edit_coco(root: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = root / "ds" / "annotations.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


def _first_of_image_1(coco: dict[str, Any]) -> dict[str, Any]:
    return coco["annotations"][0]  # synth writes image 1's annotations first


def _as_polygons(coco: dict[str, Any]) -> None:
    """Image 1's annotations as polygons, and its recorded height one more than its pixels."""
    coco["images"][0]["height"] += 1
    for a in coco["annotations"]:
        if a["image_id"] == coco["images"][0]["id"]:
            a["segmentation"] = [[1, 1, 10, 1, 10, 10]]


def _uneven_keypoints(coco: dict[str, Any]) -> None:
    """Image 1 gets a second annotation, of a category naming no keypoints, with 3 keypoints to the first's 4."""
    coco["categories"].append({"id": 2, "name": "other"})
    a = _first_of_image_1(coco)
    coco["annotations"].insert(1, {**a, "id": 1000, "category_id": 2, "keypoints": a["keypoints"][:9]})


COCO_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], list[str]]] = [
    ("polygon_not_a_number",
     lambda c: _first_of_image_1(c).update(segmentation=[[1, 1, "x", 1, 10, 10]]),
     ["annotations.json", "annotations[0].segmentation[0]", "non-number"]),
    # pycocotools' rasteriser overflows (and kills the process) near 4.3e8.
    ("polygon_coordinate_crashes_pycocotools",
     lambda c: _first_of_image_1(c).update(segmentation=[[1, 1, 5e8, 1, 10, 10]]),
     ["annotations.json", "annotations[0].segmentation[0]", "out of range"]),
    ("rle_counts_do_not_cover_the_image",
     lambda c: _first_of_image_1(c).update(segmentation={"size": [32, 32], "counts": [10, 5]}),
     ["annotations.json", "annotations[0].segmentation", "expected height*width = 1024"]),
    ("rle_size_differs_from_the_image",
     lambda c: _first_of_image_1(c)["segmentation"].update(size=[16, 64]),
     ["annotations.json", "annotations[0].segmentation", "differs from the image size 32x32"]),
    ("keypoints_not_triples",
     lambda c: _first_of_image_1(c).update(keypoints=[1, 2, 2, 4]),
     ["annotations.json", "annotations[0].keypoints"]),
    ("image_size_differs_from_its_pixels", _as_polygons,
     ["annotations.json", "images[0]", "33x32", "32x32 pixels"]),
    # Missing keys and wrong types: each was a KeyError/TypeError ("internal error") deep in training.
    ("annotation_without_bbox", lambda c: _first_of_image_1(c).pop("bbox"),
     ["annotations.json", "annotations[0].bbox", "missing"]),
    ("bbox_a_string", lambda c: _first_of_image_1(c).update(bbox="1,2,3,4"),
     ["annotations.json", "annotations[0].bbox", "4 finite numbers"]),
    ("bbox_negative_width", lambda c: _first_of_image_1(c).update(bbox=[1, 1, -3, 2]),
     ["annotations.json", "annotations[0].bbox", ">= 0"]),
    ("image_without_file_name", lambda c: c["images"][0].pop("file_name"),
     ["annotations.json", "images[0].file_name", "missing"]),
    ("file_name_a_number", lambda c: c["images"][0].update(file_name=7),
     ["annotations.json", "images[0].file_name"]),
    ("two_images_one_file", lambda c: c["images"][1].update(file_name=c["images"][0]["file_name"]),
     ["annotations.json", "images[1].file_name", "also the file of images[0]"]),
    ("image_without_height", lambda c: c["images"][0].pop("height"),
     ["annotations.json", "images[0].height", "missing"]),
    ("image_without_width", lambda c: c["images"][1].pop("width"),
     ["annotations.json", "images[1].width", "missing"]),
    ("height_a_string", lambda c: c["images"][0].update(height="32"),
     ["annotations.json", "images[0].height", "positive integer"]),
    ("height_negative", lambda c: c["images"][0].update(height=-32),
     ["annotations.json", "images[0].height", "positive integer"]),
    ("image_id_null", lambda c: c["images"][0].update(id=None),
     ["annotations.json", "images[0].id", "integer"]),
    ("image_a_list", lambda c: c["images"].__setitem__(0, [1, 2]),
     ["annotations.json", "images[0]", "must be an object"]),
    ("images_an_object", lambda c: c.update(images={}),
     ["annotations.json", "images", "must be a list"]),
    ("category_without_id", lambda c: c["categories"][0].pop("id"),
     ["annotations.json", "categories[0].id", "missing"]),
    ("category_id_null", lambda c: c["categories"][0].update(id=None),
     ["annotations.json", "categories[0].id", "integer"]),
    ("category_without_name", lambda c: c["categories"][0].pop("name"),
     ["annotations.json", "categories[0].name", "missing"]),
    # A string would have been read as one keypoint name per character.
    ("category_keypoints_a_string", lambda c: c["categories"][0].update(keypoints="abcd"),
     ["annotations.json", "categories[0].keypoints", "list of keypoint names"]),
    ("annotation_of_no_category", lambda c: _first_of_image_1(c).update(category_id=99),
     ["annotations.json", "annotations[0].category_id", "99 is not the id of a category"]),
    ("annotation_of_no_image", lambda c: _first_of_image_1(c).update(image_id=99),
     ["annotations.json", "annotations[0].image_id", "99 is not the id of an image"]),
    ("annotation_without_image_id", lambda c: _first_of_image_1(c).pop("image_id"),
     ["annotations.json", "annotations[0].image_id", "missing"]),
    ("segmentation_a_string", lambda c: _first_of_image_1(c).update(segmentation="abc"),
     ["annotations.json", "annotations[0].segmentation", "list of polygons or an RLE object"]),
    ("iscrowd_a_string", lambda c: _first_of_image_1(c).update(iscrowd="no"),
     ["annotations.json", "annotations[0].iscrowd", "0 or 1"]),
    ("annotation_a_list", lambda c: c["annotations"].__setitem__(0, []),
     ["annotations.json", "annotations[0]", "must be an object"]),
    ("keypoints_fewer_than_the_category_names", lambda c: _first_of_image_1(c)["keypoints"].__delitem__(slice(9, None)),
     ["annotations.json", "annotations[0].keypoints", "has 3 keypoints", "names 4"]),
    ("keypoints_lengths_differ_within_an_image", _uneven_keypoints,
     ["annotations.json", "annotations[1].keypoints", "has 3 keypoints", "annotations[0]", "has 4"]),
]


@pytest.mark.parametrize("edit,names", [c[1:] for c in COCO_CASES], ids=[c[0] for c in COCO_CASES])
def test_train_refuses_a_malformed_coco_annotation(base: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], Any],
                                                  names: list[str]) -> None:
    root = _copy(base, "landmarks", tmp_path)
    _edit_coco(root, edit)
    check_bad_input(*LANDMARKS, root=root, code=2, names=names, outputs=[root / "t"])
    assert not (root / "t").exists()


@pytest.mark.parametrize("text,names", [
    ('{"images": [', ["annotations.json", "not valid JSON", "line 1"]),
    ("[1, 2]", ["annotations.json", "COCO JSON object", "list"]),
    (b"\xff\xfe{}", ["annotations.json", "not UTF-8"]),
], ids=["truncated", "a_list", "not_utf8"])
def test_train_refuses_an_unreadable_annotations_json(base: Path, tmp_path: Path, text: str | bytes,
                                                      names: list[str]) -> None:
    root = _copy(base, "landmarks", tmp_path)
    path = root / "ds" / "annotations.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    check_bad_input(*LANDMARKS, root=root, code=2, names=names, outputs=[root / "t"])
    assert not (root / "t").exists()


def test_train_refuses_a_label_that_is_no_class(base: Path, tmp_path: Path) -> None:
    root = _copy(base, "street", tmp_path)
    mask = root / "ds" / "masks" / "00000.png"
    labels = np.asarray(Image.open(mask)).copy()
    labels[0, :4] = 40  # labelmap.txt has 8 classes: a loss would index past them
    Image.fromarray(labels).save(mask)
    check_bad_input(*SEMANTIC, root=root, code=2, names=["masks/00000.png", "label 40", "has 8"], outputs=[root / "t"])
    assert not (root / "t").exists()


def test_train_refuses_a_16_bit_label_that_would_wrap(base: Path, tmp_path: Path) -> None:
    root = _copy(base, "street", tmp_path)
    mask = root / "ds" / "masks" / "00001.png"
    labels = np.asarray(Image.open(mask)).astype(np.uint16)
    labels[5, 5] = 257  # would become class 1 in uint8
    Image.fromarray(labels).save(mask)
    check_bad_input(*SEMANTIC, root=root, code=2, names=["masks/00001.png", "label 257"], outputs=[root / "t"])


def test_train_refuses_a_mask_of_another_size(base: Path, tmp_path: Path) -> None:
    root = _copy(base, "street", tmp_path)
    mask = root / "ds" / "masks" / "00000.png"
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(mask)
    check_bad_input(*SEMANTIC, root=root, code=2, names=["masks/00000.png", "24x16", "00000.png is 32x32"],
                    outputs=[root / "t"])


def test_train_refuses_a_category_without_a_name_beside_labelmap(base: Path, tmp_path: Path) -> None:
    """Semantic training reads the COCO categories too (labelmap.txt takes their ids and thing flags)."""
    root = _copy(base, "street", tmp_path)
    _edit_coco(root, lambda c: c["categories"][2].pop("name"))
    check_bad_input(*SEMANTIC, root=root, code=2, names=["annotations.json", "categories[2].name", "missing"],
                    outputs=[root / "t"])
    assert not (root / "t").exists()


def test_train_refuses_a_nan_box(base: Path, tmp_path: Path) -> None:
    """Python's json reads NaN: it would reach the loss as a box coordinate."""
    root = _copy(base, "landmarks", tmp_path)
    path = root / "ds" / "annotations.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"][0] = float("nan")
    path.write_text(json.dumps(coco))  # writes a bare NaN, as some tools do
    check_bad_input(*LANDMARKS, root=root, code=2, names=["annotations.json", "annotations[0].bbox", "finite"],
                    outputs=[root / "t"])
    assert not (root / "t").exists()


def test_semantic_training_ignores_annotations_it_does_not_read(base: Path, tmp_path: Path) -> None:
    """A missing bbox matters to instance and landmark training only: semantic training learns from masks."""
    root = _copy(base, "street", tmp_path)
    _edit_coco(root, lambda c: c["annotations"][0].pop("bbox"))
    r = run_cli(*SEMANTIC, cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / "t" / "best.ckpt").is_file()


@pytest.mark.parametrize("text,names", [
    ("# no classes\n", ["labelmap.txt", "names no classes"]),
    ("background:0,0,0::\nsky:1,2,3::\nsky:4,5,6::\n", ["labelmap.txt", "line 3", "'sky' is also named on line 2"]),
    ("background:0,0,0::\n:1,2,3::\n", ["labelmap.txt", "line 2", "no class name"]),
    ("background:0,0,0::\nsky:1,2::\n", ["labelmap.txt", "line 2", "malformed"]),
    (b"\xff\xfebackground", ["labelmap.txt", "not UTF-8"]),
], ids=["no_classes", "a_name_twice", "no_name", "two_channel_colour", "not_utf8"])
def test_train_refuses_a_malformed_labelmap(base: Path, tmp_path: Path, text: str | bytes, names: list[str]) -> None:
    root = _copy(base, "street", tmp_path)
    path = root / "ds" / "labelmap.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    check_bad_input(*SEMANTIC, root=root, code=2, names=names, outputs=[root / "t"])
    assert not (root / "t").exists()


@pytest.mark.parametrize("name", ["labelmap.txt", "annotations.json"])
def test_train_refuses_a_dataset_file_that_is_a_folder(base: Path, tmp_path: Path, name: str) -> None:
    """Read as absent, the other file's classes would be trained on without a word."""
    root = _copy(base, "street", tmp_path)
    (root / "ds" / name).unlink()
    (root / "ds" / name).mkdir()
    check_bad_input(*SEMANTIC, root=root, code=2, names=[name, "is not a file"], outputs=[root / "t"])
    assert not (root / "t").exists()


@pytest.mark.parametrize("dataset,names", [("missing", ["missing", "does not exist"]),
                                           ("ds/labelmap.txt", ["ds/labelmap.txt", "is not a folder"])],
                         ids=["missing", "a_file"])
def test_train_refuses_a_dataset_that_is_no_folder(base: Path, tmp_path: Path, dataset: str, names: list[str]) -> None:
    root = _copy(base, "street", tmp_path)
    args = list(SEMANTIC)
    args[args.index("ds")] = dataset
    check_bad_input(*args, root=root, code=2, names=names, outputs=[root / "t"])
    assert not (root / "t").exists()


def test_train_refuses_a_batch_too_small_for_batch_normalisation(base: Path, tmp_path: Path) -> None:
    """One 32x32 training image reaches the hourglass's coarsest level as 1x1: torch's ValueError named nothing."""
    root = _copy(base, "landmarks", tmp_path)
    check_bad_input(*LANDMARKS, root=root, code=2, names=["--batch", "a batch of 1 image(s) of hourglass", "depth"],
                    outputs=[root / "t"])
    assert not (root / "t").exists()
