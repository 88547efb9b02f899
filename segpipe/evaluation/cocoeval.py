"""COCO detection, segmentation and keypoint AP, sharded over images, identical to pycocotools.

Two backends compute pycocotools' ``COCOeval`` numbers bit for bit (stats, ``precision``,
``recall``):

``fast`` (default)
    :mod:`segpipe.evaluation.cocofast`: results and ground truths become flat arrays; overlaps are
    computed per (result, ground truth of the same image and category) pair with pycocotools' own
    formulas (``maskUtils.iou`` for masks); the greedy matching runs for all (area range × IoU
    threshold) combinations and all images at once, one loop step per score rank; ``accumulate()``
    is vectorised over area ranges and thresholds. No ``evalImgs`` and no ``COCO`` objects are
    built. About 10× less CPU than pycocotools and a third of its memory (bench/RESULTS_evaluation.md).
    The matching can be sharded over images on an executor (compact arrays travel).

``pycocotools``
    The reference: pycocotools' ``COCOeval.evaluate()`` per shard, ``accumulate()`` once:

    1. the driver splits the sorted image ids into contiguous shards and, for each shard, picks that
       shard's images, ground-truth annotations and results (keeping their list order, which decides
       score ties);
    2. each shard builds its own ``COCO`` ground truth and result objects and runs
       ``COCOeval.evaluate()`` with the global parameters restricted to its images;
    3. the driver interleaves the shards' ``evalImgs`` back into pycocotools' global order —
       category-major, then area range, then image id — and runs ``accumulate()`` and ``summarize()``
       on one ``COCOeval`` with the same parameters.

Both give results the ids and derived fields that ``COCO.loadRes`` would give them over the whole list
(``id = index + 1``; box area ``w·h``; mask area; keypoint extent), decided once by the first result
exactly as ``loadRes`` does; ``summarize()`` is pycocotools' own in both.

Shards run in-process one after another, or on any executor with ``submit``: a
``dask.distributed.Client`` (``gather`` is used) or a ``concurrent.futures`` executor.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import FormatError, InputError
from segpipe.evaluation import cocofast

__all__ = [
    "AP_NAMES_DET",
    "AP_NAMES_KPT",
    "CocoResult",
    "evaluate_coco",
    "evaluate_coco_files",
    "make_params",
    "per_category_ap",
]

IOU_TYPES = ("segm", "bbox", "keypoints")
#: ``evaluate_coco`` backends: segpipe's numpy implementation, or pycocotools' own code.
BACKENDS = ("fast", "pycocotools")
#: Names of pycocotools' 12 detection stats (bbox, segm), in ``COCOeval.stats`` order.
AP_NAMES_DET = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: Names of pycocotools' 10 keypoint stats, in ``COCOeval.stats`` order.
AP_NAMES_KPT = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass
class CocoResult:
    """The outcome of one iou type.

    Attributes:
        iou_type: ``bbox``, ``segm`` or ``keypoints``.
        stats: pycocotools ``COCOeval.stats``: ``(12,)`` or ``(10,)`` float64, -1 where undefined.
        named: The same numbers under :data:`AP_NAMES_DET` / :data:`AP_NAMES_KPT`.
        per_class: One row per category: ``{"id", "name", "ap", "ap50", "ap75"}`` (detectron2's
            per-category AP: mean of ``precision[:, :, k, area=all, maxDets=last]`` over entries > -1;
            NaN when the category has no ground truth).
        precision: ``(T, R, K, A, M) float64`` from ``COCOeval.eval``.
        recall: ``(T, K, A, M) float64``.
        params: The parameters used (a pycocotools ``Params``).
        num_images: Number of evaluated images.
        num_results: Number of results (detections) given.
    """

    iou_type: str
    stats: np.ndarray
    named: dict[str, float]
    per_class: list[dict[str, Any]]
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    params: Any = field(repr=False)
    num_images: int = 0
    num_results: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``stats`` (pycocotools order), the named stats and ``per_class``."""
        out: dict[str, Any] = {"stats": [float(v) for v in self.stats]}
        out.update({k: float(v) for k, v in self.named.items()})
        out["per_class"] = self.per_class
        out["num_images"] = self.num_images
        out["num_results"] = self.num_results
        return out


