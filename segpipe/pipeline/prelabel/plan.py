"""Planning a pre-label run (pure: no I/O, no Dask): keyed tasks from the manifest, grouped in batches.

One task per image, per chunk-aligned block of a scene, per slice (or slab, for a 3-D model) of a
volume. A task's key hashes the item's content, the model and the config: the same key gives the same
bytes, whatever the workers, threads or batches.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np

from segpipe.kernels.prelabel.tasks import (
    BLOCK,
    PrelabelTask,
    SceneBlock,
    StackSlot,
    VolumeSlab,
    VolumeSlice,
    WholeImage,
    slice_id,
)
from segpipe.storage.manifest import ManifestEntry
from segpipe.storage.manifest_table import ManifestTable
from segpipe.storage.stacks import SHARD

#: A batch task holds at most this many images and stops growing past this many pixels: Dask's
#: per-task cost (scheduler round trip, receipt transfer) is then paid once per batch, while a batch
#: stays short enough (about a second of CPU inference at 512²) to balance the workers.
BATCH_IMAGES = 8
BATCH_PIXELS = 8 * 512 * 512


def task_key(cfg_hash: str, entry: ManifestEntry, part: str = "") -> str:
    """Deterministic key of the task that pre-labels ``entry`` (or a ``part`` of it) under ``cfg_hash``."""
    return "pl-" + _key_digest(cfg_hash, entry.id, entry.sha256, part).hex()


def _key_digest(cfg_hash: str, image_id: int, sha256: str, part: str = "") -> bytes:
    """The 16 bytes a task key spells in hex after ``pl-``."""
    return hashlib.sha256(f"{cfg_hash}|{image_id}|{sha256}|{part}".encode()).digest()[:16]


#: An item that writes an image id: its entry, and the slice of a volume (None: the entry's own image).
IdOwner = tuple[ManifestEntry, int | None]


def image_id_clash(entries: list[ManifestEntry] | ManifestTable) -> tuple[int, IdOwner, IdOwner] | None:
    """The first image id two items of ``entries`` would both write, with its two owners (pure).

    Every image a run writes needs its own id: an image's or a scene's is its entry's ``id``, each
    slice of a volume has its own (:func:`~segpipe.kernels.prelabel.tasks.slice_id`, from the volume's
    ``file`` and the slice). Two items writing one id write one image group and one receipt over the
    other's while the run reports both done, so such a manifest is refused before the run.

    Returns:
        ``(id, earlier owner, later owner)``, or None when every id is written once.
    """
    if isinstance(entries, ManifestTable):
        if not entries.count("volume") and np.unique(entries.ids()).size == len(entries):
            return None  # the common case, without an object per entry
        entries = list(entries)
    if all(e.kind != "volume" for e in entries) and len({e.id for e in entries}) == len(entries):
        return None  # the common case, 10x faster at 100k images than the walk below
    owners: dict[int, IdOwner] = {}
    for e in entries:
        parts = [(slice_id(e, z), z) for z in range(max(1, e.depth))] if e.kind == "volume" else [(e.id, None)]
        for iid, z in parts:
            first = owners.setdefault(iid, (e, z))
            if first[0] is not e or first[1] != z:
                return iid, first, (e, z)
    return None


#: The part of every whole-image task: one object (a task holds no state of its own in it).
_WHOLE = WholeImage()


def plan_tasks(entries: Iterable[ManifestEntry] | ManifestTable, cfg_hash: str, slab: int = 0) -> list[PrelabelTask]:
    """One task per image, per chunk-aligned block of a scene, per slice of a volume (pure).

    Args:
        entries: The manifest: entries, or a :class:`~segpipe.storage.manifest_table.ManifestTable`
            (the driver's), whose images then get :class:`TableTask` rows (≈ 100 bytes each, not ≈ 600).
        cfg_hash: The run's config hash (part of every task key).
        slab: With a 3-D model, volumes are cut into slabs of this many slices (one task each, which
            predicts with a context margin and writes its own slices) instead of one task per slice.
    """
    if isinstance(entries, ManifestTable):
        return _table_tasks(entries, cfg_hash, slab)
    tasks: list[PrelabelTask] = []
    for e in entries:
        if e.kind == "scene":
            tasks.extend(_scene_blocks(e, cfg_hash))
        elif e.kind == "volume":
            tasks.extend(_volume_parts(e, cfg_hash, slab))
        elif e.kind != "invalid":
            tasks.append(PrelabelTask(task_key(cfg_hash, e), e, _WHOLE))
    return tasks


def _table_tasks(table: ManifestTable, cfg_hash: str, slab: int) -> list[PrelabelTask]:
    """:func:`plan_tasks` of a table: a :class:`TableTask` per image kept in columns, the rest as entries."""
    columns = TaskColumns(table)
    odd = table.odd_rows()
    tasks: list[PrelabelTask] = []
    for row in range(len(table)):
        kind = table.kind(row)
        if kind == "image" and row not in odd:
            columns.set_key(row, _key_digest(cfg_hash, table.id(row), table.sha256(row)))
            tasks.append(TableTask(columns, row))
        elif kind != "invalid":
            tasks.extend(plan_tasks([table[row]], cfg_hash, slab))
    return tasks


class TaskColumns:
    """What the whole-image tasks of a table's rows hold, in columns: each key's 16 bytes, and the stack
    slot the image was given (:meth:`TableTask.place`).

    At 100k images the task objects with their key strings, parts and entries were half the driver's
    memory; here a task is its row.
    """

    __slots__ = ("_keys", "_slot", "_stack", "_stack_ix", "stacks", "table")

    def __init__(self, table: ManifestTable) -> None:
        self.table = table
        self._keys = bytearray(16 * len(table))
        self._stack = array("l", [-1]) * len(table)  # index into ``stacks``; -1: written whole
        self._slot = array("q", [0]) * len(table)
        self.stacks: list[str] = []
        self._stack_ix: dict[str, int] = {}

    def set_key(self, row: int, digest: bytes) -> None:
        """Sets the key of ``row``'s task (its 16 bytes)."""
        self._keys[16 * row : 16 * row + 16] = digest

    def key(self, row: int) -> str:
        """The task key of ``row``."""
        return "pl-" + self._keys[16 * row : 16 * row + 16].hex()

    def part(self, row: int) -> WholeImage | StackSlot:
        """The part ``row``'s task does: its stack slot, or the whole image in a group of its own."""
        s = self._stack[row]
        return _WHOLE if s < 0 else StackSlot(self.stacks[s], self._slot[row])

    def place(self, row: int, stack: str, slot: int) -> None:
        """Gives ``row``'s image slot ``slot`` of stack ``stack``."""
        ix = self._stack_ix.get(stack)
        if ix is None:
            ix = self._stack_ix[stack] = len(self.stacks)
            self.stacks.append(stack)
        self._stack[row] = ix
        self._slot[row] = slot


class TableTask(PrelabelTask):
    """A whole-image task that is a row of :class:`TaskColumns`: its key, entry and part are read from
    the columns when asked for (the entry built anew each time).

    The driver's tasks of a large run are these; the workers never see one: :meth:`task` makes the
    plain :class:`~segpipe.kernels.prelabel.tasks.PrelabelTask` a batch sends (and pickling does too).
    ``dataclasses.replace`` does not apply (it would call this class with the fields): replace
    :meth:`task` instead, as only scene blocks are replaced (never a table row).
    """

    __slots__ = ("_columns", "_row")
    _columns: TaskColumns
    _row: int

    def __init__(self, columns: TaskColumns, row: int) -> None:  # noqa: D107 - the class says it
        object.__setattr__(self, "_columns", columns)
        object.__setattr__(self, "_row", row)

    @property  # type: ignore[override]
    def key(self) -> str:
        """The task key, from its 16 bytes."""
        return self._columns.key(self._row)

    @property  # type: ignore[override]
    def entry(self) -> ManifestEntry:
        """The image's entry, built from its row."""
        return self._columns.table[self._row]

    @property  # type: ignore[override]
    def part(self) -> WholeImage | StackSlot:
        """The whole image, or its stack slot once placed."""
        return self._columns.part(self._row)

    def image_ids(self) -> list[int]:
        """The image id it writes (without building its entry)."""
        return [self._columns.table.id(self._row)]

    def file(self) -> str:
        """Its image's ``file`` (without building its entry)."""
        return self._columns.table.file(self._row)

    def size(self) -> tuple[int, int]:
        """``(height, width)`` of its image (without building its entry)."""
        return self._columns.table.size(self._row)

    def place(self, stack: str, slot: int) -> None:
        """Gives its image slot ``slot`` of stack ``stack``."""
        self._columns.place(self._row, stack, slot)

    def task(self) -> PrelabelTask:
        """The plain task it stands for (what a worker receives)."""
        return PrelabelTask(self.key, self.entry, self.part)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PrelabelTask, (self.key, self.entry, self.part))


