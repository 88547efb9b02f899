"""Binary masks to COCO polygons, and an exact account of what the polygons cannot hold.

How boundaries are traced
-------------------------
Every boundary is traced along **pixel edges**: each unit edge between a foreground and a background
pixel becomes a directed edge (foreground on its right-hand side in image coordinates, y down), edges
are linked into closed loops at their shared corners, and collinear corners are dropped. Outer
boundaries then run clockwise on screen (positive shoelace area with y down) and holes
counter-clockwise. Where two foreground pixels touch only at a corner, the loop turns so that they
stay in one polygon (8-connected foreground, 4-connected background, as OpenCV traces contours).

Coordinates
-----------
Vertices are pixel corners in COCO's convention (pixel ``(x, y)`` covers ``[x, x+1) × [y, y+1)``), so a
polygon has integer coordinates in ``[0, W] × [0, H]``. ``pycocotools`` rasterises a polygon by
upsampling it ×5 with rounding and then sampling column ``x`` at about ``x + 0.4`` and row ``y`` at about
``y + 0.4`` (``rleFrPoly``), i.e. near pixel centres; edges along pixel borders therefore fall between
sample points and every mask is reproduced **exactly**. Measured on 200 random smoothed blobs
(50 390 pixels, holes filled): pixel-edge polygons 0 lost / 0 added; marching-squares pixel-centre
contours at the 0.5 level with centres at ``k + 0.5`` also 0 / 0 but with up to twice the vertices
(diagonal chamfers); the same contours with centres at integer ``k`` (OpenCV-style index coordinates)
4 443 lost / 2 524 added. Pixel-edge tracing it is. ``PIXEL_EDGE_OFFSET`` records the shift (0).

Holes
-----
A COCO object is the *union* of its polygons, so a hole cannot be a polygon of its own. Two policies:

* ``holes="keyhole"`` (default): each hole is joined to the boundary above it by a vertical
  zero-width cut run down and back up, giving one weakly simple polygon per connected component.
  pycocotools' even-odd rasteriser cancels the doubled cut exactly, and non-zero fill (canvas, Label
  Studio, CVAT) sees a winding number of 0 inside the hole because holes run the other way round; the
  cut never crosses another boundary because it runs through foreground pixels only.
* ``holes="drop"``: holes are left out; their pixels become foreground and are counted in
  :attr:`Polygonized.holes_dropped` and ``added_pixels``.

Everything is vectorised except loops over boundary edges (linking, simplification, splicing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.core import rle as rle_ops

#: Added to pixel-corner coordinates on output (0: polygons run along pixel borders, see the module docstring).
PIXEL_EDGE_OFFSET = 0.0

HolePolicy = Literal["keyhole", "drop"]

# Directions, clockwise on screen (y down): east, south, west, north.
_DX = np.array([1, 0, -1, 0], dtype=np.int64)
_DY = np.array([0, 1, 0, -1], dtype=np.int64)
_EAST, _SOUTH, _WEST, _NORTH = 0, 1, 2, 3


@dataclass(frozen=True)
class Polygonized:
    """Polygons of one mask with the account of what they do not hold.

    Attributes:
        polygons: COCO polygons, each a flat ``[x1, y1, x2, y2, ...]`` list of >= 6 floats.
        holes: Holes found in the mask (background regions enclosed by foreground).
        holes_dropped: Holes left out (``holes="drop"``); 0 with keyhole cuts.
        lost_pixels: Mask pixels that the re-rasterised polygons do not cover.
        added_pixels: Pixels the re-rasterised polygons cover outside the mask.
    """

    polygons: list[list[float]]
    holes: int
    holes_dropped: int
    lost_pixels: int
    added_pixels: int

    @property
    def exact(self) -> bool:
        """True when pycocotools re-rasterises the polygons to exactly the mask."""
        return self.lost_pixels == 0 and self.added_pixels == 0


@dataclass
class _Trace:
    """Every boundary loop of a mask, concatenated in loop order.

    Attributes:
        x: ``(E,) int64`` corner x where each edge starts (the loop's vertices, in order).
        y: ``(E,) int64`` corner y.
        d: ``(E,) int64`` edge directions (0 E, 1 S, 2 W, 3 N).
        starts: ``(L + 1,) int64`` offsets of the loops in the arrays above.
        hole: ``(L,) bool`` holes (counter-clockwise on screen, negative shoelace area with y down).
        at: ``(E,) int64`` position in loop order of each edge of the sorted order of
            :func:`_boundary_edges` (to look edges up by corner and direction).
        key: ``(E,) int64`` sorted lookup keys ``(y * (W + 1) + x) * 4 + d`` of the edges.
    """

    x: np.ndarray
    y: np.ndarray
    d: np.ndarray
    starts: np.ndarray
    hole: np.ndarray
    at: np.ndarray
    key: np.ndarray


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All directed unit boundary edges of a mask, foreground on their right.

    Args:
        mask: ``(H, W) bool``.

    Returns:
        ``(x0, y0, direction, saddle)``: ``(E,) int64`` start corners, ``(E,) int64`` directions
        (0 E, 1 S, 2 W, 3 N), and ``(H + 1, W + 1) bool`` corners where two foreground pixels touch
        only diagonally. Edges are sorted by start corner (row-major), then direction.
    """
    p = np.pad(mask, 1)
    above, below = p[:-1, 1:-1], p[1:, 1:-1]  # (H+1, W): pixels on either side of corner row y
    left, right = p[1:-1, :-1], p[1:-1, 1:]  # (H, W+1): pixels on either side of corner column x
    ys_t, xs_t = np.nonzero(below & ~above)  # top edge of a foreground pixel: east from (x, y)
    ys_b, xs_b = np.nonzero(above & ~below)  # bottom edge: west from (x + 1, y)
    ys_l, xs_l = np.nonzero(right & ~left)  # left edge: north from (x, y + 1)
    ys_r, xs_r = np.nonzero(left & ~right)  # right edge: south from (x, y)
    x0 = np.concatenate([xs_t, xs_b + 1, xs_l, xs_r]).astype(np.int64)
    y0 = np.concatenate([ys_t, ys_b, ys_l + 1, ys_r]).astype(np.int64)
    d = np.concatenate([
        np.full(xs_t.size, _EAST), np.full(xs_b.size, _WEST), np.full(xs_l.size, _NORTH), np.full(xs_r.size, _SOUTH)
    ]).astype(np.int64)
    order = np.lexsort((d, x0, y0))
    tl, tr, bl, br = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]  # (H+1, W+1) around each corner
    saddle = (tl & br & ~tr & ~bl) | (tr & bl & ~tl & ~br)
    return x0[order], y0[order], d[order], saddle


