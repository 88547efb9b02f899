"""Semantic evaluation on the driver: classes, pairs, and the worst images' overlays.

The two sides' classes are matched (:mod:`segpipe.pipeline.class_match`), the pairs streamed in
shards to :func:`~segpipe.kernels.evaluate.semantic.semantic_shard` on the workers, and the returned
:class:`~segpipe.evaluation.semantic.SemanticEvaluator` s merged as they complete: memory does not grow
with the number of images, and the driver never holds pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segpipe.core.records import DatasetMeta
from segpipe.errors import InputError
from segpipe.evaluation.semantic import SemanticEvaluator
from segpipe.formats.base import DatasetReader
from segpipe.formats.labelpngs import names_generated
from segpipe.kernels.evaluate.pairs import PairContext
from segpipe.kernels.evaluate.semantic import SemanticSpec, class_maps, semantic_shard
from segpipe.pipeline.class_match import ClassMatch, match_classes
from segpipe.pipeline.evaluate.driver import Driver, TaskOutcome
from segpipe.pipeline.evaluate.inputs import Sources, WorstPairs, read_photo
from segpipe.pipeline.evaluate.plan import Pairing


@dataclass(frozen=True)
class SemanticSettings:
    """The options of a semantic evaluation.

    Attributes:
        num_classes: Take label values ``0 .. N-1`` as the classes instead of the ground-truth categories.
        ignore_index: A ground-truth value ignored besides the ground truth's void value.
        match_classes: ``id`` or ``name`` (:mod:`segpipe.pipeline.class_match`).
        worst: How many worst images to keep.
        on_error: ``skip`` or ``fail``.
    """

    num_classes: int | None = None
    ignore_index: int | None = 255
    match_classes: str = "id"
    worst: int = 8
    on_error: str = "skip"



def semantic_classes(meta: DatasetMeta, num_classes: int | None) -> tuple[list[int], list[str]]:
    """The class ids and names of a semantic evaluation (see :mod:`segpipe.pipeline.evaluate`).

    Raises:
        InputError: the ground truth has no categories and ``num_classes`` is not given.
    """
    names = {c.id: c.name for c in meta.categories}
    if num_classes is not None:
        ids = list(range(int(num_classes)))
        return ids, [names.get(i, "background" if i == 0 else str(i)) for i in ids]
    ids = [c.id for c in meta.categories]
    if not ids:
        raise InputError("the ground truth lists no categories", hint="pass --num-classes")
    if 0 not in names:
        ids = [0, *ids]
    return ids, [names.get(i, "background") for i in ids]


class SemanticOverlays(WorstPairs):
    """Loads the worst images' pairs again, on the driver, for the report's overlays.

    Only the worst keys' ground-truth samples are kept (found in one more pass over the reader).
    Predictions are drawn in the ground truth's ids (values no category maps keep theirs).
    """

    def __call__(self, key: tuple[int, str]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(photo (H, W, 3) or None, gt (H, W) ids, pred (H, W) ids)`` of a worst image."""
        g, p = self.gt[int(key[0])], self.pred[int(key[0])]
        gmap, _, pmap = class_maps(g, p, self.ctx)
        if self.ctx.pred_map:
            top = max(int(pmap.max(initial=0)), *(a for a, _ in self.ctx.pred_map)) + 1
            lut = np.arange(top, dtype=np.int64)
            for a, b in self.ctx.pred_map:
                lut[a] = b
            pmap = lut[pmap]
        return read_photo(g), gmap, pmap


def _match(gt_ids: list[int], gt_names: list[str], gt_reader: DatasetReader, pred_reader: DatasetReader,
           settings: SemanticSettings) -> ClassMatch:
    """Compares the two sides' class names (:mod:`segpipe.pipeline.class_match`)."""
    pred_meta = pred_reader.meta
    return match_classes(
        gt_ids, gt_names, {c.id: c.name for c in pred_meta.categories}, mode=settings.match_classes,
        gt_named=not names_generated(gt_reader.meta, gt_reader) and settings.num_classes is None,
        pred_named=not names_generated(pred_meta, pred_reader) and bool(pred_meta.categories),
    )


def run_semantic(driver: Driver, sources: Sources, settings: SemanticSettings) -> TaskOutcome:
    """Evaluates label maps pair by pair on the workers (see the module docstring)."""
    gt_reader, pred_reader = sources.pair_readers(driver.tally)
    gt_ids, gt_names = semantic_classes(gt_reader.meta, settings.num_classes)
    match = _match(gt_ids, gt_names, gt_reader, pred_reader, settings)
    void = gt_reader.meta.void_value if gt_reader.meta.void_value is not None else 255
    pairing = Pairing(pred_reader.samples())
    driver.tally.pred = len(pairing.by_id)
    ctx = PairContext(sources.gt_spec.name, gt_reader.meta, sources.pred_spec.name, pred_reader.meta,
                      settings.on_error, n_gt=match.n_gt, pred_map=match.pred_map)
    c = len(match.class_ids)
    spec = SemanticSpec(ctx, tuple(match.class_ids), settings.ignore_index, settings.worst)
    total = driver.run_pairs(semantic_shard, spec, driver.pairs(gt_reader, pairing, missing_is_error=True),
                             len(gt_reader), SemanticEvaluator(c, ignore_index=c, worst_n=settings.worst))
    driver.tally.unmatched_predictions(pairing, sources.pred)
    result = total.result(list(match.names), list(match.class_ids))
    return TaskOutcome(semantic=result, classes=match,
                       semantic_loader=SemanticOverlays(gt_reader, pairing, ctx, [k for k, _ in result.worst]),
                       void=void, categories=[{"id": c.id, "name": c.name, "color": c.color}
                                              for c in gt_reader.meta.categories])
