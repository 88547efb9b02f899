from __future__ import annotations

import numpy as np
import pytest

from segpipe.core.labelmap import (
    VOC_CLASSES,
    LabelEntry,
    color_lut,
    format_labelmap_txt,
    parse_labelmap_txt,
    rgb_to_labels,
    voc_colormap,
    voc_labelmap,
)
from segpipe.errors import FormatError


def _devkit_colormap(n: int) -> np.ndarray:
    """The VOC devkit's labelcolormap, bit by bit (reference implementation)."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def test_voc_colormap_matches_devkit() -> None:
    cm = voc_colormap()
    assert cm.shape == (256, 3) and cm.dtype == np.uint8
    np.testing.assert_array_equal(cm, _devkit_colormap(256))
    assert tuple(cm[1]) == (128, 0, 0)
    assert tuple(cm[15]) == (192, 128, 128)  # person
    assert tuple(cm[255]) == (224, 224, 192)  # void / boundary


def test_voc_classes() -> None:
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"


def test_parse_datumaro_style() -> None:
    text = (
        "# label:color_rgb:parts:actions\n\nbackground:0,0,0::\n"
        "person:192,128,128:head,hand:jumping\nx\ny:::\n"
    )
    e = parse_labelmap_txt(text, source="lm.txt")
    assert [x.name for x in e] == ["background", "person", "x", "y"]
    assert e[1] == LabelEntry("person", (192, 128, 128), ("head", "hand"), ("jumping",))
    assert e[2].color is None and e[3].color is None


def test_round_trip() -> None:
    entries = [*voc_labelmap(), LabelEntry("thing", None, ("p",), ("a", "b"))]
    assert parse_labelmap_txt(format_labelmap_txt(entries)) == entries


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("a:1,2,3::\nb:1,2::\n", 2, "three integers"),
        ("a:1,2,300::\n", 1, "0..255"),
        ("a:x,y,z::\n", 1, "three integers"),
        ("a:::\n# c\na:::\n", 3, "duplicate"),
        ("a:1,2,3:::extra\n", 1, "fields"),
        (":1,2,3::\n", 1, "empty"),
    ],
)
def test_malformed_lines_name_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(FormatError) as ei:
        parse_labelmap_txt(text, source="labelmap.txt")
    assert ei.value.where == f"line {line}" and what in ei.value.message
    assert str(ei.value).startswith("labelmap.txt: line")


def test_format_refuses_unreadable_names() -> None:
    with pytest.raises(ValueError):
        format_labelmap_txt([LabelEntry("a:b")])


def test_rgb_to_labels() -> None:
    cm = voc_colormap(4)
    rgb = cm[np.array([[0, 1], [3, 2]])]
    labels, unknown = rgb_to_labels(rgb, color_lut(cm))
    np.testing.assert_array_equal(labels, [[0, 1], [3, 2]])
    assert unknown == []
    rgb[0, 0] = (1, 2, 3)
    _, unknown = rgb_to_labels(rgb, color_lut(cm))
    assert unknown == [(1, 2, 3)]
