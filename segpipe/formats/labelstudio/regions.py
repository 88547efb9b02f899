"""One Label Studio result (a region) → pixel geometry (pure: no files).

Label Studio stores image regions in percent of the image: ``x = 100 * px / original_width``. Its
canvas (Konva) draws image pixel ``i`` over ``[i, i + 1)``, so a point at ``x`` percent is the pixel
*corner* coordinate ``x / 100 * original_width`` — the convention of COCO polygons, and exactly what
label-studio-sdk's converter does (``convert_to_coco``: ``x / 100 * width``, no half-pixel shift;
``imports/coco.py`` the inverse). Polygons therefore rasterise as COCO polygons do (pycocotools), and
a segpipe polygon written to Label Studio and read back is the same polygon (coordinates are rounded
to 1e-9 px to undo the percent round trip's float error, far below any rasteriser's resolution).

* ``brushlabels``: ``value.rle`` is Label Studio's RLE of the RGBA image (:mod:`.brush`); a pixel is
  foreground where alpha > 0 (as the sdk's ``decode_from_annotation`` takes the alpha layer).
* ``polygonlabels``: ``value.points`` ``[[x%, y%], ...]``, at least 3; ``closed: false`` is filled too,
  as the sdk's COCO export does.
* ``rectanglelabels``: ``x, y, width, height`` percent; ``rotation`` (degrees, clockwise, about the
  top-left corner, as Label Studio draws it) ≠ 0 gives the rotated rectangle as a polygon.
* ``keypointlabels``: one point ``x, y`` percent per region, labelled with the keypoint's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segpipe.errors import PixelLimitError
from segpipe.formats.labelstudio.brush import rle_to_mask
from segpipe.storage.images import check_pixel_count

#: Result types read (the control tags of :data:`segpipe.formats.labelstudio.config.READ_TAGS`).
READ_TYPES = ("brushlabels", "polygonlabels", "rectanglelabels", "keypointlabels")
#: Percent values may overshoot [0, 100] by this much (float error of the frontend's arithmetic).
PERCENT_SLACK = 1e-3
#: Region keys Label Studio defines; any other is kept as an attribute of the object.
REGION_KEYS = frozenset({"id", "type", "from_name", "to_name", "original_width", "original_height", "image_rotation",
                         "value", "origin", "score", "readonly", "hidden", "parentID", "item_index", "meta"})


class RegionError(ValueError):
    """One thing wrong with a region; ``where`` is the key below the region (``value.points[2]``)."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass
class Region:
    """One region read.

    Attributes:
        type: The result type (``brushlabels`` ...).
        from_name: The control tag.
        label: The (first) label: a class name, or a keypoint name.
        width: ``original_width``.
        height: ``original_height``.
        mask: ``(height, width) bool`` for brushes (readers replace it by ``rle`` to hold little memory).
        rle: The brush mask as COCO compressed RLE, once a reader has encoded it.
        polygon: Flat ``[x1, y1, ...]`` pixel-corner polygon for polygons and rotated rectangles.
        bbox: ``(x, y, w, h)`` pixels for rectangles.
        point: ``(x, y)`` pixels for keypoints.
        score: The region's ``score`` (predictions), or None.
        extra_labels: Further labels of the region (Label Studio allows several; one class is kept).
        attributes: ``meta`` (when not empty), ``rotation`` of a rotated rectangle, and unknown keys.
    """

    type: str
    from_name: str
    label: str
    width: int
    height: int
    mask: np.ndarray | None = None
    rle: dict[str, Any] | None = None
    polygon: list[float] | None = None
    bbox: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    score: float | None = None
    extra_labels: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _size(r: dict[str, Any], key: str) -> int:
    v = r.get(key)
    if v is None:
        raise RegionError(f"missing {key} (needed to turn percent into pixels)", key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise RegionError(f"{key} must be a positive integer, got {str(v)[:40]}", key)
    return v


def _percent(v: Any, where: str) -> float:
    if not _num(v):
        raise RegionError(f"must be a finite number (percent), got {str(v)[:40]}", where)
    x = float(v)
    if x < -PERCENT_SLACK or x > 100 + PERCENT_SLACK:
        raise RegionError(f"percent {x:g} is outside [0, 100]", where)
    return min(max(x, 0.0), 100.0)


def _px(p: float, size: int) -> float:
    return round(p / 100.0 * size, 9)


def _labels(value: dict[str, Any], key: str) -> list[str]:
    labels = value.get(key)
    if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
        raise RegionError(f"{key} must be a list of label names", f"value.{key}")
    return labels


def rotated_rectangle(x: float, y: float, w: float, h: float, degrees: float) -> list[float]:
    """The corners of a rectangle rotated clockwise (image y down) about its top-left corner ``(x, y)``.

    Returns:
        Flat ``[x1, y1, ..., x4, y4]`` pixels.
    """
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    out: list[float] = []
    for dx, dy in ((0.0, 0.0), (w, 0.0), (w, h), (0.0, h)):
        out += [round(x + dx * c - dy * s, 9), round(y + dx * s + dy * c, 9)]
    return out


def parse_region(r: Any) -> Region | str:
    """Checks one result and converts it to pixels.

    Args:
        r: One entry of an annotation's (or prediction's) ``result``.

    Returns:
        The region; or, for a result segpipe does not read, its type (``choices``, ``ellipselabels``,
        ``relation`` ...), or ``"unlabelled <type>"`` for a region without a label.

    Raises:
        RegionError: naming the key.
    """
    if not isinstance(r, dict):
        raise RegionError(f"a result must be an object, got {type(r).__name__}")
    rtype = r.get("type")
    if not isinstance(rtype, str) or not rtype:
        raise RegionError("type must be a non-empty string", "type")
    rtype = rtype.lower()
    if rtype not in READ_TYPES:
        return rtype
    from_name = r.get("from_name")
    if not isinstance(from_name, str) or not from_name:
        raise RegionError("from_name must be a non-empty string", "from_name")
    value = r.get("value")
    if not isinstance(value, dict):
        raise RegionError("value must be an object", "value")
    w, h = _size(r, "original_width"), _size(r, "original_height")
    labels = _labels(value, rtype)
    if not labels:
        return f"unlabelled {rtype}"
    score = r.get("score")
    if score is not None and not _num(score):
        raise RegionError(f"score must be a number, got {str(score)[:40]}", "score")
    attrs: dict[str, Any] = {k: v for k, v in r.items() if k not in REGION_KEYS}
    if r.get("meta"):
        attrs["meta"] = r["meta"]
    rot = r.get("image_rotation", 0)
    if rot not in (0, None) and not (_num(rot) and float(rot) % 360 == 0):
        raise RegionError(f"image_rotation {str(rot)[:20]} is not supported (regions of a rotated image view)",
                          "image_rotation")
    reg = Region(rtype, from_name, labels[0], w, h, score=float(score) if score is not None else None,
                 extra_labels=tuple(labels[1:]), attributes=attrs)
    if rtype == "brushlabels":
        _brush(value, reg)
    elif rtype == "polygonlabels":
        _polygon(value, reg)
    elif rtype == "rectanglelabels":
        _rectangle(value, reg)
    else:  # keypointlabels
        reg.point = (_px(_percent(value.get("x"), "value.x"), w), _px(_percent(value.get("y"), "value.y"), h))
    return reg


def _polygon(value: dict[str, Any], reg: Region) -> None:
    """Sets ``reg.polygon`` (pixels) from a polygon's ``points`` (percent ``[x, y]`` pairs).

    Raises:
        RegionError: fewer than 3 points, or a point that is not two percentages.
    """
    pts = value.get("points")
    if not isinstance(pts, list) or len(pts) < 3:
        raise RegionError("points must be a list of at least 3 [x, y] percent pairs", "value.points")
    poly: list[float] = []
    for k, p in enumerate(pts):
        if not isinstance(p, list) or len(p) != 2:
            raise RegionError(f"a point must be [x, y], got {str(p)[:40]}", f"value.points[{k}]")
        poly += [_px(_percent(p[0], f"value.points[{k}]"), reg.width),
                 _px(_percent(p[1], f"value.points[{k}]"), reg.height)]
    reg.polygon = poly


def _rectangle(value: dict[str, Any], reg: Region) -> None:
    """Sets ``reg.bbox`` (pixels) from a rectangle, or ``reg.polygon`` when it is rotated.

    Raises:
        RegionError: a value that is not a percentage or number, or an upright rectangle leaving the image.
    """
    w, h = reg.width, reg.height
    x, y = _percent(value.get("x"), "value.x"), _percent(value.get("y"), "value.y")
    bw, bh = _percent(value.get("width"), "value.width"), _percent(value.get("height"), "value.height")
    rotation = value.get("rotation", 0) or 0
    if not _num(rotation):
        raise RegionError(f"rotation must be a number, got {str(rotation)[:40]}", "value.rotation")
    px, py, pw, ph = _px(x, w), _px(y, h), _px(bw, w), _px(bh, h)
    if float(rotation) % 360 != 0:
        reg.polygon = rotated_rectangle(px, py, pw, ph, float(rotation))
        reg.attributes["rotation"] = float(rotation)
    else:
        if x + bw > 100 + PERCENT_SLACK or y + bh > 100 + PERCENT_SLACK:
            raise RegionError("the rectangle leaves the image (x + width or y + height above 100)", "value")
        reg.bbox = (px, py, pw, ph)


def _brush(value: dict[str, Any], reg: Region) -> None:
    fmt = value.get("format", "rle")
    if fmt != "rle":
        raise RegionError(f"brush format {str(fmt)[:40]!r} is not read (only Label Studio's rle)", "value.format")
    rle = value.get("rle")
    if not isinstance(rle, list) or not rle:
        raise RegionError("rle must be a non-empty list of byte values", "value.rle")
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in rle):
        raise RegionError("rle values must be integers in 0..255", "value.rle")

    try:
        check_pixel_count(reg.width, reg.height, path=None, what="original_width x original_height")
    except PixelLimitError as e:
        raise RegionError(e.message, "original_width") from None
    # The header's value count first: a forged count must not allocate gigabytes before the size check.
    num = int.from_bytes(bytes(rle[:4]), "big") if len(rle) >= 4 else -1
    if num != reg.width * reg.height * 4:
        raise RegionError(f"bad brush RLE: its header holds {num} values, expected original_width x original_height "
                          f"x 4 = {reg.width * reg.height * 4}", "value.rle")
    try:
        reg.mask = rle_to_mask(rle, reg.height, reg.width)
    except ValueError as e:
        raise RegionError(f"bad brush RLE: {e}", "value.rle") from None
