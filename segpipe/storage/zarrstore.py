"""The segpipe Zarr store (layout version 2): masks, probabilities, instances, panoptic maps and heatmaps.

Layout (documented in ``schemas/zarr_layout.schema.json``; readable with plain ``zarr`` or ``xarray``)::

    STORE.zarr/                     zarr v3 group; attrs["segpipe"] = layout, task, categories, model, run
      images/<image id>/            one group per image; attrs: id, file, width, height, sha256
        labels     (H, W)    uint8 | uint16   semantic label map (panoptic: category per pixel)
        probs      (C, H, W) uint8            per-class probability, quantised: p ≈ value / 255
        panoptic   (H, W)    int32            panoptic segment ids (0 = void); segments in attrs
        heatmaps   (K, H, W) float16          landmark heatmaps
        keypoints  (N, K, 3) float32          decoded landmarks: x, y, confidence
        instances/                            rle (N,) str (COCO compressed RLE counts), boxes (N, 4)
                                              float32 xywh, scores (N,) float32, labels (N,) int32
      stacks/<H>x<W>/               layout 2: same-size images of a semantic run, one slot each
                                    (labels, probs, ids, attrs, done: see segpipe.storage.stacks)
      .segpipe/                     not zarr: ledger/ receipts, manifest.jsonl, runs/ reports

Every array has ``dimension_names`` (the names xarray gives its axes: :func:`dimension_names`), so
``xarray.open_zarr(STORE, group="images/<id>")`` (or ``group="stacks/<H>x<W>"``) opens any group. A
label map's fill value is its void value (255, or 65535 for uint16; never a class), so that nothing a
writer left unwritten reads as background, and its attributes name the classes the CF way
(``flag_values`` / ``flag_meanings``) and the OME-Zarr way (``image-label``): :func:`label_attributes`.
Stores written before (no ``dimension_names``, fill value 0) are read as they are.

Every image's arrays belong to exactly one task (or, for an image tiled across tasks, each task owns
whole chunk rows), so no two writers ever touch the same chunk: zarr 3 has no locks. Metadata of the
root group is written once, by the driver.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segpipe.errors import ConfigError, InputError
from segpipe.storage import zarrfast

# Array conventions live in segpipe.storage.arrays (stacks and verify need them too, below this
# module); they are re-exported here, where callers have always found them.
from segpipe.storage.arrays import DIGEST_SCHEME as DIGEST_SCHEME
from segpipe.storage.arrays import DIMENSIONS as DIMENSIONS
from segpipe.storage.arrays import ArrayDigest as ArrayDigest
from segpipe.storage.arrays import array_digest as array_digest
from segpipe.storage.arrays import digest_matches as digest_matches
from segpipe.storage.arrays import dimension_names as dimension_names
from segpipe.storage.arrays import is_label_map as is_label_map
from segpipe.storage.arrays import label_attributes as label_attributes
from segpipe.storage.arrays import label_fill as label_fill
from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.ledger import Ledger, ObjectLedger
from segpipe.storage.location import Location, as_location, describe_storage_error, wait_all
from segpipe.storage.stacks import PendingSlot, StackedImage, open_stack, read_index
from segpipe.storage.verify import metadata_problem

LAYOUT_VERSION = 2
#: Layouts this version reads (2 adds ``stacks/`` to layout 1's groups: :mod:`segpipe.storage.stacks`).
READABLE_LAYOUTS = (1, 2)
LABEL_CHUNK = 1024
PROB_CHUNK = 512
PRIVATE = ".segpipe"


#: Label-map attributes per store root ``zarr.json`` (path and stat signature): see ZarrStore.label_attributes.
_LABEL_ATTRS: dict[tuple[Any, ...], dict[str, Any]] = {}


def image_key(image_id: int) -> str:
    """The group name of an image."""
    return str(int(image_id))


def quantise_probs(p: np.ndarray) -> np.ndarray:
    """Float probabilities in [0, 1] → uint8 (value = round(255 p)); max error 1/510."""
    return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)


def dequantise_probs(q: np.ndarray) -> np.ndarray:
    """uint8 → float32 probabilities."""
    return q.astype(np.float32) / 255.0


class ZarrStore:
    """A segpipe store on the local file system or in object storage.

    A local store is written directly where it can be (:mod:`segpipe.storage.zarrfast`); a store at an
    ``s3://``, ``gs://`` or ``az://`` URL (:mod:`segpipe.storage.location`) is read and written through
    zarr's ``ObjectStore``, and its private files through :attr:`private_location` (receipts in an
    :class:`~segpipe.storage.ledger.ObjectLedger`; the manifest and run reports through
    :meth:`write_private`). Stacks (``stacks/``) are laid out the same way in both (in object storage
    a shard is one object, PUT whole by the task that owns it: :class:`~segpipe.storage.stacks.ShardWriter`);
    callers that need :attr:`path` or :attr:`private` (scenes so far) raise
    :class:`~segpipe.errors.ConfigError` rather than write a local folder of that name.

    Args:
        path: ``STORE.zarr`` folder, or its URL.
    """

    def __init__(self, path: str | Path) -> None:
        target = as_location(path)  # also a Path made of a URL (an option typed as a path)
        #: Where the store is in object storage; None for a local store.
        self.location: Location | None = target if isinstance(target, Location) else None
        self._path: Path | None = target if isinstance(target, Path) else None
        self._index: dict[int, tuple[str, int]] | None = None
        # One group object per stack, so its views share the decoded attrs chunks (StackCache).
        self._stacks: dict[str, Any] = {}
        self._label_attrs: dict[str, Any] | None = None
        # The root group of a store in object storage, opened once per handle (each open costs requests).
        self._roots: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Handles travel to workers: open zarr groups (and their stores' clients) stay behind.
        state = dict(self.__dict__)
        state["_roots"], state["_stacks"] = {}, {}
        return state

    @property
    def path(self) -> Path:
        """The store's folder (local stores only).

        Raises:
            ConfigError: The store is in object storage, where this caller is not supported yet.
        """
        if self._path is None:
            raise ConfigError("this command does not support stores in object storage yet; "
                              "write the store to a local path", path=str(self.location))
        return self._path

    @property
    def target(self) -> str | Path:
        """Where the store is, as :meth:`open` takes it: its URL, or its local folder."""
        return self.location.url if self.location is not None else self.path

    def __str__(self) -> str:
        return str(self.location) if self.location is not None else str(self._path)

    def write_private(self, key: str, data: bytes) -> None:
        """Writes ``STORE/.segpipe/<key>`` whole (a manifest, a run report): atomically, locally or as one PUT."""
        loc = self.private_location
        if loc is None:
            target = self.private / key
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(target, data)
        else:
            loc.write_bytes(key, data)

    def read_private(self, key: str) -> bytes:
        """The bytes of ``STORE/.segpipe/<key>``.

        Raises:
            FileNotFoundError: There is no such file.
        """
        loc = self.private_location
        return (self.private / key).read_bytes() if loc is None else loc.read_bytes(key)

    def private_keys(self, prefix: str) -> list[str]:
        """The keys below ``STORE/.segpipe/<prefix>`` (relative to ``.segpipe``, ``/``-separated), sorted."""
        loc = self.private_location
        if loc is None:
            folder = self.private / prefix
            if not folder.is_dir():
                return []
            return sorted(p.relative_to(self.private).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in loc.list(prefix) if k.startswith(prefix.strip("/") + "/"))

    @property
    def private(self) -> Path:
        """The private folder ``STORE/.segpipe`` (local stores only: see :attr:`private_location`)."""
        return self.path / PRIVATE

    @property
    def private_location(self) -> Location | None:
        """``STORE/.segpipe`` in object storage; None for a local store."""
        return None if self.location is None else self.location.child(PRIVATE)

    def ledger(self) -> Ledger | ObjectLedger:
        """The ledger of receipts (in object storage: an :class:`~segpipe.storage.ledger.ObjectLedger`)."""
        loc = self.private_location
        return Ledger(self.private) if loc is None else ObjectLedger(loc)

    def _root(self, mode: Literal["r", "a"]) -> Any:
        import zarr  # lazy: zarr costs ~0.5 s to import

        if self.location is None:
            return zarr.open_group(str(self.path), mode=mode)
        # Once per handle, as zarr v3 (no probes for v2's .zgroup/.zattrs/.zmetadata); a handle that
        # writes reads through its writable root, which holds the attributes it wrote.
        # (never `a or b`: a group's truth value is len(group), a crawl of the whole hierarchy)
        root = self._roots.get("a")
        if root is None:
            root = self._roots.get(mode)
        if root is None:
            root = self._roots[mode] = zarr.open_group(store=self.location.zarr_store(read_only=mode == "r"),
                                                       mode=mode, zarr_format=3)
        return root

    # -------------------------------------------------------------- driver side

    @classmethod
    def create(cls, path: str | Path, attrs: Mapping[str, Any]) -> ZarrStore:
        """Creates the root group with ``attrs`` under the ``segpipe`` key (driver, once)."""
        store = cls(path)
        root = store._root("a")
        root.attrs["segpipe"] = {"layout": LAYOUT_VERSION, **dict(attrs)}
        if attrs.get("categories") is not None:  # also at the top, where xarray's Dataset.attrs shows it
            root.attrs["categories"] = list(attrs["categories"])
        if "images" not in root:
            root.create_group("images")
        if store.location is None:  # object storage has no folders to make
            store.private.mkdir(parents=True, exist_ok=True)
        return store

    @classmethod
    def open(cls, path: str | Path) -> ZarrStore:
        """Opens an existing store (raises InputError if it is not a segpipe store)."""
        store = cls(path)
        if store.location is not None:
            try:
                found = store.location.exists("zarr.json")
            except Exception as e:  # obstore's errors: no access, no network, a refused request
                raise InputError(f"cannot be read: {describe_storage_error(e)}", path=str(store.location)) from None
            if not found:
                raise InputError("not a Zarr store (no zarr.json)", path=str(store.location))
        else:
            if not (store.path / "zarr.json").exists():
                raise InputError("not a Zarr store (no zarr.json)", path=path)
            metadata_problem(store.path / "zarr.json", raise_it=True)  # corrupt: one line naming the file
        try:
            attrs = store.attrs()
        except Exception as e:  # valid JSON that zarr still refuses (a bad field)
            where = store.location.key_url("zarr.json") if store.location is not None else store.path / "zarr.json"
            raise InputError(f"not readable as a Zarr group ({type(e).__name__}: {e})", path=where) from None
        if attrs.get("layout") not in READABLE_LAYOUTS:
            raise InputError(f"unsupported segpipe store layout {attrs.get('layout')!r}",
                             path=str(store.location or path))
        return store

    def attrs(self) -> dict[str, Any]:
        """The store's ``segpipe`` attributes (layout, task, categories, model, run)."""
        root = self._root("r")
        value: Any = root.attrs.get("segpipe", {})
        return dict(value)

    def update_attrs(self, **values: Any) -> None:
        """Sets keys of the ``segpipe`` attributes (driver only: attributes are not concurrency-safe)."""
        root = self._root("a")
        value: Any = root.attrs.get("segpipe", {})
        cur = dict(value)
        cur.update(values)
        root.attrs["segpipe"] = cur
        if "categories" in values:
            root.attrs["categories"] = values["categories"]

    # -------------------------------------------------------------- worker side

    def image_group(self, image_id: int, info: Mapping[str, Any] | None = None, *, overwrite: bool = True) -> Any:
        """Creates (or replaces) the group of one image; its owner task alone writes into it.

        Returns:
            A group handle: a :class:`LocalGroup` on a local file system (written directly, see
            :mod:`segpipe.storage.zarrfast`; it behaves as a zarr group), a zarr group otherwise.
        """
        key = f"images/{image_key(image_id)}"
        if overwrite and self.location is not None:
            # The task owns the prefix and the driver made the parents: one PUT of the group's
            # zarr.json, in flight while the arrays are encoded, no LIST and no parent re-PUTs.
            return ObjectGroup(self.location, key, info)
        if overwrite:
            # A re-executed task rewrites its image from scratch: same key, same bytes.
            if self.location is None and (self.path / "images" / "zarr.json").is_file():
                folder = self.path / "images" / image_key(image_id)
                zarrfast.write_group(folder, info)
                return LocalGroup(folder)
            root = self._root("a")
            return root.create_group(key, attributes=dict(info or {}), overwrite=True)
        root = self._root("a")
        g = root.require_group(key)
        if info:
            g.update_attributes(dict(info))
        return g

    def label_attributes(self) -> dict[str, Any]:
        """:func:`label_attributes` of this store's categories.

        Workers make a handle per task: the root's ``zarr.json`` is parsed once per process while it
        is unchanged (a ``stat``, microseconds, instead of zarr-python's millisecond group open).
        """
        if self._label_attrs is None and self.location is not None:
            self._label_attrs = label_attributes(self.attrs().get("categories") or [])
        if self._label_attrs is None:
            f = self.path / "zarr.json"
            try:
                st = os.stat(f)
            except OSError:  # no root (a bare group handle): no class names to give
                return label_attributes([])
            key = (os.fspath(f), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = _LABEL_ATTRS.get(key)
            if cached is None:
                try:
                    doc = json.loads(f.read_bytes())
                    cats = doc["attributes"]["segpipe"].get("categories") or []
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    cats = []
                cached = label_attributes(cats)
                if len(_LABEL_ATTRS) > 64:
                    _LABEL_ATTRS.clear()
                _LABEL_ATTRS[key] = cached
            self._label_attrs = cached
        return dict(self._label_attrs)

    @staticmethod
    def write_array(group: Any, name: str, data: np.ndarray, chunks: tuple[int, ...] | None = None, *,
                    attributes: Mapping[str, Any] | None = None) -> str:
        """Writes ``data`` as array ``name`` of ``group``; returns its digest for the receipt.

        The array gets its :func:`dimension_names`; a label map gets its void value as fill value
        (:func:`label_fill`) and its ``void_value`` in the ``attributes`` given (e.g.
        :meth:`label_attributes`).
        """
        if isinstance(group, PendingSlot):  # a stacked image: written with its shard
            return group.put(name, data)
        if isinstance(group, ObjectGroup) and group.zarr_opened is False:
            return group.write_array(name, data, chunks, attributes=attributes)
        dims, fill, attrs, chunks = _array_layout(name, data, chunks, attributes)
        folder = local_folder(group)
        if folder is not None and zarrfast.supported(data):
            zarrfast.write_array(folder / name, data, chunks, fill_value=fill, dimension_names=dims, attributes=attrs)
            return array_digest(data)
        if isinstance(group, LocalGroup):
            group = group.zarr
        if data.dtype.kind in ("U", "T", "O"):
            arr = group.create_array(name, shape=data.shape, dtype=str, chunks=chunks, overwrite=True,
                                     dimension_names=dims, attributes=attrs)
            if data.size:
                arr[...] = data.astype(str)
        else:
            arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, fill_value=fill,
                                     overwrite=True, dimension_names=dims, attributes=attrs)
            if data.size:
                arr[...] = data
        return array_digest(data.astype(str) if data.dtype.kind in ("U", "T", "O") else data)

    # -------------------------------------------------------------- reading

    def image_ids(self) -> list[int]:
        """Ids of the images that have a group or a finished slot in a stack, sorted."""
        root = self._root("r")
        ids = set(self._stacked())
        if "images" in root:
            images: Any = root["images"]
            ids.update(int(k) for k in images.group_keys())
        return sorted(ids)

    def _stacked(self) -> dict[int, tuple[str, int]]:
        # Read once per handle: stacks change only while a run writes them.
        if self._index is None:
            self._index = read_index(self.location if self.location is not None else self.path)
        return self._index

    def group(self, image_id: int, hint: tuple[str, int] | None = None) -> Any:
        """The read-only group of one image (a :class:`~segpipe.storage.stacks.StackedImage` if stacked).

        Args:
            image_id: The image.
            hint: ``(stack, slot)`` when the caller knows it (spares reading the stacks' index).
        """
        if self.location is not None:
            # No HEAD per image to look for a group first (as a local store stats it): a stacked image's
            # group, left by an earlier run, is removed when its slot is planned (plan_stacks).
            if hint is None:
                hint = self._stacked().get(int(image_id))
            if hint is None:
                return self._root("r")[f"images/{image_key(image_id)}"]
            return StackedImage(self._stack(hint[0]), int(hint[1]))
        folder = self.path / "images" / image_key(image_id)
        grouped = (folder / "zarr.json").is_file()
        if hint is None and not grouped:
            hint = self._stacked().get(int(image_id))
        if hint is not None and not grouped:
            return StackedImage(self._stack(hint[0]), int(hint[1]))
        return self._root("r")[f"images/{image_key(image_id)}"]

    def _stack(self, name: str) -> Any:
        """The read-only group of stack ``name``, one object per handle (its views share its caches)."""
        stack = self._stacks.get(name)
        if stack is None:  # opening a group costs 2 ms (requests, in object storage): once per stack, not per image
            stack = self._stacks[name] = open_stack(self.location if self.location is not None else self.path, name)
        return stack

    def read(self, image_id: int, name: str) -> np.ndarray:
        """Reads one array of one image fully."""
        return np.asarray(self.group(image_id)[name][...])

    def iter_groups(self) -> Iterator[tuple[int, Any]]:
        """``(image id, group)`` for every image."""
        for i in self.image_ids():
            yield i, self.group(i)


