"""The records of pre-labeling: a task (an item and the part of it to do), the run's settings, and what a
task returns (its :class:`Receipt`, or a :class:`Failure`).

Planned on the driver (:func:`segpipe.pipeline.prelabel.plan.plan_tasks`), pickled to the workers, run
by :func:`segpipe.kernels.prelabel.batch.prelabel_batch`. Receipts are what the ledger holds: their JSON
(:meth:`Receipt.to_json`) is the file ``STORE/.segpipe/ledger/<key>.json`` that ``--resume`` and
``fsck`` trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from segpipe.storage.manifest import ManifestEntry, stable_id
from segpipe.storage.zarrstore import ZarrStore

if TYPE_CHECKING:  # opened by the driver for scenes only; planning needs no raster code
    from segpipe.storage.raster import RasterSource

#: Core size of a scene's block tasks: a multiple of the scene's chunks, so that every block owns
#: whole chunks and no two tasks ever write the same chunk (zarr 3 has no locks).
BLOCK = 2048
#: Slices per task when a 3-D model pre-labels a volume (each task reads a context margin around them).
SLAB = 32


# ------------------------------------------------------------------------------------------- parts


@dataclass(frozen=True, slots=True)
class WholeImage:
    """A 2-D image written to a group of its own, ``images/<id>``."""


@dataclass(frozen=True, slots=True)
class StackSlot:
    """A small 2-D image of a semantic run, written into slot ``slot`` of stack ``stack``.

    The task that runs it holds every image of its shard (:func:`~segpipe.pipeline.prelabel.plan.batch_tasks`)
    and writes the shard file whole (:class:`~segpipe.storage.stacks.ShardWriter`).
    """

    stack: str
    slot: int


@dataclass(frozen=True, slots=True)
class VolumeSlice:
    """Slice ``z`` of a volume, pre-labeled as a 2-D image (group ``images/<slice id>``)."""

    z: int


@dataclass(frozen=True, slots=True)
class VolumeSlab:
    """Slices ``[z0, z1)`` of a volume, pre-labeled by a 3-D model with a context margin."""

    z0: int
    z1: int


@dataclass(frozen=True, slots=True)
class SceneBlock:
    """The chunk-aligned block ``window`` of a scene, predicted with a context margin.

    Attributes:
        window: The block's core ``(y0, y1, x0, x1)``: the only region the task writes.
        source: The opened raster (set by the driver, which opens each scene once).
        margin: Context read around the core, in pixels (the tile overlap).
    """

    window: tuple[int, int, int, int]
    source: RasterSource | None = None
    margin: int = 0


#: What part of its item a task does.
Part = WholeImage | StackSlot | VolumeSlice | VolumeSlab | SceneBlock


@dataclass(frozen=True, slots=True)
class PrelabelTask:
    """One task of a run: its key, its item, and the part of the item it does.

    Attributes:
        key: Deterministic key (hashes the item's content, the model and the config): the receipt's
            file name.
        entry: The item (image, scene or volume) from the manifest.
        part: What to do of it.
    """

    key: str
    entry: ManifestEntry
    part: Part = field(default_factory=WholeImage)

    def image_ids(self) -> list[int]:
        """The store image ids this task writes (a slab: one per slice)."""
        part = self.part
        if isinstance(part, VolumeSlab):
            return [slice_id(self.entry, z) for z in range(part.z0, part.z1)]
        if isinstance(part, VolumeSlice):
            return [slice_id(self.entry, part.z)]
        return [self.entry.id]


def slice_id(entry: ManifestEntry, z: int) -> int:
    """Stable image id of slice ``z`` of a volume."""
    return stable_id(f"{entry.file}#z{z:05d}")


# ------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class OutputSettings:
    """What a task stores besides the labels (the request's output options).

    Attributes:
        probs: Per-class probabilities (semantic), uint8.
        heatmaps: Landmark heatmaps.
        min_score: Instances below this score are not stored.
        window: Intensity window ``CENTER,WIDTH`` of volumes (``--window``), or None.
    """

    probs: bool = True
    heatmaps: bool = True
    min_score: float = 0.05
    window: str | None = None


@dataclass(frozen=True)
class PrelabelSettings:
    """What every task of a run shares: the store it writes and its output settings.

    Attributes:
        store: The store (its path travels; workers open it).
        outputs: What to store.
        stop_on_failure: A batch stops at its first failed image (``--on-error fail``).
    """

    store: ZarrStore
    outputs: OutputSettings
    stop_on_failure: bool = False


# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Timings:
    """Seconds a task spent decoding, in the forward passes, and writing."""

    decode: float = 0.0
    infer: float = 0.0
    write: float = 0.0


@dataclass(frozen=True)
class Receipt:
    """A finished task's receipt: the digests of every array it wrote (written after them, durably).

    Attributes:
        key: The task key.
        image_id: The image (a slab: its first slice).
        file: The item's file relative to the source.
        sha256: The item's content hash.
        outputs: Array path in the image's group → digest (a slab: empty, see ``slices``).
        width: Image width in pixels.
        height: Image height.
        timings: Seconds per stage.
        worker: ``host:pid`` of the process that ran it.
        time: When it finished (seconds since the epoch).
        window: A scene block's core ``(y0, y1, x0, x1)``: its digests cover that region only.
        slices: A slab's slices: slice image id (as a string) → array name → digest.
        slab: A slab's ``(z0, z1)``.
        z: A volume slice's index.
        stack: The stack of a stacked image.
        slot: Its slot.
        doubt: How unsure the model was (:mod:`segpipe.kernels.prelabel.doubt`), where measured.
    """

    key: str
    image_id: int
    file: str
    sha256: str
    outputs: Mapping[str, str]
    width: int
    height: int
    timings: Timings
    worker: str
    time: float
    window: tuple[int, ...] | None = None
    slices: Mapping[str, Mapping[str, str]] | None = None
    slab: tuple[int, int] | None = None
    z: int | None = None
    stack: str | None = None
    slot: int | None = None
    status: Literal["done"] = "done"
    doubt: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The receipt as the ledger stores it (key order as written since layout 2)."""
        out: dict[str, Any] = {"key": self.key, "image_id": self.image_id, "file": self.file,
                               "sha256": self.sha256}
        if self.window is not None:
            out["window"] = list(self.window)
        if self.slices is not None:
            out["slices"] = {k: dict(v) for k, v in self.slices.items()}
        if self.slab is not None:
            out["slab"] = list(self.slab)
        if self.z is not None:
            out["z"] = self.z
        if self.stack is not None:
            out["stack"], out["slot"] = self.stack, self.slot
        out.update(status=self.status, outputs=dict(self.outputs), width=self.width, height=self.height,
                   timings={"decode": self.timings.decode, "infer": self.timings.infer,
                            "write": self.timings.write},
                   worker=self.worker, time=self.time)
        if self.doubt is not None:
            out["doubt"] = dict(self.doubt)
        return out

    @classmethod
    def from_json(cls, rec: Mapping[str, Any]) -> Receipt:
        """A receipt read back from the ledger (already checked by :func:`~segpipe.storage.verify.parse_receipt`).

        Raises:
            ValueError, TypeError, KeyError: a field of the wrong kind.
        """
        t = rec.get("timings") or {}
        window, slab = rec.get("window"), rec.get("slab")
        return cls(
            key=str(rec["key"]), image_id=int(rec["image_id"]), file=str(rec.get("file", "")),
            sha256=str(rec.get("sha256", "")), outputs=dict(rec.get("outputs", {})),
            width=int(rec.get("width", 0)), height=int(rec.get("height", 0)),
            timings=Timings(*(float(t.get(k, 0.0)) for k in ("decode", "infer", "write"))),
            worker=str(rec.get("worker", "")), time=float(rec.get("time", 0.0)),
            window=tuple(int(v) for v in window) if window is not None else None,
            slices=dict(rec["slices"]) if "slices" in rec else None,
            slab=(int(slab[0]), int(slab[1])) if slab is not None else None,
            z=int(rec["z"]) if "z" in rec else None,
            stack=str(rec["stack"]) if "stack" in rec else None,
            slot=int(rec["slot"]) if "stack" in rec else None,
            doubt=dict(rec["doubt"]) if isinstance(rec.get("doubt"), dict) else None,
        )


@dataclass(frozen=True)
class Failure:
    """An item that could not be pre-labeled (``--on-error skip`` reports it and goes on).

    Attributes:
        key: The task key; empty for an item refused before any task was planned (at ingest, or a
            scene that cannot be opened).
        image_id: The image.
        file: The item's file relative to the source.
        reason: The one-line error.
        sha256: The item's content hash, when known.
    """

    key: str
    image_id: int
    file: str
    reason: str
    sha256: str = ""
    status: Literal["failed"] = "failed"


#: What a task returns.
TaskResult = Receipt | Failure