def _quiet() -> contextlib.AbstractContextManager[Any]:
    # pycocotools prints progress on stdout; a library must not.
    return contextlib.redirect_stdout(io.StringIO())


def make_params(
    iou_type: str,
    *,
    img_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
    iou_thrs: Sequence[float] | None = None,
    rec_thrs: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    area_rng: Sequence[Sequence[float]] | None = None,
    area_rng_lbl: Sequence[str] | None = None,
    use_cats: bool = True,
    kpt_oks_sigmas: Sequence[float] | None = None,
) -> Any:
    """Builds pycocotools ``Params`` with its defaults and the overrides given.

    Args:
        iou_type: ``bbox``, ``segm`` or ``keypoints``.
        img_ids: Images to evaluate (default: every ground-truth image).
        cat_ids: Categories to evaluate (default: every ground-truth category).
        iou_thrs: IoU/OKS thresholds (default ``.50:.05:.95``).
        rec_thrs: Recall thresholds (default ``0:.01:1``).
        max_dets: Detections per image (default ``[1, 10, 100]``, keypoints ``[20]``). ``summarize``
            reads ``max_dets[0..2]`` for bbox/segm, so give three there.
        area_rng: ``[[lo, hi], ...]`` area ranges (default all/small/medium/large).
        area_rng_lbl: Labels of ``area_rng``; ``summarize`` looks for ``all``, ``small``, ``medium``,
            ``large`` (a missing label gives -1 for that stat, as in pycocotools).
        use_cats: False to ignore categories (proposal recall).
        kpt_oks_sigmas: ``(K,)`` per-keypoint OKS sigmas (default COCO's 17).

    Raises:
        InputError: an unknown iou type or inconsistent area ranges.
    """
    from pycocotools.cocoeval import Params

    if iou_type not in IOU_TYPES:
        raise InputError(f"unknown iou type {iou_type!r}; expected one of {', '.join(IOU_TYPES)}")
    p = Params(iouType=iou_type)
    if img_ids is not None:
        p.imgIds = [int(i) for i in img_ids]
    if cat_ids is not None:
        p.catIds = [int(c) for c in cat_ids]
    if iou_thrs is not None:
        p.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    if rec_thrs is not None:
        p.recThrs = np.asarray(rec_thrs, dtype=np.float64)
    if max_dets is not None:
        p.maxDets = [int(m) for m in max_dets]
    if area_rng is not None:
        p.areaRng = [[float(a), float(b)] for a, b in area_rng]
        if area_rng_lbl is None:
            if len(p.areaRng) != len(p.areaRngLbl):
                raise InputError("custom area ranges need area_rng_lbl (one label per range)")
    if area_rng_lbl is not None:
        p.areaRngLbl = [str(s) for s in area_rng_lbl]
        if len(p.areaRngLbl) != len(p.areaRng):
            raise InputError(f"{len(p.areaRngLbl)} area labels for {len(p.areaRng)} area ranges")
    p.useCats = 1 if use_cats else 0
    if kpt_oks_sigmas is not None:
        p.kpt_oks_sigmas = np.asarray(kpt_oks_sigmas, dtype=np.float64)
    return p


# -- input checks ----------------------------------------------------------------------------------


