"""Semantic segmentation evaluation: label-map pairs streamed into mergeable confusion matrices.

Pairs are streamed one at a time, so memory holds one image pair plus a ``C × C`` matrix. A pair is
``(gt, pred)`` or ``(key, gt, pred)``, where ``gt`` and ``pred`` are ``(H, W)`` integer arrays or
zero-argument callables that return one (loaders, e.g. ``functools.partial(read_label_map, path)``):
loaders are what to send to Dask workers, since they pickle small and decode on the worker.

Shards reduce with :meth:`SemanticEvaluator.merge` (or :meth:`ConfusionMatrix.merge`) in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from segpipe.core.metrics import ConfusionMatrix, semantic_scores
from segpipe.errors import InputError
from segpipe.evaluation.shards import Executor, ShardMap, shard_map
from segpipe.evaluation.worst import WorstImages

__all__ = [
    "SemanticEvaluator",
    "SemanticResult",
    "evaluate_semantic",
    "evaluate_semantic_shard",
    "evaluate_shard",
]

ArrayOrLoader = np.ndarray | Callable[[], np.ndarray]


def _materialise(x: Any) -> np.ndarray:
    return np.asarray(x() if callable(x) else x)


def _unpack(item: Any, index: int) -> tuple[Any, Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise InputError(
            f"pair {index} must be (gt, pred) or (key, gt, pred), got {type(item).__name__}",
            where=f"pairs[{index}]",
        )
    if len(item) == 2:
        return index, item[0], item[1]
    return item[0], item[1], item[2]


@dataclass
class SemanticResult:
    """Final semantic metrics.

    Attributes:
        pixel_accuracy: FCN pixel accuracy.
        mean_accuracy: FCN mean accuracy (over classes present in the ground truth).
        mean_iou: FCN mean IU (over classes present in the ground truth or the prediction).
        fw_iou: FCN frequency weighted IU.
        iou: ``(C,) float64`` per-class IoU, NaN for classes absent from both.
        accuracy: ``(C,) float64`` per-class accuracy, NaN for classes absent from the ground truth.
        dice: ``(C,) float64`` per-class Dice/F1, NaN for classes absent from both.
        confusion: ``(C, C) int64``, rows ground truth.
        class_names: ``C`` names.
        worst: ``[(key, per-image mIoU)]`` from the worst up.
        num_images: Number of pairs evaluated.
        class_ids: ``C`` ids reported for the classes (e.g. the category ids that were mapped to the
            contiguous indices ``0 .. C-1``); None reports the indices themselves.
    """

    pixel_accuracy: float
    mean_accuracy: float
    mean_iou: float
    fw_iou: float
    iou: np.ndarray
    accuracy: np.ndarray
    dice: np.ndarray
    confusion: np.ndarray
    class_names: list[str]
    worst: list[tuple[Any, float]] = field(default_factory=list)
    num_images: int = 0
    class_ids: list[int] | None = None

    def per_class(self) -> list[dict[str, Any]]:
        """``[{"id", "name", "iou", "accuracy", "dice"}]``, NaN where undefined."""
        return [
            {
                "id": i if self.class_ids is None else int(self.class_ids[i]),
                "name": self.class_names[i],
                "iou": float(self.iou[i]),
                "accuracy": float(self.accuracy[i]),
                "dice": float(self.dice[i]),
            }
            for i in range(len(self.class_names))
        ]


class SemanticEvaluator:
    """A confusion matrix plus the worst images by per-image mIoU; mergeable.

    The per-image mIoU comes from the image's own ``C × C`` histogram, which ``update`` computes
    anyway, so tracking it costs ``O(C²)`` per image and ``O(worst_n)`` memory.

    Args:
        num_classes: Number of classes.
        ignore_index: Ground-truth label to skip.
        worst_n: How many worst images to remember.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, worst_n: int = 0) -> None:
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.worst = WorstImages(worst_n)
        self.num_images = 0

    def update(self, gt: Any, pred: Any, key: Any = None) -> float:
        """Adds one pair; returns its mIoU (NaN when it has no valid pixel).

        Raises:
            InputError: the maps do not fit (shape, dtype or labels), naming ``key``.
        """
        g = _materialise(gt)
        p = _materialise(pred)
        image = ConfusionMatrix(self.confusion.num_classes, self.confusion.ignore_index)
        try:
            image.update(g, p)
        except ValueError as e:
            raise InputError(str(e), where=None if key is None else f"image {key}") from None
        self.confusion.merge(image)
        self.num_images += 1
        miou = float(semantic_scores(image.mat)["mean_iou"])
        self.worst.add(self.num_images - 1 if key is None else key, miou)
        return miou

    def merge(self, other: SemanticEvaluator) -> SemanticEvaluator:
        """Folds ``other`` in and returns ``self``."""
        self.confusion.merge(other.confusion)
        self.worst.merge(other.worst)
        self.num_images += other.num_images
        return self

    def result(
        self,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        class_ids: Sequence[int] | None = None,
    ) -> SemanticResult:
        """Computes the final metrics.

        Args:
            class_names: Names for the report, a list or an index → name mapping.
            class_ids: Ids to report for the ``C`` classes (default: their indices).
        """
        c = self.confusion.num_classes
        if class_names is None:
            names = [str(i) for i in range(c)]
        elif isinstance(class_names, Mapping):
            names = [str(class_names.get(i, i)) for i in range(c)]
        else:
            names = [str(n) for n in class_names]
            if len(names) != c:
                raise InputError(f"{len(names)} class names for {c} classes")
        m = self.confusion.compute()
        return SemanticResult(
            pixel_accuracy=m["pixel_accuracy"],
            mean_accuracy=m["mean_accuracy"],
            mean_iou=m["mean_iou"],
            fw_iou=m["fw_iou"],
            iou=m["iou"],
            accuracy=m["accuracy"],
            dice=m["dice"],
            confusion=m["confusion"],
            class_names=names,
            worst=self.worst.items(),
            num_images=self.num_images,
            class_ids=None if class_ids is None else [int(i) for i in class_ids],
        )