def _array_layout(name: str, data: np.ndarray, chunks: tuple[int, ...] | None,
                  attributes: Mapping[str, Any] | None) -> tuple[tuple[str, ...], int, dict[str, Any], tuple[int, ...]]:
    """How :meth:`ZarrStore.write_array` stores ``data`` as ``name``: dimension names, fill value,
    attributes and chunk shape (the one given, else the store's default for the rank).
    """
    dims = dimension_names(name, data.ndim)
    fill = 0
    attrs = dict(attributes or {})
    if is_label_map(name, data.ndim) and data.dtype.kind in "iu":
        fill = label_fill(data.dtype)
        attrs.setdefault("void_value", fill)
    if chunks is None:
        if data.ndim == 2:
            chunks = (min(LABEL_CHUNK, data.shape[0]) or 1, min(LABEL_CHUNK, data.shape[1]) or 1)
        elif data.ndim == 3:
            chunks = (data.shape[0] or 1, min(PROB_CHUNK, data.shape[1]) or 1, min(PROB_CHUNK, data.shape[2]) or 1)
        else:
            chunks = tuple(max(1, s) for s in data.shape)
    return tuple(dims), fill, attrs, tuple(chunks)


class ObjectGroup:
    """A group in object storage that a task writes from scratch; behaves as a zarr group.

    Writes are PUTs of the objects zarr-python would write, byte for byte, in flight together: the
    group's ``zarr.json`` (started when the handle is made), then per array its ``zarr.json`` and
    chunks (:func:`segpipe.storage.zarrfast.encode_array`; other dtypes are encoded by zarr itself
    in memory). No LIST and no parent re-PUT: the task owns the prefix (a rerun writes the same keys,
    and deletes the key of a chunk that is now all fill value) and the driver made the parents.

    The handle knows its members: an array written through it reads back from memory (the values
    just stored, read-only), a name it did not write is absent. Anything else (``create_array``,
    attributes of a group opened through zarr, ...) opens the zarr group on first use.

    Args:
        location: The store.
        key: The group's key (``images/<id>``).
        attributes: The group's attributes.
    """

    def __init__(self, location: Location, key: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.location = location
        self.key = key
        self._attributes: dict[str, Any] = dict(attributes or {})
        self._pending: list[Any] = [location.write_later(f"{key}/zarr.json", self._document())]
        self._written: dict[str, np.ndarray] = {}
        self._children: dict[str, ObjectGroup] = {}
        self._zarr: Any = None

    def _document(self) -> bytes:
        return zarrfast.dump_document(zarrfast.group_document(self._attributes))

    def flush(self) -> None:
        """Waits for every write started through this handle (and its subgroups); raises the first error."""
        pending, self._pending = self._pending, []
        wait_all(pending)
        for child in self._children.values():
            child.flush()

    @property
    def zarr_opened(self) -> bool:
        """Whether the zarr group has been opened (writes then go through zarr, which caches the group)."""
        return self._zarr is not None

    @property
    def zarr(self) -> Any:
        """The ``zarr.Group`` (opened once, read-write, after this handle's writes are done)."""
        if self._zarr is None:
            import zarr  # lazy: zarr costs ~0.5 s to import

            self.flush()
            self._zarr = zarr.open_group(store=self.location.zarr_store(read_only=False), path=self.key,
                                         mode="r+", zarr_format=3)
        return self._zarr

    @property
    def attrs(self) -> Any:
        """The group's attributes: setting one re-PUTs the group's ``zarr.json``."""
        return self.zarr.attrs if self._zarr is not None else _ObjectAttributes(self)

    def update_attributes(self, values: Mapping[str, Any]) -> None:
        """Sets attributes of the group (one PUT of its ``zarr.json``)."""
        if self._zarr is not None:
            self._zarr.update_attributes(dict(values))
            return
        self.flush()  # the first PUT of the document lands before the second
        self._attributes.update(values)
        self.location.write_bytes(f"{self.key}/zarr.json", self._document())

    def write_array(self, name: str, data: np.ndarray, chunks: tuple[int, ...] | None = None, *,
                    attributes: Mapping[str, Any] | None = None) -> str:
        """:meth:`ZarrStore.write_array` into this group: its ``zarr.json`` and chunks PUT together.

        Returns:
            The digest of ``data`` for the receipt.
        """
        dims, fill, attrs, chunks = _array_layout(name, data, chunks, attributes)
        prefix = f"{self.key}/{name}"
        if zarrfast.supported(data):
            doc, frames = zarrfast.encode_array(data, chunks, fill_value=fill, dimension_names=dims,
                                                attributes=attrs)
            stored = data
        else:  # strings: zarr's own codecs, in memory, then the same PUTs
            stored = data.astype(str) if data.dtype.kind in ("U", "T", "O") else data
            doc, frames = _encode_with_zarr(stored, chunks, fill, dims, attrs)
        loc = self.location
        futures = [loc.write_later(f"{prefix}/zarr.json", doc)]
        futures += [loc.write_later(f"{prefix}/{k}", f) if f is not None else loc.delete_later(f"{prefix}/{k}")
                    for k, f in frames]
        self._pending.extend(futures)
        self.flush()
        view = stored.view()
        view.flags.writeable = False
        self._written[name] = view
        return array_digest(stored)

    def require_group(self, name: str) -> ObjectGroup:
        """The subgroup ``name`` (made by this handle: one PUT of its ``zarr.json``, no attributes)."""
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = ObjectGroup(self.location, f"{self.key}/{name}")
        return child

    def create_group(self, name: str, **kwargs: Any) -> ObjectGroup:
        """A new subgroup ``name`` (keyword ``attributes`` as zarr takes them)."""
        child = self._children[name] = ObjectGroup(self.location, f"{self.key}/{name}", kwargs.get("attributes"))
        return child

    def create_array(self, name: str, **kwargs: Any) -> Any:
        """Creates array ``name`` through zarr, replacing whatever an earlier try of the task left there."""
        kwargs.setdefault("overwrite", True)
        return self.zarr.create_array(name, **kwargs)

    def arrays(self) -> Iterator[tuple[str, Any]]:
        """``(name, array)`` for the arrays of the group (as zarr's ``Group.arrays``)."""
        if self._zarr is not None:
            yield from self._zarr.arrays()
        else:
            yield from self._written.items()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (a copy being built): never open zarr for it
            raise AttributeError(name)
        return getattr(self.zarr, name)

    def __getitem__(self, key: str) -> Any:
        head, _, rest = key.partition("/")
        if rest:
            return self[head][rest]
        if key in self._written:
            return self._written[key]
        if key in self._children:
            return self._children[key]
        if self._zarr is None:
            raise KeyError(key)  # made by this handle: it holds what the handle wrote, nothing else
        return self._zarr[key]

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True


class _ObjectAttributes(dict[str, Any]):
    """The attributes of an :class:`ObjectGroup`, a dict whose ``[key] = value`` re-PUTs the group's document."""

    def __init__(self, group: ObjectGroup) -> None:
        super().__init__(group._attributes)
        self._group = group

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._group.update_attributes({key: value})

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        values = dict(*args, **kwargs)
        super().update(values)
        self._group.update_attributes(values)


def _encode_with_zarr(data: np.ndarray, chunks: tuple[int, ...], fill: int, dims: tuple[str, ...],
                      attrs: Mapping[str, Any]) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """The objects zarr itself writes for ``data`` (``zarr.json``, chunks by key), in memory; absent chunks as None."""
    import zarr  # lazy: zarr costs ~0.5 s to import
    from zarr.storage import MemoryStore

    objects: dict[str, Any] = {}
    if data.dtype.kind == "U":
        arr = zarr.create_array(MemoryStore(objects), shape=data.shape, dtype=str, chunks=chunks,
                                dimension_names=dims, attributes=dict(attrs))
    else:
        arr = zarr.create_array(MemoryStore(objects), shape=data.shape, dtype=data.dtype, chunks=chunks,
                                fill_value=fill, dimension_names=dims, attributes=dict(attrs))
    if data.size:
        arr[...] = data
    grid = [range(-(-s // c)) for s, c in zip(data.shape, chunks, strict=True)]
    frames: list[tuple[str, bytes | None]] = []
    for idx in itertools.product(*grid):
        key = "/".join(["c", *(str(i) for i in idx)])
        buf = objects.get(key)
        frames.append((key, None if buf is None else buf.to_bytes()))
    return objects["zarr.json"].to_bytes(), frames


class LocalGroup:
    """A group on the local file system that was just written directly; behaves as a zarr group.

    Arrays written through :meth:`ZarrStore.write_array` go straight to files; anything else
    (``create_array``, ``attrs``, ``require_group``, item access) opens the zarr group on first use.

    Args:
        folder: The group's folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._zarr: Any = None

    @property
    def zarr(self) -> Any:
        """The ``zarr.Group`` (opened once, read-write)."""
        if self._zarr is None:
            import zarr  # lazy: zarr costs ~0.5 s to import

            self._zarr = zarr.open_group(str(self.folder), mode="r+")
        return self._zarr

    def __getattr__(self, name: str) -> Any:
        return getattr(self.zarr, name)

    def __getitem__(self, key: str) -> Any:
        return self.zarr[key]

    def __contains__(self, key: str) -> bool:
        return key in self.zarr


def local_folder(node: Any) -> Path | None:
    """The folder of a writable zarr group or array on the local file system, else None."""
    if isinstance(node, LocalGroup):
        return node.folder
    store: Any = getattr(node, "store", None)
    if type(store).__name__ != "LocalStore" or getattr(store, "read_only", True):
        return None
    return Path(store.root) / str(getattr(node, "path", ""))
