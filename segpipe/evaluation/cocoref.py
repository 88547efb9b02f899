"""pycocotools' own ``COCOeval.evaluate()`` per image shard, one ``accumulate()``: the reference backend.

1. the driver splits the sorted image ids into contiguous shards and, for each shard, picks that
   shard's images, ground-truth annotations and results (keeping their list order, which decides
   score ties);
2. each shard (:func:`evaluate_shard`, a worker task) builds its own ``COCO`` ground truth and result
   objects and runs ``COCOeval.evaluate()`` with the global parameters restricted to its images;
3. the driver interleaves the shards' ``evalImgs`` back into pycocotools' global order —
   category-major, then area range, then image id — and runs ``accumulate()`` and ``summarize()``
   on one ``COCOeval`` with the same parameters.

:func:`segpipe.evaluation.cocoeval.evaluate_coco` picks this backend with ``backend="pycocotools"``,
and for parameters the fast backend does not model.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.evaluation.shards import ShardMap


def quiet() -> contextlib.AbstractContextManager[Any]:
    """Silences pycocotools, which prints progress on stdout (a library must not)."""
    return contextlib.redirect_stdout(io.StringIO())


def _apply_load_res(anns: list[dict[str, Any]], kind: str) -> None:
    """In-place transformation of ``COCO.loadRes`` (pycocotools 2.0.x) for one branch."""
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
    coco = COCO()
    coco.dataset = dataset
    with quiet():
        coco.createIndex()
    return coco


@dataclass(frozen=True)
class PycocoShard:
    """One image shard for pycocotools' ``COCOeval.evaluate()`` (the reference backend's task).

    Attributes:
        images: The shard's COCO image dicts.
        categories: Every ground-truth category.
        gt_annotations: The shard's ground-truth annotations, in list order.
        results: The shard's results, in list order (which decides score ties).
        result_ids: Each result's id over the whole result list (``loadRes`` numbers them ``1..N``).
        result_kind: The ``loadRes`` branch (:func:`_load_res_kind`).
        params: The global parameters (``Params`` attributes by name) with ``imgIds`` = this shard's
            sorted image ids.
    """

    images: list[Any]
    categories: list[Any]
    gt_annotations: list[Any]
    results: list[Any]
    result_ids: list[int]
    result_kind: str
    params: dict[str, Any]


def evaluate_shard(task: PycocoShard) -> dict[str, Any]:
    """Runs ``COCOeval.evaluate()`` on one shard of images; a worker task.

    Args:
        task: The shard's images, annotations, results and parameters, as built by
            :func:`evaluate_coco`.

    Returns:
        The shard's ``evalImgs`` (``K × A × I_shard`` entries, category-major, then area range, then
        image) packed by :func:`pack_eval_imgs`.
    """
    images = list(task.images)
    cats = list(task.categories)
    # Shallow copies: pycocotools writes 'ignore', '_ignore' and RLE 'segmentation' into these dicts.
    gt = _coco_from({"images": images, "categories": cats, "annotations": [dict(a) for a in task.gt_annotations]})
    # loadRes numbers results 1..N over the whole list: the driver sends each result's global id.
    res_anns = [{**a, "id": i} for a, i in zip(task.results, task.result_ids, strict=True)]
    _apply_load_res(res_anns, task.result_kind)
    dt = _coco_from({"images": images, "categories": cats, "annotations": res_anns})
    state = task.params
    ev = COCOeval(gt, dt, state["iouType"])
    for k, v in state.items():
        setattr(ev.params, k, copy.deepcopy(v))
    with quiet():
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


def _merge_eval_imgs(shard_evals: list[list[Any]], shard_sizes: list[int], k: int, a: int) -> list[Any]:
    """Interleaves shard ``evalImgs`` into pycocotools' global (category, area, image) order."""
    merged: list[Any] = []
    for ki in range(k):
        for ai in range(a):
            for ev, n in zip(shard_evals, shard_sizes, strict=True):
                start = (ki * a + ai) * n
                merged.extend(ev[start : start + n])
    return merged


def _pycocotools_shards(
    gt_dict: Mapping[str, Any], dt_list: Sequence[Mapping[str, Any]], kind: str, p: Any, shard_ids: list[list[Any]]
) -> list[PycocoShard]:
    """Each shard's images, ground truths and results (list order kept), for :func:`evaluate_shard`."""
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
    return [
        PycocoShard(
            images=images_by_shard[s],
            categories=gt_dict["categories"],
            gt_annotations=gts_by_shard[s],
            results=dts_by_shard[s],
            result_ids=dt_ids_by_shard[s],
            result_kind=kind,
            params={**state, "imgIds": list(ids)},
        )
        for s, ids in enumerate(shard_ids)
    ]


def pycocotools_eval(
    gt_dict: Mapping[str, Any], dt_list: Sequence[Mapping[str, Any]], kind: str, p: Any, shards: int, run: ShardMap
) -> Any:
    """The reference backend: pycocotools' ``evaluate()`` per image shard, one ``accumulate()``.

    Returns:
        A pycocotools ``COCOeval`` after ``accumulate()`` and ``summarize()``.
    """
    shard_ids = _split(list(p.imgIds), shards) if p.imgIds else [[]]
    packed = run(evaluate_shard, _pycocotools_shards(gt_dict, dt_list, kind, p, shard_ids))
    shard_evals = [unpack_eval_imgs(pk, p.areaRng, len(ids)) for pk, ids in zip(packed, shard_ids, strict=True)]

    k = len(p.catIds) if p.useCats else 1
    merged = _merge_eval_imgs(shard_evals, [len(ids) for ids in shard_ids], k, len(p.areaRng))
    ev = COCOeval(iouType=p.iouType)
    ev.params = p
    ev.evalImgs = merged
    ev._paramsEval = copy.deepcopy(p)
    with quiet():
        ev.accumulate()
        ev.summarize()
    return ev
