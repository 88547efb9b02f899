"""The semantic kernel: pairs of label maps folded into one ``C × C`` confusion matrix.

:func:`semantic_shard` decodes both samples of each pair (``materialize`` +
:func:`~segpipe.formats.derive.derive_class_map`), maps category ids to contiguous class indices
(:func:`label_indices`) and folds the pair into a :class:`~segpipe.evaluation.semantic.SemanticEvaluator`.
Only that ``O(C² + N_worst)`` object goes back to the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segpipe.core.problems import Problem
from segpipe.core.records import Sample
from segpipe.errors import InputError, SegpipeError
from segpipe.evaluation.semantic import SemanticEvaluator
from segpipe.formats import get_format
from segpipe.formats.derive import derive_class_map
from segpipe.kernels.evaluate.pairs import PairContext, PairShard, ShardOutcome, problem


@dataclass(frozen=True)
class SemanticSpec:
    """The settings of :func:`semantic_shard`.

    Attributes:
        ctx: Formats and metadata of both sides.
        class_ids: ``C`` category ids, in class order.
        ignore_index: Ground-truth value ignored besides the void value.
        worst_n: How many worst images (per-image mIoU) to keep.
    """

    ctx: PairContext
    class_ids: tuple[int, ...]
    ignore_index: int | None
    worst_n: int


# ------------------------------------------------------------------------------------- label maps


def _check_label_maps(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise InputError(f"prediction is {pred.shape[1::-1]} (w, h) but the ground truth is {gt.shape[1::-1]}")
    for name, arr in (("ground truth", gt), ("prediction", pred)):
        if arr.dtype.kind not in "iu":
            raise InputError(f"{name} label map is {arr.dtype}, not integers")
        if arr.size and int(arr.min()) < 0:
            raise InputError(f"{name} label map has negative values")


def _lookup_tables(gt: np.ndarray, pred: np.ndarray, class_ids: Sequence[int], k: int,
                   pred_map: Sequence[tuple[int, int]] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(gt lut, pred lut)``: value → class index, -1 for a value that is no class."""
    top = max([*class_ids, int(gt.max()) if gt.size else 0, int(pred.max()) if pred.size else 0,
               *(p for p, _ in pred_map or ())]) + 1
    lut = np.full(top, -1, dtype=np.int32)
    lut[np.asarray(class_ids[:k], dtype=np.int64)] = np.arange(k, dtype=np.int32)
    if pred_map is None and k == len(class_ids):
        return lut, lut
    index = {int(cid): j for j, cid in enumerate(class_ids)}
    plut = np.full(top, -1, dtype=np.int32)
    pairs = list(pred_map) if pred_map is not None else [(int(cid), int(cid)) for cid in class_ids]
    for p, cid in pairs:
        plut[int(p)] = index[int(cid)]
    return lut, plut


def _refuse_unclassed(pred: np.ndarray, bad: np.ndarray, by_name: bool, all_gt: bool) -> None:
    """Raises for prediction values that are no class on evaluated pixels (``bad``), if any."""
    if not bad.any():
        return
    vals = np.unique(pred[bad])[:10].tolist()
    if by_name:
        raise InputError(
            f"prediction values {vals} are no category of the prediction ({int(bad.sum())} evaluated pixels)",
            hint="with --match-classes name every predicted value must be a category the prediction names",
        )
    raise InputError(
        f"prediction values {vals} are not classes of the ground truth on {int(bad.sum())} evaluated pixels",
        hint="a prediction must give a ground-truth class (category id) on every pixel that is not void"
             + ("" if all_gt else "; pass --match-classes name to map classes by name"),
    )


