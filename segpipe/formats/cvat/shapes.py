"""CVAT shapes, pure: the mask RLE both ways, ``points`` strings, skeleton edges of a label's SVG.

CVAT's mask RLE (``<mask rle="..." left top width height>``, CVAT 2.x): the mask is cropped to the box
``[left, left + width) x [top, top + height)``; the runs cover the box in *row-major* order (left to right,
then top to bottom), alternate background and foreground, and start with background (a mask whose first
box pixel is set starts with a run of 0). The runs add up to ``width * height``. This is what CVAT writes
(its ``binary_image_mask_to_cvat_mask_rle`` in cvat-ai/cvat#6487) and what Datumaro reads (it decodes the
runs as a column-major ``(width, height)`` mask and transposes it, which is the same thing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from segpipe.core import rle as rle_ops


class ShapeError(ValueError):
    """One thing wrong with a shape; ``where`` names its XML attribute (``rle``, ``points``)."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


def parse_number(text: str | None, where: str) -> float:
    """A finite coordinate within :data:`segpipe.core.rle.MAX_COORD`.

    Raises:
        ShapeError: absent, not a number, not finite or out of range.
    """
    if text is None or not text.strip():
        raise ShapeError("missing number", where)
    try:
        v = float(text.strip())
    except ValueError:
        raise ShapeError(f"not a number: {text.strip()[:40]!r}", where) from None
    if not math.isfinite(v) or abs(v) > rle_ops.MAX_COORD:
        raise ShapeError(f"coordinate out of range (finite, |v| <= {rle_ops.MAX_COORD:g}): {text.strip()[:40]!r}",
                         where)
    return v


def parse_int(text: str | None, where: str, *, minimum: int = 0) -> int:
    """A non-negative (or ``>= minimum``) integer attribute.

    Raises:
        ShapeError: absent, not an integer, or below ``minimum``.
    """
    t = (text or "").strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", t):
        raise ShapeError(f"must be an integer, got {t[:40]!r}" if t else "missing integer", where)
    v = int(t)
    if v < minimum:
        raise ShapeError(f"must be >= {minimum}, got {v}", where)
    return v


def parse_points(text: str | None, where: str = "points") -> list[float]:
    """``"x1,y1;x2,y2;..."`` as a flat ``[x1, y1, x2, y2, ...]``.

    Raises:
        ShapeError: not pairs of numbers.
    """
    if text is None or not text.strip():
        raise ShapeError("points must be 'x1,y1;x2,y2;...'", where)
    out: list[float] = []
    for k, pair in enumerate(text.strip().split(";")):
        xy = pair.split(",")
        if len(xy) != 2:
            raise ShapeError(f"point {k} must be 'x,y', got {pair.strip()[:40]!r}", where)
        out.append(parse_number(xy[0], where))
        out.append(parse_number(xy[1], where))
    return out


def format_number(v: float) -> str:
    """The shortest text that reads back as the same float (``3`` for 3.0, ``2.5``, ``0.1``)."""
    f = float(v)
    if f.is_integer():
        return str(int(f))
    return repr(f)


def format_points(flat: Sequence[float]) -> str:
    """A flat ``[x1, y1, ...]`` as CVAT's ``"x1,y1;x2,y2"`` (exact: shortest round-tripping floats)."""
    return ";".join(f"{format_number(flat[k])},{format_number(flat[k + 1])}" for k in range(0, len(flat) - 1, 2))


