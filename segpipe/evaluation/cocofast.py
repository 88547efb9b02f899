"""pycocotools' ``COCOeval.evaluate()`` + ``accumulate()`` in numpy, with bit-identical results.

pycocotools spends its time in Python loops: ``evaluateImg`` runs once per (category, area range,
image) and walks thresholds × detections × ground truths one scalar at a time; ``accumulate`` then
concatenates tens of thousands of small per-image arrays for every (category, area range, max dets).
This module computes the same numbers with array operations:

1. **Tables.** Ground truths and results become flat arrays, grouped by (image, category) — by
   image alone when ``useCats=0`` — in pycocotools' orders: results of a group sorted by score with a
   stable sort (ties keep list order; with ``useCats=0`` the category order of ``catIds`` comes
   first, as pycocotools concatenates per category), truncated to ``maxDets[-1]``; ground truths in
   list order.
2. **Overlaps.** One value per (result, ground truth of its group) pair. Boxes: pycocotools' C
   ``bbIou`` formula evaluated in float64 numpy, operation for operation (the compiled library uses
   plain SSE2 arithmetic, no fused multiply-add, so each value is identical). Masks:
   ``maskUtils.iou`` itself, once per group as pycocotools calls it. Keypoints: pycocotools' OKS
   formula, vectorised over pairs that share the number of visible keypoints so that every sum runs
   over the same contiguous values in the same order.
3. **Greedy matching.** pycocotools' matching for one (area range, threshold) visits results by
   score and, for each, the ground truths with non-ignored ones first: a free ground truth (or a
   crowd) with overlap ≥ ``min(t, 1-1e-10)`` is a candidate; the last one reaching the largest overlap
   wins; ignored ground truths are only considered when no non-ignored one qualifies. That is
   computed here for all (area range × threshold) combinations and all groups at once, in one loop
   over score rank (≤ ``maxDets[-1]`` iterations): groups are bucketed by padded ground-truth count
   and ordered by result count so the groups still active at rank ``r`` form a prefix.
4. **Accumulation.** Per category, results of all images sorted by score with pycocotools' tie order
   (image order, then rank in the image), cumulative true/false positives for all (area, threshold)
   rows at once, precision made monotone by a reversed running maximum, and ``searchsorted`` at the
   recall thresholds exactly as ``accumulate()``.

The matching shards by image: :func:`match_shard` takes a contiguous range of images as compact
arrays (results and ground truths are sorted image-major) and returns packed bits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.errors import InputError

__all__ = ["FastTables", "accumulate_fast", "build_tables", "evaluate_fast", "match_shard"]

_EPS = np.spacing(1)


# -- tables ------------------------------------------------------------------------------------------


@dataclass
class FastTables:
    """Ground truths and results of one iou type, flattened and sorted by group.

    Groups are (image, category) pairs — or images when ``useCats=0`` — numbered image-major, so a
    contiguous range of images is a contiguous range of groups, results and ground truths.

    Attributes:
        iou_type: ``bbox``, ``segm`` or ``keypoints``.
        num_cats: ``K``: categories accumulated separately (1 when ``useCats=0``).
        num_groups: Number of groups holding a result or a ground truth.
        group_img: ``(num_groups,) int64`` image index (position in ``params.imgIds``) of each group.
        dt_grp: ``(D,) int64`` group of each result; non-decreasing.
        dt_cat: ``(D,) int64`` category index of each result (0 when ``useCats=0``).
        dt_img: ``(D,) int64`` image index of each result.
        dt_rank: ``(D,) int64`` position in its group after the score sort (< ``maxDets[-1]``).
        dt_score: ``(D,) float64`` scores.
        dt_out: ``(A, D) bool``: area outside each area range.
        dt_geom: ``(D, 4) float64`` boxes, a list of ``D`` RLE dicts, or ``(D, 3·N_kpt) float64``.
        gt_grp: ``(G,) int64`` group of each ground truth; non-decreasing.
        gt_ig: ``(A, G) bool``: ignored in each area range (crowd, no keypoints, or area outside).
        gt_crowd: ``(G,) bool``: ``iscrowd`` (a crowd stays matchable).
        gt_nonzero_id: ``(G,) bool``: id ≠ 0 (pycocotools stores the matched id and tests it).
        gt_geom: Like ``dt_geom``; for keypoints ``(G, 3·N_kpt)``.
        gt_box: ``(G, 4) float64`` boxes (keypoints only: the OKS ignore region), else None.
        gt_area: ``(G,) float64`` areas.
        npig: ``(K, A) int64`` non-ignored ground truths per category and area range.
    """

    iou_type: str
    num_cats: int
    num_groups: int
    group_img: np.ndarray
    dt_grp: np.ndarray
    dt_cat: np.ndarray
    dt_img: np.ndarray
    dt_rank: np.ndarray
    dt_score: np.ndarray
    dt_out: np.ndarray
    dt_geom: Any
    gt_grp: np.ndarray
    gt_ig: np.ndarray
    gt_crowd: np.ndarray
    gt_nonzero_id: np.ndarray
    gt_geom: Any
    gt_box: np.ndarray | None
    gt_area: np.ndarray
    npig: np.ndarray


def _ann_to_rle(segm: Any, h: int, w: int) -> Any:
    """``COCO.annToRLE`` for one segmentation (polygons, uncompressed or compressed RLE)."""
    if type(segm) is list:
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if type(segm["counts"]) is list:
        return mask_utils.frPyObjects(segm, h, w)
    return segm


def _float_rows(rows: Sequence[Any], width: int | None, what: str) -> np.ndarray:
    """``(N, width) float64`` from N equal-length number lists (as ``np.asarray`` would, 5× faster)."""
    n = len(rows)
    try:
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=n)
    except TypeError:
        raise InputError(f"{what} must be lists of numbers") from None
    if n == 0:
        return np.zeros((0, width or 0))
    w = int(lens[0])
    if (width is not None and w != width) or bool((lens != w).any()):
        raise InputError(f"{what} must all be lists of {width if width else 'the same number of'} numbers")
    try:
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=n * w)
    except (ValueError, TypeError):
        raise InputError(f"{what} must be lists of numbers") from None
    return flat.reshape(n, w)


def _kpt_extent(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``loadRes``' keypoint branch: ``(area (D,), bbox (D, 4))`` from ``(D, 3K)`` keypoints."""
    x, y = kp[:, 0::3], kp[:, 1::3]
    x0, x1, y0, y1 = x.min(axis=1), x.max(axis=1), y.min(axis=1), y.max(axis=1)
    return (x1 - x0) * (y1 - y0), np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _gt_columns(
    annotations: Sequence[Mapping[str, Any]], img_pos: Mapping[Any, int], cat_pos: Mapping[Any, int], iou_type: str
) -> tuple[list[Mapping[str, Any]], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ground truths ``_prepare`` loads (image in ``imgIds``, category in ``catIds``), as columns.

    Returns:
        ``(annotations, image index, category index, ignore, crowd, id != 0, area)``, the arrays
        ``(G,)`` each: ``_prepare``'s ignore is ``iscrowd`` (truthiness), for keypoints also "no
        keypoints"; crowd is ``int(iscrowd) != 0`` as ``evaluateImg`` tests it.
    """
    g_sel: list[Mapping[str, Any]] = []
    g_img: list[int] = []
    g_cat: list[int] = []
    for ann in annotations:
        ii = img_pos.get(ann["image_id"])
        if ii is None:
            continue
        ci = cat_pos.get(ann["category_id"])
        if ci is None:
            continue
        g_sel.append(ann)
        g_img.append(ii)
        g_cat.append(ci)
    n = len(g_sel)
    g_ignore = np.fromiter((bool(a["iscrowd"]) for a in g_sel), dtype=bool, count=n)
    if iou_type == "keypoints":
        g_ignore |= np.fromiter((a["num_keypoints"] == 0 for a in g_sel), dtype=bool, count=n)
    return (
        g_sel,
        np.asarray(g_img, dtype=np.int64),
        np.asarray(g_cat, dtype=np.int64),
        g_ignore,
        np.fromiter((int(a["iscrowd"]) != 0 for a in g_sel), dtype=bool, count=n),
        np.fromiter((a["id"] != 0 for a in g_sel), dtype=bool, count=n),
        np.fromiter((a["area"] for a in g_sel), dtype=np.float64, count=n),
    )


def _dt_columns(
    dt_list: Sequence[Mapping[str, Any]], kind: str, img_pos: Mapping[Any, int], cat_pos: Mapping[Any, int]
) -> tuple[list[Mapping[str, Any]], np.ndarray, np.ndarray, np.ndarray]:
    """The results ``_prepare`` loads, as columns: ``(results, image index, category index, score)``."""
    if kind == "empty":
        d_idx = np.zeros(0, dtype=np.int64)
        d_img = np.zeros(0, dtype=np.int64)
        d_cat = np.zeros(0, dtype=np.int64)
    else:
        n = len(dt_list)
        d_img_all = np.fromiter((img_pos.get(d["image_id"], -1) for d in dt_list), dtype=np.int64, count=n)
        d_cat_all = np.fromiter((cat_pos.get(d["category_id"], -1) for d in dt_list), dtype=np.int64, count=n)
        d_idx = np.flatnonzero((d_img_all >= 0) & (d_cat_all >= 0))
        d_img, d_cat = d_img_all[d_idx], d_cat_all[d_idx]
        del d_img_all, d_cat_all
    d_sel = [dt_list[j] for j in d_idx.tolist()]
    d_score = np.asarray([d["score"] for d in d_sel], dtype=np.float64).reshape(-1)
    return d_sel, d_img, d_cat, d_score


def _top_ranked(order: np.ndarray, key: np.ndarray, max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keeps the first ``max_det`` results of each group: ``(order, key, rank)`` of the kept ones.

    Args:
        order: ``(D,)`` result positions in sorted order.
        key: ``(D,)`` group key of each result in that order (non-decreasing).
        max_det: ``maxDets[-1]``.
    """
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, key.size])
    rank = np.arange(key.size) - np.repeat(starts, counts)
    keep = rank < max_det
    return order[keep], key[keep], rank[keep]


