"""Planning an evaluation, pure (records in, records out; no I/O, no Dask).

Which ground-truth images take part (:class:`ImageSelection`), which prediction goes with each
(:class:`Pairing`, the rule of :mod:`segpipe.pipeline.evaluate`), and how the work is cut into shards
(:func:`shard_size`, :func:`pair_shards`, :func:`sample_shards`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from segpipe.core.records import ImageInfo, Sample, chunked
from segpipe.errors import ConfigError
from segpipe.kernels.evaluate.coco import SampleShard
from segpipe.kernels.evaluate.pairs import Pair, PairShard


class ImageSelection:
    """Which ground-truth images take part (``--img-ids``).

    Readers stream samples sorted by image id, so ``first:N`` keeps the first N offered: the N
    smallest ids, without listing them all first.

    Args:
        spec: None (all), ``first:N`` or ``ID,ID,...``.

    Raises:
        ConfigError: malformed ``spec``.
    """

    def __init__(self, spec: str | None) -> None:
        self.first: int | None = None
        self.ids: set[int] | None = None
        self.found: set[int] = set()  # the listed ids the ground truth offered
        self._taken = 0
        if spec is None or not spec.strip():
            return
        text = spec.strip()
        try:
            if text.lower().startswith("first:"):
                self.first = int(text.split(":", 1)[1])
                if self.first < 1:
                    raise ValueError
            else:
                self.ids = {int(t) for t in text.split(",") if t.strip()}
                if not self.ids:
                    raise ValueError
        except ValueError:
            raise ConfigError(f"--img-ids must be first:N (N >= 1) or ID,ID,..., got {spec!r}") from None

    @property
    def active(self) -> bool:
        """True when some images are left out."""
        return self.first is not None or self.ids is not None

    def limit(self, n: int) -> int:
        """How many of ``n`` offered images can take part at most."""
        if not self.active:
            return n
        return min(n, self.first or len(self.ids or ()))

    def keep(self, image_id: int) -> bool:
        """Offers the next image id (in increasing order); True when it takes part."""
        if self.ids is not None:
            if image_id in self.ids:
                self.found.add(image_id)
                return True
            return False
        if self.first is not None:
            if self._taken >= self.first:
                return False
            self._taken += 1
        return True

    def check_found(self, gt: Path) -> None:
        """Refuses listed ids that the ground truth did not offer (once every id was offered).

        Raises:
            ConfigError: naming ``--img-ids`` and the first few missing ids; a typo once gave
                "0/0 images evaluated" and exit 0.
        """
        missing = sorted(self.ids - self.found) if self.ids is not None else []
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(str(i) for i in missing[:5]) + more
            raise ConfigError(f"--img-ids: {len(missing)} id(s) are no image of the ground truth: {shown}", path=gt,
                              hint="list ground-truth image ids, or use first:N")

    def select(self, ids: Iterable[int]) -> list[int]:
        """The selected ids among ``ids``, sorted."""
        return [i for i in sorted(ids) if self.keep(i)]


def _stem(file_name: str) -> str:
    return PurePosixPath(file_name.replace("\\", "/")).stem if file_name else ""


class Pairing:
    """Pairs ground-truth images with predicted samples (see the module docstring for the rule).

    Holds one small record per predicted image (never pixels).

    Args:
        preds: The predicted samples.
    """

    def __init__(self, preds: Iterable[Sample]) -> None:
        self.by_id: dict[int, Sample] = {}
        self._by_stem: dict[str, int | None] = {}  # None: the stem is ambiguous
        for s in preds:
            self.by_id[s.image.id] = s
            st = _stem(s.image.file_name)
            if st:
                self._by_stem[st] = None if st in self._by_stem else s.image.id
        self.used: set[int] = set()
        #: ground-truth image id -> predicted image id, as matched
        self.matches: dict[int, int] = {}

    def _free_by_stem(self, stem: str) -> Sample | None:
        pid = self._by_stem.get(stem) if stem else None
        if pid is None or pid in self.used:
            return None
        return self.by_id[pid]

    def match(self, image: ImageInfo) -> Sample | None:
        """The prediction for ground-truth ``image``, or None (each prediction is taken once)."""
        stem = _stem(image.file_name)
        p = self.by_id.get(image.id)
        if p is not None and p.image.id not in self.used:
            pstem = _stem(p.image.file_name)
            if stem and pstem and pstem != stem:
                # Both name their file and the names differ: the ids were numbered independently.
                p = self._free_by_stem(stem)
        else:
            p = self._free_by_stem(stem)
        if p is not None:
            self.used.add(p.image.id)
            self.matches[image.id] = p.image.id
        return p

    def unmatched(self) -> list[Sample]:
        """Predictions that no ground-truth image took, sorted by id."""
        return [s for i, s in sorted(self.by_id.items()) if i not in self.used]


def shard_size(n: int, shards: int | None, workers: int) -> int:
    """Items per shard for ``n`` items: ``shards`` of them (``--shards``), else a few shards per worker."""
    if shards:
        return max(1, math.ceil(n / max(1, shards)))
    # A few shards per worker balance the load; 200 pairs bound a task's run time.
    return max(1, min(200, math.ceil(n / max(1, workers * 4))))


def pair_shards(pairs: Iterable[Pair], size: int) -> Iterator[PairShard]:
    """The pairs cut into shards of ``size``, streamed (only the shards in flight are held)."""
    for i, chunk in enumerate(chunked(pairs, size)):
        yield PairShard(i, tuple(chunk))


def sample_shards(items: Iterable[tuple[Sample, int]], size: int) -> Iterator[SampleShard]:
    """``(sample, ground-truth image id)`` items cut into shards of ``size``, streamed."""
    for i, chunk in enumerate(chunked(items, size)):
        yield SampleShard(i, tuple(chunk))
