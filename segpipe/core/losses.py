"""Mergeable counters of what a conversion could not keep, and of what it counted in and out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LossCounter:
    """Counts losses by kind and category, plus per-category annotation counts in and out.

    A loss kind is a short stable string such as ``overlap_flattened_pixels``, ``crowd_to_void``,
    ``keypoints_dropped``, ``polygon_to_mask`` or ``void_pixels_dropped``. Counters from shards merge
    by addition, so a sharded conversion reports the same totals as one pass.

    Attributes:
        losses: ``{(kind, category_name_or_""): count}``.
        counts_in: Annotations read per category name.
        counts_out: Annotations written per category name.
        notes: ``{kind: explanation}`` — one human sentence per loss kind.
        missing_images: File names of images that were not found.
    """

    losses: Counter[tuple[str, str]] = field(default_factory=Counter)
    counts_in: Counter[str] = field(default_factory=Counter)
    counts_out: Counter[str] = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)

    def lose(self, kind: str, n: int = 1, category: str = "", note: str | None = None) -> None:
        """Records ``n`` units of loss ``kind`` (for ``category``); no-op when ``n == 0``."""
        if n <= 0:
            return
        self.losses[(kind, category)] += n
        if note and kind not in self.notes:
            self.notes[kind] = note

    def merge(self, other: LossCounter) -> LossCounter:
        """Adds ``other`` into ``self`` and returns ``self``."""
        self.losses.update(other.losses)
        self.counts_in.update(other.counts_in)
        self.counts_out.update(other.counts_out)
        for k, v in other.notes.items():
            self.notes.setdefault(k, v)
        self.missing_images.extend(other.missing_images)
        return self

    @property
    def lossless(self) -> bool:
        """True when nothing was lost."""
        return not self.losses

    def totals(self) -> dict[str, int]:
        """``{kind: total over categories}``, sorted by kind."""
        out: Counter[str] = Counter()
        for (kind, _), n in self.losses.items():
            out[kind] += n
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``losses`` part of the conversion report)."""
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, cat), n in sorted(self.losses.items()):
            by_kind.setdefault(kind, {})[cat or "*"] = n
        return {
            "lossless": self.lossless,
            "totals": self.totals(),
            "by_category": by_kind,
            "notes": dict(sorted(self.notes.items())),
            "counts_in": dict(sorted(self.counts_in.items())),
            "counts_out": dict(sorted(self.counts_out.items())),
            "missing_images": sorted(set(self.missing_images)),
        }