def _check_gt(gt: Mapping[str, Any], iou_type: str, source: str | Path | None) -> None:
    if not isinstance(gt, Mapping):
        raise FormatError("ground truth must be a COCO dict", path=source)
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise FormatError(f"ground truth has no {key!r} list", path=source, where=key)
    need = {"id", "image_id", "category_id", "iscrowd", "area"}
    need |= {"bbox": {"bbox"}, "segm": {"segmentation"}, "keypoints": {"keypoints", "num_keypoints", "bbox"}}[iou_type]
    seen: set[Any] = set()
    for i, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, Mapping):
            raise FormatError("annotation is not an object", path=source, where=f"annotations[{i}]")
        missing = need - ann.keys()
        if missing:
            raise FormatError(
                f"annotation lacks {', '.join(sorted(missing))} needed for {iou_type} evaluation",
                path=source,
                where=f"annotations[{i}]",
            )
        if iou_type == "segm":
            _check_gt_segmentation(ann["segmentation"], source, f"annotations[{i}].segmentation")
        if ann["id"] in seen:
            # pycocotools indexes annotations by id: a repeated id silently evaluates the wrong one.
            raise FormatError(f"annotation id {ann['id']} is repeated", path=source, where=f"annotations[{i}]")
        seen.add(ann["id"])
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, Mapping) or "id" not in img:
            raise FormatError("image has no id", path=source, where=f"images[{i}]")


def _check_gt_segmentation(segm: Any, source: str | Path | None, where: str) -> None:
    """A ground-truth mask pycocotools can rasterise: polygons of >= 3 points, or an RLE with size and counts.

    Detection datasets often carry ``"segmentation": []``; pycocotools then fails with an IndexError
    deep in ``frPyObjects`` (and a 4-number polygon is read as a box). Such an object has no mask to
    compare in segm AP, which is said here in one line instead.
    """
    if isinstance(segm, list):
        if not segm:
            raise FormatError("segmentation is empty: the object has no mask to evaluate as segm "
                              "(evaluate boxes with --iou-types bbox)", path=source, where=where)
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                n = len(poly) if isinstance(poly, list) else type(poly).__name__
                raise FormatError(f"polygon needs an even number (>= 6) of coordinates, got {n}", path=source,
                                  where=f"{where}[{k}]")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
                raise FormatError("polygon coordinates must be finite numbers", path=source, where=f"{where}[{k}]")
    elif isinstance(segm, Mapping):
        if "counts" not in segm or "size" not in segm:
            raise FormatError("RLE segmentation needs 'size' and 'counts'", path=source, where=where)
    else:
        raise FormatError(f"segmentation must be polygons or an RLE, got {type(segm).__name__}", path=source,
                          where=where)


def _load_res_kind(dts: Sequence[Mapping[str, Any]], source: str | Path | None) -> str:
    """The branch ``COCO.loadRes`` takes, decided by the first result exactly as it does."""
    if not dts:
        return "empty"
    a0 = dts[0]
    if not isinstance(a0, Mapping):
        raise FormatError("result is not an object", path=source, where="[0]")
    if "caption" in a0:
        raise InputError("caption results cannot be evaluated as bbox/segm/keypoints", path=source)
    if "bbox" in a0 and not a0["bbox"] == []:
        return "bbox"
    if "segmentation" in a0:
        return "segmentation"
    if "keypoints" in a0:
        return "keypoints"
    raise FormatError("result has none of bbox, segmentation, keypoints", path=source, where="[0]")


def _check_results(
    dts: Sequence[Mapping[str, Any]], kind: str, gt_img_ids: set[Any], source: str | Path | None
) -> None:
    need = {"image_id", "category_id", "score"}
    need |= {"bbox": {"bbox"}, "segmentation": {"segmentation"}, "keypoints": {"keypoints"}}.get(kind, set())
    # A quick scan over plain dicts first (700k results: 0.1 s instead of 1 s); the detailed checks
    # run from the first result it doubts, to name the problem.
    start = next(
        (
            i
            for i, d in enumerate(dts)
            if type(d) is not dict or not d.keys() >= need or d["image_id"] not in gt_img_ids
        ),
        len(dts),
    )
    for i in range(start, len(dts)):
        d = dts[i]
        if not isinstance(d, Mapping):
            raise FormatError("result is not an object", path=source, where=f"[{i}]")
        missing = need - d.keys()
        if missing:
            raise FormatError(
                f"result lacks {', '.join(sorted(missing))} (the first result sets the result type: {kind})",
                path=source,
                where=f"[{i}]",
            )
        if d["image_id"] not in gt_img_ids:
            raise InputError(
                f"result refers to image_id {d['image_id']!r}, which is not in the ground truth",
                path=source,
                where=f"[{i}]",
                hint="results must correspond to the ground-truth images (pycocotools loadRes rule)",
            )