def _trace(mask: np.ndarray) -> _Trace:
    """Links the boundary edges of ``mask`` (``(H, W) bool``) into closed loops.

    At an ordinary corner exactly one edge leaves; at a saddle two do, and turning left keeps the two
    diagonal foreground pixels in one loop (8-connected foreground).
    """
    x0, y0, d, saddle = _boundary_edges(mask)
    stride = saddle.shape[1]
    key = (y0 * stride + x0) * 4 + d  # unique: at most one edge per corner and direction
    n = x0.size
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return _Trace(z, z, z, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=bool), z, z)
    xe, ye = x0 + _DX[d], y0 + _DY[d]
    corner = ye * stride + xe
    # Off saddles "corner, direction 0" sorts just before the corner's only outgoing edge.
    want = np.where(saddle[ye, xe], corner * 4 + (d - 1) % 4, corner * 4)
    nxt = np.searchsorted(key, want).tolist()
    seen = bytearray(n)
    order: list[int] = []
    starts = [0]
    for start in range(n):  # the only Python loop over boundary edges: following each loop once
        if seen[start]:
            continue
        e = start
        while not seen[e]:
            seen[e] = 1
            order.append(e)
            e = nxt[e]
        starts.append(len(order))
    idx = np.asarray(order, dtype=np.int64)
    st = np.asarray(starts, dtype=np.int64)
    x, y = x0[idx], y0[idx]
    nxt_pos = np.arange(1, n + 1)
    nxt_pos[st[1:] - 1] = st[:-1]  # the last vertex of a loop is followed by its first
    # Shoelace with y down: clockwise outer loops are positive, holes negative.
    area2 = np.add.reduceat(x * y[nxt_pos] - x[nxt_pos] * y, st[:-1])
    at = np.empty(n, dtype=np.int64)
    at[idx] = np.arange(n)
    return _Trace(x, y, d[idx], st, area2 < 0, at, key)


