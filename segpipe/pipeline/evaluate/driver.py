"""The one driver of an evaluation: every worker task of every task's run is submitted here.

Tasks go through :func:`segpipe.execution.runner.run_tasks` (a Dask client, or threads of this process
for ``--workers 0``), with a bounded number in flight and deterministic keys: the evaluation's key
(a hash of what is compared, so that evaluations sharing a scheduler never share a task) plus the
shard's position. Three shapes of work share it:

* :meth:`Driver.run_pairs`: shards of ``(gt sample, pred sample)`` pairs, each folded by a kernel of
  :mod:`segpipe.kernels.evaluate` into a small mergeable evaluator, merged as it arrives (semantic,
  panoptic from samples);
* :meth:`Driver.run_samples`: shards of samples turned into COCO dicts, returned in shard order;
* :meth:`Driver.map_shards`: an engine's own shards (a :class:`~segpipe.evaluation.shards.ShardMap`:
  COCO AP matching, panoptic PNG pairs), results in shard order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

import numpy as np

from segpipe.core.records import Sample
from segpipe.evaluation.cocoeval import CocoResult
from segpipe.evaluation.panoptic import PanopticResult
from segpipe.evaluation.semantic import SemanticResult
from segpipe.execution.runner import run_tasks
from segpipe.formats.base import DatasetReader
from segpipe.kernels.evaluate.coco import CocoShard, CocoShardSpec, coco_shard
from segpipe.kernels.evaluate.pairs import Pair, PairShard, ShardOutcome
from segpipe.pipeline.class_match import ClassMatch
from segpipe.pipeline.evaluate.inputs import Tally
from segpipe.pipeline.evaluate.plan import ImageSelection, Pairing, pair_shards, sample_shards, shard_size

#: progress(done images, total images, failed images)
Progress = Callable[[int, int, int], None]
#: ``loader(worst key) -> (photo (H, W, 3) uint8 or None, gt (H, W) ids, pred (H, W) ids)``, for overlays.
OverlayLoader = Callable[[Any], tuple[np.ndarray | None, np.ndarray, np.ndarray]]

P = TypeVar("P")
Q = TypeVar("Q")
R = TypeVar("R")
S = TypeVar("S")


class Mergeable(Protocol):
    """A shard's small result that folds into the driver's total (an evaluator)."""

    num_images: int

    def merge(self, other: Self) -> Self:
        """Folds ``other`` in and returns ``self``."""
        ...


E = TypeVar("E", bound=Mergeable)


@dataclass(frozen=True)
class TaskOutcome:
    """What a task's run hands to the report.

    Attributes:
        semantic: Semantic metrics.
        instance: COCO results per iou type (instance, keypoints).
        panoptic: PQ figures.
        semantic_loader: Loads a worst semantic image's pair for its overlay.
        panoptic_loader: Loads a worst panoptic image's pair for its overlay.
        void: The ground truth's void value (drawn in white in semantic overlays).
        classes: How the two sides' classes matched (semantic).
        categories: The ground truth's ``[{"id", "name", "color"}]``: the report draws in its label map's colours.
    """

    semantic: SemanticResult | None = None
    instance: dict[str, CocoResult] | None = None
    panoptic: PanopticResult | None = None
    semantic_loader: OverlayLoader | None = None
    panoptic_loader: OverlayLoader | None = None
    void: int = 255
    classes: ClassMatch | None = None
    categories: list[dict[str, Any]] | None = None


class Driver:
    """Submits one evaluation's worker tasks and folds their results into its :class:`Tally`.

    Args:
        client: A ``distributed.Client`` or :class:`~segpipe.execution.cluster.InProcessClient`.
        key: The evaluation's task-key prefix.
        workers: Workers the shards are planned for.
        shards: ``--shards``: number of shards, or None for a few per worker.
        selection: The ``--img-ids`` selection.
        progress: Called with ``(done, total, failed)`` images.
    """

    def __init__(self, client: Any, key: str, workers: int, shards: int | None, selection: ImageSelection,
                 progress: Progress | None = None) -> None:
        self.client = client
        self.key = key
        self.workers = workers
        self.shards = shards
        self.selection = selection
        self.progress = progress
        self.tally = Tally()
        self._maps = 0  # map_shards calls so far: each gets its own keys

    @property
    def in_flight(self) -> int:
        """Tasks kept running at once: two per worker."""
        return max(2, 2 * self.workers)

    def tick(self, done: int, total: int) -> None:
        """Reports progress in images."""
        if self.progress:
            self.progress(done, total, self.tally.failed)

    def shard_size(self, n: int) -> int:
        """Items per shard for ``n`` items (:func:`~segpipe.pipeline.evaluate.plan.shard_size`)."""
        return shard_size(n, self.shards, self.workers)

    def pairs(self, gt_reader: DatasetReader, pairing: Pairing, *, missing_is_error: bool) -> Iterator[Pair]:
        """Streams the selected ground-truth samples with their predictions; counts the unmatched."""
        for g in gt_reader.samples():
            if not self.selection.keep(g.image.id):
                continue
            self.tally.gt += 1
            p = pairing.match(g.image)
            if p is None:
                self.tally.missing_prediction(g, error=missing_is_error)
                continue
            yield g, p

    def _submit(self, kernel: Callable[[S, Q], R], spec: S, shards: Iterator[Q], n_shards: int,
                tag: str) -> Iterator[tuple[str, R]]:
        tasks = ((f"{self.key}{tag}-{i}", (spec, shard)) for i, shard in enumerate(shards))
        return run_tasks(self.client, kernel, tasks, total=n_shards, max_in_flight=self.in_flight)

    def run_pairs(self, kernel: Callable[[S, PairShard], ShardOutcome[E]], spec: S, pairs: Iterator[Pair],
                  n: int, into: E) -> E:
        """Runs ``kernel(spec, shard)`` over shards of ``pairs`` and merges each outcome into ``into``.

        Args:
            kernel: The worker task.
            spec: Its settings (frozen, typed).
            pairs: The pairs, streamed (planned lazily: only the shards in flight are held).
            n: Ground-truth images offered (before ``--img-ids``), for the shard size and progress.
            into: The total evaluator.

        Returns:
            ``into``, with every shard merged; failures and problems counted in the tally.
        """
        size = self.shard_size(n)
        total = self.selection.limit(n)
        done = 0
        for _, out in self._submit(kernel, spec, pair_shards(pairs, size), math.ceil(max(total, 1) / size), ""):
            into.merge(out.evaluator)
            self.tally.failures(out.problems)
            done += out.n_pairs
            self.tick(done, total)
        self.tally.evaluated = into.num_images
        return into

    def run_samples(self, spec: CocoShardSpec, items: Iterator[tuple[Sample, int]], n: int) -> list[CocoShard]:
        """Runs :func:`~segpipe.kernels.evaluate.coco.coco_shard` over shards of ``items``, in shard order.

        Args:
            spec: The samples' format and what to build (ground truth or results).
            items: ``(sample, ground-truth image id)`` pairs, streamed.
            n: How many there are.
        """
        size = self.shard_size(n)
        parts: list[CocoShard] = []
        done = 0
        shards = sample_shards(items, size)
        tag = "-dt" if spec.results else "-gt"
        for _, part in self._submit(coco_shard, spec, shards, math.ceil(max(n, 1) / size), tag):
            parts.append(part)
            done += part.n_samples
            self.tally.failures(part.problems)
            self.tick(done, n)
        return sorted(parts, key=lambda s: s.index)  # shard order: deterministic annotation order and ids

    def map_shards(self, fn: Callable[[P], R], payloads: Sequence[P], /) -> list[R]:
        """Runs an engine's shards as keyed tasks; results in payload order.

        This is the :class:`~segpipe.evaluation.shards.ShardMap` handed to the engines.
        """
        call = self._maps
        self._maps += 1
        keys = [f"{self.key}-map{call}-{i}" for i in range(len(payloads))]
        results: dict[str, R] = {}
        tasks = ((k, (p,)) for k, p in zip(keys, payloads, strict=True))
        for key, result in run_tasks(self.client, fn, tasks, total=len(keys), max_in_flight=self.in_flight):
            results[key] = result
        return [results[k] for k in keys]
