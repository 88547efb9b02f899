"""YOLO label lines: parsing and formatting, pure (no files).

One line per object, whitespace-separated, coordinates normalised by the image width and height:

* detect: ``cls cx cy w h`` (box centre and size);
* segment: ``cls x1 y1 x2 y2 ...`` (one polygon of >= 3 vertices; oriented boxes are 4-vertex polygons).

Polygon vertices follow segpipe's convention (and COCO's): pixel ``(x, y)`` covers ``[x, x+1) × [y, y+1)``,
so a vertex at normalised ``(u, v)`` is the pixel corner ``(u · W, v · H)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Decimals written per coordinate. 1e-8 of a side keeps every vertex within 0.001 px of its pixel corner
#: up to 100 000 px, far inside the ±0.1 px that pycocotools' ×5 upsampling with rounding tolerates.
DECIMALS = 8


@dataclass(frozen=True, slots=True)
class YoloLine:
    """One parsed label line.

    Attributes:
        line: 1-based line number in its file.
        cls: Class index (0-based position in ``names``).
        coords: Normalised coordinates: 4 for a box (cx, cy, w, h), an even count >= 6 for a polygon.
    """

    line: int
    cls: int
    coords: tuple[float, ...]

    @property
    def is_box(self) -> bool:
        """True for a detect line (4 coordinates)."""
        return len(self.coords) == 4


def parse_line(text: str, line: int, nc: int) -> tuple[YoloLine | None, str | None]:
    """Parses one line.

    Args:
        text: The line without its newline.
        line: Its 1-based number (for the result).
        nc: Number of classes: a valid class index is in ``[0, nc)``.

    Returns:
        ``(parsed, None)``, ``(None, None)`` for a blank line, or ``(None, why)`` naming what is wrong.
    """
    fields = text.split()
    if not fields:
        return None, None
    try:
        c = float(fields[0])
    except ValueError:
        return None, f"class index is not a number: {fields[0][:40]!r}"
    # Ultralytics reads the whole line as floats, so "3.0" is class 3; a fraction is no class at all.
    if not math.isfinite(c) or c != int(c):
        return None, f"class index is not an integer: {fields[0][:40]!r}"
    cls = int(c)
    if not 0 <= cls < nc:
        return None, f"class {cls} is not in names (0..{nc - 1})" if nc else f"class {cls}: names is empty"
    n = len(fields) - 1
    if n != 4 and (n < 6 or n % 2):
        return None, (
            f"expected 4 box values (cx cy w h) or an even count >= 6 of polygon values after the class, got {n}"
        )
    values: list[float] = []
    for f in fields[1:]:
        try:
            v = float(f)
        except ValueError:
            return None, f"coordinate is not a number: {f[:40]!r}"
        if not math.isfinite(v):
            return None, f"coordinate is not finite: {f[:40]!r}"
        if not 0.0 <= v <= 1.0:
            return None, f"coordinate {f[:40]} is outside [0, 1] (YOLO coordinates are normalised)"
        values.append(v)
    return YoloLine(line, cls, tuple(values)), None


def parse_text(text: str, nc: int) -> tuple[list[YoloLine], list[tuple[int, str]]]:
    """Parses a whole label file.

    Args:
        text: The file's content.
        nc: Number of classes.

    Returns:
        ``(lines, errors)``: the valid lines in order, and ``(line number, why)`` for every invalid one.
    """
    out: list[YoloLine] = []
    errors: list[tuple[int, str]] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        parsed, why = parse_line(raw, i, nc)
        if why is not None:
            errors.append((i, why))
        elif parsed is not None:
            out.append(parsed)
    return out, errors


def fmt(v: float) -> str:
    """A coordinate in fixed-point notation without trailing zeros.

    Never scientific notation: Datumaro's YOLO importer accepts digits and one dot only.
    """
    s = f"{min(max(v, 0.0), 1.0):.{DECIMALS}f}".rstrip("0").rstrip(".")
    return s or "0"


def box_line(cls: int, bbox: Sequence[float], width: int, height: int) -> str:
    """A detect line from a pixel box ``(x, y, w, h)`` (top-left corner and size)."""
    x, y, w, h = (float(v) for v in bbox)
    vals = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
    return " ".join([str(cls), *(fmt(v) for v in vals)])


def polygon_line(cls: int, polygon: Sequence[float], width: int, height: int) -> str:
    """A segment line from a flat pixel-corner polygon ``[x1, y1, x2, y2, ...]``."""
    out = [str(cls)]
    for k, v in enumerate(polygon):
        out.append(fmt(float(v) / (width if k % 2 == 0 else height)))
    return " ".join(out)


def to_pixels(coords: Sequence[float], width: int, height: int) -> list[float]:
    """Normalised polygon coordinates to pixel-corner coordinates."""
    return [float(v) * (width if k % 2 == 0 else height) for k, v in enumerate(coords)]


def box_to_pixels(coords: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Normalised ``(cx, cy, w, h)`` to a pixel box ``(x, y, w, h)``."""
    cx, cy, w, h = (float(v) for v in coords)
    return ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