def plain_tasks(tasks: list[PrelabelTask]) -> list[PrelabelTask]:
    """``tasks`` with each :class:`TableTask` made plain (a batch about to be sent)."""
    return [t.task() if isinstance(t, TableTask) else t for t in tasks]


def _scene_blocks(e: ManifestEntry, cfg_hash: str) -> list[PrelabelTask]:
    """The :data:`~segpipe.kernels.prelabel.tasks.BLOCK`-aligned blocks of a scene, row by row."""
    tasks = []
    for y0 in range(0, e.height, BLOCK):
        for x0 in range(0, e.width, BLOCK):
            w = (y0, min(y0 + BLOCK, e.height), x0, min(x0 + BLOCK, e.width))
            tasks.append(PrelabelTask(task_key(cfg_hash, e, f"block{list(w)}"), e, SceneBlock(w)))
    return tasks


def _volume_parts(e: ManifestEntry, cfg_hash: str, slab: int) -> list[PrelabelTask]:
    """A volume's slabs of ``slab`` slices (3-D model), else its slices."""
    depth = max(1, e.depth)
    if slab > 0:
        return [PrelabelTask(task_key(cfg_hash, e, f"slab{[z0, min(z0 + slab, depth)]}"), e,
                             VolumeSlab(z0, min(z0 + slab, depth))) for z0 in range(0, depth, slab)]
    return [PrelabelTask(task_key(cfg_hash, e, f"z{z}"), e, VolumeSlice(z)) for z in range(depth)]


