"""The panoptic kernel: pairs of samples decoded to segment-id maps and folded into a PQ accumulator."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from segpipe.core.problems import Problem
from segpipe.errors import FormatError, SegpipeError
from segpipe.evaluation.panoptic import PanopticEvaluator
from segpipe.formats import get_format
from segpipe.formats.coco.convert import segment_to_coco
from segpipe.formats.derive import derive_panoptic
from segpipe.kernels.evaluate.pairs import PairContext, PairShard, ShardOutcome, problem


@dataclass(frozen=True)
class PanopticSpec:
    """The settings of :func:`panoptic_shard`.

    Attributes:
        ctx: Formats and metadata of both sides.
        categories: Ground-truth category id → ``{"isthing", "name"}``.
        worst_n: How many worst images (per-image PQ) to keep.
    """

    ctx: PairContext
    categories: dict[int, dict[str, Any]]
    worst_n: int


def _segments(segs: Iterable[Any]) -> list[dict[str, Any]]:
    return [segment_to_coco(s) for s in segs]


def panoptic_shard(spec: PanopticSpec, shard: PairShard) -> ShardOutcome[PanopticEvaluator]:
    """Worker task: decodes each pair to panoptic maps and folds it into a PQ accumulator.

    Args:
        spec: Formats, categories and options.
        shard: ``(gt sample, pred sample)`` records.

    Returns:
        The shard's ``PanopticEvaluator`` (``O(#categories + worst_n)``) and the images it could not
        evaluate.
    """
    ev = PanopticEvaluator(spec.categories, spec.worst_n)
    ctx = spec.ctx
    problems: list[Problem] = []
    for g, p in shard.pairs:
        try:
            g_ids, g_segs, _ = derive_panoptic(get_format(ctx.gt_format).materialize(g, ctx.gt_meta), ctx.gt_meta)
            p_ids, p_segs, _ = derive_panoptic(get_format(ctx.pred_format).materialize(p, ctx.pred_meta),
                                               ctx.pred_meta)
            try:
                pq = ev.acc.update_from_maps(g_ids, _segments(g_segs), p_ids, _segments(p_segs))
            except ValueError as e:
                raise FormatError(str(e)) from None
            ev.num_images += 1
            ev.worst.add((g.image.id, g.image.file_name), pq)
        except SegpipeError as e:
            if ctx.on_error == "fail":
                raise
            problems.append(problem("error", g, str(e), "eval.unreadable"))
    return ShardOutcome(shard.index, ev, problems, len(shard.pairs))