def _apply_load_res(anns: list[dict[str, Any]], kind: str) -> None:
    """In-place transformation of ``COCO.loadRes`` (pycocotools 2.0.x) for one branch."""
    from pycocotools import mask as mask_utils

    if kind == "bbox":
        for ann in anns:
            bb = ann["bbox"]
            x1, x2, y1, y2 = [bb[0], bb[0] + bb[2], bb[1], bb[1] + bb[3]]
            if "segmentation" not in ann:
                ann["segmentation"] = [[x1, y1, x1, y2, x2, y2, x2, y1]]
            ann["area"] = bb[2] * bb[3]
            ann["iscrowd"] = 0
    elif kind == "segmentation":
        for ann in anns:
            ann["area"] = mask_utils.area(ann["segmentation"])
            if "bbox" not in ann:
                ann["bbox"] = mask_utils.toBbox(ann["segmentation"])
            ann["iscrowd"] = 0
    elif kind == "keypoints":
        for ann in anns:
            s = ann["keypoints"]
            x = s[0::3]
            y = s[1::3]
            x0, x1, y0, y1 = np.min(x), np.max(x), np.min(y), np.max(y)
            ann["area"] = (x1 - x0) * (y1 - y0)
            ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]


# -- shards ------------------------------------------------------------------------------------------

_PARAM_FIELDS = (
    "iouType",
    "imgIds",
    "catIds",
    "iouThrs",
    "recThrs",
    "maxDets",
    "areaRng",
    "areaRngLbl",
    "useCats",
    "kpt_oks_sigmas",
)


def _params_state(p: Any) -> dict[str, Any]:
    return {k: copy.deepcopy(getattr(p, k)) for k in _PARAM_FIELDS if hasattr(p, k)}