def batch_tasks(todo: list[PrelabelTask], workers: int) -> list[list[PrelabelTask]]:
    """Groups consecutive image (and slice) tasks into batches run as one Dask task each (pure).

    Scene blocks and 3-D slabs stay alone: each is already large. A batch never exceeds
    :data:`BATCH_IMAGES` images, nor a quarter of an even share of the work still to plan
    (``remaining / (4 · workers)``): a small run still spreads over every worker, and batches shrink
    towards the end of a run so that no worker is left alone with a long last batch (guided
    scheduling). A batch closes once it reaches :data:`BATCH_PIXELS`. Each image keeps its own task
    key and receipt: resume and fsck see no difference. Stacked images (a
    :class:`~segpipe.kernels.prelabel.tasks.StackSlot` part) run as one batch per shard: the task that
    writes a shard file holds all its images.
    """
    share = 4 * max(1, workers)
    out: list[list[PrelabelTask]] = list(_shard_batches(todo).values())
    todo = [t for t in todo if not isinstance(t.part, StackSlot)]
    cur: list[PrelabelTask] = []
    px = 0
    cap = 1
    for i, t in enumerate(todo):
        if isinstance(t.part, (SceneBlock, VolumeSlab)):
            out.append([t])
            continue
        if not cur:
            cap = max(1, min(BATCH_IMAGES, (len(todo) - i) // share))
        cur.append(t)
        h, w = t.size() if isinstance(t, TableTask) else (t.entry.height, t.entry.width)
        px += max(1, h) * max(1, w)
        if len(cur) >= cap or px >= BATCH_PIXELS:
            out.append(cur)
            cur, px = [], 0
    if cur:
        out.append(cur)
    return out


def _shard_batches(todo: list[PrelabelTask]) -> dict[tuple[str, int], list[PrelabelTask]]:
    """The stacked images by shard (stack, slot // SHARD): one task writes a shard file."""
    shards: dict[tuple[str, int], list[PrelabelTask]] = {}
    for t in todo:
        if isinstance(t.part, StackSlot):
            shards.setdefault((t.part.stack, t.part.slot // SHARD), []).append(t)
    return shards


def batch_key(keys: list[str]) -> str:
    """The Dask key of a batch: a hash of all its images' task keys (which hash content and config).

    Two batches share a key only when they hold the same images for the same work, so two drivers on
    one shared scheduler never receive each other's results.
    """
    if len(keys) == 1:
        return keys[0]
    return "batch-" + hashlib.sha256("|".join(keys).encode()).hexdigest()[:32]