def _attach_cuts(mask: np.ndarray, t: _Trace) -> dict[int, tuple[int, int]]:
    """Finds, for every hole, where a vertical cut up through foreground meets the next boundary.

    The cut starts at the left end ``W`` of the hole's top-most, left-most top edge (the bottom edge
    of the foreground pixel above the hole) and runs up that pixel column to the first background
    pixel: the top edge of the foreground pixel below it starts at ``V`` and belongs to the parent loop,
    the component's outer loop or another of its holes — never another component, since the cut only
    crosses foreground pixels of this component.

    Returns:
        ``{hole_loop: (v, w)}``: loop-order indices of the vertices ``V`` (on the parent) and ``W`` (on
        the hole).
    """
    stride = mask.shape[1] + 1
    loop_of = np.repeat(np.arange(t.hole.size), np.diff(t.starts))
    # Loop-order index of every west edge of a hole, in sorted (row-major) edge order: the first one
    # per hole is its top-most, left-most.
    west = t.at[(t.key % 4) == _WEST]
    west = west[t.hole[loop_of[west]]]
    if not west.size:
        return {}
    holes, first = np.unique(loop_of[west], return_index=True)
    e = west[first]
    c, r = t.x[e] - 1, t.y[e]  # bottom edge of pixel (r - 1, c), from (c + 1, r) to (c, r)
    rows = np.arange(mask.shape[0])[:, None]
    # Row of the nearest background pixel at or above each pixel (-1: the padding above row 0).
    last_bg = np.maximum.accumulate(np.where(mask, -1, rows), axis=0)
    r_bg = last_bg[r - 1, c]
    v = t.at[np.searchsorted(t.key, ((r_bg + 1) * stride + c) * 4 + _EAST)]
    # W is where the edge after the west edge starts (wrapping round to the loop's first edge).
    w = e + 1
    ends = t.starts[loop_of[e] + 1]
    w = np.where(w == ends, t.starts[loop_of[e]], w)
    return {int(h): (int(a), int(b)) for h, a, b in zip(holes.tolist(), v.tolist(), w.tolist(), strict=True)}


