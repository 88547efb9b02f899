"""Store layout 2: same-size label maps stacked in sharded arrays (``docs/design/store-layout-2.md``).

A collection of many small images of one size (street-view frames, tiles, thumbnails) gets one stack
per size instead of one Zarr group per image::

    stacks/<H>x<W>/
      labels (N, H, W)     uint8|uint16  chunks (1, H, W)     shards (S, H, W)
      probs  (N, C, H, W)  uint8         chunks (1, C, H, W)  shards (S, C, H, W)   (with probabilities)
      ids    (N,)          int64         image id of each slot, -1 for none          (driver)
      attrs  (N,)          str           the image's attributes as JSON               (driver)
      done   (N,)          uint8         1 where the slot holds its image's outputs   (one chunk per shard)

Every array has ``dimension_names`` (``slot``, ``class``, ``y``, ``x``), so ``xarray.open_zarr(STORE,
group="stacks/<H>x<W>")`` opens a stack. ``labels`` has the void value as fill value (255, or 65535
for uint16): a slot no task wrote reads as void, never as background, in any tool; its attributes
name the classes (:func:`segpipe.storage.zarrstore.label_attributes`). Stacks made before keep
fill value 0 and no dimension names; ``done`` says which slots hold an image in both.

Why: a group per image costs two folders and three files, and each folder or file costs 0.03–0.4 ms
to create on this project's VM, as much as compressing the image's label map (``bench/RESULTS.md``).
A shard file holds :data:`SHARD` images and is written whole by the one task that owns it, so no two
tasks ever touch the same file (zarr 3 has no locks; unaligned sharded writes lose data,
zarr-python #3514/#3682). Chunk keys use the "." separator (``c.3.0.0``): no folder per shard.

The driver assigns every slot at plan time and is the only writer of ``ids`` and ``attrs`` (and of
the arrays' metadata, which grows with a resumed run's new images). A shard task writes its shard of
``labels`` and ``probs`` and its chunk of ``done``, then its images' receipts. Readers get a
per-image view (:class:`StackedImage`) that behaves as the image's group did in layout 1.

A store in object storage (``s3://``, ``gs://``, ``az://``: :class:`~segpipe.storage.location.Location`)
has the same stacks, key for key and byte for byte: the driver lays the metadata out through zarr's
``ObjectStore``; a shard task PUTs each shard object whole (never appended to: a resumed run's task
reads the shard back and PUTs it again), then its ``done`` chunk, then its receipts. Three stacked
images cost one shard PUT between them where a group per image costs three PUTs each.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
import time
from array import array
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np

from segpipe.storage import zarrfast
from segpipe.storage.arrays import array_digest, dimension_names, label_attributes, label_fill
from segpipe.storage.location import Location, as_location, wait_all
from segpipe.storage.manifest import ManifestEntry

STACKS = "stacks"
#: Images per shard file (and per shard task).
SHARD = 8
#: What :func:`plan_stacks` is given per image besides its place (its attributes, or what makes them).
_Item = TypeVar("_Item")

#: A size gets a stack once a run plans this many images of it (or when it has one already); rarer
#: sizes keep a group per image, where a stack's own folders would cost more than they save.
MIN_STACK = SHARD
_FLAT = {"name": "default", "separator": "."}


def stack_name(height: int, width: int) -> str:
    """The name of the stack of ``height × width`` images."""
    return f"{int(height)}x{int(width)}"


def _grow(n: int) -> int:
    """``n`` rounded up to whole shards (a resumed run's new images start on a shard boundary)."""
    return -(-n // SHARD) * SHARD


def plan_stacks(root_path: Path | Location, items: Iterable[tuple[int, int, int, _Item]], *,
                labels_dtype: Any, n_classes: int, probs: bool,
                elsewhere: Iterable[int] = (),
                describe: Callable[[_Item], Mapping[str, Any]] | None = None) -> Placement:
    """Driver: gives each image to stack a slot, creating or growing the stacks (metadata only).

    The metadata is written through zarr-python, locally or in object storage alike; ``stacks/``
    itself is made with the first stack (a run with no size common enough adds nothing).

    Args:
        root_path: The store's folder, or its place in object storage.
        items: ``(image id, height, width, attributes)`` of the images about to run that may be
            stacked (2-D images of a semantic run, small enough to be written whole); with
            ``describe``, the fourth element is what ``describe`` turns into the attributes.
        labels_dtype: The label maps' dtype.
        n_classes: Channels of ``probs``.
        probs: Whether probabilities are stored.
        elsewhere: Ids of images about to be written as groups that may not be stacked (too large):
            any slot they hold from an earlier run is cleared.
        describe: Makes an item's attributes when its slot is written, a chunk of ``attrs`` at a time:
            100k images' attributes held at once were the driver's largest passing memory (≈ 1 KB
            each as dicts and JSON).

    Returns:
        ``{image id: (stack name, slot)}`` for the images placed in a stack (a :class:`Placement`,
        in arrays); the others keep a group. A slot an image had in an earlier run is kept; an image
        placed elsewhere now (its size changed) has its old slot cleared, and a stale group of a
        now-stacked image is removed.
    """
    root = _open_root(root_path, "a")
    sg: Any = root.get(STACKS)
    root_attrs: Any = root.attrs.get("segpipe", {})
    categories = root_attrs.get("categories") if isinstance(root_attrs, Mapping) else None
    existing, extra = _existing_slots(sg) if sg is not None else ({}, [])
    by_size, shapes = _by_size(items)
    placement = _PlacementBuilder()
    clear: dict[str, list[int]] = defaultdict(list)
    have = set(sg.group_keys()) if sg is not None else set()
    for name, (ids, members) in by_size.items():
        if name not in have and len(ids) < MIN_STACK:
            continue
        if sg is None:
            sg = root.require_group(STACKS)
        if name not in have:
            _create_stack(sg, name, shapes[name], list(categories or []), labels_dtype, n_classes, probs)
            have.add(name)
        _place_members(sg[name], name, ids, members, existing, describe or _as_mapping, placement, clear)
    placed = placement.build()
    # (a new store has no earlier slots: no set of every planned id is built for nothing)
    planned = {i for ids, _ in by_size.values() for i in ids} | {int(i) for i in elsewhere} \
        if existing or extra else set()
    for image_id, (name, slot) in [*existing.items(), *((i, (n, j)) for i, n, j in extra)]:
        if image_id in planned and placed.get(image_id) != (name, slot):
            clear[name].append(slot)
    for name, cleared in clear.items():
        ids_arr = sg[name]["ids"]
        for slot in set(cleared):
            ids_arr[slot] = -1
    _remove_stale_groups(root_path, placed)
    return placed


def _by_size(items: Iterable[tuple[int, int, int, _Item]],
             ) -> tuple[dict[str, tuple[array[int], list[_Item]]], dict[str, tuple[int, int]]]:
    """The items by stack name: ``{name: (ids, items)}``, and each name's ``(height, width)``.

    The ids in an array and the items in a list, not a tuple per image: 100k of them were a tenth of
    the driver's memory while a large run was planned.
    """
    by_size: dict[str, tuple[array[int], list[_Item]]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for image_id, h, w, item in items:
        name = stack_name(h, w)
        group = by_size.get(name)
        if group is None:
            group = by_size[name] = (array("q"), [])
            shapes[name] = (int(h), int(w))
        group[0].append(int(image_id))
        group[1].append(item)
    return by_size, shapes


def _place_members(g: Any, name: str, ids: array[int], members: list[_Item],
                   existing: Mapping[int, tuple[str, int]], describe: Callable[[_Item], Mapping[str, Any]],
                   placement: _PlacementBuilder, clear: dict[str, list[int]]) -> None:
    """Places the images of stack ``g`` (``name``): in the slot an earlier run gave one there (its
    attributes rewritten where they changed), else in new slots; an old slot in another stack is
    added to ``clear``.
    """
    if not existing:  # a new store: every image gets a new slot, no per-image look-up
        _append_slots(g, name, ids, members, describe, placement)
        return
    new_ids: list[int] = []
    new_members: list[_Item] = []
    kept: dict[int, _Item] = {}  # slot -> item
    kept_ids: dict[int, int] = {}  # slot -> image id (aligned with kept)
    for image_id, item in zip(ids, members, strict=True):
        old = existing.get(image_id)
        if old is not None and old[0] == name:
            kept[old[1]] = item
            kept_ids[old[1]] = image_id
            continue
        if old is not None:
            clear[old[0]].append(old[1])
        new_ids.append(image_id)
        new_members.append(item)
    if kept:  # redone in their old slots: their files may have changed since (a new sha256, size)
        placement.add(name, list(kept_ids.values()), list(kept_ids))
        _rewrite_attrs(g["attrs"], kept, describe)
    if new_members:
        _append_slots(g, name, new_ids, new_members, describe, placement)


class Placement(Mapping[int, tuple[str, int]]):
    """What :func:`plan_stacks` returns: ``{image id: (stack name, slot)}``, held in arrays.

    A dict of 100k images' places (an int, a tuple and a slot number each) was a sixth of the driver's
    memory while a large run placed its images; here a place is 20 bytes.
    """

    def __init__(self, names: list[str], ids: np.ndarray, stacks: np.ndarray, slots: np.ndarray) -> None:
        """``ids`` ``(N,)`` int64 sorted, each with its index into ``names`` (``stacks``) and its slot."""
        self._names, self._ids, self._stacks, self._slots = names, ids, stacks, slots

    def _find(self, image_id: object) -> int:
        if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool) or not len(self._ids):
            return -1
        if not -(1 << 63) <= int(image_id) < (1 << 63):
            return -1
        i = int(np.searchsorted(self._ids, image_id, side="right")) - 1  # the last place given wins
        return i if i >= 0 and int(self._ids[i]) == int(image_id) else -1

    def __getitem__(self, image_id: int) -> tuple[str, int]:
        i = self._find(image_id)
        if i < 0:
            raise KeyError(image_id)
        return self._names[int(self._stacks[i])], int(self._slots[i])

    def __contains__(self, image_id: object) -> bool:
        return self._find(image_id) >= 0

    def __iter__(self) -> Iterator[int]:
        """The ids, in order (each once)."""
        return iter(np.unique(self._ids).tolist())

    def __len__(self) -> int:
        """How many images are placed (an id placed twice counts once)."""
        return int(np.count_nonzero(np.diff(self._ids))) + 1 if len(self._ids) else 0

    def __repr__(self) -> str:
        return f"Placement({len(self)} images in {len(self._names)} stacks)"


class _PlacementBuilder:
    """Collects places stack by stack as arrays, for :class:`Placement`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.parts: list[tuple[int, np.ndarray, np.ndarray]] = []

    def add(self, name: str, ids: Iterable[int], slots: Iterable[int] | range) -> None:
        """Places ``ids`` in ``slots`` of stack ``name``."""
        if name not in self.names:
            self.names.append(name)
        ids_arr = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, array) else np.frombuffer(ids, np.int64)
        slot_arr = np.arange(slots.start, slots.stop, dtype=np.int64) if isinstance(slots, range) \
            else np.fromiter(slots, dtype=np.int64)
        self.parts.append((self.names.index(name), ids_arr.copy(), slot_arr))

    def build(self) -> Placement:
        """The places added, sorted by id (stable: a later place of one id wins, as in a dict)."""
        if not self.parts:
            empty = np.zeros(0, dtype=np.int64)
            return Placement([], empty, empty, empty)
        ids = np.concatenate([p[1] for p in self.parts])
        stacks = np.concatenate([np.full(len(p[1]), p[0], dtype=np.int32) for p in self.parts])
        slots = np.concatenate([p[2] for p in self.parts])
        order = np.argsort(ids, kind="stable")
        return Placement(self.names, ids[order], stacks[order], slots[order])


def _open_root(root: Path | Location, mode: Literal["r", "a"]) -> Any:
    """The store's root zarr group: a folder, or a place in object storage (zarr's ``ObjectStore``)."""
    import zarr  # lazy: zarr costs ~0.5 s to import

    if isinstance(root, Location):
        return zarr.open_group(store=root.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)
    return zarr.open_group(str(root), mode=mode)


def _remove_stale_groups(root: Path | Location, placed: Placement) -> None:
    """Removes the groups a run that wrote these images whole left (the image is stacked now).

    The groups are listed once (not one look per placed image: 100k of them in a new store, which has none).
    """
    if not len(placed):
        return
    if not isinstance(root, Location):
        try:
            listed = [e.name for e in os.scandir(Path(root) / "images") if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in listed:
            if _group_id(name) in placed:
                shutil.rmtree(Path(root) / "images" / name)
        return
    import obstore  # lazy: the Rust extension loads only when object storage is used

    # One LIST of the groups (their "folders"), not one per image: a new store has none.
    listed_objects = obstore.list_with_delimiter(root.store, "images")
    stale = [str(p).rstrip("/") for p in listed_objects["common_prefixes"]
             if _group_id(str(p).rstrip("/").rsplit("/", 1)[-1]) in placed]
    for prefix in stale:
        root.delete_many(list(root.list(prefix)))


#: A group's name as segpipe writes it: ``str(image id)`` (ASCII digits, no leading zero, no ``-0``).
_GROUP_NAME = re.compile(r"0|-?[1-9][0-9]*")


def _group_id(name: str) -> int | None:
    """The image id a group folder named ``name`` holds, or None when segpipe would not have named it so
    (``0100``, ``-0``, ``²``, ``١٢٣``: not its own, never removed as a stale group).
    """
    return int(name) if _GROUP_NAME.fullmatch(name) else None


def _existing_slots(sg: Any) -> tuple[dict[int, tuple[str, int]], list[tuple[int, str, int]]]:
    """The slots the stacks already hold: ``({image id: (stack, slot)}, [(image id, stack, slot)])``.

    An id found in several slots (a damaged stack) is in the second list only, with every slot it has:
    none of them can be trusted to hold its image or its attributes (a slot's attrs may name another
    image), so the image gets a fresh slot and every slot with its id is cleared.

    Args:
        sg: The ``stacks`` zarr group.
    """
    existing: dict[int, tuple[str, int]] = {}
    extra: list[tuple[int, str, int]] = []
    for name in sorted(sg.group_keys()):
        ids = np.asarray(sg[name]["ids"][...])
        for j in np.flatnonzero(ids >= 0).tolist():
            if int(ids[j]) in existing:
                extra.append((int(ids[j]), name, int(j)))
            else:
                existing[int(ids[j])] = (name, int(j))
    for image_id in {i for i, _, _ in extra}:
        name, j = existing.pop(image_id)
        extra.append((image_id, name, j))
    return existing, extra


def _create_stack(sg: Any, name: str, shape: tuple[int, int], categories: list[Any], labels_dtype: Any,
                  n_classes: int, probs: bool) -> None:
    """Creates an empty stack of ``(H, W)`` images: ``labels (N, H, W)``, ``probs (N, C, H, W)``, and
    the per-slot ``ids``, ``attrs`` and ``done`` (metadata only: ``N`` is 0 until slots are added).
    """
    h, w = shape
    g = sg.create_group(name, attributes={"categories": categories})
    void = label_fill(labels_dtype)
    g.create_array("labels", shape=(0, h, w), dtype=labels_dtype, chunks=(1, h, w), shards=(SHARD, h, w),
                   fill_value=void, chunk_key_encoding=_FLAT, dimension_names=dimension_names("labels", 3,
                   stacked=True), attributes=label_attributes(categories, void))
    if probs:
        g.create_array("probs", shape=(0, n_classes, h, w), dtype="uint8", chunks=(1, n_classes, h, w),
                       shards=(SHARD, n_classes, h, w), fill_value=0, chunk_key_encoding=_FLAT,
                       dimension_names=dimension_names("probs", 4, stacked=True))
    by_slot = ("slot",)
    g.create_array("ids", shape=(0,), dtype="int64", chunks=(65536,), fill_value=-1, dimension_names=by_slot,
                   attributes={"long_name": "image id of each slot (-1: none)"})
    g.create_array("attrs", shape=(0,), dtype=str, chunks=(4096,), dimension_names=by_slot,
                   attributes={"long_name": "the image's attributes as JSON"})
    g.create_array("done", shape=(0,), dtype="uint8", chunks=(SHARD,), fill_value=0, chunk_key_encoding=_FLAT,
                   dimension_names=by_slot, attributes={"long_name": "1 where the slot holds its image"})


def slot_attrs(entry: ManifestEntry) -> dict[str, Any]:
    """A stacked image's attributes (its slot of ``attrs``), from its manifest entry: what exports name
    its masks by.
    """
    return {"id": entry.id, "file": entry.file, "path": entry.path, "width": entry.width, "height": entry.height,
            "sha256": entry.sha256}


def attrs_json(attrs: Mapping[str, Any]) -> str:
    """The ``attrs`` string of a slot: its attributes as JSON, keys sorted."""
    return json.dumps(dict(attrs), sort_keys=True)


def slot_attrs_json(entry: ManifestEntry) -> str:
    """The ``attrs`` string the driver writes for ``entry`` at plan time (what fsck rebuilds and checks)."""
    return attrs_json(slot_attrs(entry))


def _as_mapping(item: Any) -> Mapping[str, Any]:
    """An item that is its attributes already."""
    return cast("Mapping[str, Any]", item)


def _rewrite_attrs(arr: Any, kept: Mapping[int, _Item], describe: Callable[[_Item], Mapping[str, Any]]) -> None:
    """Writes the attributes of the images kept in their slots where they changed, a chunk at a time.

    Each chunk holding such a slot is read once and written back only if one of its strings differs
    (a resume after an interruption keeps thousands of slots whose attributes are the same).
    """
    per_chunk = int(arr.chunks[0])
    by_chunk: dict[int, list[int]] = defaultdict(list)
    for slot in kept:
        by_chunk[slot // per_chunk].append(slot)
    for c, slots in sorted(by_chunk.items()):
        c0, c1 = c * per_chunk, min((c + 1) * per_chunk, int(arr.shape[0]))
        block = np.asarray(arr[c0:c1], dtype=object)
        changed = False
        for slot in slots:
            text = attrs_json(describe(kept[slot]))
            if block[slot - c0] != text:
                block[slot - c0] = text
                changed = True
        if changed:
            arr[c0:c1] = block


def _append_slots(g: Any, name: str, ids: Iterable[int], new: list[_Item],
                  describe: Callable[[_Item], Mapping[str, Any]], placement: _PlacementBuilder) -> None:
    """Grows stack ``g`` by whole shards and writes ``ids`` and the attributes of the ``new`` images (one
    item each) in its first free slots; adds their places to ``placement``.

    The attributes are made and written one ``attrs`` chunk at a time, so only a chunk's JSON is held.
    """
    n_old = int(g["ids"].shape[0])
    id_arr = np.frombuffer(ids, np.int64).copy() if isinstance(ids, array) else np.fromiter(ids, dtype=np.int64)
    n_new = _grow(n_old + len(new))
    for arr_name in g.array_keys():
        arr = g[arr_name]
        arr.resize((n_new, *arr.shape[1:]))
    g["ids"][n_old : n_old + len(new)] = id_arr
    attrs = g["attrs"]
    per_chunk = int(attrs.chunks[0])
    start, end = n_old, n_old + len(new)
    while start < end:
        stop = min(end, (start // per_chunk + 1) * per_chunk)  # whole chunks: each encoded once
        attrs[start:stop] = np.array([attrs_json(describe(a)) for a in new[start - n_old : stop - n_old]],
                                     dtype=object)
        start = stop
    placement.add(name, id_arr, range(n_old, n_old + len(new)))


class PendingSlot:
    """What one image of a shard task produced, held until its shard is written (worker side).

    It stands in for the image's group: :meth:`segpipe.storage.zarrstore.ZarrStore.write_array` hands
    it the arrays, which it keeps with their digests.
    """

    def __init__(self, stack: str, slot: int) -> None:
        self.stack, self.slot = stack, slot
        self.arrays: dict[str, np.ndarray] = {}
        self.key: str | None = None  # set with the receipt once the image is finished
        self.receipt: dict[str, Any] | None = None

    def put(self, name: str, data: np.ndarray) -> str:
        """Keeps array ``name`` (``labels`` (H, W) or ``probs`` (C, H, W)); returns its digest."""
        if name not in ("labels", "probs"):
            raise ValueError(f"a stacked image holds labels and probs, not {name}")
        self.arrays[name] = data
        return array_digest(data)


class ShardWriter:
    """Collects a shard task's images and writes their shards, ``done`` chunks and receipts (worker side).

    Locally each shard is a file written atomically; in object storage each is one PUT of the object
    zarr-python would write (as is the shard's ``done`` chunk), then the receipts are PUT together.

    Args:
        store_path: The store's folder, or its URL / :class:`~segpipe.storage.location.Location`.
    """

    def __init__(self, store_path: str | Path | Location) -> None:
        target = store_path if isinstance(store_path, Location) else as_location(store_path)
        #: The store in object storage, or None for a local store.
        self.location: Location | None = target if isinstance(target, Location) else None
        self.root = Path(target) if not isinstance(target, Location) else Path()
        self.pending: list[PendingSlot] = []
        self._shapes: dict[str, tuple[int, ...]] = {}

    def _doc(self, stack: str, name: str, slot: int = 0) -> dict[str, Any] | None:
        """The parsed ``zarr.json`` of array ``name`` of ``stack`` (None: no such array)."""
        if self.location is None:
            return zarrfast.read_array_document(self.root / STACKS / stack / name)
        key = f"{STACKS}/{stack}/{name}"
        doc = zarrfast.read_object_document(self.location, key)
        if doc is not None and slot >= int(doc["shape"][0]):  # the stack grew since it was read
            doc = zarrfast.read_object_document(self.location, key, fresh=True)
        return doc

    def image_shape(self, stack: str) -> tuple[int, int]:
        """``(H, W)`` of the images of ``stack``."""
        if stack not in self._shapes:
            doc = self._doc(stack, "labels")  # the parse flush() reuses
            if doc is None:
                raise FileNotFoundError(f"no stacked array labels in stack {stack}")
            self._shapes[stack] = tuple(int(s) for s in doc["shape"][1:])
        h, w = self._shapes[stack]
        return h, w

    def slot(self, stack: str, slot: int) -> PendingSlot:
        """The stand-in group of the image at ``slot`` of ``stack``."""
        p = PendingSlot(stack, slot)
        self.pending.append(p)
        return p

    def done(self, pending: PendingSlot, key: str, receipt: dict[str, Any]) -> None:
        """Records the receipt of a finished image (written to the ledger once its shard is)."""
        pending.key, pending.receipt = key, receipt

    def flush(self, ledger: Any) -> None:
        """Writes every touched shard whole, then its ``done`` chunk, then the finished images' receipts.

        A slot of the shard that no image of this task fills keeps what it held if ``done`` says it
        was finished before (a resumed run: read back, rewritten unchanged), else the fill value.
        The arrays' metadata (cached by :mod:`~segpipe.storage.zarrfast` while their files are
        unchanged) and ``done`` chunk are read from their files: zarr-python's per-call cost
        (milliseconds) would match the zstd time of the shard itself.
        """
        shards: dict[tuple[str, int], list[PendingSlot]] = defaultdict(list)
        for p in self.pending:
            shards[(p.stack, p.slot // SHARD)].append(p)
        for (stack, s), members in sorted(shards.items()):
            t0 = time.perf_counter()
            if self.location is not None:
                self._flush_object(self.location, stack, s, members)
            else:
                self._flush_local(stack, s, members)
            receipts = [(p.key, p.receipt) for p in members if p.key is not None and p.receipt is not None]
            share = (time.perf_counter() - t0) / max(1, len(receipts))
            for _, r in receipts:
                if isinstance(r.get("timings"), dict):  # the run report's write stage includes the shard's
                    r["timings"]["write"] = r["timings"].get("write", 0.0) + share
            if self.location is not None and len(receipts) > 1:
                # Each receipt is a PUT, a round trip: sent together, after the shard and done landed.
                list(_pool().map(lambda kr: ledger.write(*kr), receipts))
            else:
                for k, r in receipts:
                    ledger.write(k, r)
        self.pending = []

    def _flush_local(self, stack: str, s: int, members: list[PendingSlot]) -> None:
        """One shard of a local stack: its files, then its ``done`` chunk."""
        folder = self.root / STACKS / stack
        docs = {name: doc for name in ("labels", "probs", "done")
                if (doc := zarrfast.read_array_document(folder / name)) is not None}
        n = int(docs["done"]["shape"][0])
        lo, hi = s * SHARD, min(n, (s + 1) * SHARD)
        finished = {p.slot: p for p in members if p.receipt is not None and "labels" in p.arrays}
        done = _read_done(folder / "done", docs["done"], s, hi - lo)
        keep = [j for j in range(hi - lo) if done[j] and lo + j not in finished]
        for name in ("labels", "probs"):
            if name in docs:
                _write_stack_shard(folder / name, docs[name], name, lo, hi, keep, finished)
        new_done = _new_done(hi - lo, keep, finished, lo)
        if not zarrfast.write_region(folder / "done", new_done, (lo,)):
            _open_array(folder / "done", "r+")[lo:hi] = new_done

    def _flush_object(self, loc: Location, stack: str, s: int, members: list[PendingSlot]) -> None:
        """One shard of a stack in object storage: one PUT per shard object, then one of its ``done`` chunk.

        The ``done`` chunk is fetched while the shard is encoded (a new run finds none: no slot to keep);
        only when it names slots finished before is the shard object read back and encoded again.
        """
        base = f"{STACKS}/{stack}"
        slot0 = max(p.slot for p in members)
        docs = {name: doc for name in ("labels", "probs", "done") if (doc := self._doc(stack, name, slot0)) is not None}
        n = int(docs["done"]["shape"][0])
        lo, hi = s * SHARD, min(n, (s + 1) * SHARD)
        finished = {p.slot: p for p in members if p.receipt is not None and "labels" in p.arrays}
        done_f = _pool().submit(_read_object_done, loc, f"{base}/done", docs["done"], s, hi - lo)
        names = [name for name in ("labels", "probs") if name in docs]
        no_keep: list[int] = []
        blocks = {name: _shard_block(lambda: None, name, lo, hi, no_keep, finished) for name in names}
        objects = {name: zarrfast.encode_shards(docs[name], blocks[name], lo) for name in names}
        done = done_f.result()
        keep = [j for j in range(hi - lo) if done[j] and lo + j not in finished]
        if keep:  # a resumed run: the slots finished before are read back and written again
            for name in names:
                blocks[name] = _shard_block(functools.partial(_open_object_array, loc, f"{base}/{name}"), name,
                                            lo, hi, keep, finished)
                objects[name] = zarrfast.encode_shards(docs[name], blocks[name], lo)
        puts: list[Future[None]] = []
        for name in names:
            shard_objects = objects[name]
            if shard_objects is None:  # not an array zarrfast encodes: zarr-python writes the shard, whole
                _open_object_array(loc, f"{base}/{name}", "r+")[lo:hi] = _filled(docs[name], blocks[name])
            else:
                puts += [_put_later(loc, f"{base}/{name}/{rel}", blob) for rel, blob in shard_objects]
        wait_all(puts)
        new_done = _new_done(hi - lo, keep, finished, lo)
        frames = zarrfast.encode_region(docs["done"], new_done, (lo,))
        if frames is None:
            _open_object_array(loc, f"{base}/done", "r+")[lo:hi] = new_done
        else:
            wait_all([_put_later(loc, f"{base}/done/{rel}", blob) for rel, blob in frames])


def _new_done(n: int, keep: list[int], finished: Mapping[int, PendingSlot], lo: int) -> np.ndarray:
    """A shard's ``done`` flags, ``(n,) uint8``: 1 for the slots kept and the slots just written."""
    new_done = np.zeros(n, dtype=np.uint8)
    new_done[keep] = 1
    for slot in finished:
        new_done[slot - lo] = 1
    return new_done


def _put_later(loc: Location, key: str, blob: bytes | None) -> Future[None]:
    """Starts the PUT of ``key`` (or its DELETE, for a chunk of fill values that zarr leaves out)."""
    return loc.write_later(key, blob) if blob is not None else loc.delete_later(key)


def _shard_block(open_arr: Callable[[], Any], name: str, lo: int, hi: int, keep: list[int],
                 finished: Mapping[int, PendingSlot]) -> list[np.ndarray | None]:
    """The images of slots ``lo..hi`` (None: fill value): kept slots read back, finished ones from this task.

    A kept slot whose data cannot be read (a damaged shard) is removed from ``keep``: it is written as
    fill and its receipt no longer holds (``--resume`` redoes it).
    """
    # The images themselves, not a stacked copy: a fresh shard-sized buffer page-faults on this VM
    # about as long as zstd takes to compress it.
    block: list[np.ndarray | None] = [None] * (hi - lo)
    if keep:
        arr = open_arr()
        for j in list(keep):
            try:
                block[j] = np.asarray(arr[lo + j])
            except Exception:  # a damaged shard: the slot is rewritten unwritten (done 0),
                keep.remove(j)  # so its receipt no longer holds and --resume redoes it
    for slot, p in finished.items():
        if name in p.arrays:
            block[slot - lo] = p.arrays[name]
    return block


def _filled(doc: Mapping[str, Any], block: list[np.ndarray | None]) -> np.ndarray:
    """``block`` stacked, ``(n, ...)``, with the array's fill value for None."""
    shape = [int(d) for d in doc["shape"]]
    full = np.full((len(block), *shape[1:]), zarrfast.fill_of(doc), dtype=np.dtype(doc["data_type"]))
    for j, img in enumerate(block):
        if img is not None:
            full[j] = img
    return full


def _write_stack_shard(path: Path, doc: Mapping[str, Any], name: str, lo: int, hi: int, keep: list[int],
                       finished: Mapping[int, PendingSlot]) -> None:
    """Writes slots ``lo..hi`` of one stacked array (``labels`` or ``probs``) as one whole shard.

    Args:
        path: The array's folder.
        doc: Its parsed ``zarr.json``.
        name: ``labels`` or ``probs``: the key of the images in :attr:`PendingSlot.arrays`.
        lo: First slot of the shard.
        hi: One past its last slot.
        keep: Shard positions (``slot - lo``) finished before, read back and rewritten unchanged; one
            whose data cannot be read (a damaged shard) is removed from it, so it is written as fill
            and its receipt no longer holds (``--resume`` redoes it).
        finished: Slot → the image of this task written there.
    """
    block = _shard_block(lambda: _open_array(path), name, lo, hi, keep, finished)
    if not zarrfast.write_shards(path, block, lo):
        _open_array(path, "r+")[lo:hi] = _filled(doc, block)  # shard-aligned: one writer per file


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """Threads for a shard task's requests to object storage (one pool per process, as a fork has none)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(8, thread_name_prefix="segpipe-stacks"))
    return _POOL[1]


def _open_object_array(loc: Location, key: str, mode: Literal["r", "r+"] = "r") -> Any:
    """The zarr array at ``key`` of a store in object storage."""
    import zarr  # lazy: zarr costs ~0.5 s to import

    return zarr.open_array(store=loc.zarr_store(read_only=mode == "r"), path=key, mode=mode, zarr_format=3)


def _read_object_done(loc: Location, key: str, doc: Mapping[str, Any], shard: int, n: int) -> np.ndarray:
    """:func:`_read_done` in object storage: the ``done`` flags of one shard, ``(n,) uint8`` (one GET)."""
    layout = _flat_done_layout(doc)
    if layout is None:
        return np.asarray(_open_object_array(loc, key)[shard * SHARD : shard * SHARD + n]).astype(np.uint8)
    try:
        frame = loc.read_bytes(f"{key}/" + layout[1].join(["c", str(shard)]))
    except FileNotFoundError:
        return np.zeros(n, dtype=np.uint8)  # never written: all fill value
    from numcodecs import Zstd  # lazy: numcodecs costs ~0.3 s to import

    return np.frombuffer(Zstd().decode(frame), dtype=np.uint8)[:n].copy()


def _open_array(path: Path, mode: str = "r") -> Any:
    import zarr  # lazy: zarr costs ~0.5 s to import

    return zarr.open_array(str(path), mode=mode)


def _read_done(path: Path, doc: Mapping[str, Any], shard: int, n: int) -> np.ndarray:
    """The ``done`` flags of one shard's slots, ``(n,) uint8`` (its one chunk, read from its file).

    A ``done`` array other than :func:`plan_stacks` makes (see :func:`_flat_done_layout`) is read
    through zarr-python.
    """
    layout = _flat_done_layout(doc)
    if layout is None:
        return np.asarray(_open_array(path)[shard * SHARD : shard * SHARD + n]).astype(np.uint8)
    try:
        frame = _read_small(os.fspath(path / layout[1].join(["c", str(shard)])))
    except FileNotFoundError:
        return np.zeros(n, dtype=np.uint8)  # never written: all fill value
    from numcodecs import Zstd  # lazy: numcodecs costs ~0.3 s to import

    return np.frombuffer(Zstd().decode(frame), dtype=np.uint8)[:n].copy()


class _SlotArray:
    """One image of a stacked array, read lazily: ``stack[slot]`` with the image's own shape."""

    def __init__(self, arr: Any, slot: int) -> None:
        self._arr, self._slot = arr, slot
        self.shape = tuple(arr.shape[1:])
        self.dtype = arr.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest = key if isinstance(key, tuple) else (key,)
        return np.asarray(self._arr[(self._slot, *rest)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[...]
        return a.astype(dtype) if dtype is not None else a


#: Attribute strings (one per slot) that a :class:`StackCache` keeps decoded at most: eight full
#: ``attrs`` chunks, a few MiB. Reading slots in order needs one chunk per stack being read.
ATTRS_CACHE_SLOTS = 8 * 4096
#: Stack groups whose array names and handles a :class:`StackCache` keeps at most.
HANDLES_CACHE_GROUPS = 64


class _StackHandles:
    """The array names and (lazily opened) array handles of one stack group."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.names = [n for n in ("labels", "probs") if n in group.array_keys()]
        attrs = group["attrs"]
        chunks = getattr(attrs, "chunks", None)
        #: Slots per ``attrs`` chunk (the array's own; 4096 as :func:`plan_stacks` creates it).
        self.attrs_chunk = int(chunks[0]) if chunks else 4096
        self._arrays: dict[str, Any] = {}

    def array(self, name: str, slot: int) -> Any:
        """The handle of array ``name``, opened again if ``slot`` lies past its shape (a grown stack)."""
        arr = self._arrays.get(name)
        if arr is None or not 0 <= slot < int(arr.shape[0]):
            arr = self._arrays[name] = self.group[name]
        return arr


class StackCache:
    """Decoded ``attrs`` chunks and array handles of stack groups, shared by :class:`StackedImage` views.

    zarr-python decodes an image's whole ``attrs`` chunk (up to 4,096 JSON strings) to read its one
    string, and opening a stack's arrays reads their metadata: together about 5 ms per image, 19
    minutes for the 200,000 images of an export. Kept here per group object, a chunk is decoded once
    for all its slots and the handles are opened once per stack.

    Entries are keyed by the group object's identity and hold the object itself, so no other group
    can take over a key while it is cached; a group handle thus sees what it read first, as
    :class:`~segpipe.storage.zarrstore.ZarrStore`'s index does. A slot past a cached chunk (the stack
    grew since) reads the chunk again. Memory is bounded: at most ``max_slots`` strings, least
    recently used chunks dropped first (the chunk just read is always kept).

    Args:
        max_slots: Attribute strings kept at most.
        max_groups: Stack groups whose handles are kept at most.
    """

    def __init__(self, max_slots: int = ATTRS_CACHE_SLOTS, max_groups: int = HANDLES_CACHE_GROUPS) -> None:
        self.max_slots, self.max_groups = int(max_slots), int(max_groups)
        self._lock = threading.Lock()  # export and evaluation may read from threads
        self._chunks: OrderedDict[tuple[int, int], tuple[Any, list[str]]] = OrderedDict()
        self._held = 0  # strings in _chunks
        self._handles: OrderedDict[int, _StackHandles] = OrderedDict()

    def handles(self, group: Any) -> _StackHandles:
        """The array names and handles of ``group`` (a stack's zarr group)."""
        key = id(group)
        with self._lock:
            h = self._handles.get(key)
            if h is not None:
                self._handles.move_to_end(key)
                return h
        h = _StackHandles(group)  # outside the lock: zarr-python reads; a racing thread reads twice
        with self._lock:
            self._handles[key] = h
            self._handles.move_to_end(key)
            while len(self._handles) > self.max_groups:
                self._handles.popitem(last=False)
        return h

    def attrs_json(self, group: Any, slot: int) -> str:
        """The JSON attributes string of ``slot`` of the stack ``group``, as ``str(group["attrs"][slot])``.

        Raises:
            IndexError: ``slot`` lies outside the ``attrs`` array.
        """
        if slot < 0:  # counted from the end, as zarr-python does: rare, not cached
            return str(group["attrs"][slot])
        size = self.handles(group).attrs_chunk
        c, off = divmod(int(slot), size)
        key = (id(group), c)
        with self._lock:
            hit = self._chunks.get(key)
            if hit is not None and off < len(hit[1]):
                self._chunks.move_to_end(key)
                return hit[1][off]
        arr = group["attrs"]  # opened again: the stack may have grown since its handles were cached
        lo = c * size
        hi = min(lo + size, int(arr.shape[0]))
        if lo + off >= hi:
            raise IndexError(f"slot {slot} is outside the stack's {int(arr.shape[0])} slots")
        values = [str(v) for v in np.asarray(arr[lo:hi]).tolist()]
        with self._lock:
            old = self._chunks.pop(key, None)
            if old is not None:
                self._held -= len(old[1])
            self._chunks[key] = (group, values)
            self._held += len(values)
            while self._held > self.max_slots and len(self._chunks) > 1:
                _, (_, dropped) = self._chunks.popitem(last=False)
                self._held -= len(dropped)
        return values[off]

    def clear(self) -> None:
        """Drops every cached chunk and handle."""
        with self._lock:
            self._chunks.clear()
            self._handles.clear()
            self._held = 0


#: The cache of views made without their own (:class:`~segpipe.storage.zarrstore.ZarrStore`'s too).
_SHARED_CACHE = StackCache()


class StackedImage:
    """A stacked image seen as its group: ``attrs``, ``["labels"]``, ``["probs"]``, ``array_keys()``.

    Views of one stack should share its group object (as :class:`~segpipe.storage.zarrstore.ZarrStore`
    does): the decoded ``attrs`` chunks and array handles are cached per group object, so the views of
    a chunk's slots decode it once between them. ``attrs`` is read on first use.

    Args:
        group: The stack's zarr group.
        slot: The image's slot.
        cache: Where decoded ``attrs`` chunks and array handles are kept (the process-wide
            :class:`StackCache` if None).
    """

    def __init__(self, group: Any, slot: int, cache: StackCache | None = None) -> None:
        self._g, self.slot = group, slot
        self._cache = cache if cache is not None else _SHARED_CACHE
        self._handles = self._cache.handles(group)
        self._names = list(self._handles.names)
        self._attrs: dict[str, Any] | None = None

    @property
    def attrs(self) -> dict[str, Any]:
        """The image's attributes (``attrs[slot]`` decoded from JSON).

        Read on first use: a reader of the arrays alone (fsck, in the ledger's order, which is no
        slot order) decodes no ``attrs`` chunk. Each view has its own dict, as before the cache, so
        a caller may change it without changing another view's.

        Raises:
            IndexError: The slot lies outside the stack.
        """
        if self._attrs is None:
            self._attrs = json.loads(self._cache.attrs_json(self._g, self.slot))
        return self._attrs

    @attrs.setter
    def attrs(self, value: dict[str, Any]) -> None:
        self._attrs = value

    def array_keys(self) -> list[str]:
        """The image's arrays."""
        return list(self._names)

    def group_keys(self) -> list[str]:
        """A stacked image has no subgroups."""
        return []

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> _SlotArray:
        if name not in self._names:
            raise KeyError(name)
        return _SlotArray(self._handles.array(name, self.slot), self.slot)


def read_index(root_path: Path | Location) -> dict[int, tuple[str, int]]:
    """``{image id: (stack, slot)}`` of every finished stacked image of a store (none for layout 1).

    Slots are finished where ``ids`` holds an image (>= 0) and ``done`` is 1; an id found in two
    slots maps to the later one (stacks in name order, slots in order).

    Args:
        root_path: The store's folder, or its place in object storage.
    """
    out: dict[int, tuple[str, int]] = {}
    for name, (ids, done) in read_stack_slots(root_path).items():
        sel = np.flatnonzero((ids >= 0) & (done == 1))
        out.update(zip(ids[sel].tolist(), [(name, j) for j in sel.tolist()], strict=True))
    return out


def read_stack_slots(root_path: Path | Location) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{stack: (ids (N,) int64, done (N,) uint8)}`` of every stack of a store, in name order.

    Raises:
        Exception: zarr's or the storage's own, when a stack's ``ids`` or ``done`` cannot be read.
    """
    import zarr  # lazy: zarr costs ~0.5 s to import

    if isinstance(root_path, Location):
        if not root_path.exists(f"{STACKS}/zarr.json"):
            return {}
        sg: Any = zarr.open_group(store=root_path.zarr_store(read_only=True), path=STACKS, mode="r", zarr_format=3)
    else:
        base = Path(root_path) / STACKS
        if not (base / "zarr.json").is_file():
            return {}
        sg = zarr.open_group(str(base), mode="r")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in sorted(sg.group_keys()):
        g = sg[name]
        # one chunk per 65,536 slots: zarr-python's cost is paid rarely
        ids = np.asarray(g["ids"][...]).astype(np.int64)
        if isinstance(root_path, Location):
            done = _read_all_object_done(root_path, f"{STACKS}/{name}/done")
        else:
            done = _read_all_done(Path(root_path) / STACKS / name / "done")
        if done is None:
            done = np.asarray(g["done"][...])
        n = min(len(ids), len(done))
        out[name] = (ids[:n], np.asarray(done[:n]).astype(np.uint8))
    return out


def _read_all_object_done(loc: Location, key: str) -> np.ndarray | None:
    """:func:`_read_all_done` in object storage: one LIST of the ``done`` chunks, then their GETs together.

    zarr-python would GET every chunk of the array's grid, written or not; the listing names the
    written ones. None when zarr-python must read it (another layout, a chunk that does not decode).
    """
    try:
        doc = json.loads(loc.read_bytes(f"{key}/zarr.json"))
    except (FileNotFoundError, ValueError):
        return None
    layout = _flat_done_layout(doc) if isinstance(doc, dict) else None
    if layout is None or layout[1] != ".":
        return None
    n = layout[0]
    n_chunks = -(-n // SHARD)
    chunk_ids: list[int] = []
    for k in loc.list(key):
        digits = k[len(key) + 3:] if k.startswith(f"{key}/c.") else ""
        if digits.isascii() and digits.isdigit() and str(int(digits)) == digits and int(digits) < n_chunks:
            chunk_ids.append(int(digits))

    def get(c: int) -> bytes | None:
        try:
            return loc.read_bytes(f"{key}/c.{c}")
        except FileNotFoundError:
            return None  # removed since the listing: rewritten as all fill value

    return _done_flags(n, chunk_ids, list(_pool().map(get, chunk_ids)))


def _flat_done_layout(doc: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(length, key separator)`` of a ``done`` array as :func:`plan_stacks` creates it, else None.

    That is: uint8, fill value 0, chunks of :data:`SHARD`, bytes + zstd codecs, default key
    encoding; the chunk files of such an array :func:`_read_all_done` decodes itself.
    """
    try:
        enc = doc.get("chunk_key_encoding", {})
        sep = enc.get("configuration", {}).get("separator", "/")
        shape = [int(d) for d in doc["shape"]]
        chunk = [int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"]]
        codecs = [c.get("name") for c in doc.get("codecs", [])]
        expected = (doc.get("zarr_format") == 3 and doc.get("data_type") == "uint8" and doc.get("fill_value") == 0
                    and enc.get("name") == "default" and sep in (".", "/") and len(shape) == 1
                    and chunk == [SHARD] and codecs == ["bytes", "zstd"] and not doc.get("storage_transformers"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return (shape[0], sep) if expected else None


def _read_all_done(path: Path) -> np.ndarray | None:
    """Every ``done`` flag of a stack, ``(N,) uint8``, read from its chunk files; None if zarr-python must.

    zarr-python costs about 0.46 ms per chunk and ``done`` has one chunk per :data:`SHARD` slots
    (12 s for 200,000 images); the folder is listed once and only the chunk files there are read
    (a missing one is all fill value, 0), as :func:`_read_done` does for one shard. Any other
    metadata (chunks, codecs, key encoding, fill value, dtype) returns None: the caller reads the
    array through zarr-python.

    Args:
        path: The ``done`` array's folder.
    """
    doc = zarrfast.read_array_document(path)
    layout = _flat_done_layout(doc) if isinstance(doc, dict) else None
    if layout is None:
        return None
    n, sep = layout
    n_chunks = -(-n // SHARD)
    # "c.3" in the array's folder, or "c/3" (one more folder) with the "/" separator.
    folder, prefix = (path, "c.") if sep == "." else (path / "c", "")
    try:
        entries = [e.name for e in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        entries = []  # no chunk written yet: all fill value
    chunk_ids: list[int] = []
    paths: list[str] = []
    base = os.path.join(folder, "")
    for entry in entries:
        digits = entry[len(prefix):] if entry.startswith(prefix) else ""
        # Not a chunk key: zarr.json, or a writer's "c.3.partial.<pid>" about to replace one. Leading
        # zeros would be another key than zarr's, which it never reads.
        if not (digits.isascii() and digits.isdigit()) or str(int(digits)) != digits:
            continue
        c = int(digits)
        if c < n_chunks:  # one beyond the array's shape is ignored, as zarr-python does
            chunk_ids.append(c)
            paths.append(base + entry)
    return _done_flags(n, chunk_ids, _read_files(paths))


def _done_flags(n: int, chunk_ids: list[int], frames: list[bytes | None]) -> np.ndarray | None:
    """The ``(n,)`` uint8 flags of a ``done`` array from its written chunks' zstd frames.

    Args:
        n: The array's length.
        chunk_ids: The written chunks' indices.
        frames: Their bytes, in the same order (None for one removed since the listing: all fill value).

    Returns:
        The flags, or None when a frame is not a chunk as zarr writes them (let zarr-python judge it).
    """
    from numcodecs import Zstd  # lazy: numcodecs costs ~0.3 s to import

    codec = Zstd()
    flags = np.zeros(-(-n // SHARD) * SHARD, dtype=np.uint8)
    # A chunk holds 8 flags, so a store has few distinct frames (all 1, all 0, a few partial
    # shards): decoding each distinct frame once spares numcodecs' 14 µs per call.
    decoded: dict[bytes, np.ndarray] = {}
    for c, frame in zip(chunk_ids, frames, strict=True):
        if frame is None:
            continue
        flags_c = decoded.get(frame)
        if flags_c is None:
            try:
                flags_c = np.frombuffer(codec.decode(frame), dtype=np.uint8)
            except Exception:  # a damaged chunk: zarr-python's read reports it its own way
                return None
            if flags_c.size != SHARD:
                return None
            decoded[frame] = flags_c
        flags[c * SHARD : (c + 1) * SHARD] = flags_c
    return flags[:n]


#: Files from which :func:`_read_files` reads from threads, and how many each thread reads at a time.
_PARALLEL_READS, _READ_BATCH, _READ_THREADS = 1024, 256, 4


def _read_files(paths: list[str]) -> list[bytes | None]:
    """The bytes of small files, in order; None for one that no longer exists.

    Cold (after a restart) each file waits for the disk; a few threads overlap those waits (5,000
    ``done`` chunks: 0.77 s in one thread, 0.25 s in four on this VM), and warm they cost nothing more.
    """

    def read(batch: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for path in batch:
            try:
                out.append(_read_small(path))
            except FileNotFoundError:
                out.append(None)
        return out

    if len(paths) < _PARALLEL_READS:
        return read(paths)
    batches = [paths[i : i + _READ_BATCH] for i in range(0, len(paths), _READ_BATCH)]
    with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
        return [frame for part in pool.map(read, batches) for frame in part]


def _read_small(path: str) -> bytes:
    """A small file's bytes with plain system calls (a third of ``Path.read_bytes``' 22 µs here)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        parts = []
        while part := os.read(fd, 1 << 16):
            parts.append(part)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def open_stack(root_path: Path | Location, name: str) -> Any:
    """The read-only zarr group of one stack (of a local store, or of one in object storage)."""
    import zarr  # lazy: zarr costs ~0.5 s to import

    if isinstance(root_path, Location):
        return zarr.open_group(store=root_path.zarr_store(read_only=True), path=f"{STACKS}/{name}", mode="r",
                               zarr_format=3)
    return zarr.open_group(os.fspath(Path(root_path) / STACKS / name), mode="r")


def shard_key(stack: str, slot: int, name: str) -> str:
    """The key of the shard of ``slot`` in array ``name`` (``labels``, ``probs``) of ``stack``, from the root."""
    ndim = 4 if name == "probs" else 3
    return "/".join([STACKS, stack, name, ".".join(["c", str(slot // SHARD), *(["0"] * (ndim - 1))])])


def read_shard_index(loc: Location, key: str, per_shard: int) -> list[bool] | str | None:
    """Which slots a shard object in object storage holds, from its index alone (one ranged GET).

    The index (``per_shard`` offset and length pairs, then its CRC32C) is at the end of the object, as
    zarr's sharding codec writes it by default: it must pass its checksum and point inside the object.

    Returns:
        One flag per slot; None if the object is missing; the problem in words if it is damaged.
    """
    import obstore  # lazy: the Rust extension loads only when object storage is used
    from numcodecs import CRC32C  # lazy: numcodecs costs ~0.3 s to import

    n = per_shard * 16 + 4
    try:
        res = obstore.get(loc.store, key, options={"range": {"suffix": n}})
        tail, size = bytes(res.bytes()), int(res.meta["size"])
    except FileNotFoundError:
        return None
    except Exception as e:
        if type(e).__name__ == "NotFoundError":
            return None
        return "damaged shard object (shorter than its index)"
    if len(tail) != n:
        return "damaged shard object (shorter than its index)"
    body, crc = tail[:-4], tail[-4:]
    if bytes(CRC32C().encode(body))[-4:] != crc:
        return "damaged shard object (its index fails its checksum)"
    index = np.frombuffer(body, dtype="<u8").reshape(per_shard, 2)
    used = index[:, 0] != zarrfast.EMPTY
    ends = index[used, 0].astype(object) + index[used, 1].astype(object)
    if not all(e <= size - n for e in ends):
        return "damaged shard object (its index points past the end: truncated)"
    return [bool(u) for u in used.tolist()]


def slots_hold(loc: Location, wanted: Mapping[str, tuple[int, str, int, Iterable[str]]]) -> set[str]:
    """The receipts (by key) whose stacked image a store in object storage holds, without reading pixels.

    What ``--resume`` trusts, as a local store's receipts are checked (``plan_checks(files=True)``):
    the slot holds the image's id (and no other slot does), its ``done`` flag is 1, and each shard
    object the receipt names holds the slot in its index, which passes its checksum (one ranged GET
    per shard object, sent together).

    Args:
        loc: The store.
        wanted: Receipt key → ``(image id, stack, slot, arrays it names: labels, probs)``.

    Returns:
        The keys whose slot holds.
    """
    if not wanted:
        return set()
    try:
        stacks = read_stack_slots(loc)
    except Exception:  # a stack's ids or done cannot be read: no stacked receipt can be trusted
        return set()
    count: dict[int, int] = defaultdict(int)
    for ids, _ in stacks.values():
        for i in ids[ids >= 0].tolist():
            count[int(i)] += 1
    placed: dict[str, list[str]] = {}
    for key, (image_id, name, slot, arrays) in wanted.items():
        st = stacks.get(name)
        if st is None or not 0 <= slot < len(st[0]) or int(st[0][slot]) != image_id or not st[1][slot] \
                or count[image_id] != 1:
            continue
        placed[key] = [shard_key(name, slot, a) for a in arrays if a in ("labels", "probs")]
    shards = sorted({k for keys in placed.values() for k in keys})
    indexes = dict(zip(shards, _pool().map(lambda k: read_shard_index(loc, k, SHARD), shards), strict=True))
    held = set()
    for key, keys in placed.items():
        slot = wanted[key][2]
        if all(isinstance(indexes[k], list) and indexes[k][slot % SHARD] for k in keys):  # type: ignore[index]
            held.add(key)
    return held