def _coco_from(dataset: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def evaluate_shard(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Runs ``COCOeval.evaluate()`` on one shard of images; a Dask/executor task.

    Args:
        payload: ``{"images", "categories", "gt_annotations", "results", "result_ids", "result_kind",
            "params"}`` as built by :func:`evaluate_coco`: the shard's image dicts, all categories,
            the shard's ground-truth annotations and results (list order kept) with the results'
            global ids, the ``loadRes`` branch, and the global parameters with ``imgIds`` = this
            shard's sorted image ids.

    Returns:
        The shard's ``evalImgs`` (``K × A × I_shard`` entries, category-major, then area range, then
        image) packed by :func:`pack_eval_imgs`.
    """
    from pycocotools.cocoeval import COCOeval

    images = list(payload["images"])
    cats = list(payload["categories"])
    # Shallow copies: pycocotools writes 'ignore', '_ignore' and RLE 'segmentation' into these dicts.
    gt = _coco_from({"images": images, "categories": cats, "annotations": [dict(a) for a in payload["gt_annotations"]]})
    # loadRes numbers results 1..N over the whole list: the driver sends each result's global id.
    res_anns = [{**a, "id": i} for a, i in zip(payload["results"], payload["result_ids"], strict=True)]
    _apply_load_res(res_anns, payload["result_kind"])
    dt = _coco_from({"images": images, "categories": cats, "annotations": res_anns})
    state = payload["params"]
    ev = COCOeval(gt, dt, state["iouType"])
    for k, v in state.items():
        setattr(ev.params, k, copy.deepcopy(v))
    with _quiet():
        ev.evaluate()
    return pack_eval_imgs(ev.evalImgs, len(ev.params.iouThrs))


def pack_eval_imgs(eval_imgs: Sequence[dict[str, Any] | None], num_thrs: int) -> dict[str, Any]:
    """Packs ``evalImgs`` into a few flat arrays for transport between processes.

    Pickling ``evalImgs`` as pycocotools builds them (one dict and four small arrays per image,
    category and area range) cost more than evaluating them: 11 s to pickle and 7.5 s to unpickle
    190k entries, against 12 s of ``evaluate()``. Concatenated arrays with offsets pickle in
    milliseconds; :func:`unpack_eval_imgs` restores dicts whose arrays are views.

    Args:
        eval_imgs: A shard's ``evalImgs``.
        num_thrs: ``T``, the number of IoU thresholds.

    Returns:
        ``{"n", "index", "image_id", "category_id", "max_det", "n_dt", "n_gt", "dt_ids", "gt_ids",
        "dt_scores", "dt_matches" (T, ΣD), "gt_matches" (T, ΣG), "dt_ignore" (T, ΣD), "gt_ignore"}``.
    """
    index = [j for j, e in enumerate(eval_imgs) if e is not None]
    entries: list[dict[str, Any]] = [e for e in eval_imgs if e is not None]
    if not entries:
        empty = np.zeros((num_thrs, 0))
        return {
            "n": len(eval_imgs),
            "index": [],
            "image_id": [],
            "category_id": [],
            "max_det": [],
            "n_dt": [],
            "n_gt": [],
            "dt_ids": np.zeros(0),
            "gt_ids": np.zeros(0),
            "dt_scores": np.zeros(0),
            "dt_matches": empty,
            "gt_matches": empty,
            "dt_ignore": empty.astype(bool),
            "gt_ignore": np.zeros(0),
        }
    return {
        "n": len(eval_imgs),
        "index": index,
        "image_id": [e["image_id"] for e in entries],
        "category_id": [e["category_id"] for e in entries],
        "max_det": [e["maxDet"] for e in entries],
        "n_dt": [len(e["dtIds"]) for e in entries],
        "n_gt": [len(e["gtIds"]) for e in entries],
        "dt_ids": np.array([i for e in entries for i in e["dtIds"]]),
        "gt_ids": np.array([i for e in entries for i in e["gtIds"]]),
        "dt_scores": np.array([v for e in entries for v in e["dtScores"]], dtype=np.float64),
        "dt_matches": np.concatenate([e["dtMatches"] for e in entries], axis=1),
        "gt_matches": np.concatenate([e["gtMatches"] for e in entries], axis=1),
        "dt_ignore": np.concatenate([e["dtIgnore"] for e in entries], axis=1),
        "gt_ignore": np.concatenate([e["gtIgnore"] for e in entries]),
    }


def unpack_eval_imgs(packed: Mapping[str, Any], area_rngs: Sequence[Any], n_images: int) -> list[Any]:
    """Restores a shard's ``evalImgs`` list from :func:`pack_eval_imgs` (arrays are views).

    ``aRng`` is recovered from the entry's position (category-major, then area range, then image).
    ``dtIds``, ``gtIds`` and ``dtScores`` come back as arrays rather than lists; ``accumulate()``
    only slices and concatenates them, so the numbers are unchanged.
    """
    out: list[Any] = [None] * int(packed["n"])
    n_area = len(area_rngs)
    off_d = np.concatenate([[0], np.cumsum(packed["n_dt"], dtype=np.int64)]).tolist()
    off_g = np.concatenate([[0], np.cumsum(packed["n_gt"], dtype=np.int64)]).tolist()
    dt_ids, gt_ids, scores = packed["dt_ids"], packed["gt_ids"], packed["dt_scores"]
    dtm, gtm, dti, gti = packed["dt_matches"], packed["gt_matches"], packed["dt_ignore"], packed["gt_ignore"]
    for t, j in enumerate(packed["index"]):
        d0, d1, g0, g1 = off_d[t], off_d[t + 1], off_g[t], off_g[t + 1]
        out[j] = {
            "image_id": packed["image_id"][t],
            "category_id": packed["category_id"][t],
            "aRng": area_rngs[(j // max(n_images, 1)) % n_area],
            "maxDet": packed["max_det"][t],
            "dtIds": dt_ids[d0:d1],
            "gtIds": gt_ids[g0:g1],
            "dtMatches": dtm[:, d0:d1],
            "gtMatches": gtm[:, g0:g1],
            "dtScores": scores[d0:d1],
            "gtIgnore": gti[g0:g1],
            "dtIgnore": dti[:, d0:d1],
        }
    return out


def _split(ids: list[Any], n: int) -> list[list[Any]]:
    n = max(1, min(int(n), len(ids)))
    bounds = np.linspace(0, len(ids), n + 1).round().astype(int)
    return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _run_tasks(fn: Any, payloads: list[Any], client: Any | None) -> list[Any]:
    if client is None:
        return [fn(p) for p in payloads]
    if not hasattr(client, "submit"):
        raise InputError(f"client {type(client).__name__} has no submit(); pass a dask Client or an executor")
    kwargs: dict[str, Any] = {}
    if type(client).__module__.startswith("distributed"):
        # Payloads are large and unique: skip tokenising them for a deterministic key.
        kwargs["pure"] = False
    futures = [client.submit(fn, p, **kwargs) for p in payloads]
    if hasattr(client, "gather"):
        return list(client.gather(futures))
    return [f.result() for f in futures]


def _merge_eval_imgs(shard_evals: list[list[Any]], shard_sizes: list[int], k: int, a: int) -> list[Any]:
    """Interleaves shard ``evalImgs`` into pycocotools' global (category, area, image) order."""
    merged: list[Any] = []
    for ki in range(k):
        for ai in range(a):
            for ev, n in zip(shard_evals, shard_sizes, strict=True):
                start = (ki * a + ai) * n
                merged.extend(ev[start : start + n])
    return merged


def per_category_ap(ev: Any, names: Mapping[int, str]) -> list[dict[str, Any]]:
    """detectron2's per-category AP from an accumulated ``COCOeval``.

    Returns:
        ``[{"id", "name", "ap", "ap50", "ap75"}]`` in ``params.catIds`` order; fractions, NaN when the
        category has no ground truth in the evaluated images.
    """
    precision = ev.eval["precision"]  # (T, R, K, A, M)
    p = ev.params
    thrs = np.asarray(p.iouThrs)
    cat_ids = p.catIds if p.useCats else [-1]
    rows = []
    for k, cid in enumerate(cat_ids):
        row: dict[str, Any] = {"id": int(cid), "name": names.get(int(cid), str(cid))}
        for key, sel in (
            ("ap", slice(None)),
            ("ap50", np.isclose(thrs, 0.5)),
            ("ap75", np.isclose(thrs, 0.75)),
        ):
            pr = precision[sel, :, k, 0, -1]
            pr = pr[pr > -1]
            row[key] = float(np.mean(pr)) if pr.size else math.nan
        rows.append(row)
    return rows


def _pycocotools_eval(
    gt_dict: Mapping[str, Any], dt_list: Sequence[Mapping[str, Any]], kind: str, p: Any, shards: int, client: Any
) -> Any:
    """The reference backend: pycocotools' ``evaluate()`` per image shard, one ``accumulate()``.

    Returns:
        A pycocotools ``COCOeval`` after ``accumulate()`` and ``summarize()``.
    """
    from pycocotools.cocoeval import COCOeval

    iou_type = p.iouType
    shard_ids = _split(list(p.imgIds), shards) if p.imgIds else [[]]
    where: dict[Any, int] = {}
    for s, ids in enumerate(shard_ids):
        for i in ids:
            where[i] = s
    images_by_shard: list[list[Any]] = [[] for _ in shard_ids]
    for img in gt_dict["images"]:
        s_idx = where.get(img["id"])
        if s_idx is not None:
            images_by_shard[s_idx].append(img)
    gts_by_shard: list[list[Any]] = [[] for _ in shard_ids]
    for ann in gt_dict["annotations"]:
        s_idx = where.get(ann["image_id"])
        if s_idx is not None:
            gts_by_shard[s_idx].append(ann)
    dts_by_shard: list[list[Any]] = [[] for _ in shard_ids]
    dt_ids_by_shard: list[list[int]] = [[] for _ in shard_ids]
    for n, d in enumerate(dt_list):
        s_idx = where.get(d["image_id"])
        if s_idx is not None:
            dts_by_shard[s_idx].append(d)  # not copied here: the shard copies what it changes
            dt_ids_by_shard[s_idx].append(n + 1)

    state = _params_state(p)
    payloads = []
    for s, ids in enumerate(shard_ids):
        st = dict(state)
        st["imgIds"] = list(ids)
        payloads.append(
            {
                "images": images_by_shard[s],
                "categories": gt_dict["categories"],
                "gt_annotations": gts_by_shard[s],
                "results": dts_by_shard[s],
                "result_ids": dt_ids_by_shard[s],
                "result_kind": kind,
                "params": st,
            }
        )
    packed = _run_tasks(evaluate_shard, payloads, client)
    shard_evals = [unpack_eval_imgs(pk, p.areaRng, len(ids)) for pk, ids in zip(packed, shard_ids, strict=True)]

    k = len(p.catIds) if p.useCats else 1
    merged = _merge_eval_imgs(shard_evals, [len(ids) for ids in shard_ids], k, len(p.areaRng))
    ev = COCOeval(iouType=iou_type)
    ev.params = p
    ev.evalImgs = merged
    ev._paramsEval = copy.deepcopy(p)
    with _quiet():
        ev.accumulate()
        ev.summarize()
    return ev


def _fast_eval(
    gt_dict: Mapping[str, Any], dt_list: Sequence[Mapping[str, Any]], kind: str, p: Any, shards: int, client: Any
) -> Any:
    """The fast backend (:func:`cocofast.evaluate_fast`) wrapped in a ``COCOeval`` for ``summarize()``.

    Returns:
        A pycocotools ``COCOeval`` whose ``eval`` holds ``precision``, ``recall`` and ``scores``.
    """
    from pycocotools.cocoeval import COCOeval

    res = cocofast.evaluate_fast(gt_dict, dt_list, kind, p, shards, lambda fn, pls: _run_tasks(fn, pls, client))
    # accumulate() rewrites catIds this way; CocoResult.params reads the same as the reference path
    p.catIds = p.catIds if p.useCats == 1 else [-1]
    ev = COCOeval(iouType=p.iouType)
    ev.params = p
    ev._paramsEval = p
    ev.eval = {
        "params": p,
        "counts": list(res["precision"].shape),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        **res,
    }
    with _quiet():
        ev.summarize()
    return ev


def evaluate_coco(
    gt_dict: Mapping[str, Any],
    dt_list: Sequence[Mapping[str, Any]],
    iou_types: Sequence[str] | str = ("bbox",),
    shards: int = 1,
    client: Any | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    gt_source: str | Path | None = None,
    dt_source: str | Path | None = None,
    backend: str = "fast",
    **param_overrides: Any,
) -> dict[str, CocoResult]:
    """Evaluates COCO results against ground truth, with pycocotools' exact numbers.

    Args:
        gt_dict: COCO ground truth (``images``, ``annotations``, ``categories``). Not modified.
        dt_list: COCO results (``image_id``, ``category_id``, ``score`` and ``bbox`` /
            ``segmentation`` (RLE) / ``keypoints``). Not modified.
        iou_types: Any of ``bbox``, ``segm``, ``keypoints``.
        shards: Number of image shards for ``COCOeval.evaluate()``.
        client: Optional executor with ``submit`` (a ``dask.distributed.Client`` or a
            ``concurrent.futures`` executor); None runs the shards here, one after another.
        params: Per iou type keyword arguments for :func:`make_params` (e.g.
            ``{"keypoints": {"kpt_oks_sigmas": [...]}}``).
        gt_source: The ground-truth file, for error messages.
        dt_source: The results file, for error messages.
        backend: ``fast`` (default): segpipe's numpy matching and accumulation
            (:mod:`segpipe.evaluation.cocofast`), bit-identical to pycocotools and several times
            faster; ``pycocotools``: pycocotools' own ``evaluate()`` per shard and ``accumulate()``,
            kept as the reference. Parameters the fast path does not model (``use_cats=False`` with a
            repeated category id) use pycocotools.
        **param_overrides: :func:`make_params` keywords applied to every iou type (``max_dets``,
            ``area_rng``, ``area_rng_lbl``, ``iou_thrs``, ``rec_thrs``, ``use_cats``, ``img_ids``,
            ``cat_ids``, ``kpt_oks_sigmas``).

    Returns:
        iou type → :class:`CocoResult`.

    Raises:
        FormatError: malformed ground truth or results (naming the file and the JSON path).
        InputError: results refer to images absent from the ground truth, or bad parameters.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    if not isinstance(dt_list, Sequence) or isinstance(dt_list, (str, bytes)):
        raise FormatError("results must be a list of objects", path=dt_source)
    kind = _load_res_kind(dt_list, dt_source)
    gt_img_ids = {img["id"] for img in gt_dict.get("images", []) if isinstance(img, Mapping)}
    _check_results(dt_list, kind, gt_img_ids, dt_source)
    names = (
        {int(c["id"]): str(c.get("name", c["id"])) for c in gt_dict["categories"]}
        if isinstance(gt_dict.get("categories"), list)
        else {}
    )

    out: dict[str, CocoResult] = {}
    for iou_type in iou_types:
        _check_gt(gt_dict, iou_type, gt_source)
        kw = {**param_overrides, **((params or {}).get(iou_type, {}))}
        p = make_params(iou_type, **kw)
        if "img_ids" not in kw:
            p.imgIds = sorted(gt_img_ids)
        if "cat_ids" not in kw:
            p.catIds = sorted({int(c["id"]) for c in gt_dict["categories"]})
        # The normalisation COCOeval.evaluate() applies before anything else.
        p.imgIds = list(np.unique(p.imgIds))
        if p.useCats:
            p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)

        if backend == "fast" and cocofast.fast_supported(p):
            ev = _fast_eval(gt_dict, dt_list, kind, p, shards, client)
        else:
            ev = _pycocotools_eval(gt_dict, dt_list, kind, p, shards, client)
        stats = np.asarray(ev.stats, dtype=np.float64)
        stat_names = AP_NAMES_KPT if iou_type == "keypoints" else AP_NAMES_DET
        out[iou_type] = CocoResult(
            iou_type=iou_type,
            stats=stats,
            named={n: float(v) for n, v in zip(stat_names, stats, strict=True)},
            per_class=per_category_ap(ev, names),
            precision=ev.eval["precision"],
            recall=ev.eval["recall"],
            params=p,
            num_images=len(p.imgIds),
            num_results=len(dt_list),
        )
    return out


def evaluate_coco_files(
    gt_path: str | Path,
    dt_path: str | Path,
    iou_types: Sequence[str] | str = ("bbox",),
    shards: int = 1,
    client: Any | None = None,
    **kwargs: Any,
) -> dict[str, CocoResult]:
    """Reads a COCO ground-truth file and a results file and calls :func:`evaluate_coco`.

    A results file may also be a COCO dict; its ``annotations`` are used. ``kwargs`` go to
    :func:`evaluate_coco` (``backend``, ``params`` and the parameter overrides).
    """
    from segpipe.storage.jsonio import read_json

    gt = read_json(gt_path)
    dt = read_json(dt_path)
    if isinstance(dt, Mapping) and isinstance(dt.get("annotations"), list):
        dt = dt["annotations"]
    if not isinstance(dt, list):
        raise FormatError("results must be a JSON list of objects", path=dt_path)
    return evaluate_coco(gt, dt, iou_types, shards, client, gt_source=gt_path, dt_source=dt_path, **kwargs)
