"""A bad-input corpus: each case gives one expected one-line problem naming the file and the field."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.core.labelmap import voc_colormap
from segpipe.formats.voc.validate import validate_voc
from segpipe.storage.images import write_label_png

GOOD_XML = (
    "<annotation><filename>a.jpg</filename><size><width>4</width><height>3</height><depth>3</depth></size>"
    "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
    "</annotation>"
)


def _good(root: Path) -> None:
    for d in (
        "Annotations",
        "SegmentationClass",
        "SegmentationObject",
        "JPEGImages",
        "ImageSets/Segmentation",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "Annotations/a.xml").write_text(GOOD_XML)
    cm = np.zeros((3, 4), np.uint8)
    cm[:2, :2] = 8
    write_label_png(root / "SegmentationClass/a.png", cm, voc_colormap(256))
    write_label_png(root / "SegmentationObject/a.png", (cm > 0).astype(np.uint8), voc_colormap(256))
    Image.new("RGB", (4, 3)).save(root / "JPEGImages/a.jpg")
    (root / "ImageSets/Segmentation/train.txt").write_text("a\n")


def _xml(text: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        (root / "Annotations/a.xml").write_text(text)

    return f


def _box(xmin: str, ymin: str, xmax: str, ymax: str) -> str:
    return GOOD_XML.replace(
        "<xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>",
        f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>",
    )


def _class_map(arr: np.ndarray, rgb: bool = False) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        p = root / "SegmentationClass/a.png"
        if rgb:
            Image.fromarray(voc_colormap(256)[arr]).save(p)
        else:
            write_label_png(p, arr, voc_colormap(256))

    return f


def _symlink(root: Path) -> None:
    outside = root.parent / "outside.xml"
    outside.write_text(GOOD_XML)
    os.symlink(outside, root / "Annotations/b.xml")


def _cm8() -> np.ndarray:
    cm = np.zeros((3, 4), np.uint8)
    cm[:2, :2] = 8
    return cm


CASES = {
    "malformed_xml": (
        _xml("<annotation><object>"),
        "error: Annotations/a.xml: malformed XML",
        "voc.xml_malformed",
    ),
    "billion_laughs": (
        _xml('<!DOCTYPE a [<!ENTITY l "lol">]><annotation><filename>&l;</filename></annotation>'),
        "error: Annotations/a.xml: unsafe XML refused",
        "voc.xml_unsafe",
    ),
    "external_entity": (
        _xml('<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>'),
        "error: Annotations/a.xml: unsafe XML refused",
        "voc.xml_unsafe",
    ),
    "missing_name": (
        _xml(GOOD_XML.replace("<name>cat</name>", "")),
        "error: Annotations/a.xml: object[0].name: object has no <name>",
        "voc.missing_field",
    ),
    "missing_xmin": (
        _xml(GOOD_XML.replace("<xmin>1</xmin>", "")),
        "error: Annotations/a.xml: object[0].bndbox.xmin: missing <xmin>",
        "voc.missing_field",
    ),
    "non_numeric": (
        _xml(_box("one", "1", "2", "2")),
        "error: Annotations/a.xml: object[0].bndbox.xmin: not a number: 'one'",
        "voc.box_not_numeric",
    ),
    "inverted": (
        _xml(_box("3", "1", "2", "2")),
        "error: Annotations/a.xml: object[0].bndbox: inverted box",
        "voc.box_inverted",
    ),
    "outside": (
        _xml(_box("1", "1", "5", "2")),
        "error: Annotations/a.xml: object[0].bndbox: box (1, 1, 5, 2) lies outside the 4x3 image",
        "voc.box_outside",
    ),
    "unknown_class": (
        _xml(GOOD_XML.replace(">cat<", ">unicorn<")),
        "error: Annotations/a.xml: object[0].name: class 'unicorn' is not in the label map",
        "voc.unknown_class",
    ),
    "mask_size": (
        _class_map(np.zeros((5, 5), np.uint8)),
        "error: SegmentationClass/a.png: size: mask is 5x5 but the image is 4x3",
        "voc.mask_size",
    ),
    "unknown_value": (
        _class_map(np.where(_cm8() > 0, 77, 0).astype(np.uint8)),
        "error: SegmentationClass/a.png: pixel values: values [77] are not in the label map",
        "voc.unknown_value",
    ),
    "rgb_mask": (
        _class_map(_cm8(), rgb=True),
        "warning: SegmentationClass/a.png: mode: mask is RGB (colour-coded) instead of a palette PNG",
        "voc.mask_rgb",
    ),
    "imageset_missing": (
        lambda root: (root / "ImageSets/Segmentation/train.txt").write_text("a\nghost\n"),
        "error: ImageSets/Segmentation/train.txt: line 2: lists 'ghost' but "
        "SegmentationClass/ghost.png does not exist",
        "voc.imageset_missing",
    ),
    "imageset_escape": (
        lambda root: (root / "ImageSets/Segmentation/train.txt").write_text("a\n../../x\n"),
        "error: ImageSets/Segmentation/train.txt: line 2: file name escapes the dataset root",
        "voc.unsafe_path",
    ),
    "symlink_escape": (
        _symlink,
        "error: Annotations/b.xml: file name resolves outside the dataset root",
        "voc.unsafe_path",
    ),
    "class_mismatch": (
        _xml(GOOD_XML.replace(">cat<", ">dog<")),
        "warning: SegmentationObject/a.png: object index 1: XML object[0] is 'dog' but its pixels are 'cat'",
        "voc.class_mismatch",
    ),
}


def test_good_dataset_is_clean(tmp_path: Path) -> None:
    _good(tmp_path / "voc")
    assert list(validate_voc(tmp_path / "voc")) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(tmp_path: Path, case: str) -> None:
    breaker, line, code = CASES[case]
    root = tmp_path / "voc"
    _good(root)
    breaker(root)
    problems = list(validate_voc(root))
    assert len(problems) == 1, [str(p) for p in problems]
    (p,) = problems
    assert p.code == code
    assert str(p).startswith(line), str(p)
    assert "\n" not in str(p)


def test_not_voc(tmp_path: Path) -> None:
    (p,) = list(validate_voc(tmp_path))
    assert p.code == "voc.not_voc"
