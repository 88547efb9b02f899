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
    The reference: pycocotools' ``COCOeval.evaluate()`` per shard, ``accumulate()`` once
    (:mod:`segpipe.evaluation.cocoref`).

Both give results the ids and derived fields that ``COCO.loadRes`` would give them over the whole list
(``id = index + 1``; box area ``w·h``; mask area; keypoint extent), decided once by the first result
exactly as ``loadRes`` does; ``summarize()`` is pycocotools' own in both.

Shards run as :mod:`segpipe.evaluation.shards` decides: through the caller's ``run`` (``segpipe
evaluate`` passes its driver's, on :mod:`segpipe.execution`), on an executor with ``submit``, or here
one after another.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval, Params

from segpipe.errors import FormatError, InputError
from segpipe.evaluation import cocofast
from segpipe.evaluation.cocoref import pycocotools_eval, quiet
from segpipe.evaluation.shards import Executor, ShardMap, shard_map
from segpipe.storage.jsonio import read_json

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
    _set_area_ranges(p, area_rng, area_rng_lbl)
    p.useCats = 1 if use_cats else 0
    if kpt_oks_sigmas is not None:
        p.kpt_oks_sigmas = np.asarray(kpt_oks_sigmas, dtype=np.float64)
    return p


def _set_area_ranges(p: Any, area_rng: Sequence[Sequence[float]] | None, area_rng_lbl: Sequence[str] | None) -> None:
    """Sets ``p.areaRng`` / ``p.areaRngLbl``; one label per range.

    Raises:
        InputError: custom ranges without labels (their number differs from the defaults'), or as many
            labels as ranges.
    """
    if area_rng is not None:
        p.areaRng = [[float(a), float(b)] for a, b in area_rng]
        if area_rng_lbl is None and len(p.areaRng) != len(p.areaRngLbl):
            raise InputError("custom area ranges need area_rng_lbl (one label per range)")
    if area_rng_lbl is not None:
        p.areaRngLbl = [str(s) for s in area_rng_lbl]
        if len(p.areaRngLbl) != len(p.areaRng):
            raise InputError(f"{len(p.areaRngLbl)} area labels for {len(p.areaRng)} area ranges")


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
        _check_gt_annotation(ann, need, iou_type, source, f"annotations[{i}]")
        if ann["id"] in seen:
            # pycocotools indexes annotations by id: a repeated id silently evaluates the wrong one.
            raise FormatError(f"annotation id {ann['id']} is repeated", path=source, where=f"annotations[{i}]")
        seen.add(ann["id"])
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, Mapping) or "id" not in img:
            raise FormatError("image has no id", path=source, where=f"images[{i}]")


def _check_gt_annotation(ann: Any, need: set[str], iou_type: str, source: str | Path | None, where: str) -> None:
    """One ground-truth annotation: an object with the keys ``iou_type`` needs (and a usable mask for segm)."""
    if not isinstance(ann, Mapping):
        raise FormatError("annotation is not an object", path=source, where=where)
    missing = need - ann.keys()
    if missing:
        raise FormatError(
            f"annotation lacks {', '.join(sorted(missing))} needed for {iou_type} evaluation", path=source, where=where
        )
    if iou_type == "segm":
        _check_gt_segmentation(ann["segmentation"], source, f"{where}.segmentation")


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


def _fast_eval(
    gt_dict: Mapping[str, Any], dt_list: Sequence[Mapping[str, Any]], kind: str, p: Any, shards: int, run: ShardMap
) -> Any:
    """The fast backend (:func:`cocofast.evaluate_fast`) wrapped in a ``COCOeval`` for ``summarize()``.

    Returns:
        A pycocotools ``COCOeval`` whose ``eval`` holds ``precision``, ``recall`` and ``scores``.
    """
    res = cocofast.evaluate_fast(gt_dict, dt_list, kind, p, shards, run)
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
    with quiet():
        ev.summarize()
    return ev


def _normalised_params(iou_type: str, kw: dict[str, Any], gt_dict: Mapping[str, Any], gt_img_ids: set[Any]) -> Any:
    """:func:`make_params` with ``kw`` (every ground-truth image and category by default), normalised.

    The normalisation is the one ``COCOeval.evaluate()`` applies before anything else: unique sorted
    ids, sorted ``maxDets``.
    """
    p = make_params(iou_type, **kw)
    if "img_ids" not in kw:
        p.imgIds = sorted(gt_img_ids)
    if "cat_ids" not in kw:
        p.catIds = sorted({int(c["id"]) for c in gt_dict["categories"]})
    p.imgIds = list(np.unique(p.imgIds))
    if p.useCats:
        p.catIds = list(np.unique(p.catIds))
    p.maxDets = sorted(p.maxDets)
    return p


def evaluate_coco(
    gt_dict: Mapping[str, Any],
    dt_list: Sequence[Mapping[str, Any]],
    iou_types: Sequence[str] | str = ("bbox",),
    shards: int = 1,
    client: Executor | None = None,
    *,
    run: ShardMap | None = None,
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
        run: Runs the shards instead of ``client`` (:class:`~segpipe.evaluation.shards.ShardMap`; the
            pipeline passes its driver's).
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
    runner = shard_map(client, run)

    out: dict[str, CocoResult] = {}
    for iou_type in iou_types:
        _check_gt(gt_dict, iou_type, gt_source)
        p = _normalised_params(iou_type, {**param_overrides, **((params or {}).get(iou_type, {}))}, gt_dict, gt_img_ids)
        if backend == "fast" and cocofast.fast_supported(p):
            ev = _fast_eval(gt_dict, dt_list, kind, p, shards, runner)
        else:
            ev = pycocotools_eval(gt_dict, dt_list, kind, p, shards, runner)
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
    client: Executor | None = None,
    **kwargs: Any,
) -> dict[str, CocoResult]:
    """Reads a COCO ground-truth file and a results file and calls :func:`evaluate_coco`.

    A results file may also be a COCO dict; its ``annotations`` are used. ``kwargs`` go to
    :func:`evaluate_coco` (``run``, ``backend``, ``params`` and the parameter overrides).
    """
    gt = read_json(gt_path)
    dt = read_json(dt_path)
    if isinstance(dt, Mapping) and isinstance(dt.get("annotations"), list):
        dt = dt["annotations"]
    if not isinstance(dt, list):
        raise FormatError("results must be a JSON list of objects", path=dt_path)
    return evaluate_coco(gt, dt, iou_types, shards, client, gt_source=gt_path, dt_source=dt_path, **kwargs)
