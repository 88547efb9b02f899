"""Records shared by the evaluation kernels: both sides' formats, a shard of pairs, what a shard returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from segpipe.core.problems import Problem
from segpipe.core.records import DatasetMeta, Sample

#: A ground-truth sample and its prediction (records, no pixels).
Pair = tuple[Sample, Sample]

E = TypeVar("E")


@dataclass(frozen=True)
class PairContext:
    """What a worker needs to decode a pair: both formats with their metadata.

    Attributes:
        gt_format: Registry name of the ground truth's format.
        gt_meta: Its metadata.
        pred_format: Registry name of the predictions' format.
        pred_meta: Its metadata.
        on_error: ``skip`` or ``fail``.
        n_gt: Semantic: the first ``n_gt`` class ids are the ground truth's (0: all of them).
        pred_map: Semantic: prediction category id → class id (``--match-classes name``), or None.
    """

    gt_format: str
    gt_meta: DatasetMeta
    pred_format: str
    pred_meta: DatasetMeta
    on_error: str = "skip"
    n_gt: int = 0
    pred_map: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class PairShard:
    """One task's pairs.

    Attributes:
        index: Shard position.
        pairs: ``(gt sample, pred sample)`` records (no pixels).
    """

    index: int
    pairs: tuple[Pair, ...]


@dataclass
class ShardOutcome(Generic[E]):
    """What a pair shard returns: small and mergeable.

    Attributes:
        index: Shard position.
        evaluator: The shard's evaluator (``O(#classes + worst_n)``).
        problems: Images that could not be evaluated.
        n_pairs: Pairs given.
    """

    index: int
    evaluator: E
    problems: list[Problem] = field(default_factory=list)
    n_pairs: int = 0


def problem(severity: str, sample: Sample, message: str, code: str) -> Problem:
    """A problem with one ground-truth image (its file and id)."""
    return Problem(severity, sample.image.file_name, f"image {sample.image.id}", message, code)  # type: ignore[arg-type]
