"""Instances cut by tile borders, merged into one detection per object (pure numpy).

Detections from all tiles are ranked (complete before cut, then by score). Two detections of the
same class from different tiles whose masks agree where both tiles saw the image (IoU > 0.5 inside
the windows' common area) are one object seen twice and are unioned. Of what remains, a detection
whose global mask IoU with a better one of the same class exceeds ``nms_iou`` is a duplicate and is
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


@dataclass
class Det:
    """One detection of one tile, its mask cropped tight and placed in image coordinates.

    Attributes:
        label: Model label index.
        score: Confidence.
        y0: Image row of the crop's top.
        x0: Image column of the crop's left.
        crop: ``(h, w) bool`` mask, tight around the object.
        cut: Touches a tile border that is inside the image (the object may continue past it).
        tile: The window it came from: ``(y0, x0, y1, x1)``.
    """

    label: int
    score: float
    y0: int
    x0: int
    crop: np.ndarray
    cut: bool
    tile: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        """Mask pixels."""
        return int(self.crop.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the crop in the image."""
        return self.x0, self.y0, self.x0 + self.crop.shape[1], self.y0 + self.crop.shape[0]


def _rank(d: Det) -> tuple[bool, float]:
    """Complete detections before cut ones, then by descending score."""
    return d.cut, -d.score


def merge_detections(dets: list[Det], nms_iou: float) -> list[Det]:
    """One detection per object, best first.

    Args:
        dets: Every tile's detections (unioned ones are modified in place).
        nms_iou: Global mask IoU above which two same-class detections are duplicates.

    Returns:
        The kept detections by descending score.
    """
    kept = _suppress_duplicates(_union_across_tiles(dets), nms_iou)
    kept.sort(key=lambda d: -d.score)
    return kept


def _union_across_tiles(dets: list[Det]) -> list[Det]:
    """Groups (union-find) the detections of one object seen by two tiles, and unions each group.

    Returns:
        One detection per group, in the order the groups' best members rank.
    """
    parent = list(range(len(dets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(dets):
        for j in range(i + 1, len(dets)):
            b = dets[j]
            if a.label == b.label and a.tile != b.tile and window_iou(a, b) > 0.5:
                parent[find(j)] = find(i)
    groups: dict[int, Det] = {}
    for i in sorted(range(len(dets)), key=lambda i: _rank(dets[i])):
        r = find(i)
        if r in groups:
            union_into(groups[r], dets[i])
        else:
            groups[r] = dets[i]
    return list(groups.values())


def _suppress_duplicates(dets: list[Det], nms_iou: float) -> list[Det]:
    """Greedy mask NMS per class in rank order: a detection overlapping a kept one too much is dropped."""
    kept: list[Det] = []
    for d in sorted(dets, key=_rank):
        if not any(
            k.label == d.label and (inter := intersection(k, d)) and inter / (k.area + d.area - inter) > nms_iou
            for k in kept
        ):
            kept.append(d)
    return kept


def window_iou(a: Det, b: Det) -> float:
    """Mask IoU of two detections restricted to the area both of their tiles saw."""
    y0, x0 = max(a.tile[0], b.tile[0]), max(a.tile[1], b.tile[1])
    y1, x1 = min(a.tile[2], b.tile[2]), min(a.tile[3], b.tile[3])
    if y0 >= y1 or x0 >= x1:
        return 0.0

    def window(d: Det) -> np.ndarray:
        m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        dx0, dy0, dx1, dy1 = d.box
        cx0, cy0, cx1, cy1 = max(dx0, x0), max(dy0, y0), min(dx1, x1), min(dy1, y1)
        if cx0 < cx1 and cy0 < cy1:
            m[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = d.crop[cy0 - dy0 : cy1 - dy0, cx0 - dx0 : cx1 - dx0]
        return m

    ma, mb = window(a), window(b)
    union = int((ma | mb).sum())
    return int((ma & mb).sum()) / union if union else 0.0


def intersection(a: Det, b: Det) -> int:
    """Pixels the two masks share."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x0 >= x1 or y0 >= y1:
        return 0
    return int(
        (a.crop[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0] & b.crop[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]).sum()
    )


def union_into(k: Det, d: Det) -> None:
    """Grows ``k`` by ``d``'s mask; ``k`` keeps the better score and is cut only if both were."""
    ax0, ay0, ax1, ay1 = k.box
    bx0, by0, bx1, by1 = d.box
    x0, y0, x1, y1 = min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1)
    m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    m[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] |= k.crop
    m[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] |= d.crop
    k.crop, k.y0, k.x0 = m, y0, x0
    k.score = max(k.score, d.score)
    k.cut = k.cut and d.cut


def crop_to_rle(crop: np.ndarray, y0: int, x0: int, h: int, w: int) -> dict[str, Any]:
    """Compressed COCO RLE of a full ``h × w`` mask that is ``crop`` at ``(y0, x0)`` and 0 elsewhere.

    Runs are computed from the crop alone (column-major, as COCO counts), so a small object in a huge
    image never materialises an ``h × w`` array.

    Args:
        crop: ``(ch, cw) bool`` mask.
        y0: Image row of its top.
        x0: Image column of its left.
        h: Image height.
        w: Image width.

    Returns:
        ``{"size": [h, w], "counts": str}``.
    """
    ch, cw = crop.shape
    # Column-major run boundaries inside the crop, shifted to global column-major positions.
    padded = np.zeros((ch + 2, cw), dtype=np.int8)
    padded[1:-1] = crop
    diff = np.diff(padded, axis=0)  # (ch + 1, cw): +1 at a run start, −1 after a run end
    # np.nonzero on the transpose walks column by column, rows in order within: COCO's order.
    s_col, s_row = np.nonzero((diff == 1).T)
    e_col, e_row = np.nonzero((diff == -1).T)
    starts = (x0 + s_col).astype(np.int64) * h + y0 + s_row
    ends = (x0 + e_col).astype(np.int64) * h + y0 + e_row
    if starts.size > 1:  # a run reaching the bottom of one column may continue at the top of the next
        join = starts[1:] == ends[:-1]
        if join.any():
            starts = np.concatenate([starts[:1], starts[1:][~join]])
            ends = np.concatenate([ends[:-1][~join], ends[-1:]])
    counts: list[int] = []
    pos = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        counts.extend((s - pos, e - s))
        pos = e
    counts.append(h * w - pos)
    rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return rle
