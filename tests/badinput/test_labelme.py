"""Bad LabelMe inputs: one error line naming the JSON file and the field, the right exit code, nothing written."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.badinput._corpus import check_bad_input, check_convert_refused, check_validate_one_error


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bomb_png() -> bytes:
    """A valid PNG whose header claims 100000 x 100000 pixels (only the header is ever read)."""
    png = bytearray(_png(np.zeros((2, 2))))
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", 100_000, 100_000)
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(png)


def _poly(**kw):
    return {"label": "x", "points": [[1, 1], [5, 1], [5, 4]], "group_id": None, "shape_type": "polygon",
            "flags": {}, **kw}


MASK = _b64(_png(np.ones((3, 4))))

#: (case, top-level keys changed, shapes, strings the error line must name)
CASES = [
    ("image_path_escapes", {"imagePath": "../../outside.png"}, [], ["a.json", "imagePath", "leaves"]),
    ("image_path_absolute", {"imagePath": "/etc/passwd"}, [], ["a.json", "imagePath", "outside"]),
    ("image_path_url", {"imagePath": "https://example.com/a.png"}, [], ["a.json", "imagePath", "URL"]),
    ("image_path_missing", {"imagePath": None}, [], ["a.json", "imagePath"]),
    ("width_mismatch", {"imageWidth": 21}, [], ["a.json", "imageWidth", "20 pixels wide"]),
    ("height_not_int", {"imageHeight": "10"}, [], ["a.json", "imageHeight", "positive integer"]),
    ("shapes_not_list", {"shapes": {"a": 1}}, None, ["a.json", "shapes", "list"]),
    ("point_not_pair", {}, [_poly(points=[[1, 1], [5], [5, 4]])], ["a.json", "shapes[0].points[1]"]),
    ("polygon_two_points", {}, [_poly(points=[[1, 1], [5, 1]])], ["a.json", "shapes[0].points", "at least 3"]),
    ("rectangle_three_points", {}, [_poly(shape_type="rectangle")], ["a.json", "shapes[0].points", "2 points"]),
    ("coordinate_nan", {}, [_poly(points=[[1, 1], [5, 1], [float("nan"), 4]])], ["shapes[0].points[2]"]),
    ("coordinate_huge", {}, [_poly(points=[[1, 1], [5e12, 1], [5, 4]])], ["shapes[0].points[1]", "range"]),
    ("label_empty", {}, [_poly(label="")], ["a.json", "shapes[0].label"]),
    ("group_id_text", {}, [_poly(group_id="g")], ["a.json", "shapes[0].group_id"]),
    ("flags_list", {}, [_poly(flags=["a"])], ["a.json", "shapes[0].flags"]),
    ("image_flags_text", {"flags": "yes"}, [], ["a.json", "flags"]),
    ("mask_missing", {}, [_poly(shape_type="mask", points=[[0, 0], [3, 2]])], ["shapes[0].mask", "base64 PNG"]),
    ("mask_not_base64", {}, [_poly(shape_type="mask", points=[[0, 0], [3, 2]], mask="**")],
     ["shapes[0].mask", "not valid base64"]),
    ("mask_not_png", {}, [_poly(shape_type="mask", points=[[0, 0], [3, 2]], mask=_b64(b"hello"))],
     ["shapes[0].mask", "not an image"]),
    ("mask_rgb", {}, [_poly(shape_type="mask", points=[[0, 0], [3, 2]], mask=_b64(_png(np.ones((3, 4, 3)))))],
     ["shapes[0].mask", "single-channel"]),
    ("mask_box_outside", {}, [_poly(shape_type="mask", points=[[18, 8], [21, 10]], mask=MASK)],
     ["shapes[0].points", "not inside"]),
    ("mask_size_mismatch", {}, [_poly(shape_type="mask", points=[[0, 0], [4, 2]], mask=MASK)],
     ["shapes[0].mask", "4x3"]),
    ("mask_bomb", {}, [_poly(shape_type="mask", points=[[0, 0], [3, 2]], mask=_b64(_bomb_png()))],
     ["shapes[0].mask", "decompression bomb"]),
    ("embedded_not_base64", {"imagePath": "gone.png", "imageData": "%%"}, [], ["a.json", "imageData", "base64"]),
    ("embedded_bomb", {"imagePath": "gone.png", "imageData": _b64(_bomb_png())}, [],
     ["a.json", "imageData", "decompression bomb"]),
    ("absent_and_unsized", {"imagePath": "gone.png", "imageWidth": None}, [], ["a.json", "imageWidth", "absent"]),
]


def _case(root: Path, top: dict, shapes: list | None) -> Path:
    ds = root / "ds"
    ds.mkdir()
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(ds / "a.png")
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes if shapes is not None else [], "imagePath": "a.png",
           "imageData": None, "imageHeight": 10, "imageWidth": 20, **top}
    (ds / "a.json").write_text(json.dumps(doc))
    (root / "outside.png").write_bytes(_png(np.zeros((10, 20))))
    return ds


@pytest.mark.parametrize("case,top,shapes,names", CASES, ids=[c[0] for c in CASES])
def test_convert_refuses_with_one_line(tmp_path, case, top, shapes, names):
    _case(tmp_path, top, shapes)
    check_convert_refused(tmp_path, names)


@pytest.mark.parametrize("case,top,shapes,names", CASES[:8], ids=[c[0] for c in CASES[:8]])
def test_validate_names_the_field(tmp_path, case, top, shapes, names):
    _case(tmp_path, top, shapes)
    check_validate_one_error(tmp_path, "labelme", names[1:])


def test_invalid_json_and_two_files_for_one_image(tmp_path):
    ds = _case(tmp_path, {}, [])
    (ds / "b.json").write_text('{"shapes": [,]}')
    check_bad_input("convert", "ds", "out", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=["b.json", "invalid JSON"], outputs=[tmp_path / "out"])
    (ds / "b.json").write_text((ds / "a.json").read_text())
    check_bad_input("convert", "ds", "out", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=["b.json", "imagePath", "already annotated by a.json"], outputs=[tmp_path / "out"])


def test_strict_fails_on_shapes_not_read(tmp_path):
    _case(tmp_path, {}, [_poly(), _poly(shape_type="point", points=[[1, 1]])])
    check_bad_input("convert", "ds", "out", "--to", "coco", "--strict", "-w", "0", root=tmp_path, code=1,
                    names=["shapes_without_area"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_labelme_xml_folder_is_refused_not_converted(tmp_path):
    ann = tmp_path / "xml" / "Annotations" / "subset1"
    ann.mkdir(parents=True)
    (ann / "img1.xml").write_text("<annotation><filename>img1.png</filename><object><name>w</name><polygon><pt>"
                                  "<x>1</x><y>2</y></pt></polygon></object><imagesize><nrows>4</nrows><ncols>5"
                                  "</ncols></imagesize></annotation>")
    for args in (("convert", "xml", "out", "--to", "coco", "--strict", "-w", "0"), ("validate", "xml")):
        check_bad_input(*args, root=tmp_path, code=2, names=["xml", "LabelMe XML"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()
