"""LabelMe shapes: checking one ``shapes[]`` entry, rasterising it, and building shapes to write (pure, no files).

A LabelMe shape is ``{"label", "points": [[x, y], ...], "group_id", "shape_type", "flags", "description",
"mask"}``. Geometry follows segpipe's convention (COCO's): pixel ``(x, y)`` covers ``[x, x+1) × [y, y+1)``,
so a vertex at ``(x, y)`` is a pixel *corner*; this is also what LabelMe's canvas shows (an image pixel
``i`` spans ``[i, i+1)`` on screen).

* ``polygon`` (also a missing or null ``shape_type``, as LabelMe 3 wrote it, and ``oriented_rectangle``):
  rasterised as COCO polygons are (pycocotools).
* ``rectangle``: two opposite corners, in any order; the axis-aligned polygon through them.
* ``circle``: centre and a point on the circle; a pixel belongs to it when its centre
  ``(x + 0.5, y + 0.5)`` is within the radius.
* ``mask``: a base64 PNG and two points, the first and last pixel of its box (inclusive, truncated to
  integers as LabelMe does: ``mask[y1:y2+1, x1:x2+1] = png``); non-zero PNG values are foreground.
* ``line``, ``linestrip``, ``point``: no area (LabelMe's own rasteriser paints them 10 px wide or as 5 px
  discs, a drawing convention, not an annotation of pixels); the reader counts them as not read.

LabelMe's own ``shape_to_mask`` (PIL, vertices at pixel indices, outline included) paints the pixels on a
polygon's right and bottom edges too: the same polygon gives at most those boundary pixels more there.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.errors import PixelLimitError
from segpipe.storage.images import check_pixel_count

#: Shape types with an area, read as (parts of) objects.
AREA_TYPES = ("polygon", "rectangle", "circle", "mask", "oriented_rectangle")
#: Shape types without an area: counted, not read.
NO_AREA_TYPES = ("line", "linestrip", "point", "points")
#: Keys of a shape that segpipe reads; any other key is kept as an object attribute.
SHAPE_KEYS = ("label", "points", "group_id", "shape_type", "flags", "description", "mask")
#: Largest base64 ``mask`` payload accepted, in characters (a full 23k x 23k 1-bit PNG is far smaller).
MAX_MASK_CHARS = 64 << 20


class ShapeError(ValueError):
    """One thing wrong with a shape; ``where`` is the JSON path below the shape (``points[2]``)."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass
class Shape:
    """One checked shape.

    Attributes:
        index: Its position in ``shapes[]``.
        label: Its label (the class name).
        shape_type: The normalised type (``polygon`` for a missing type).
        points: ``[(x, y), ...]``.
        group_id: LabelMe's group id, or None.
        attributes: ``flags`` (when not empty), ``description`` (when not empty) and every key LabelMe does
            not define (LabelMe keeps them as ``other_data``), as an object's attributes.
        mask: The decoded ``mask`` PNG, ``(h, w) bool``, for ``mask`` shapes.
    """

    index: int
    label: str
    shape_type: str
    points: list[tuple[float, float]]
    group_id: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None

    @property
    def has_area(self) -> bool:
        """True for polygons, rectangles, circles and masks."""
        return self.shape_type in AREA_TYPES


def decode_base64(value: Any, limit: int, what: str) -> bytes:
    """Decodes a base64 payload (whitespace tolerated) under a size ceiling.

    Raises:
        ShapeError: not a string, longer than ``limit`` characters, or not base64.
    """
    if not isinstance(value, str):
        raise ShapeError(f"{what} must be a base64 string, got {type(value).__name__}")
    if len(value) > limit:
        raise ShapeError(f"{what} is {len(value)} characters of base64, more than the {limit} accepted")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # wrapped base64 (line breaks every 76 characters) is still base64; anything else is not
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ShapeError(f"{what} is not valid base64") from None