def _douglas_peucker(xs: np.ndarray, ys: np.ndarray, keep: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplifies a closed loop, never removing vertices marked in ``keep``.

    The loop is split at the kept vertices (plus the vertex farthest from the first when fewer than
    two are kept) and each open chain is simplified by Douglas–Peucker.

    Args:
        xs: ``(V,)`` vertex x.
        ys: ``(V,)`` vertex y.
        keep: ``(V,) bool`` vertices that must stay.
        tolerance: Largest distance in pixels of a dropped vertex from the simplified outline.

    Returns:
        ``(V,) bool`` vertices that stay.
    """
    n = xs.size
    out = keep.copy()
    out[0] = True
    if out.sum() < 2:
        out[int(np.argmax((xs - xs[0]) ** 2 + (ys - ys[0]) ** 2))] = True
    anchors = np.flatnonzero(out).tolist()
    stack = list(zip(anchors, anchors[1:] + [anchors[0] + n], strict=True))
    px, py = xs.astype(np.float64), ys.astype(np.float64)
    while stack:  # one entry per retained chord: bounded by the boundary points
        a, b = stack.pop()
        if b - a < 2:
            continue
        idx = np.arange(a + 1, b) % n
        ax, ay, bx, by = px[a % n], py[a % n], px[b % n], py[b % n]
        vx, vy = bx - ax, by - ay
        norm = float(np.hypot(vx, vy))
        if norm == 0:
            dist = np.hypot(px[idx] - ax, py[idx] - ay)
        else:
            dist = np.abs(vx * (py[idx] - ay) - vy * (px[idx] - ax)) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            m = a + 1 + k
            out[m % n] = True
            stack.append((a, m))
            stack.append((m, b))
    return out


def polygonize(mask: np.ndarray, *, tolerance: float = 0.0, holes: HolePolicy = "keyhole") -> Polygonized:
    """Traces a mask into COCO polygons and measures what re-rasterisation gives back.

    Args:
        mask: ``(H, W) bool|uint8`` (non-zero = foreground).
        tolerance: Douglas–Peucker tolerance in pixels; 0 keeps every corner (exact for pycocotools).
        holes: ``keyhole`` (holes joined by zero-width cuts, kept) or ``drop`` (holes filled, counted).

    Returns:
        The polygons (one per connected component with keyhole cuts, outer boundaries only with
        ``drop``; sorted by top-most then left-most vertex), the hole counts, and the lost / added
        pixels after pycocotools re-rasterisation.

    Raises:
        ValueError: ``mask`` is not 2-D or ``holes`` is unknown.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    if holes not in ("keyhole", "drop"):
        raise ValueError(f"holes must be 'keyhole' or 'drop', got {holes!r}")
    t = _trace(m)
    n_loops = t.hole.size
    n_holes = int(t.hole.sum())
    cuts = _attach_cuts(m, t) if holes == "keyhole" and n_holes else {}
    must = np.zeros(t.x.size, dtype=bool)
    for v, w in cuts.values():  # cut ends must survive collapsing and simplification
        must[v] = must[w] = True
    if tolerance > 0:
        keep = must
        for li in range(n_loops):
            a, b = int(t.starts[li]), int(t.starts[li + 1])
            if not t.hole[li] or li in cuts:
                keep[a:b] = _douglas_peucker(t.x[a:b], t.y[a:b], must[a:b], tolerance)
    else:
        # Collapse collinear runs: keep the corners where the direction changes.
        prev = np.arange(-1, t.x.size - 1)
        prev[t.starts[:-1]] = t.starts[1:] - 1
        keep = must | (t.d != t.d[prev])
    # Children first: a hole's cut goes up to a loop whose top is strictly higher.
    children: dict[int, list[tuple[int, int]]] = {}
    loop_of = np.repeat(np.arange(n_loops), np.diff(t.starts))
    for hole, (v, _) in cuts.items():
        children.setdefault(int(loop_of[v]), []).append((v, hole))
    built: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tops = np.minimum.reduceat(t.y, t.starts[:-1]) if n_loops else np.zeros(0, dtype=np.int64)
    spliced = sorted(set(cuts) | set(children), key=lambda i: (-int(tops[i]), i))
    for li in spliced:  # loops over loops with cuts only
        a, b = int(t.starts[li]), int(t.starts[li + 1])
        s = cuts[li][1] if li in cuts else a  # a hole starts at its cut vertex W
        idx = np.concatenate([np.arange(s, b), np.arange(a, s)])
        idx = idx[keep[idx]]
        rank = {int(g): k for k, g in enumerate(idx.tolist())}
        parts_x: list[np.ndarray] = []
        parts_y: list[np.ndarray] = []
        cur = 0
        xs, ys = t.x[idx], t.y[idx]
        for p, hole in sorted((rank[v], h) for v, h in children.get(li, [])):
            hx, hy = built.pop(hole)
            # ... V, [W, hole ..., W], V, ...: down the cut, round the hole, back up the cut.
            parts_x += [xs[cur : p + 1], hx, hx[:1]]
            parts_y += [ys[cur : p + 1], hy, hy[:1]]
            cur = p
        parts_x.append(xs[cur:])
        parts_y.append(ys[cur:])
        built[li] = (np.concatenate(parts_x), np.concatenate(parts_y))
    polygons: list[tuple[int, int, list[float]]] = []
    outer = np.flatnonzero(~t.hole)
    plain = outer[~np.isin(outer, np.fromiter(built, dtype=np.int64, count=len(built)))]
    if plain.size:  # loops without cuts, all at once
        sel = keep & np.isin(loop_of, plain)
        counts = np.bincount(loop_of[sel], minlength=n_loops)[plain]
        xy = np.stack([t.x[sel], t.y[sel]], axis=1).astype(np.float64) + PIXEL_EDGE_OFFSET
        for li, chunk in zip(plain.tolist(), np.split(xy.reshape(-1), 2 * np.cumsum(counts)[:-1]), strict=True):
            polygons.append((int(t.starts[li]), li, chunk.tolist()))
    for li, (fx, fy) in built.items():
        xy = np.stack([fx, fy], axis=1).astype(np.float64) + PIXEL_EDGE_OFFSET
        polygons.append((int(t.starts[li]), li, xy.reshape(-1).tolist()))
    # Loops start at their top-left corner and are numbered in row-major order of it.
    out = [p for _, _, p in sorted(polygons, key=lambda q: q[1]) if len(p) >= 6]  # a line holds nothing
    lost, added = polygon_fidelity(m, out)
    return Polygonized(out, n_holes, n_holes if holes == "drop" else 0, lost, added)


def mask_to_polygons(
    mask: np.ndarray, *, tolerance: float = 0.0, holes: HolePolicy = "keyhole"
) -> list[list[float]]:
    """COCO polygons tracing every outer boundary and hole of every connected component.

    See the module docstring for the coordinate convention and the hole policies; use
    :func:`polygonize` to also get what the polygons lose.

    Args:
        mask: ``(H, W) bool|uint8`` (non-zero = foreground).
        tolerance: Douglas–Peucker tolerance in pixels (0: exact).
        holes: ``keyhole`` or ``drop``.

    Returns:
        Flat ``[x1, y1, x2, y2, ...]`` polygons (>= 3 vertices each), sorted by their first vertex
        (top-most, then left-most). Empty for an empty mask.
    """
    return polygonize(mask, tolerance=tolerance, holes=holes).polygons


def rasterize(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterises polygons as pycocotools does (each polygon even-odd, then their union).

    Each polygon's RLE is painted by its foreground runs rather than merged with ``mask.merge``,
    whose cost grows with the number of polygons times the runs of the union.

    Returns:
        ``(height, width) bool``.
    """
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    flat = np.zeros(height * width, dtype=bool)  # column-major, as RLE counts run
    if polys:
        for r in mask_utils.frPyObjects(polys, height, width):
            flat[rle_ops.foreground_indices(r)] = True
    return flat.reshape(width, height).T


def polygon_fidelity(mask: np.ndarray, polygons: list[list[float]]) -> tuple[int, int]:
    """Counts the pixels that polygons fail to reproduce after pycocotools re-rasterisation.

    Args:
        mask: ``(H, W) bool|uint8`` the mask the polygons describe.
        polygons: COCO polygons (flat coordinate lists; shorter than 6 numbers are ignored).

    Returns:
        ``(lost_pixels, added_pixels)``: mask pixels not covered, and covered pixels outside the mask.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    r = rasterize(polygons, m.shape[0], m.shape[1])
    return int(np.count_nonzero(m & ~r)), int(np.count_nonzero(r & ~m))