def decode_mask(rle_text: str, left: int, top: int, width: int, height: int, image_w: int,
                image_h: int) -> np.ndarray:
    """A ``<mask>`` as a whole-image mask.

    Args:
        rle_text: The ``rle`` attribute: run lengths separated by commas (spaces allowed).
        left: Box column.
        top: Box row.
        width: Box width (>= 1).
        height: Box height (>= 1).
        image_w: Image width.
        image_h: Image height.

    Returns:
        ``(image_h, image_w) bool``.

    Raises:
        ShapeError: runs that are not non-negative integers, that do not add up to ``width * height``, or a
            box outside the image (``where`` names the attribute).
    """
    if width < 1 or height < 1:
        raise ShapeError(f"mask box must be at least 1x1, got {width}x{height}", "width" if width < 1 else "height")
    if left + width > image_w or top + height > image_h:
        raise ShapeError(f"mask box ({left}, {top}) + {width}x{height} is not inside the {image_w}x{image_h} image",
                         "left" if left + width > image_w else "top")
    parts = rle_text.split(",")
    if len(parts) > width * height + 1:  # more runs than pixels (plus a leading 0) cannot add up
        raise ShapeError(f"{len(parts)} runs for a {width}x{height} box", "rle")
    for p in parts:
        if not _RUN.fullmatch(p):  # int() would also take "1_0", "-3" and other digit scripts
            raise ShapeError(f"run lengths must be non-negative integers, got {p.strip()[:40]!r}", "rle")
    runs = np.array([int(p) for p in parts], dtype=np.int64)
    total = int(runs.sum())
    if total != width * height:
        raise ShapeError(f"runs add up to {total} pixels, the {width}x{height} box has {width * height}", "rle")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True  # background first, then alternating
    box = np.repeat(values, runs).reshape(height, width)  # row-major, as CVAT writes it
    out = np.zeros((image_h, image_w), dtype=bool)
    out[top : top + height, left : left + width] = box
    return out


def encode_mask(mask: np.ndarray) -> tuple[str, int, int, int, int]:
    """A mask as CVAT's ``(rle, left, top, width, height)``, cropped to its tight box.

    Args:
        mask: ``(H, W) bool`` with at least one pixel set.

    Returns:
        ``rle`` as CVAT writes it (``"0, 3, 2, ..."``), and the box.
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])
    flat = np.ascontiguousarray(mask[top : bottom + 1, left : right + 1]).reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]  # runs start with background
    return ", ".join(str(r) for r in runs), left, top, right - left + 1, bottom - top + 1


_RUN = re.compile(r"\s*[0-9]{1,12}\s*")
_NODE = re.compile(r"<circle\b[^>]*>", re.IGNORECASE)
_LINE = re.compile(r"<line\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r'([\w:-]+)\s*=\s*"([^"]*)"')


def skeleton_edges(svg: str, names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The edges of a CVAT skeleton label's ``<svg>`` as 1-based keypoint index pairs (COCO's convention).

    CVAT draws a skeleton template as ``<circle data-node-id="k" data-label-name="nose">`` nodes and
    ``<line data-node-from="i" data-node-to="j">`` edges; nodes are matched to ``names`` by label name.
    The SVG is matched with regular expressions only (it is never parsed as XML). Edges naming an unknown
    node are left out.
    """
    node_name: dict[str, str] = {}
    for m in _NODE.finditer(svg):
        a = dict(_ATTR.findall(m.group(0)))
        if "data-node-id" in a and "data-label-name" in a:
            node_name[a["data-node-id"]] = a["data-label-name"]
    index = {n: k + 1 for k, n in enumerate(names)}
    out: list[tuple[int, int]] = []
    for m in _LINE.finditer(svg):
        a = dict(_ATTR.findall(m.group(0)))
        i = index.get(node_name.get(a.get("data-node-from", ""), ""))
        j = index.get(node_name.get(a.get("data-node-to", ""), ""))
        if i is not None and j is not None:
            out.append((i, j))
    return tuple(out)


def skeleton_svg(names: Sequence[str], edges: Sequence[tuple[int, int]]) -> str:
    """A CVAT skeleton template for ``names`` (nodes on a circle) with ``edges`` (1-based pairs)."""
    n = max(1, len(names))
    pos = [(50 + 40 * math.cos(2 * math.pi * k / n), 50 + 40 * math.sin(2 * math.pi * k / n)) for k in range(n)]
    parts = []
    for i, j in edges:
        if 1 <= i <= len(names) and 1 <= j <= len(names):
            (x1, y1), (x2, y2) = pos[i - 1], pos[j - 1]
            parts.append(f'<line x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" y2="{y2:.2f}" stroke="black" '
                         f'data-type="edge" data-node-from="{i}" stroke-width="0.5" data-node-to="{j}"></line>')
    for k, name in enumerate(names):
        x, y = pos[k]
        parts.append(f'<circle r="1.5" stroke="black" fill="#b3b3b3" cx="{x:.2f}" cy="{y:.2f}" stroke-width="0.1" '
                     f'data-type="element node" data-element-id="{k + 1}" data-node-id="{k + 1}" '
                     f"data-label-name={quoteattr(name)}></circle>")
    return "".join(parts)
