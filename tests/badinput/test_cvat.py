"""Bad CVAT XML inputs: one error line naming the file and the element, the right exit code, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.badinput._corpus import check_bad_input, check_convert_refused, check_validate_one_error

LABELS = "<labels><label><name>a</name></label><label><name>s</name><type>skeleton</type></label>" \
         "<label><name>h</name><parent>s</parent></label></labels>"
META = f"<meta><task>{LABELS}</task></meta>"
IMG = '<image id="0" name="x.png" width="16" height="12">{}</image>'
GOOD_POLY = '<polygon label="a" points="1,1;5,1;5,5"/>'


def _doc(body: str, meta: str = META) -> str:
    return f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>{meta}{body}</annotations>'


BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]>\n<annotations><version>&lol3;</version></annotations>')
DEEP = _doc(IMG.format("<polygon label='a' points='1,1;5,1;5,5'>" + "<x>" * 200 + "</x>" * 200 + "</polygon>"))

#: (case, annotations.xml text, strings the error line must name)
CASES = [
    ("rle_not_numbers", _doc(IMG.format('<mask label="a" rle="3, x, 1" left="0" top="0" width="2" height="2"/>')),
     ["annotations.xml", "mask[0]", "rle", "'x'"]),
    ("rle_wrong_total", _doc(IMG.format('<mask label="a" rle="1, 2" left="0" top="0" width="2" height="2"/>')),
     ["annotations.xml", "mask[0] > rle", "add up to 3"]),
    ("rle_negative", _doc(IMG.format('<mask label="a" rle="5, -1" left="0" top="0" width="2" height="2"/>')),
     ["annotations.xml", "rle", "'-1'"]),
    ("mask_outside_image", _doc(IMG.format('<mask label="a" rle="0, 4" left="15" top="0" width="2" height="2"/>')),
     ["annotations.xml", "mask[0] > left", "not inside"]),
    ("mask_zero_width", _doc(IMG.format('<mask label="a" rle="0" left="0" top="0" width="0" height="2"/>')),
     ["annotations.xml", "mask[0] > width", ">= 1"]),
    ("width_negative", _doc('<image id="0" name="x.png" width="-16" height="12"></image>'),
     ["annotations.xml", "image 0 (x.png) > width", ">= 1"]),
    ("width_absent", _doc('<image id="0" name="x.png" height="12"></image>'),
     ["annotations.xml", "image 0 (x.png) > width", "missing integer"]),
    ("label_not_in_meta", _doc(IMG.format('<polygon label="zz" points="1,1;5,1;5,5"/>')),
     ["annotations.xml", "polygon[0] > label", "'zz'"]),
    ("label_attribute_absent", _doc(IMG.format('<box xtl="1" ytl="1" xbr="2" ybr="2"/>')),
     ["annotations.xml", "box[0] > label"]),
    ("points_not_numbers", _doc(IMG.format('<polygon label="a" points="1,1;five,1;5,5"/>')),
     ["annotations.xml", "polygon[0] > points", "'five'"]),
    ("points_odd", _doc(IMG.format('<polygon label="a" points="1,1;5;5,5"/>')),
     ["annotations.xml", "polygon[0] > points", "'x,y'"]),
    ("polygon_two_points", _doc(IMG.format('<polygon label="a" points="1,1;5,5"/>')),
     ["annotations.xml", "polygon[0] > points", "at least 3"]),
    ("box_not_finite", _doc(IMG.format('<box label="a" xtl="nan" ytl="1" xbr="2" ybr="2"/>')),
     ["annotations.xml", "box[0] > xtl"]),
    ("box_inverted", _doc(IMG.format('<box label="a" xtl="5" ytl="1" xbr="2" ybr="2"/>')),
     ["annotations.xml", "box[0] > xbr"]),
    ("skeleton_point_unknown", _doc(IMG.format('<skeleton label="s"><points label="q" points="1,1"/></skeleton>')),
     ["annotations.xml", "skeleton[0] > points[0] > label", "'q'"]),
    ("z_order_text", _doc(IMG.format('<polygon label="a" points="1,1;5,1;5,5" z_order="top"/>')),
     ["annotations.xml", "polygon[0] > z_order"]),
    ("name_escapes", _doc('<image id="0" name="../../x.png" width="16" height="12"></image>'),
     ["annotations.xml", "name", "escapes"]),
    ("name_absolute", _doc('<image id="0" name="/etc/passwd" width="16" height="12"></image>'),
     ["annotations.xml", "name", "absolute"]),
    ("duplicate_image", _doc(IMG.format("") + IMG.format("")), ["annotations.xml", "name", "already annotated"]),
    ("no_meta", _doc(IMG.format(GOOD_POLY), meta=""), ["annotations.xml", "meta"]),
    ("no_labels", _doc(IMG.format(GOOD_POLY), meta="<meta><task><name>t</name></task></meta>"),
     ["annotations.xml", "labels"]),
    ("label_colour", _doc("", meta="<meta><task><labels><label><name>a</name><color>red</color></label></labels>"
                          "</task></meta>"), ["annotations.xml", "label[0] > color", "#rrggbb"]),
    ("malformed", _doc(IMG.format("<polygon label='a'")), ["annotations.xml", "malformed XML"]),
    ("billion_laughs", BOMB, ["annotations.xml", "unsafe XML"]),
    ("deep_nesting", DEEP, ["annotations.xml", "nested deeper"]),
]


def _case(root: Path, text: str) -> Path:
    ds = root / "ds"
    (ds / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(ds / "images" / "x.png")
    (ds / "annotations.xml").write_text(text)
    return ds


@pytest.mark.parametrize("case,text,names", CASES, ids=[c[0] for c in CASES])
def test_convert_refuses_with_one_line(tmp_path, case, text, names):
    _case(tmp_path, text)
    check_convert_refused(tmp_path, names)


@pytest.mark.parametrize("case,text,names", CASES[:8], ids=[c[0] for c in CASES[:8]])
def test_validate_names_the_field(tmp_path, case, text, names):
    _case(tmp_path, text)
    check_validate_one_error(tmp_path, "cvat", names)


def test_missing_image_file_fails_strict(tmp_path):
    ds = _case(tmp_path, _doc(IMG.format(GOOD_POLY) + '<image id="1" name="gone.png" width="4" height="4"/>'))
    assert (ds / "images" / "x.png").exists()
    check_bad_input("convert", "ds", "out", "--to", "coco", "--strict", "-w", "0", root=tmp_path, code=1,
                    names=["missing_images=1"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_strict_fails_on_what_cvat_reading_does_not_keep(tmp_path):
    _case(tmp_path, _doc(IMG.format(GOOD_POLY + '<polyline label="a" points="0,0;3,3"/><tag label="a"/>')))
    check_bad_input("convert", "ds", "out", "--to", "coco", "--strict", "-w", "0", root=tmp_path, code=1,
                    names=["polylines_not_read", "tags_not_read"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_video_export_is_refused_with_one_line(tmp_path):
    _case(tmp_path, _doc('<track id="0" label="a"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2" outside="0" '
                         'occluded="0" keyframe="1"/></track>'))
    check_convert_refused(tmp_path, ["annotations.xml", "CVAT for video"])


@pytest.mark.parametrize("subset,why", [("../../x", "escapes"), ("/etc", "absolute"), ("a/b", "one name")])
def test_subset_that_is_no_folder_name(tmp_path, subset, why):
    # A split becomes images/<subset>/ in every writer: it was refused there, by a line naming no file.
    meta = f"<meta><project>{LABELS}</project></meta>"
    _case(tmp_path, _doc(IMG.format(GOOD_POLY).replace("<image ", f'<image subset="{subset}" '), meta=meta))
    check_convert_refused(tmp_path, ["annotations.xml", "image 0 (x.png) > subset", why])