def _result_extent(d_pick: Sequence[Mapping[str, Any]], kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(area (D,), box (D, 4) or None)`` of each result, as ``loadRes`` derives them for ``kind``."""
    if kind == "bbox" or kind == "empty":
        d_box = _float_rows([d["bbox"] for d in d_pick], 4, "result bbox values")
        return d_box[:, 2] * d_box[:, 3], d_box
    if kind == "segmentation":
        segms = [d["segmentation"] for d in d_pick]
        # maskUtils.area builds np.array((n,), dtype=uint8) internally: more than 255 at once
        # overflows under numpy 2, so call it in chunks
        areas = [np.asarray(mask_utils.area(segms[i : i + 255]), dtype=np.float64).reshape(-1)
                 for i in range(0, len(segms), 255)]
        return np.concatenate([np.zeros(0), *areas]), None
    return _kpt_extent(_float_rows([d["keypoints"] for d in d_pick], None, "result keypoints"))


def _result_boxes(d_pick: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``(D, 4)`` boxes of segmentation results: their ``bbox``, else the box of their mask (``loadRes``)."""
    missing = [k for k, d in enumerate(d_pick) if "bbox" not in d]
    rows = [d.get("bbox") for d in d_pick]
    if missing:
        boxes = mask_utils.toBbox([d_pick[k]["segmentation"] for k in missing])
        for k, b in zip(missing, boxes, strict=True):
            rows[k] = b
    return _float_rows(rows, 4, "result bbox values")


def _segm_geometries(
    g_pick: Sequence[Mapping[str, Any]],
    d_pick: Sequence[Mapping[str, Any]],
    kind: str,
    images: Sequence[Mapping[str, Any]],
) -> tuple[list[Any], list[Any]]:
    """RLEs of ground truths and results for segm; a result with only a box becomes that box's polygon.

    Raises:
        InputError: keypoint results (they have no segmentation).
    """
    sizes = {img["id"]: (img["height"], img["width"]) for img in images}
    g_geom = [_ann_to_rle(a["segmentation"], *sizes[a["image_id"]]) for a in g_pick]
    if kind == "keypoints":
        raise InputError("keypoint results have no segmentation to evaluate as segm")
    d_geom = []
    for d in d_pick:
        segm = d.get("segmentation")
        if segm is None:  # loadRes' bbox branch: the box as a polygon
            bb = d["bbox"]
            x1, x2, y1, y2 = bb[0], bb[0] + bb[2], bb[1], bb[1] + bb[3]
            segm = [[x1, y1, x1, y2, x2, y2, x2, y1]]
        d_geom.append(_ann_to_rle(segm, *sizes[d["image_id"]]))
    return g_geom, d_geom


def build_tables(
    gt_dict: Mapping[str, Any],
    dt_list: Sequence[Mapping[str, Any]],
    kind: str,
    p: Any,
) -> FastTables:
    """Flattens ground truth and results for one iou type, as ``loadRes`` + ``_prepare`` see them.

    Args:
        gt_dict: COCO ground truth (checked by the caller).
        dt_list: Results (checked by the caller; not modified).
        kind: The ``loadRes`` branch chosen by the first result (``bbox``, ``segmentation``,
            ``keypoints`` or ``empty``).
        p: pycocotools ``Params`` after ``evaluate()``'s normalisation (unique sorted ``imgIds``,
            ``catIds``; sorted ``maxDets``).

    Returns:
        The :class:`FastTables`.

    Raises:
        InputError: results lack what the iou type needs.
    """
    iou_type = p.iouType
    use_cats = bool(p.useCats)
    img_pos = {img_id: i for i, img_id in enumerate(p.imgIds)}
    cat_pos: dict[Any, int] = {}
    for i, c in enumerate(p.catIds):
        cat_pos.setdefault(c, i)
    num_cats = len(p.catIds) if use_cats else 1
    area_rng = np.asarray(p.areaRng, dtype=np.float64).reshape(-1, 2)
    lo, hi = area_rng[:, 0:1], area_rng[:, 1:2]

    g_sel, gi, gc, g_ignore, g_crowd, g_nz, g_area = _gt_columns(gt_dict["annotations"], img_pos, cat_pos, iou_type)
    d_sel, d_img, d_cat, d_score = _dt_columns(dt_list, kind, img_pos, cat_pos)

    # group ids, image-major; the sort keys reproduce pycocotools' orders
    if use_cats:
        g_key = gi * num_cats + gc
        d_key = d_img * num_cats + d_cat
        g_order = np.argsort(g_key, kind="stable")
        d_order = np.lexsort((-d_score, d_key))
    else:
        g_key, d_key = gi, d_img
        g_order = np.lexsort((gc, g_key))
        d_order = np.lexsort((d_cat, -d_score, d_key))
    d_order, d_key, rank = _top_ranked(d_order, d_key[d_order], int(p.maxDets[-1]))
    g_key = g_key[g_order]

    keys, inv = np.unique(np.concatenate([d_key, g_key]), return_inverse=True)
    inv = inv.reshape(-1)
    dt_grp, gt_grp = inv[: d_key.size].astype(np.int64), inv[d_key.size :].astype(np.int64)
    group_img = keys // num_cats if use_cats else keys

    d_pick = [d_sel[j] for j in d_order.tolist()]
    g_pick = [g_sel[j] for j in g_order.tolist()]
    gi, gc = gi[g_order], gc[g_order]
    g_ignore, g_crowd, g_nz, g_area = g_ignore[g_order], g_crowd[g_order], g_nz[g_order], g_area[g_order]
    d_img, d_score = d_img[d_order], d_score[d_order]
    d_cat_acc = d_cat[d_order] if use_cats else np.zeros(d_order.size, dtype=np.int64)

    d_area, d_box = _result_extent(d_pick, kind)
    gt_box: np.ndarray | None = None
    if iou_type == "bbox":
        g_geom: Any = _float_rows([a["bbox"] for a in g_pick], 4, "ground-truth bbox values")
        d_geom: Any = _result_boxes(d_pick) if kind == "segmentation" else d_box
    elif iou_type == "segm":
        g_geom, d_geom = _segm_geometries(g_pick, d_pick, kind, gt_dict["images"])
    else:
        nk = 3 * len(p.kpt_oks_sigmas)
        g_geom = _float_rows([a["keypoints"] for a in g_pick], nk, "ground-truth keypoints")
        gt_box = _float_rows([a["bbox"] for a in g_pick], 4, "ground-truth bbox values")
        if d_pick and any("keypoints" not in d for d in d_pick):
            raise InputError("results lack keypoints needed for keypoints evaluation")
        d_geom = _float_rows([d["keypoints"] for d in d_pick], nk, "result keypoints")

    gt_ig = g_ignore[None, :] | (g_area[None, :] < lo) | (g_area[None, :] > hi)
    dt_out = (d_area[None, :] < lo) | (d_area[None, :] > hi)
    npig = np.zeros((num_cats, area_rng.shape[0]), dtype=np.int64)
    acc_cat = gc if use_cats else np.zeros_like(gc)
    for a in range(area_rng.shape[0]):
        npig[:, a] = np.bincount(acc_cat[~gt_ig[a]], minlength=num_cats)
    return FastTables(
        iou_type=iou_type,
        num_cats=num_cats,
        num_groups=int(keys.size),
        group_img=np.asarray(group_img, dtype=np.int64),
        dt_grp=dt_grp,
        dt_cat=d_cat_acc,
        dt_img=d_img,
        dt_rank=rank.astype(np.int64),
        dt_score=d_score,
        dt_out=dt_out,
        dt_geom=d_geom,
        gt_grp=gt_grp,
        gt_ig=gt_ig,
        gt_crowd=g_crowd,
        gt_nonzero_id=g_nz,
        gt_geom=g_geom,
        gt_box=gt_box,
        gt_area=g_area,
        npig=npig,
    )


# -- overlaps ----------------------------------------------------------------------------------------


def _box_iou_pairs(db: np.ndarray, gb: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """The C ``bbIou`` of pycocotools for paired rows, in the same float64 operations.

    Args:
        db: ``(P, 4)`` result boxes ``x, y, w, h``.
        gb: ``(P, 4)`` ground-truth boxes.
        crowd: ``(P,) bool``: the ground truth is a crowd (union = the result's area).

    Returns:
        ``(P,) float64`` overlaps.
    """
    dx, dy, dw, dh = db[:, 0], db[:, 1], db[:, 2], db[:, 3]
    gx, gy, gw, gh = gb[:, 0], gb[:, 1], gb[:, 2], gb[:, 3]
    # maskApi.c: w=fmin(D[2]+D[0],G[2]+G[0])-fmax(D[0],G[0]); if(w<=0) → 0; same for h;
    #            i=w*h; u = crowd ? da : da+ga-i; o=i/u   (da = D[2]*D[3], ga = G[2]*G[3])
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    da = dw * dh
    ga = gw * gh
    i = w * h
    u = np.where(crowd, da, da + ga - i)
    with np.errstate(divide="ignore", invalid="ignore"):
        o = i / u
    return np.where((w > 0) & (h > 0), o, 0.0)


def _oks_pairs(
    dk: np.ndarray,
    gk: np.ndarray,
    g_box: np.ndarray,
    g_area: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """The ``computeOks`` of pycocotools for paired rows.

    The formula is applied element for element as pycocotools writes it; the final sum runs over a
    contiguous row holding exactly the values pycocotools sums (the visible keypoints, in order), so
    numpy's summation order is the same.

    Args:
        dk: ``(P, 3K)`` result keypoints.
        gk: ``(P, 3K)`` ground-truth keypoints.
        g_box: ``(P, 4)`` ground-truth boxes.
        g_area: ``(P,)`` ground-truth areas.
        sigmas: ``(K,)`` OKS sigmas.

    Returns:
        ``(P,) float64`` OKS.
    """
    sigmas = np.asarray(sigmas)
    var = (sigmas * 2) ** 2
    k = len(sigmas)
    out = np.zeros(dk.shape[0])
    vis = gk[:, 2::3] > 0
    k1 = np.count_nonzero(vis, axis=1)
    for kk in np.unique(k1).tolist():
        sel = np.flatnonzero(k1 == kk)
        xd, yd = dk[sel, 0::3], dk[sel, 1::3]
        if kk > 0:
            dx = xd - gk[sel, 0::3]
            dy = yd - gk[sel, 1::3]
        else:
            bb = g_box[sel]
            x0 = (bb[:, 0] - bb[:, 2])[:, None]
            x1 = (bb[:, 0] + bb[:, 2] * 2)[:, None]
            y0 = (bb[:, 1] - bb[:, 3])[:, None]
            y1 = (bb[:, 1] + bb[:, 3] * 2)[:, None]
            z = np.zeros((1, k))
            # np.max((z, a), axis=0) == maximum(z, a), z first
            dx = np.maximum(z, x0 - xd) + np.maximum(z, xd - x1)
            dy = np.maximum(z, y0 - yd) + np.maximum(z, yd - y1)
        e = (dx**2 + dy**2) / var / (g_area[sel] + _EPS)[:, None] / 2
        if kk > 0:
            cols = np.argsort(~vis[sel], axis=1, kind="stable")[:, :kk]
            e = np.ascontiguousarray(np.take_along_axis(e, cols, axis=1))
        out[sel] = np.sum(np.exp(-e), axis=1) / e.shape[1]
    return out


def _pairs(d_grp: np.ndarray, g_start: np.ndarray, g_cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (result, ground truth of the same group) pairs, result-major.

    Returns:
        ``pd (P,)`` result index, ``pg (P,)`` ground-truth index, ``pos (P,)`` the ground truth's
        position in its group.
    """
    per = g_cnt[d_grp]
    pd = np.repeat(np.arange(d_grp.size), per)
    pos = np.arange(pd.size) - np.repeat(np.cumsum(per) - per, per)
    pg = g_start[d_grp[pd]] + pos
    return pd, pg, pos


# -- matching ----------------------------------------------------------------------------------------


def _match_bucket(
    rows: np.ndarray,
    n_at_rank: np.ndarray,
    ig: np.ndarray,
    crowd: np.ndarray,
    nonzero_id: np.ndarray,
    thr: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of every group in one bucket, for all (area range, threshold) pairs at once.

    Args:
        rows: ``(R, Gp) float64`` overlaps, rank-major: the rows of rank ``r`` are
            ``rows[off[r]:off[r] + n_at_rank[r]]``, one per group still holding a result at that rank
            (groups sorted by result count, descending). Padding is ``-inf``.
        n_at_rank: ``(max rank,) int64`` active groups at each rank.
        ig: ``(J, A, Gp) bool`` ground truth ignored in each area range.
        crowd: ``(J, Gp) bool``.
        nonzero_id: ``(J, Gp) bool`` ground-truth id ≠ 0.
        thr: ``(T,) float64`` thresholds, already ``min(t, 1 - 1e-10)``.

    Returns:
        ``(R, A, T) bool`` twice: matched to a ground truth with a non-zero id (pycocotools' test of
        ``dtMatches``), and matched to an ignored ground truth.
    """
    j, a, gp = ig.shape
    t = thr.size
    matched = np.zeros((j, a, t, gp), dtype=bool)
    ig4 = ig[:, :, None, :]
    crowd4 = crowd[:, None, None, :]
    thr4 = thr[None, None, :, None]
    hit = np.empty((rows.shape[0], a, t), dtype=bool)
    hit_ig = np.empty((rows.shape[0], a, t), dtype=bool)
    off = 0
    for n in n_at_rank.tolist():
        vv = rows[off : off + n][:, None, None, :]  # (n, 1, 1, Gp)
        # candidates: overlap >= threshold and not yet matched unless a crowd
        cand = (vv >= thr4) & (~matched[:n] | crowd4[:n])
        nonig = cand & ~ig4[:n]
        has = nonig.any(axis=-1)
        # pycocotools stops at the first ignored gt once a non-ignored match exists; otherwise it
        # goes on into the ignored ones with the threshold unchanged
        use = np.where(has[..., None], nonig, cand)
        found = use.any(axis=-1)  # (n, A, T)
        # ">= running best" keeps the LAST maximum in visiting order
        score = np.where(use, vv, -np.inf)
        m = (gp - 1) - np.argmax(score[..., ::-1], axis=-1)
        m = np.where(found, m, 0)
        jj, aa, tt = np.nonzero(found)
        matched[jj, aa, tt, m[jj, aa, tt]] = True
        hit_ig[off : off + n] = found & np.take_along_axis(ig[:n], m, axis=2)
        hit[off : off + n] = found & nonzero_id[:n][np.arange(n)[:, None, None], m]
        off += n
    return hit, hit_ig


def match_shard(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Overlaps and greedy matching for a contiguous range of groups; a Dask/executor task.

    Args:
        payload: ``{"iou_type", "thr" (T,), "sigmas", "num_groups", "dt_grp" (D,), "dt_geom",
            "dt_out" (A, D), "gt_grp" (G,), "gt_geom", "gt_box", "gt_area" (G,), "gt_ig" (A, G),
            "gt_crowd" (G,), "gt_nonzero_id" (G,)}`` with group numbers starting at 0.

    Returns:
        ``{"n": D, "tp", "fp"}``: ``(A·T, ceil(D/8)) uint8`` packed bits (``np.packbits`` along
        results), row ``a·T + t``: true / false positive, both false where the result is ignored.
    """
    iou_type = payload["iou_type"]
    thr = np.minimum(np.asarray(payload["thr"], dtype=np.float64), 1 - 1e-10)
    d_grp, g_grp = payload["dt_grp"], payload["gt_grp"]
    dt_out, gt_ig = payload["dt_out"], payload["gt_ig"]
    crowd, nz = payload["gt_crowd"], payload["gt_nonzero_id"]
    ng = int(payload["num_groups"])
    n_a, n_t, nd = gt_ig.shape[0], thr.size, d_grp.size
    d_cnt = np.bincount(d_grp, minlength=ng)
    g_cnt = np.bincount(g_grp, minlength=ng)
    d_start = np.cumsum(d_cnt) - d_cnt
    g_start = np.cumsum(g_cnt) - g_cnt

    if not payload.get("match", True):
        g_cnt = np.zeros_like(g_cnt)  # no overlaps at all: every result stays unmatched
    pd, pg, pos = _pairs(d_grp, g_start, g_cnt)
    if iou_type == "bbox":
        v = _box_iou_pairs(payload["dt_geom"][pd], payload["gt_geom"][pg], crowd[pg])
    elif iou_type == "keypoints":
        v = _oks_pairs(
            payload["dt_geom"][pd],
            payload["gt_geom"][pg],
            payload["gt_box"][pg],
            payload["gt_area"][pg],
            payload["sigmas"],
        )
    else:
        # maskUtils.iou per group, as pycocotools calls it; pairs are result-major like its matrix
        v = np.zeros(pd.size)
        drle, grle = payload["dt_geom"], payload["gt_geom"]
        crowd_u8 = crowd.astype(np.uint8)
        pair_start = np.cumsum(g_cnt[d_grp]) - g_cnt[d_grp]
        for g in np.flatnonzero((d_cnt > 0) & (g_cnt > 0)).tolist():
            d0, g0 = int(d_start[g]), int(g_start[g])
            d1, g1 = d0 + int(d_cnt[g]), g0 + int(g_cnt[g])
            block = np.asarray(mask_utils.iou(drle[d0:d1], grle[g0:g1], crowd_u8[g0:g1]), dtype=np.float64)
            p0 = int(pair_start[d0])
            v[p0 : p0 + block.size] = block.reshape(-1)

    # per result and (area, threshold): matched to a gt with a non-zero id / to an ignored gt;
    # results in groups without ground truth stay unmatched
    hit = np.zeros((nd, n_a, n_t), dtype=bool)
    hit_ig = np.zeros((nd, n_a, n_t), dtype=bool)
    both = np.flatnonzero((d_cnt > 0) & (g_cnt > 0))
    if both.size and payload.get("match", True):
        # pad each group's ground truths to a power of two: few buckets, little padding
        gp_of = 1 << np.ceil(np.log2(g_cnt[both])).astype(np.int64)
        det_bucket = np.full(nd, -1, dtype=np.int64)
        det_row = np.full(nd, -1, dtype=np.int64)
        for gp in np.unique(gp_of).tolist():
            grp = both[gp_of == gp]
            grp = grp[np.argsort(-d_cnt[grp], kind="stable")]
            dj = d_cnt[grp]
            n_at_rank = np.searchsorted(-dj, -np.arange(int(dj[0])), side="left")  # groups with > r results
            off = np.r_[0, np.cumsum(n_at_rank)]
            jrep = np.repeat(np.arange(grp.size), dj)
            r = np.arange(jrep.size) - np.repeat(np.cumsum(dj) - dj, dj)
            det = d_start[grp][jrep] + r
            det_bucket[det] = gp
            det_row[det] = off[r] + jrep
            sel = np.flatnonzero(det_bucket[pd] == gp)
            rows = np.full((jrep.size, gp), -np.inf)
            rows[det_row[pd[sel]], pos[sel]] = v[sel]
            gpos = np.arange(gp)
            valid = gpos[None, :] < g_cnt[grp][:, None]
            gidx = np.where(valid, g_start[grp][:, None] + gpos[None, :], 0)
            ig_b = np.transpose(gt_ig[:, gidx], (1, 0, 2)) & valid[:, None, :]
            h, hi = _match_bucket(rows, n_at_rank, ig_b, crowd[gidx] & valid, nz[gidx] & valid, thr)
            inv = det_row[det]
            hit[det] = h[inv]
            hit_ig[det] = hi[inv]
            del rows, h, hi

    # evaluateImg: dtIgnore = ignored match, or unmatched (dtMatches == 0) outside the area range
    dt_ig = hit_ig | (~hit & dt_out.T[:, :, None])
    tp = (hit & ~dt_ig).reshape(nd, n_a * n_t).T
    fp = (~hit & ~dt_ig).reshape(nd, n_a * n_t).T
    return {"n": nd, "tp": np.packbits(tp, axis=1), "fp": np.packbits(fp, axis=1)}


# -- accumulation ------------------------------------------------------------------------------------


def accumulate_fast(
    t: FastTables,
    tp: np.ndarray,
    fp: np.ndarray,
    p: Any,
) -> dict[str, np.ndarray]:
    """``COCOeval.accumulate()`` on matched results.

    Args:
        t: The tables.
        tp: ``(A·T, D) bool`` true positives (row ``a·T + t``), results in table order.
        fp: ``(A·T, D) bool`` false positives.
        p: The parameters.

    Returns:
        ``{"precision": (T, R, K, A, M), "recall": (T, K, A, M), "scores": (T, R, K, A, M)}`` float64,
        -1 where a category has no non-ignored ground truth.
    """
    n_t, n_r = len(p.iouThrs), len(p.recThrs)
    n_k, n_a, n_m = t.num_cats, len(p.areaRng), len(p.maxDets)
    rec_thrs = np.asarray(p.recThrs)
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    scores = -np.ones((n_t, n_r, n_k, n_a, n_m))
    # pycocotools concatenates per image (imgIds order), each in its score order, then sorts by
    # score with a stable sort: ties → image, then rank
    order = np.lexsort((t.dt_rank, t.dt_img, -t.dt_score, t.dt_cat))
    cat = t.dt_cat[order]
    bounds = np.searchsorted(cat, np.arange(n_k + 1))
    rank = t.dt_rank[order]
    score = t.dt_score[order]
    tp_s = tp[:, order]
    fp_s = fp[:, order]
    max_last = int(p.maxDets[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(n_k):
            npig = np.repeat(t.npig[k], n_t)  # (A·T,)
            live = np.flatnonzero(npig > 0)
            if live.size == 0:
                continue
            s0, s1 = int(bounds[k]), int(bounds[k + 1])
            for mi, max_det in enumerate(p.maxDets):
                if int(max_det) >= max_last:
                    sel: slice | np.ndarray = slice(s0, s1)
                else:
                    sel = s0 + np.flatnonzero(rank[s0:s1] < max_det)
                # integer counts (exact, as pycocotools' cumsum(...).astype(float)); an int32 cumsum
                # of bools is ~10x faster than a float64 one
                tpc = np.cumsum(tp_s[:, sel], axis=1, dtype=np.int32).astype(np.float64)
                fpc = np.cumsum(fp_s[:, sel], axis=1, dtype=np.int32).astype(np.float64)
                sc = score[sel]
                nd = sc.size
                rc = tpc / npig[:, None].astype(np.float64)
                pr = tpc / (fpc + tpc + _EPS)
                # for i in range(nd-1, 0, -1): pr[i-1] = max(pr[i-1], pr[i])
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for c in live.tolist():
                    a, ti = divmod(c, n_t)
                    recall[ti, k, a, mi] = rc[c, -1] if nd else 0
                    inds = np.searchsorted(rc[c], rec_thrs, side="left")
                    # pycocotools fills q[ri] = pr[inds[ri]] until the first index past the end
                    bad = np.flatnonzero(inds >= nd)
                    cut = int(bad[0]) if bad.size else n_r
                    q = np.zeros(n_r)
                    ss = np.zeros(n_r)
                    q[:cut] = pr[c, inds[:cut]]
                    ss[:cut] = sc[inds[:cut]]
                    precision[ti, :, k, a, mi] = q
                    scores[ti, :, k, a, mi] = ss
    return {"precision": precision, "recall": recall, "scores": scores}


# -- driver ------------------------------------------------------------------------------------------


def _shard_payloads(t: FastTables, p: Any, shards: int) -> list[dict[str, Any]]:
    """Cuts the tables into contiguous image ranges (whole groups) for :func:`match_shard`."""
    n_img = max(len(p.imgIds), 1)
    n = max(1, min(int(shards), n_img))
    img_bounds = np.linspace(0, n_img, n + 1).round().astype(np.int64)
    grp_bounds = np.searchsorted(t.group_img, img_bounds)
    d_bounds = np.searchsorted(t.dt_grp, grp_bounds)
    g_bounds = np.searchsorted(t.gt_grp, grp_bounds)
    sigmas = np.asarray(getattr(p, "kpt_oks_sigmas", np.zeros(0)))
    out = []
    for s in range(n):
        gr0, gr1 = int(grp_bounds[s]), int(grp_bounds[s + 1])
        d0, d1 = int(d_bounds[s]), int(d_bounds[s + 1])
        g0, g1 = int(g_bounds[s]), int(g_bounds[s + 1])
        if d1 == d0:
            continue  # nothing to match: the driver fills in empty results
        out.append(
            {
                "range": (d0, d1),
                "iou_type": t.iou_type,
                # computeOks reads _gts[img, -1] when useCats=0: no category -1, no overlaps, no match
                "match": not (t.iou_type == "keypoints" and not p.useCats),
                "thr": np.asarray(p.iouThrs, dtype=np.float64),
                "sigmas": sigmas,
                "num_groups": gr1 - gr0,
                "dt_grp": t.dt_grp[d0:d1] - gr0,
                "dt_geom": t.dt_geom[d0:d1],
                "dt_out": t.dt_out[:, d0:d1],
                "gt_grp": t.gt_grp[g0:g1] - gr0,
                "gt_geom": t.gt_geom[g0:g1],
                "gt_box": None if t.gt_box is None else t.gt_box[g0:g1],
                "gt_area": t.gt_area[g0:g1],
                "gt_ig": t.gt_ig[:, g0:g1],
                "gt_crowd": t.gt_crowd[g0:g1],
                "gt_nonzero_id": t.gt_nonzero_id[g0:g1],
            }
        )
    return out


def evaluate_fast(
    gt_dict: Mapping[str, Any],
    dt_list: Sequence[Mapping[str, Any]],
    kind: str,
    p: Any,
    shards: int = 1,
    run: Callable[[Callable[[Any], Any], list[Any]], list[Any]] | None = None,
) -> dict[str, np.ndarray]:
    """``evaluate()`` + ``accumulate()`` of pycocotools, bit for bit, without ``evalImgs``.

    Args:
        gt_dict: COCO ground truth.
        dt_list: Results.
        kind: The ``loadRes`` branch of the results.
        p: Normalised pycocotools ``Params`` (see :func:`build_tables`).
        shards: Number of image shards for the matching.
        run: Runs ``fn`` over payloads (possibly remotely) and returns the results in order; None
            runs them here.

    Returns:
        ``{"precision", "recall", "scores"}`` as in ``COCOeval.eval``.
    """
    t = build_tables(gt_dict, dt_list, kind, p)
    payloads = _shard_payloads(t, p, shards)
    ranges = [pl.pop("range") for pl in payloads]
    results = run(match_shard, payloads) if run is not None else [match_shard(pl) for pl in payloads]
    del payloads
    nd = t.dt_grp.size
    c = len(p.areaRng) * len(p.iouThrs)
    tp = np.zeros((c, nd), dtype=bool)
    fp = np.zeros((c, nd), dtype=bool)
    for (d0, d1), res in zip(ranges, results, strict=True):
        n = int(res["n"])
        tp[:, d0:d1] = np.unpackbits(res["tp"], axis=1, count=n).astype(bool)
        fp[:, d0:d1] = np.unpackbits(res["fp"], axis=1, count=n).astype(bool)
    return accumulate_fast(t, tp, fp, p)


def fast_supported(p: Any) -> bool:
    """Whether the fast path reproduces pycocotools for these parameters.

    With ``useCats=0`` pycocotools concatenates ground truths per entry of ``catIds`` without
    de-duplicating it, so a repeated category id counts its annotations twice; and its keypoint OKS
    reads category -1, which only matters if such a category exists. The fast path does not model
    these and the caller falls back to pycocotools.
    """
    if not p.useCats and len(set(p.catIds)) != len(p.catIds):
        return False
    if not p.useCats and p.iouType == "keypoints" and -1 in set(p.catIds):
        return False  # computeOks would then pair category -1 with the whole image's ground truth
    return not any(math.isnan(float(v)) for v in np.asarray(p.iouThrs).reshape(-1))
