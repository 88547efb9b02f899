"""A bounded, mergeable record of the worst-scoring images (for the report's "worst N" section)."""

from __future__ import annotations

import heapq
import math
from typing import Any


class WorstImages:
    """Keeps the ``n`` lowest scores seen, with their image keys.

    Memory is ``O(n)`` whatever the number of images. Ties are broken by the key's string form, so
    the kept set does not depend on the order in which shards are merged.

    Args:
        n: How many to keep; 0 keeps none.
    """

    def __init__(self, n: int) -> None:
        self.n = max(0, int(n))
        # Max-heap on (score, key) via negation: the root is the best of the kept worst ones.
        self._heap: list[tuple[float, tuple[int, ...], Any]] = []

    def add(self, key: Any, score: float) -> None:
        """Offers one image; NaN scores (nothing to score) are ignored."""
        if self.n == 0 or score is None or math.isnan(score):
            return
        item: tuple[float, tuple[int, ...], Any] = (-float(score), _neg_str(str(key)), key)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def merge(self, other: WorstImages) -> WorstImages:
        """Folds ``other`` in and returns ``self``."""
        for s, _, key in other._heap:
            self.add(key, -s)
        return self

    def items(self) -> list[tuple[Any, float]]:
        """``(key, score)`` from the worst up."""
        return [(key, -s) for s, _, key in sorted(self._heap, reverse=True)]

    def __len__(self) -> int:
        return len(self._heap)


def _neg_str(s: str) -> tuple[int, ...]:
    # Reverses string order inside the negated max-heap so that equal scores keep the smaller key.
    return tuple(-ord(ch) for ch in s) + (1,)