def open_image_bytes(data: bytes, what: str) -> Any:
    """Opens an encoded image held in memory (header only), under segpipe's pixel ceiling.

    Returns:
        The open ``PIL.Image.Image`` (decoded lazily).

    Raises:
        ShapeError: not an image Pillow reads, or more pixels than ``SEGPIPE_MAX_PIXELS``.
    """
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the ceiling below is checked exactly on the header, as storage.images does
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as e:  # Pillow raises many types on malformed headers; none of them is a bug of ours
        raise ShapeError(f"{what} is not an image Pillow can read ({type(e).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    try:
        check_pixel_count(im.size[0], im.size[1], path=None, what=what)
    except PixelLimitError as e:
        raise ShapeError(e.message + " (decompression bomb?)") from None
    return im


def decode_mask_png(value: Any) -> np.ndarray:
    """A ``mask`` payload (base64 PNG) as ``(h, w) bool`` (non-zero = foreground).

    Raises:
        ShapeError: too large, not base64, not an image, not single-channel, corrupt.
    """
    im = open_image_bytes(decode_base64(value, MAX_MASK_CHARS, "mask"), "mask")
    try:
        im.load()
        arr = np.asarray(im)
    except Exception as e:  # truncated or corrupt PNG data
        raise ShapeError(f"mask PNG is corrupt or truncated ({type(e).__name__})") from None
    if arr.ndim != 2:
        raise ShapeError(f"mask must be a single-channel PNG, got mode {im.mode}")
    return arr != 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_shape(obj: Any, index: int) -> Shape:
    """Checks one ``shapes[]`` entry as LabelMe's loader does (and a little more: finite coordinates).

    Raises:
        ShapeError: naming the key (``label``, ``points[3]``, ``group_id`` ...).
    """
    if not isinstance(obj, dict):
        raise ShapeError(f"a shape must be an object, got {type(obj).__name__}")
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ShapeError("label must be a non-empty string", "label")
    st = obj.get("shape_type")
    if st is None:
        st = "polygon"  # LabelMe 3 wrote no shape_type; LabelMe's rasteriser takes None as a polygon
    if not isinstance(st, str):
        raise ShapeError(f"shape_type must be a string, got {type(st).__name__}", "shape_type")
    points = _points(obj.get("points"), st)
    gid = obj.get("group_id")
    if gid is not None and (not isinstance(gid, int) or isinstance(gid, bool)):
        raise ShapeError(f"group_id must be an integer or null, got {str(gid)[:40]}", "group_id")
    attrs = _shape_attributes(obj)
    shape = Shape(index, label, st, points, gid, attrs)
    if st == "mask":
        if obj.get("mask") is None:
            raise ShapeError("a mask shape needs its mask (a base64 PNG)", "mask")
        try:
            shape.mask = decode_mask_png(obj["mask"])
        except ShapeError as e:
            raise ShapeError(e.message, "mask") from None
    elif obj.get("mask") is not None:
        # LabelMe ignores a mask on another shape type when it rasterises: keep it, as an attribute, not as pixels.
        attrs["mask"] = obj["mask"]
    return shape


def _points(pts: Any, st: str) -> list[tuple[float, float]]:
    """A shape's ``points``: finite ``[x, y]`` pairs, as many as its type ``st`` has.

    Raises:
        ShapeError: naming ``points`` or ``points[k]``.
    """
    if not isinstance(pts, list) or not pts:
        raise ShapeError("points must be a non-empty list of [x, y]", "points")
    points: list[tuple[float, float]] = []
    for k, p in enumerate(pts):
        if not isinstance(p, list) or len(p) != 2 or not all(_number(v) for v in p):
            raise ShapeError(f"a point must be [x, y] numbers, got {str(p)[:40]}", f"points[{k}]")
        x, y = float(p[0]), float(p[1])
        if not (math.isfinite(x) and math.isfinite(y)) or max(abs(x), abs(y)) > rle_ops.MAX_COORD:
            raise ShapeError(f"coordinate out of range (finite, |v| <= {rle_ops.MAX_COORD:g}): {str(p)[:40]}",
                             f"points[{k}]")
        points.append((x, y))
    need = {"rectangle": 2, "circle": 2, "mask": 2, "oriented_rectangle": 4, "line": 2, "point": 1}.get(st)
    if need is not None and len(points) != need:
        raise ShapeError(f"a {st} has {need} point{'s' if need > 1 else ''}, got {len(points)}", "points")
    if st == "polygon" and len(points) < 3:
        raise ShapeError(f"a polygon needs at least 3 points, got {len(points)}", "points")
    return points


def _shape_attributes(obj: dict[str, Any]) -> dict[str, Any]:
    """A shape's ``flags``, ``description`` and unknown keys (LabelMe keeps unknown shape keys, its
    other_data, and writes them back: so do we).

    Raises:
        ShapeError: ``flags`` or ``description`` of the wrong type.
    """
    attrs: dict[str, Any] = {}
    flags = obj.get("flags")
    if flags is not None:
        if not isinstance(flags, dict) or not all(isinstance(k, str) and isinstance(v, bool) for k, v in flags.items()):
            raise ShapeError("flags must map names to true/false", "flags")
        if flags:
            attrs["flags"] = dict(flags)
    desc = obj.get("description")
    if desc is not None:
        if not isinstance(desc, str):
            raise ShapeError(f"description must be a string, got {type(desc).__name__}", "description")
        if desc:
            attrs["description"] = desc
    for k, v in obj.items():
        if k not in SHAPE_KEYS:
            attrs[str(k)] = v
    return attrs


def rectangle_polygon(points: list[tuple[float, float]]) -> list[float]:
    """The axis-aligned polygon of a rectangle given by two opposite corners."""
    (x0, y0), (x1, y1) = points
    xa, xb, ya, yb = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    return [xa, ya, xb, ya, xb, yb, xa, yb]


def circle_mask(points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """A circle (centre, point on the circle): pixels whose centre is within the radius.

    Returns:
        ``(height, width) bool``.
    """
    (cx, cy), (px, py) = points
    r2 = (cx - px) ** 2 + (cy - py) ** 2
    r = math.sqrt(r2)
    out = np.zeros((height, width), dtype=bool)
    # Only the circle's box is evaluated: memory and time bounded by the image, whatever the radius.
    x0, x1 = max(0, math.floor(cx - r - 1)), min(width, math.ceil(cx + r + 1))
    y0, y1 = max(0, math.floor(cy - r - 1)), min(height, math.ceil(cy + r + 1))
    if x0 >= x1 or y0 >= y1:
        return out
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
    out[y0:y1, x0:x1] = xs * xs + ys * ys <= r2
    return out


def place_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """A ``mask`` shape placed in the image as LabelMe places it.

    Returns:
        ``(height, width) bool``.

    Raises:
        ShapeError: the box leaves the image or does not match the PNG's size.
    """
    assert shape.mask is not None
    (xa, ya), (xb, yb) = shape.points
    x1, y1, x2, y2 = (math.trunc(v) for v in (xa, ya, xb, yb))  # LabelMe: np.asarray(points).astype(int)
    if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise ShapeError(f"mask box ({x1}, {y1})-({x2}, {y2}) is not inside the {width}x{height} image", "points")
    mh, mw = shape.mask.shape
    if (mh, mw) != (y2 - y1 + 1, x2 - x1 + 1):
        raise ShapeError(f"mask PNG is {mw}x{mh} but its box ({x1}, {y1})-({x2}, {y2}) is "
                         f"{x2 - x1 + 1}x{y2 - y1 + 1} (points are its first and last pixel)", "mask")
    out = np.zeros((height, width), dtype=bool)
    out[y1 : y2 + 1, x1 : x2 + 1] = shape.mask
    return out


def shape_polygon(shape: Shape) -> list[float] | None:
    """The flat polygon of a polygon-like shape (``polygon``, ``rectangle``, ``oriented_rectangle``), else None."""
    if shape.shape_type == "rectangle":
        return rectangle_polygon(shape.points)
    if shape.shape_type in ("polygon", "oriented_rectangle"):
        return [v for p in shape.points for v in p]
    return None


def shape_raster(shape: Shape, height: int, width: int) -> np.ndarray:
    """Any area shape as ``(height, width) bool`` (polygons through pycocotools)."""
    poly = shape_polygon(shape)
    if poly is not None:
        return rle_ops.decode(rle_ops.polygons_to_rle([poly], height, width)).astype(bool)
    if shape.shape_type == "circle":
        return circle_mask(shape.points, height, width)
    return place_mask(shape, height, width)


# ----------------------------------------------------------------------------------------- writing


def polygon_shape(label: str, polygon: list[float] | tuple[float, ...], group_id: int | None,
                  extra: dict[str, Any]) -> dict[str, Any]:
    """A ``polygon`` shape from a flat pixel-corner polygon."""
    pts = [[float(polygon[k]), float(polygon[k + 1])] for k in range(0, len(polygon) - 1, 2)]
    return _shape(label, pts, group_id, "polygon", extra)


def rectangle_shape(label: str, bbox: tuple[float, float, float, float], group_id: int | None,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """A ``rectangle`` shape from a box ``(x, y, w, h)``."""
    x, y, w, h = (float(v) for v in bbox)
    return _shape(label, [[x, y], [x + w, y + h]], group_id, "rectangle", extra)


def mask_shape(label: str, mask: np.ndarray, group_id: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    """A ``mask`` shape: the mask cropped to its box as a 1-bit PNG, and the box's first and last pixel.

    Args:
        label: The class name.
        mask: ``(H, W) bool`` with at least one pixel set.
        group_id: LabelMe group id, or None.
        extra: ``flags``, ``description`` and other keys of the shape.
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    y1, y2, x1, x2 = int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])
    buf = io.BytesIO()
    # 1-bit: LabelMe reads any single-channel PNG as bool (np.array(img).astype(bool)); smallest payload.
    Image.fromarray(np.ascontiguousarray(mask[y1 : y2 + 1, x1 : x2 + 1])).convert("1").save(buf, format="PNG")
    shape = _shape(label, [[float(x1), float(y1)], [float(x2), float(y2)]], group_id, "mask", extra)
    shape["mask"] = base64.b64encode(buf.getvalue()).decode("ascii")
    return shape


def _shape(label: str, points: list[list[float]], group_id: int | None, shape_type: str,
           extra: dict[str, Any]) -> dict[str, Any]:
    # Key order as LabelMe 5.5 writes a shape; keys it does not define after them (its other_data).
    out: dict[str, Any] = {
        "label": label,
        "points": points,
        "group_id": group_id,
        "description": extra.get("description", ""),
        "shape_type": shape_type,
        "flags": extra.get("flags", {}),
        "mask": None,
    }
    for k, v in extra.items():
        if k not in SHAPE_KEYS:
            out[k] = v
    return out
