"""COCO mask geometry: RLE and polygon validation, encoding, decoding, areas and boxes.

Everything that reaches ``pycocotools.mask`` from an untrusted file goes through :func:`check_polygon`
or :func:`check_rle` first: pycocotools 2.0.11 segfaults on polygon coordinates around 4.3e8 and beyond,
and decodes RLE counts that are too short into different garbage on each call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.core.records import RLE, BBox, Segmentation

#: Largest accepted absolute polygon coordinate. Far beyond any real image, far below the ~4.3e8
#: at which pycocotools' rasteriser overflows and crashes the process.
MAX_COORD = 1.0e7


def check_polygon(poly: Any) -> str | None:
    """Returns why ``poly`` is not a valid COCO polygon, or None if it is.

    A valid polygon is a flat list of an even number (>= 6) of finite numbers, each within
    ``±MAX_COORD``.
    """
    if not isinstance(poly, (list, tuple)):
        return f"polygon must be a list of numbers, got {type(poly).__name__}"
    n = len(poly)
    if n >= 6 and n % 2 == 0 and set(map(type, poly)) <= {int, float}:
        # Fast path (one C-level pass): plain numbers, as json.loads gives them.
        arr = np.asarray(poly, dtype=np.float64)
        if np.isfinite(arr).all():
            big = float(np.abs(arr).max())
            if big > MAX_COORD:
                return f"polygon coordinate {big:g} is out of range (|x| <= {MAX_COORD:g})"
            return None
    bad = [v for v in poly if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        return f"polygon has a non-number: {bad[0]!r}"
    finite = [v for v in poly if math.isfinite(v)]
    if len(finite) != n:
        return f"polygon has non-finite coordinates ({n - len(finite)} of {n})"
    if n < 6:
        return f"polygon needs >= 6 finite coordinates, got {n}"
    if n % 2:
        return f"polygon needs an even number of coordinates, got {n}"
    big = max(abs(v) for v in poly)
    if big > MAX_COORD:
        return f"polygon coordinate {big:g} is out of range (|x| <= {MAX_COORD:g})"
    return None


def runs(counts: str | bytes | Sequence[int]) -> np.ndarray:
    """Decodes RLE counts (cached for strings: a mask is validated, then painted, on the same worker).

    See :func:`_runs`. The returned array is read-only.
    """
    if isinstance(counts, (str, bytes)):
        return _runs_cached(counts)
    return _runs(counts)


@functools.lru_cache(maxsize=4096)
def _runs_cached(counts: str | bytes) -> np.ndarray:
    out = _runs(counts)
    out.flags.writeable = False
    return out


def _runs(counts: str | bytes | Sequence[int]) -> np.ndarray:
    """Decodes RLE counts (compressed string or uncompressed list) to run lengths, vectorised.

    Runs alternate background / foreground, starting with background, in column-major (Fortran)
    pixel order, exactly as pycocotools stores them.

    Returns:
        ``(R,) int64`` run lengths.

    Raises:
        ValueError: characters outside the alphabet, a truncated value, a run longer than 2**34 or a
            negative run.
    """
    if not isinstance(counts, (str, bytes)):
        arr = np.asarray(counts, dtype=np.int64).reshape(-1)
        if arr.size and int(arr.min()) < 0:
            raise ValueError("negative run length")
        return arr
    data = counts.encode("ascii", "strict") if isinstance(counts, str) else bytes(counts)
    if not data:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 48
    if int(c.min()) < 0 or int(c.max()) > 63:
        bad = data[int(np.argmax((c < 0) | (c > 63)))]
        raise ValueError(f"invalid character {chr(bad)!r} in counts string")
    last = (c & 0x20) == 0  # the last character of each value has no continuation bit
    if not last[-1]:
        raise ValueError("truncated counts string")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > 7:  # 7 × 5 bits: runs up to 2**34, far beyond any image
        raise ValueError("run length too large in counts string")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    vals = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    vals[neg] -= np.left_shift(1, 5 * lengths[neg])
    # pycocotools stores runs from the third on as differences to the run two before.
    out = vals.copy()
    if out.size > 3:
        out[3::2] = np.cumsum(vals[3::2]) + vals[1]
    if out.size > 4:
        out[4::2] = np.cumsum(vals[4::2]) + vals[2]
    if int(out.min()) < 0:
        raise ValueError(f"negative run length at run {int(np.argmax(out < 0))}")
    return out


def decode_counts_string(s: str | bytes) -> list[int]:
    """Decodes pycocotools' compressed counts string into run lengths (see :func:`runs`)."""
    return [int(v) for v in runs(s)]


def foreground_indices(rle: RLE) -> np.ndarray:
    """Flat column-major indices (``x * H + y``) of the foreground pixels of an RLE.

    O(foreground) rather than O(image): painting many small objects into a large map this way is
    much faster than decoding full masks.

    Returns:
        ``(area,) int64``.
    """
    r = runs(rle["counts"])
    if r.size < 2:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(r)
    fg_len = r[1::2]
    fg_start = ends[0::2][: fg_len.size]
    keep = fg_len > 0
    fg_len, fg_start = fg_len[keep], fg_start[keep]
    if not fg_len.size:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(fg_start - np.concatenate(([0], np.cumsum(fg_len)[:-1])), fg_len)
    return np.arange(int(fg_len.sum()), dtype=np.int64) + offsets


