"""The contract every format adapter fulfils.

A format is a pair of pure converters (records ⇄ the format's own structures, in the format's
package) plus a thin reader and writer that touch files:

* A :class:`DatasetReader` runs on the driver. It reads index files (a COCO JSON, VOC ImageSets and
  XML) once and streams lightweight :class:`~segpipe.core.records.Sample` records; pixel files are
  only named, never decoded there.
* The format's ``materialize(sample, meta) -> Materialized`` runs on a worker and decodes the pixel
  files of one sample (masks to RLE, label maps to arrays).
* A :class:`DatasetWriter` is picklable. ``prepare`` runs on the driver, ``write_shard`` on Dask
  workers (it consumes materialized samples and writes per-image outputs such as PNGs and XML), and
  ``finalize`` on the driver (it writes index files such as a COCO JSON or ImageSets, streaming the
  fragments returned by the shards in shard order, so the output is deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import DatasetMeta, Materialized, Sample


@dataclass
class WriteOptions:
    """Options shared by writers.

    Attributes:
        copy_images: ``copy``, ``link`` (hard link, falling back to copy) or ``none``.
        strict: Turn any loss into an error (the driver checks; writers just count).
        extra: Format-specific options (e.g. ``{"polygons": True}``).
    """

    copy_images: str = "copy"
    strict: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShardResult:
    """What one ``write_shard`` call returns: small, picklable, mergeable.

    Attributes:
        index: The shard's position in the plan (finalize orders fragments by it).
        losses: Losses and per-category counts of this shard.
        fragments: Format-specific small records for ``finalize`` (e.g. COCO image and annotation
            dicts, VOC image stems with their split).
        problems: Per-image problems (e.g. an unreadable mask) under the ``skip`` policy.
        n_samples: Samples handled.
    """

    index: int
    losses: LossCounter = field(default_factory=LossCounter)
    fragments: list[Any] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_samples: int = 0


class DatasetReader(Protocol):
    """Reads one dataset; constructed as ``Reader(path)`` by the registry."""

    format_name: ClassVar[str]
    meta: DatasetMeta
    #: Problems noticed while indexing (missing image files, unmatched masks ...).
    problems: list[Problem]

    def __len__(self) -> int:
        """Number of samples."""
        ...

    def samples(self) -> Iterator[Sample]:
        """Streams the samples in a deterministic order (sorted by image id)."""
        ...


class DatasetWriter(Protocol):
    """Writes one dataset; constructed as ``Writer(out_dir_or_file, meta, options)``."""

    format_name: ClassVar[str]

    def prepare(self) -> None:
        """Creates the output layout (driver)."""
        ...

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes the per-image outputs of one shard (worker); must not touch shared files.

        ``samples`` is consumed lazily (one decoded image in memory at a time). Every loss is counted
        in ``ShardResult.losses`` with a one-sentence note; per-category annotation counts go to
        ``losses.counts_out``.
        """
        ...

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes index files from the shard results, in shard order (driver); returns files written."""
        ...


@dataclass(frozen=True)
class FormatSpec:
    """A registered format.

    Attributes:
        name: Registry name (``coco``, ``coco_panoptic``, ``voc``, ``maskdir`` ...).
        description: One line for ``segpipe formats``.
        detect: ``detect(path) -> bool``: cheap check that a path is in this format.
        reader: Reader class, or None if the format cannot be read.
        materialize: ``materialize(sample, meta) -> Materialized`` (worker side), with the reader.
        writer: Writer class, or None if the format cannot be written.
        validate: ``validate(path) -> Iterator[Problem]``, or None.
        holds: What the format can represent, a subset of {"instances", "boxes", "keypoints",
            "semantic", "panoptic", "scores", "crowd", "overlaps"}; the converter reports the rest as
            lost.
    """

    name: str
    description: str
    detect: Any
    reader: Any = None
    materialize: Any = None
    writer: Any = None
    validate: Any = None
    holds: frozenset[str] = frozenset()