def label_indices(
    gt: np.ndarray,
    gt_void: int | None,
    pred: np.ndarray,
    class_ids: Sequence[int],
    ignore_index: int | None,
    *,
    n_gt: int | None = None,
    pred_map: Sequence[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps category-id label maps to contiguous class indices.

    Args:
        gt: ``(H, W)`` integer ground-truth category ids.
        gt_void: The ground truth's void value (ignored pixels), or None.
        pred: ``(H, W)`` integer predicted category ids.
        class_ids: ``C`` category ids; class ``k`` is ``class_ids[k]``.
        ignore_index: Another ground-truth value to ignore, or None.
        n_gt: Only the first ``n_gt`` classes are ground-truth values (the others are classes only
            the prediction has); None: all.
        pred_map: ``(prediction id, class id)`` pairs: the prediction's values are mapped through
            them (``--match-classes name``), a value not listed is no class; None: the prediction's
            values are class ids.

    Returns:
        ``(gt, pred)`` as ``(H, W)`` uint8 (int32 when ``C >= 255``) class indices; ignored
        ground-truth pixels hold ``C`` (pass ``ignore_index=C`` to the confusion matrix).

    Raises:
        InputError: the shapes differ, or a ground-truth value is neither a class nor ignored, or the
            prediction is not a class on a pixel that is not ignored (values and pixel counts named).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    _check_label_maps(gt, pred)
    c = len(class_ids)
    k = c if n_gt is None else int(n_gt)
    lut, plut = _lookup_tables(gt, pred, class_ids, k, pred_map)
    valid = np.ones(gt.shape, dtype=bool)
    for v in (gt_void, ignore_index):
        if v is not None:
            valid &= gt != v
    gi = lut[gt]
    bad = valid & (gi < 0)
    if bad.any():
        vals = np.unique(gt[bad])[:10].tolist()
        raise InputError(
            f"ground-truth values {vals} are not classes ({int(bad.sum())} pixels)",
            hint="pass --num-classes, or check the ground truth's categories and void value",
        )
    pi = plut[pred]
    _refuse_unclassed(pred, valid & (pi < 0), pred_map is not None, k == c)
    dtype = np.uint8 if c < 255 else np.int32
    return np.where(valid, gi, c).astype(dtype), np.where(valid, pi, 0).astype(dtype)


def class_maps(g: Sample, p: Sample, ctx: PairContext) -> tuple[np.ndarray, int, np.ndarray]:
    """Decodes a pair: ``(gt (H, W) category ids, gt void value, pred (H, W) category ids)``.

    Raises:
        InputError: a side has no pixel annotation for the image.
    """
    gm = get_format(ctx.gt_format).materialize(g, ctx.gt_meta)
    gmap, _ = derive_class_map(gm, ctx.gt_meta)
    if gmap is None:
        raise InputError("the ground truth has no pixel annotation for this image")
    pm = get_format(ctx.pred_format).materialize(p, ctx.pred_meta)
    pmap, _ = derive_class_map(pm, ctx.pred_meta)
    if pmap is None:
        raise InputError("the prediction has no pixel annotation for this image")
    return np.asarray(gmap), int(gm.void_value), np.asarray(pmap)


# ------------------------------------------------------------------------------------- worker


def semantic_shard(spec: SemanticSpec, shard: PairShard) -> ShardOutcome[SemanticEvaluator]:
    """Worker task: decodes each pair and folds it into one confusion matrix.

    Args:
        spec: Formats, classes and options.
        shard: ``(gt sample, pred sample)`` records (no pixels).

    Returns:
        The shard's ``SemanticEvaluator`` (``O(C² + worst_n)``) and the images it could not evaluate.
    """
    c = len(spec.class_ids)
    ev = SemanticEvaluator(c, ignore_index=c, worst_n=spec.worst_n)
    ctx = spec.ctx
    problems: list[Problem] = []
    for g, p in shard.pairs:
        try:
            gmap, void, pmap = class_maps(g, p, ctx)
            gi, pi = label_indices(gmap, void, pmap, spec.class_ids, spec.ignore_index, n_gt=ctx.n_gt or None,
                                   pred_map=ctx.pred_map)
            ev.update(gi, pi, key=(g.image.id, g.image.file_name))
        except SegpipeError as e:
            if ctx.on_error == "fail":
                raise
            problems.append(problem("error", g, str(e), "eval.unreadable"))
    return ShardOutcome(shard.index, ev, problems, len(shard.pairs))