def evaluate_shard(pairs: Iterable[Any], num_classes: int, ignore_index: int | None = 255) -> ConfusionMatrix:
    """Folds a shard of pairs into one confusion matrix (a Dask task: small result, no state).

    Args:
        pairs: ``(gt, pred)`` or ``(key, gt, pred)`` items; arrays or loaders.
        num_classes: Number of classes.
        ignore_index: Ground-truth label to skip.

    Returns:
        The shard's :class:`ConfusionMatrix`.
    """
    return evaluate_semantic_shard(pairs, num_classes, ignore_index).confusion


def evaluate_semantic_shard(
    pairs: Iterable[Any], num_classes: int, ignore_index: int | None = 255, worst_n: int = 0
) -> SemanticEvaluator:
    """Like :func:`evaluate_shard` but also tracks the worst ``worst_n`` images."""
    ev = SemanticEvaluator(num_classes, ignore_index, worst_n)
    for i, item in enumerate(pairs):
        key, g, p = _unpack(item, i)
        ev.update(g, p, key)
    return ev


def evaluate_semantic(
    pairs: Iterable[Any] | Sequence[Iterable[Any]],
    num_classes: int,
    ignore_index: int | None = 255,
    *,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    worst_n: int = 0,
    client: Executor | None = None,
    sharded: bool = False,
    run: ShardMap | None = None,
) -> SemanticResult:
    """Evaluates label-map pairs.

    Args:
        pairs: An iterable of pairs streamed in-process, or, with ``sharded=True``, a sequence of
            shards (each a list of pairs, preferably with loaders) to run as separate tasks.
        num_classes: Number of classes.
        ignore_index: Ground-truth label to skip.
        class_names: Names for the report, a list or an id → name mapping.
        worst_n: How many worst images (by per-image mIoU) to report.
        client: With ``sharded=True``, an executor with ``submit`` (dask ``Client`` or
            ``concurrent.futures``); None runs the shards here.
        sharded: Treat ``pairs`` as a sequence of shards.
        run: With ``sharded=True``, runs the shards instead of ``client``
            (:class:`~segpipe.evaluation.shards.ShardMap`).

    Returns:
        A :class:`SemanticResult`.

    Raises:
        InputError: a pair is malformed or its labels do not fit ``num_classes``.
    """
    if not sharded:
        ev = evaluate_semantic_shard(pairs, num_classes, ignore_index, worst_n)
        return ev.result(class_names)
    shard = partial(evaluate_semantic_shard, num_classes=num_classes, ignore_index=ignore_index, worst_n=worst_n)
    parts = shard_map(client, run)(shard, [list(s) for s in pairs])
    total = SemanticEvaluator(num_classes, ignore_index, worst_n)
    for part in parts:
        total.merge(part)
    return total.result(class_names)