def check_rle(rle: Any, height: int | None = None, width: int | None = None) -> str | None:
    """Returns why ``rle`` is not a valid COCO RLE for an image of ``height × width``, or None.

    Checks the ``size`` field, the type of ``counts``, that every run is non-negative and that the
    runs sum to exactly ``h × w`` — for compressed strings too, decoded in pure Python, so that
    pycocotools never sees a malformed string.
    """
    if not isinstance(rle, dict):
        return f"RLE must be an object, got {type(rle).__name__}"
    size = rle.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        return f"RLE size must be [height, width] of non-negative integers, got {size!r}"
    h, w = int(size[0]), int(size[1])
    if height is not None and width is not None and (h, w) != (height, width):
        return f"RLE size {h}x{w} differs from the image size {height}x{width}"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            return "RLE counts must be integers"
        if any(v < 0 for v in counts):
            return "RLE counts must be non-negative"
        total = sum(counts)
    elif isinstance(counts, (str, bytes)):
        try:
            total = int(runs(counts).sum())
        except (ValueError, UnicodeEncodeError) as e:
            return f"RLE counts string is malformed: {e}"
    else:
        return f"RLE counts must be a string or a list, got {type(counts).__name__}"
    if total != h * w:
        return f"RLE counts sum to {total}, expected height*width = {h * w}"
    return None


def _as_str_counts(rle: dict[str, Any]) -> RLE:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _as_c_rle(rle: RLE) -> dict[str, Any]:
    """RLE in the form pycocotools' C functions accept (compressed, bytes counts)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        h, w = rle["size"]
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)  # type: ignore[no-any-return]
    if isinstance(counts, str):
        return {"size": rle["size"], "counts": counts.encode("ascii")}
    return dict(rle)


def encode(mask: np.ndarray) -> RLE:
    """Encodes a binary mask.

    Args:
        mask: ``(H, W)`` bool or uint8 (non-zero = foreground).

    Returns:
        Compressed RLE with ``counts`` as a str (JSON-ready).
    """
    m = np.asfortranarray(mask.astype(np.uint8, copy=False))
    return _as_str_counts(mask_utils.encode(m))


def encode_labels(labels: np.ndarray, values: Sequence[int]) -> list[RLE]:
    """Encodes ``labels == v`` for every ``v`` in ``values`` in one call.

    Args:
        labels: ``(H, W)`` integer label map.
        values: The values to encode.

    Returns:
        One compressed RLE per value, in order.
    """
    if not len(values):
        return []
    h, w = labels.shape
    stack = np.empty((h, w, len(values)), dtype=np.uint8, order="F")
    for i, v in enumerate(values):
        stack[:, :, i] = labels == v
    return [_as_str_counts(r) for r in mask_utils.encode(stack)]


def decode(rle: RLE) -> np.ndarray:
    """Decodes an RLE (compressed or not) to ``(H, W) uint8`` in {0, 1}. Validate untrusted input first."""
    return np.ascontiguousarray(mask_utils.decode(_as_c_rle(rle)))


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """Rasterises (the union of) polygons exactly as pycocotools does. Validate untrusted input first."""
    polys = [list(map(float, p)) for p in polygons]
    if not polys:
        return encode(np.zeros((height, width), dtype=np.uint8))
    rles = mask_utils.frPyObjects(polys, height, width)
    return _as_str_counts(mask_utils.merge(rles))


def to_rle(seg: Segmentation, height: int, width: int) -> RLE:
    """Returns the compressed RLE of any segmentation (polygons are rasterised, RLE compressed)."""
    if seg.kind == "polygons":
        return polygons_to_rle(seg.polygons or (), height, width)
    assert seg.rle is not None
    if seg.kind == "rle_uncompressed":
        return _as_str_counts(_as_c_rle(seg.rle))
    return _as_str_counts(seg.rle)


def area(rle: RLE) -> int:
    """Foreground pixel count."""
    return int(mask_utils.area(_as_c_rle(rle)))


def to_bbox(rle: RLE) -> BBox:
    """Tight box ``(x, y, w, h)`` of the foreground, as pycocotools computes it."""
    b = mask_utils.toBbox(_as_c_rle(rle))
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def merge(rles: Sequence[RLE], intersect: bool = False) -> RLE:
    """Union (or intersection) of RLEs of the same size."""
    return _as_str_counts(mask_utils.merge([_as_c_rle(r) for r in rles], intersect=intersect))


def iou(a: Sequence[RLE], b: Sequence[RLE], iscrowd: Sequence[bool] | None = None) -> np.ndarray:
    """Pairwise mask IoU as pycocotools computes it: ``(len(a), len(b)) float64``."""
    crowd = list(iscrowd) if iscrowd is not None else [False] * len(b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.float64)
    return np.asarray(
        mask_utils.iou([_as_c_rle(r) for r in a], [_as_c_rle(r) for r in b], [int(c) for c in crowd])
    )


def polygons_bbox(polygons: Sequence[Sequence[float]]) -> BBox:
    """Box ``(x, y, w, h)`` spanning the polygons' vertices (COCO's convention for polygon boxes)."""
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    x0, y0 = min(xs), min(ys)
    return (float(x0), float(y0), float(max(xs) - x0), float(max(ys) - y0))
