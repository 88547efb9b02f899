"""Class colours for overlays, legends and plots: the label map's own, else distinct, readable ones.

A dataset's label map (``labelmap.txt``, COCO ``color``, a store's categories) says how its classes
look; every view of it uses those colours. Classes without one get colours from a fixed list of
high-contrast hues (Kelly's and Tableau's, which stay apart for most colour-vision deficiencies),
then hues spaced by the golden angle; none repeats a colour already taken, and none is near-black
(the background of a dark overlay) or near-white (void).
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DISTINCT", "class_colors", "css_rgb", "text_color_on"]

RGB = tuple[int, int, int]

#: Distinct colours, most distinct first.
DISTINCT: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
    (0, 0, 128), (128, 128, 128),
)


def _close(a: RGB, b: RGB, tol: int = 60) -> bool:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) < tol


def _golden(k: int) -> RGB:
    h = (k * 0.618033988749895) % 1.0
    s = 0.65 + 0.3 * ((k // 7) % 2)
    v = 0.9 - 0.2 * ((k // 3) % 2)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _valid(color: Any) -> RGB | None:
    if not isinstance(color, (list, tuple)) or len(color) < 3:
        return None
    try:
        rgb = tuple(int(v) for v in color[:3])
    except (TypeError, ValueError):
        return None
    return rgb if all(0 <= v <= 255 for v in rgb) else None  # type: ignore[return-value]


def class_colors(categories: Sequence[Mapping[str, Any]]) -> dict[int, RGB]:
    """A colour per category id.

    Args:
        categories: ``[{"id", "name", "color"?}]``, e.g. a store's ``categories`` or records turned into
            dicts; ``color`` is ``[r, g, b]`` or missing/None.

    Returns:
        ``{id: (r, g, b)}``: each category's own colour where it has one; otherwise the next colour of
        :data:`DISTINCT` (then golden-angle hues) not close to any colour already used.
    """
    out: dict[int, RGB] = {}
    taken: list[RGB] = []
    for c in categories:
        rgb = _valid(c.get("color"))
        if rgb is not None:
            out[int(c["id"])] = rgb
            taken.append(rgb)
    k = 0
    candidates = iter(DISTINCT)
    for c in categories:
        cid = int(c["id"])
        if cid in out:
            continue
        while True:
            rgb = next(candidates, None)
            if rgb is None:
                rgb = _golden(k)
                k += 1
            if not any(_close(rgb, t) for t in taken) or k > 4096:
                break
        out[cid] = rgb
        taken.append(rgb)
    return out


def css_rgb(rgb: Sequence[int]) -> str:
    """``#rrggbb``."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb[:3])


def text_color_on(rgb: Sequence[int]) -> str:
    """Black or white, whichever reads better on ``rgb`` (relative luminance)."""
    r, g, b = (int(v) for v in rgb[:3])
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"
