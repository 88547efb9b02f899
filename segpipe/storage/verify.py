"""Reads verify what writes promised: each image's outputs against its receipt (export, evaluate, fsck).

A receipt (``STORE/.segpipe/ledger/<key>.json``) records where a finished task wrote its image (a stack
slot, a group, a block of a scene, the slices of a slab) and the digest of every array it wrote. zarr
reads a missing chunk as its fill value (a label map's void value; 0, background, in stores written
before label maps took void as fill value): a deleted shard file, an unwritten
slot or a slot whose id was overwritten would otherwise export as empty label maps without a word.

The driver plans one :class:`ImageCheck` per image from the receipts and the stacks' ``ids`` and
``done`` arrays (metadata only, no pixels); the reader of each image (a worker) then digests the
arrays it reads anyway (xxh3, 0.02 ms per MiB) and compares. Every failure is an
:class:`~segpipe.errors.InputError` that names the file concerned, so the commands report it per image.
"""

from __future__ import annotations

import json
import operator
import os
import struct
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from segpipe.errors import FormatError, InputError
from segpipe.storage import zarrfast
from segpipe.storage.arrays import digest_matches
from segpipe.storage.location import Location
from segpipe.storage.packs import gc_paused, iter_local_ledger, read_local_ledger
from segpipe.storage.stacks import (
    SHARD,
    STACKS,
    StackedImage,
    _read_all_done,
    open_stack,
    read_stack_slots,
)

#: Arrays of a stack whose ``zarr.json`` a reader opens (besides the stack group's own).
_STACK_ARRAYS = ("labels", "probs", "ids", "attrs", "done")


class ReceiptFile(str):
    """A receipt's file name as text, with :attr:`name` as a :class:`~pathlib.Path` has it.

    The checks of 100k receipts name each by its file; building a ``Path`` for each cost ~1 s.
    """

    __slots__ = ()

    @property
    def name(self) -> str:
        """The file's name (``<key>.json``)."""
        return os.path.basename(self)


#: How the checks name a receipt: its (loose or virtual, for a packed one) file.
ReceiptRef = Path | ReceiptFile


@dataclass(frozen=True)
class ImageCheck:
    """What the receipts promise about one image, and any problem found without reading pixels.

    Attributes:
        problem: Why the image cannot be read as written (a missing receipt, an unwritten or
            foreign slot, a duplicated id ...), or None.
        path: The file or folder ``problem`` concerns.
        hint: ``(stack, slot)`` the receipt names: the image is read there, not where the stack's
            ``ids`` may claim it.
        digests: Array name (``labels``, ``instances/rle`` ...) → digest of the whole array.
        windows: Blocks of a scene: ``((y0, y1, x0, x1), labels digest)`` of each finished block.
        kind: What ``problem`` is: ``damaged`` (the store contradicts its receipts: fsck reports
            it, and ``fsck --repair`` removes the receipt so that ``--resume`` redoes the image),
            ``duplicate`` (a slot id twice: fsck reports it, no repair), ``unvouched`` (an output
            no receipt vouches for: fsck reports it), ``unfinished`` (planned, never finished: the
            run reported it; only readers do) or ``attrs`` (the slot's attributes are wrong: only
            with ``plan_checks(attrs=True)``; fsck reports :attr:`StoreChecks.attrs`).
    """

    problem: str | None = None
    path: str | None = None
    hint: tuple[str, int] | None = None
    digests: Mapping[str, str] = field(default_factory=dict)
    windows: tuple[tuple[tuple[int, int, int, int], str], ...] = ()
    kind: str = ""


@dataclass
class StoreChecks:
    """The checks of every image of a store that a reader lists.

    :func:`plan_checks` fills ``images`` and ``receipt_of`` with mappings that make the check of an
    image whose outputs hold (most of them) when it is asked for, from its receipt: at 100k images,
    100k check objects and receipt paths held at once were 60 MB of ``--resume``'s memory.

    Attributes:
        images: Image id → its check, for every image with a receipt, a stack slot or a group.
        info: Image id → ``file``, ``width``, ``height``, ``sha256`` from its receipt (or its slot's
            attributes): names the images whose outputs cannot be read.
        unreadable: ``(receipt file, reason)`` of receipts that do not decode.
        receipt_of: Image id → the receipt file that vouches for it (for fsck's repair).
        finished: Keys of the receipts that decode as a finished task's, under their own key.
        redo: Receipts that vouch for outputs the store contradicts (a ``damaged`` image, or a
            ``duplicate`` slot id): ``--resume`` removes them and redoes their images.
        doubt: Image id → the doubt its receipt records (:mod:`segpipe.kernels.prelabel.doubt`).
        attrs: Stack slots whose ``attrs`` contradict their receipt or ``ids``, or cannot be read
            (checked only when asked: ``plan_checks(attrs=True)``).
    """

    images: MutableMapping[int, ImageCheck] = field(default_factory=dict)
    info: dict[int, dict[str, Any]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    receipt_of: Mapping[int, ReceiptRef] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    redo: set[ReceiptRef] = field(default_factory=set)
    doubt: dict[int, dict[str, Any]] = field(default_factory=dict)
    attrs: list[AttrsFault] = field(default_factory=list)


@dataclass(frozen=True)
class AttrsFault:
    """A stack slot whose ``attrs`` (the image's JSON attributes, which exports name masks by) are wrong.

    Attributes:
        stack: The stack's name (``<H>x<W>``).
        slot: The slot.
        image_id: The image id the stack's ``ids`` holds at the slot.
        field: The attribute at fault (``id``, ``file``, ``sha256``, ``width``, ``height``), or ``""``
            when the slot's attributes cannot be read at all (a missing or undecodable chunk, not JSON).
        problem: What is wrong, naming the stack, the slot and the field.
        path: The ``attrs`` chunk file (a URL in object storage).
        receipt: The receipt that vouches for the slot, or None.
        vouched: ``(field, value)`` of the attributes that receipt records (``file``, ``sha256`` ...).
    """

    stack: str
    slot: int
    image_id: int
    field: str
    problem: str
    path: str
    receipt: ReceiptRef | None = None
    vouched: tuple[tuple[str, Any], ...] = ()


# ------------------------------------------------------------------------------------------ metadata


def check_metadata(root: Path) -> None:
    """Parses the ``zarr.json`` documents every reader opens first: the root, ``images/``, the stacks.

    A handful of files (five per stack): a corrupt one is then one line naming it, not a JSON or zarr
    exception from deep inside a read. Per-image groups are checked where each image is read.

    Raises:
        FormatError: A document is not JSON, or not a Zarr v3 node.
    """
    docs = [root / "zarr.json", root / "images" / "zarr.json", root / "stacks" / "zarr.json"]
    stacks = root / "stacks"
    if stacks.is_dir():
        for entry in sorted(os.scandir(stacks), key=lambda e: e.name):
            if entry.is_dir():
                docs.append(Path(entry.path) / "zarr.json")
                docs.extend(Path(entry.path) / name / "zarr.json" for name in _STACK_ARRAYS)
    for doc in docs:
        if doc.exists():  # a missing one is the reader's to report (e.g. "not a Zarr store")
            metadata_problem(doc, raise_it=True)


def metadata_problem(doc: Path, *, raise_it: bool = False) -> str | None:
    """Why ``doc`` (a ``zarr.json``) is no Zarr v3 document, or None if it is (or does not exist).

    Raises:
        FormatError: With ``raise_it``, instead of returning the reason.
    """
    try:
        data = json.loads(doc.read_bytes())
    except FileNotFoundError:
        reason = None
    except (OSError, ValueError) as e:
        reason = f"not valid JSON ({e})"
    else:
        ok = isinstance(data, dict) and data.get("zarr_format") == 3 and data.get("node_type") in ("group", "array")
        reason = None if ok else "not Zarr v3 metadata (no zarr_format 3 and node_type)"
    if reason is not None and raise_it:
        raise FormatError(reason, path=doc)
    return reason


def chunk_problem(folder: Path) -> tuple[Path, str]:
    """The first chunk file of the array at ``folder`` that does not decode, or the array's metadata.

    Called only after a read failed, to name the file in the error. Chunks are decoded as zstd frames
    (the codec segpipe writes); a sharded array's files are not split up here: its reader names the
    shard itself.

    Returns:
        ``(path, reason)``; ``(folder, "cannot be read")`` when no single file is to blame.
    """
    meta = folder / "zarr.json"
    reason = metadata_problem(meta)
    if reason is not None or not meta.exists():
        return meta, reason or "missing"
    doc = json.loads(meta.read_bytes())
    codecs = [c.get("name") for c in doc.get("codecs", []) if isinstance(c, dict)]
    if "zstd" not in codecs:
        return folder, "cannot be read"
    from numcodecs import Zstd  # lazy: numcodecs costs ~0.3 s to import

    codec = Zstd()
    for dirpath, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name == "zarr.json" or ".partial" in name:
                continue
            p = Path(dirpath) / name
            try:
                codec.decode(p.read_bytes())
            except Exception as e:  # numcodecs raises RuntimeError on a bad frame
                return p, f"damaged chunk ({type(e).__name__}: {e})"
    return folder, "cannot be read"


def describe_failure(path: Path, exc: BaseException) -> tuple[Path, str]:
    """Names the file behind a failed read of the group or array at ``path`` (diagnosed after the fact).

    A corrupt ``zarr.json`` anywhere below ``path`` is named first (zarr reads its members' metadata
    on opening a group), then a chunk that does not decode.

    Returns:
        ``(file, reason)``.
    """
    if path.is_dir():
        for dirpath, _, files in sorted(os.walk(path)):
            if "zarr.json" in files:
                doc = Path(dirpath) / "zarr.json"
                why = metadata_problem(doc)
                if why is not None:
                    return doc, why
    p, reason = chunk_problem(path)
    if p == path:
        reason = f"cannot be read ({type(exc).__name__}: {exc})"
    return p, reason


# ------------------------------------------------------------------------------------------ receipts


def read_receipts(ledger_dir: Path) -> tuple[list[tuple[ReceiptRef, dict[str, Any]]], list[tuple[str, str]]]:
    """Every receipt of a ledger, loose or packed, decoded; and those that do not decode as a receipt.

    Returns:
        ``([(file, receipt)], [(file, reason)])``; a receipt is a JSON object with an ``image_id``
        and ``status`` ``done``. ``file`` is ``<ledger>/<key>.json`` for a packed receipt too (its
        name gives its key); a damaged line of a pack or a truncated pack is named by the pack.
    """
    with gc_paused():
        return _read_receipts(ledger_dir)


def _read_receipts(ledger_dir: Path) -> tuple[list[tuple[ReceiptRef, dict[str, Any]]], list[tuple[str, str]]]:
    contents = read_local_ledger(ledger_dir)
    good: list[tuple[ReceiptRef, dict[str, Any]]] = []
    bad: list[tuple[str, str]] = []
    base = os.path.join(ledger_dir, "")
    for key, data, where in contents.sorted_items():
        rec, reason = parse_receipt(data)
        if rec is None:
            bad.append((where if key in contents.loose else f"{where}: receipt {key}", str(reason)))
        else:
            good.append((ReceiptFile(base + key + ".json"), rec))
    bad.extend((pack if n is None else f"{pack}: line {n}", why) for pack, n, why in contents.faults)
    return good, bad


def parse_receipt(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A receipt's bytes decoded: ``(receipt, None)``, or ``(None, why it is no usable receipt)``.

    Usable: a JSON object of a finished task (``status`` ``done``) with an integer ``image_id`` and
    an ``outputs`` object (a truncated or foreign file vouches for nothing).
    """
    try:
        rec = json.loads(data)
    except ValueError as e:
        return None, f"does not decode ({e})"
    if not isinstance(rec, dict) or rec.get("status") != "done":
        return None, "not a receipt of a finished task"
    try:
        int(rec["image_id"])
        if "slices" in rec:
            [int(k) for k in rec["slices"]]
        if not isinstance(rec.get("outputs", {}), dict):
            raise TypeError("outputs")
    except (KeyError, TypeError, ValueError):
        return None, "receipt lacks its image id or outputs"
    return rec, None


def receipt_problem(data: bytes) -> str | None:
    """Why ``data`` is no usable receipt (see :func:`parse_receipt`), or None."""
    return parse_receipt(data)[1]


#: The fields of a receipt that :class:`SlimReceipt` keeps (``status`` is ``done`` in every usable
#: receipt), and those it drops: no check reads a receipt's timings or worker.
_SLIM_FIELDS = ("image_id", "file", "sha256", "stack", "slot", "outputs", "width", "height", "time", "doubt")
_SLIM_KEYS = frozenset({"key", "status", "timings", "worker", *_SLIM_FIELDS})
_SLOT_OF = {name: "_" + name for name in _SLIM_FIELDS}


class _Absent:
    """The value of a field a receipt does not have (one object, pickled as itself)."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_ABSENT"


_ABSENT: Any = _Absent()


class _SlimBase(Mapping[str, Any]):
    """What :class:`SlimReceipt` and :class:`PackedReceipt` share: a read-only mapping whose fields are read
    through their class's table (``_READS``: field name → reader).

    Attributes:
        key: The receipt's key in its ledger (the receipt's own ``key`` field is the same).
    """

    __slots__ = ("key",)

    key: str
    _READS: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    _ORDER: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, name: str) -> Any:
        read = self._READS.get(name)
        v = _ABSENT if read is None else read(self)
        if v is _ABSENT:
            raise KeyError(name)
        return v

    def get(self, name: str, default: Any = None) -> Any:
        """The field ``name``, or ``default`` if the receipt has none."""
        read = self._READS.get(name)
        v = _ABSENT if read is None else read(self)
        return default if v is _ABSENT else v

    def __contains__(self, name: object) -> bool:
        read = self._READS.get(name) if isinstance(name, str) else None
        return read is not None and read(self) is not _ABSENT

    def __iter__(self) -> Iterator[str]:
        for name in self._ORDER:
            if self._READS[name](self) is not _ABSENT:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


class SlimReceipt(_SlimBase):
    """A usable receipt as the checks keep it: the fields they read, read-only, in a fifth of a dict's memory.

    At 100k receipts the decoded dicts (2.4 KB each) were most of ``--resume``'s and ``fsck``'s memory.
    It reads as the receipt it was made from (:func:`slim_receipt`), but for ``timings`` and
    ``worker``, which it drops: ``outputs`` as a new dict, ``sha256`` and xxh3 digests as the same
    text (kept as their bytes when lowercase hex), ``status`` ``done``; its fields iterate in the order
    workers write them. A worker's receipt of a stacked image is a :class:`PackedReceipt`, smaller still.
    """

    __slots__ = ("_image_id", "_file", "_sha256", "_stack", "_slot", "_outputs", "_width", "_height",
                 "_time", "_doubt")

    _image_id: Any
    _file: Any
    _sha256: Any
    _stack: Any
    _slot: Any
    _outputs: Any
    _width: Any
    _height: Any
    _time: Any
    _doubt: Any


class PackedReceipt(_SlimBase):
    """A worker's receipt of a stacked image as the checks keep it (about 320 bytes, key included).

    Its numbers, ``sha256`` and digests are one bytes object (``<qqd``: image id, slot, time; the 32
    bytes of ``sha256``; 16 bytes an xxh3-128 digest); its stack, output names and size one tuple that
    the receipts of a stack share. It reads as :class:`SlimReceipt` does; :func:`slim_receipt`
    makes one only of a receipt that reads back from it unchanged.
    """

    __slots__ = ("_file", "_blob", "_shape")

    _file: str
    _blob: bytes
    _shape: tuple[Any, ...]  # (stack, output names, width, height)


def _outputs_of(rec: SlimReceipt) -> Any:
    flat = rec._outputs
    if flat is _ABSENT:
        return _ABSENT
    return {name: _XXH3 + d.hex() if isinstance(d, bytes) else d for name, d in zip(flat[::2], flat[1::2], strict=True)}


#: The prefix of the digests workers write (xxh3-128), and their length: kept as their 16 bytes.
_XXH3 = "xxh3-128:"
_XXH3_LEN = len(_XXH3) + 32


def _packed_digest(digest: Any) -> Any:
    """An xxh3-128 digest in lowercase hex as its 16 bytes (49 bytes of memory, not 90); any other as it is."""
    if isinstance(digest, str) and len(digest) == _XXH3_LEN and digest.startswith(_XXH3):
        try:
            raw = bytes.fromhex(digest[len(_XXH3):])
        except ValueError:
            return digest
        if _XXH3 + raw.hex() == digest:  # it reads back as the same text
            return raw
    return digest


def _packed_sha(sha: Any) -> Any:
    """A sha256 in lowercase hex as its 32 bytes; any other value as it is."""
    if isinstance(sha, str) and len(sha) == 64:
        try:
            raw = bytes.fromhex(sha)
        except ValueError:
            return sha
        if raw.hex() == sha:  # lowercase hex: it reads back the same text
            return raw
    return sha


def _sha256_of(rec: SlimReceipt) -> Any:
    v = rec._sha256
    return v.hex() if isinstance(v, bytes) else v


_NUMS = struct.Struct("<qqd")  # a packed receipt's image id, slot and time


def _packed_outputs(rec: PackedReceipt) -> dict[str, str]:
    blob, names = rec._blob, rec._shape[1]
    at = _NUMS.size + 32
    return {name: _XXH3 + blob[at + 16 * i:at + 16 * i + 16].hex() for i, name in enumerate(names)}


#: The fields in the order workers write them.
_FIELD_ORDER = ("key", "image_id", "file", "sha256", "stack", "slot", "status", "outputs", "width", "height",
                "time", "doubt")

SlimReceipt._READS = {
    **{name: operator.attrgetter(attr) for name, attr in _SLOT_OF.items()},
    "key": operator.attrgetter("key"),
    "status": lambda rec: "done",
    "outputs": _outputs_of,
    "sha256": _sha256_of,
}
SlimReceipt._ORDER = _FIELD_ORDER
PackedReceipt._READS = {
    "key": operator.attrgetter("key"),
    "image_id": lambda rec: _NUMS.unpack_from(rec._blob)[0],
    "file": operator.attrgetter("_file"),
    "sha256": lambda rec: rec._blob[_NUMS.size:_NUMS.size + 32].hex(),
    "stack": lambda rec: rec._shape[0],
    "slot": lambda rec: _NUMS.unpack_from(rec._blob)[1],
    "status": lambda rec: "done",
    "outputs": _packed_outputs,
    "width": lambda rec: rec._shape[2],
    "height": lambda rec: rec._shape[3],
    "time": lambda rec: _NUMS.unpack_from(rec._blob)[2],
}
PackedReceipt._ORDER = _FIELD_ORDER[:-1]

#: The shapes packed receipts share (``(stack, output names, width, height)``), up to a bound.
_SHAPES: dict[tuple[Any, ...], tuple[Any, ...]] = {}

#: Fields no check reads (not kept), and the types of a size that a packed receipt keeps as they are.
_UNREAD = frozenset({"timings", "worker", "status"})
_SCALARS = (int, float, str, type(None))


def _packed(key: str, rec: dict[str, Any]) -> PackedReceipt | None:
    """``rec`` (of ledger key ``key``) as a :class:`PackedReceipt` if it reads back from one unchanged, else None."""
    if len(rec.keys() - _UNREAD) != len(_FIELD_ORDER) - 2 or "doubt" in rec:  # every other field, no more
        return None
    image_id, slot, time, file = rec["image_id"], rec["slot"], rec["time"], rec["file"]
    if type(image_id) is not int or type(slot) is not int or type(time) is not float or type(file) is not str \
            or not -(1 << 63) <= image_id < 1 << 63 or not -(1 << 63) <= slot < 1 << 63:
        return None
    sha = _packed_sha(rec["sha256"])
    outputs, stack, width, height = rec["outputs"], rec["stack"], rec["width"], rec["height"]
    digests = [_packed_digest(d) for d in outputs.values()]
    if not isinstance(sha, bytes) or not all(isinstance(d, bytes) for d in digests) or type(stack) is not str \
            or type(width) not in _SCALARS or type(height) not in _SCALARS:
        return None
    out = PackedReceipt()
    out.key, out._file = key, file
    out._blob = b"".join([_NUMS.pack(image_id, slot, time), sha, *digests])
    shape = (sys.intern(stack), tuple(sys.intern(n) for n in outputs), width, height)
    typed = (*shape, type(width), type(height))  # 16 and 16.0 are equal keys, yet not the same value
    cached = _SHAPES.get(typed)
    if cached is None and len(_SHAPES) < 4096:
        cached = _SHAPES[typed] = shape
    out._shape = cached if cached is not None else shape
    return out


class KeyedReceipt(dict[str, Any]):
    """A decoded receipt (a dict) with its key in its ledger: one :class:`SlimReceipt` cannot hold.

    Attributes:
        key: The receipt's key in its ledger.
    """

    __slots__ = ("key",)

    def __init__(self, rec: Mapping[str, Any], key: str) -> None:
        super().__init__(rec)
        self.key = key


#: A usable receipt with its key, as the checks hold it.
Receipt = PackedReceipt | SlimReceipt | KeyedReceipt


def slim_receipt(key: str, rec: dict[str, Any]) -> Receipt:
    """A usable receipt (:func:`parse_receipt`) of ledger key ``key`` as the checks keep it.

    A :class:`PackedReceipt` when it is a worker's receipt of a stacked image that reads back from
    one unchanged (the common case), else a :class:`SlimReceipt` when it is a plain image's (only the
    fields a worker writes, its own ``key`` ``key``), else the receipt itself as a
    :class:`KeyedReceipt` (a scene's block, a slab, a foreign one).
    """
    if rec.get("key") != key or not rec.keys() <= _SLIM_KEYS or not isinstance(rec.get("outputs", {}), dict):
        return KeyedReceipt(rec, key)
    packed = _packed(key, rec)
    if packed is not None:
        return packed
    out = SlimReceipt()
    out.key = key
    get = rec.get
    out._image_id, out._file = get("image_id", _ABSENT), get("file", _ABSENT)
    out._sha256 = _packed_sha(get("sha256", _ABSENT))
    stack = get("stack", _ABSENT)
    out._stack = sys.intern(stack) if isinstance(stack, str) else stack  # a handful of names, 100k times
    out._slot = get("slot", _ABSENT)
    outputs = get("outputs", _ABSENT)
    out._outputs = outputs if outputs is _ABSENT else \
        tuple(x for name, digest in outputs.items() for x in (sys.intern(name), _packed_digest(digest)))
    out._width, out._height = get("width", _ABSENT), get("height", _ABSENT)
    out._time, out._doubt = get("time", _ABSENT), get("doubt", _ABSENT)
    return out


def keyed_receipt(key: str, rec: Mapping[str, Any]) -> Receipt:
    """``rec`` with its ledger key (itself if it has that key already)."""
    if isinstance(rec, (PackedReceipt, SlimReceipt, KeyedReceipt)) and rec.key == key:
        return rec
    return KeyedReceipt(rec, key)


def read_checked_receipts(ledger_dir: str | os.PathLike[str]) -> tuple[list[Receipt], list[tuple[str, str]]]:
    """Every usable receipt of a local ledger as the checks keep it, sorted by key; and those that do not decode.

    :func:`read_receipts` without its memory: the ledger is streamed
    (:func:`~segpipe.storage.packs.iter_local_ledger`) and each receipt kept as :func:`slim_receipt`
    makes it once decoded (at 100k receipts: 35 MB, where the pack's bytes and the decoded dicts
    were 350 MB).

    Returns:
        ``([receipt], [(file, reason)])``, named as :func:`read_receipts` names them.
    """
    with gc_paused():
        faults: list[tuple[str, int | None, str]] = []
        latest: dict[str, Receipt | tuple[str, str]] = {}
        for key, data, where, loose in iter_local_ledger(ledger_dir, faults):
            rec, reason = parse_receipt(data)
            latest[key] = slim_receipt(key, rec) if rec is not None else \
                (where if loose else f"{where}: receipt {key}", str(reason))
        good: list[Receipt] = []
        bad: list[tuple[str, str]] = []
        for key in sorted(latest):
            item = latest[key]
            if isinstance(item, tuple):
                bad.append(item)
            else:
                good.append(item)
        del latest
        bad.extend((pack if n is None else f"{pack}: line {n}", why) for pack, n, why in faults)
        return good, bad


def _name(key: str) -> str:
    """The key a receipt of ledger key ``key`` is named by: its file's name less ``.json``."""
    return key if "/" not in key else os.path.basename(key + ".json")[:-5]


def _ref(base: str, key: str) -> ReceiptFile:
    """The receipt file of ``key`` in the ledger folder ``base`` (ending with a separator)."""
    return ReceiptFile(base + key + ".json")


# ------------------------------------------------------------------------------------------ stacks


@dataclass
class _Stack:
    ids: np.ndarray
    done: np.ndarray
    folder: Path


def _read_stack(folder: Path) -> _Stack:
    """A stack's ``ids`` and ``done`` arrays (a damaged one raises naming its file)."""
    import zarr  # lazy: zarr costs ~0.5 s to import

    try:
        ids = np.asarray(zarr.open_array(os.fspath(folder / "ids"), mode="r")[...]).astype(np.int64)
    except Exception as e:
        p, reason = describe_failure(folder / "ids", e)
        raise InputError(reason, path=p) from None
    done = _read_all_done(folder / "done")
    if done is None:
        try:
            done = np.asarray(zarr.open_array(os.fspath(folder / "done"), mode="r")[...]).astype(np.uint8)
        except Exception as e:
            p, reason = describe_failure(folder / "done", e)
            raise InputError(reason, path=p) from None
    n = min(len(ids), len(done))
    return _Stack(ids[:n], done[:n], folder)


def _crc32c(data: bytes) -> bytes:
    """The CRC32C of ``data`` as zarr's sharding index stores it (4 bytes, little-endian)."""
    from numcodecs import checksum32  # lazy: numcodecs costs ~0.3 s to import

    if checksum32.crc32c_checksum is not None:  # the library numcodecs' codec calls, without its copies
        return int(checksum32.crc32c_checksum(data, 0)).to_bytes(4, "little")
    return bytes(checksum32.CRC32C().encode(data))[-4:]


def shard_file(root: Path, stack: str, slot: int, name: str) -> Path:
    """The shard file of ``slot`` in array ``name`` (``labels`` or ``probs``) of ``stack``."""
    ndim = 4 if name == "probs" else 3
    return root / STACKS / stack / name / ".".join(["c", str(slot // SHARD), *(["0"] * (ndim - 1))])


# ------------------------------------------------------------------------------------------ planning


def plan_checks(root: Path, ledger_dir: Path, *, files: bool = False,
                receipts: tuple[list[tuple[ReceiptRef, dict[str, Any]]], list[tuple[str, str]]] | None = None,
                attrs: bool = False, names: Mapping[str, str] | None = None) -> StoreChecks:
    """The check of every image of a store, from its receipts and its stacks' ``ids`` and ``done``.

    Found here, without pixels: a receipt that does not decode; a slot whose id is in two slots; a
    receipt whose slot holds another image or was never written (``done`` 0); a finished slot or a
    group that no receipt vouches for; a slot planned but never written; a scene with unfinished
    blocks; an image whose group is missing.

    Args:
        root: The store's folder.
        ledger_dir: Its receipts' folder.
        files: Also check that the files a receipt's outputs live in are there and whole, still
            without reading pixels (what ``--resume`` trusts): a stack's shard file exists (or the
            receipt's array is all fill value), its index passes its checksum and lies within the
            file; a group's arrays have a chunk file (or are all fill value).
        receipts: The ledger as :func:`read_receipts` returns it, when the caller has read it already.
        attrs: Also check every stack slot's ``attrs`` against ``ids`` and the slot's receipt
            (:func:`check_stack_attrs`; into :attr:`StoreChecks.attrs`).
        names: Receipt key → the ``file`` its image is now planned under (``--resume``): a receipt
            recording another name joins :attr:`StoreChecks.redo` (the entry was renamed; task keys do
            not hash names, so only the receipt tells that its outputs carry the old one).

    Raises:
        InputError: A stack's ``ids`` or ``done`` array cannot be read (names the file).
    """
    with gc_paused():  # 100k receipts: see segpipe.storage.packs.gc_paused
        if receipts is None:
            recs, unreadable = read_checked_receipts(ledger_dir)
        else:
            listed, unreadable = receipts
            recs = [keyed_receipt(p.name[:-5], rec) for p, rec in listed]
        return plan_receipt_checks(root, ledger_dir, recs, unreadable, files=files, attrs=attrs, names=names)


def plan_receipt_checks(root: Path, ledger_dir: Path, receipts: list[Receipt], unreadable: list[tuple[str, str]], *,
                        files: bool = False, attrs: bool = False, names: Mapping[str, str] | None = None,
                        ) -> StoreChecks:
    """:func:`plan_checks` of receipts read already (:func:`read_checked_receipts`, or fsck's).

    Args:
        root: The store's folder.
        ledger_dir: Its receipts' folder (names them).
        receipts: The usable receipts, sorted by key.
        unreadable: ``(file, reason)`` of those that do not decode (:attr:`StoreChecks.unreadable`).
        files: See :func:`plan_checks`.
        attrs: See :func:`plan_checks`.
        names: See :func:`plan_checks`.

    Raises:
        InputError: A stack's ``ids`` or ``done`` array cannot be read (names the file).
    """
    base = os.path.join(ledger_dir, "")
    out = StoreChecks(unreadable=unreadable)
    if names:
        for named in receipts:
            recorded = named.get("file")
            if isinstance(recorded, str) and names.get(_name(named.key), recorded) != recorded:
                out.redo.add(_ref(base, named.key))
    stacks = _read_stacks(root)
    slots = _Slots(stacks)
    groups = _group_ids(root)
    plain, windows = _receipts_by_image(receipts)

    out.finished = {k for r in receipts for k in (_name(r.key),) if r.get("key", k) == k}
    ff = _Files(root) if files else None
    order = _sorted_ids(plain, windows, slots, groups)
    images = _ImageChecks(order, plain)
    out.images = images
    out.receipt_of = _ReceiptOf(order, plain, windows, base)
    for image_id in _chunked(order):
        rec: Receipt
        c: ImageCheck | None
        if image_id in windows:
            c = _scene_check(root, image_id, windows[image_id], groups)
            images.made(image_id, c)
            rec = windows[image_id][0]
            if c.kind == "damaged":
                out.redo.update(_ref(base, q.key) for q in windows[image_id])
        elif image_id in plain:
            rec = plain[image_id]
            c = _receipt_check(root, image_id, rec, stacks, slots, groups, ff)
            if c is not None:  # None: its outputs hold (the check is made when asked for)
                images.made(image_id, c)
                if c.kind in ("damaged", "duplicate"):
                    out.redo.add(_ref(base, rec.key))
        else:
            images.made(image_id, _unvouched_check(root, image_id, stacks, slots, groups))
            if image_id in slots:
                name, j = slots[image_id][-1]
                out.info[image_id] = _slot_info(root, name, j)
            continue
        if isinstance(rec.get("doubt"), dict):  # what the worker measured (segpipe.kernels.prelabel.doubt)
            out.doubt[image_id] = rec["doubt"]
        if c is not None and c.problem:  # the reader names such an image from its receipt (its attributes may be gone)
            out.info[image_id] = {k: rec.get(k) for k in ("file", "width", "height", "sha256")}
    if attrs:
        vouched = _Vouched(plain, base)
        out.attrs = check_stack_attrs(root, stacks, vouched)
        _attrs_problems(out, vouched)
    return out


def _sorted_ids(plain: Mapping[int, Any], windows: Mapping[int, Any], slots: _Slots,
                groups: set[int]) -> np.ndarray | list[int]:
    """Every image id with a receipt, a slot or a group, sorted: an int64 array (8 bytes an id, no set of
    100k ints built), or a list if an id does not fit in int64 (a foreign receipt's).
    """
    try:
        parts = [np.fromiter(plain, dtype=np.int64, count=len(plain)),
                 np.fromiter(windows, dtype=np.int64, count=len(windows)),
                 slots.unique, np.fromiter(groups, dtype=np.int64, count=len(groups))]
    except OverflowError:
        return sorted({*plain, *windows, *slots.ids(), *groups})
    return np.unique(np.concatenate(parts))


def _chunked(ids: np.ndarray | list[int]) -> Iterator[int]:
    """The ids as Python ints, made a chunk at a time (not 100k at once)."""
    if not isinstance(ids, np.ndarray):
        yield from ids
        return
    for lo in range(0, len(ids), 4096):
        yield from ids[lo:lo + 4096].tolist()


def _ok_check(rec: Mapping[str, Any]) -> ImageCheck:
    """The check of an image whose outputs hold: read where its receipt says, against its digests."""
    digests = {k: str(v) for k, v in dict(rec.get("outputs") or {}).items() if v}
    if "stack" in rec:
        return ImageCheck(hint=(str(rec["stack"]), int(rec["slot"])), digests=digests)
    return ImageCheck(digests=digests)


class _ImageChecks(MutableMapping[int, ImageCheck]):
    """:attr:`StoreChecks.images` of a local store: the check of an image whose outputs hold is made
    from its receipt when asked for (:func:`_ok_check`); the others are kept. Iterates by image id.
    """

    def __init__(self, order: np.ndarray | list[int], plain: Mapping[int, Receipt]) -> None:
        self._order = order
        self._plain = plain
        self._made: dict[int, ImageCheck] = {}
        self._extra: list[int] = []  # ids set here that no receipt, slot or group gave (insertion order)
        self._gone: set[int] = set()

    def made(self, image_id: int, check: ImageCheck) -> None:
        """Keeps the check of an image of the store (one that is not made from its receipt)."""
        self._made[image_id] = check

    def __getitem__(self, image_id: int) -> ImageCheck:
        c = self._made.get(image_id)
        if c is not None:
            return c
        if image_id in self._plain and image_id not in self._gone:
            return _ok_check(self._plain[image_id])
        raise KeyError(image_id)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._made or (image_id in self._plain and image_id not in self._gone)

    def __setitem__(self, image_id: int, check: ImageCheck) -> None:
        if image_id not in self:
            if image_id in self._gone:
                self._gone.discard(image_id)
                if image_id not in self._plain:
                    self._extra.append(image_id)
            else:
                self._extra.append(image_id)
        self._made[image_id] = check

    def __delitem__(self, image_id: int) -> None:
        if image_id not in self:
            raise KeyError(image_id)
        self._made.pop(image_id, None)
        if image_id in self._extra:
            self._extra.remove(image_id)
        else:
            self._gone.add(image_id)

    def __iter__(self) -> Iterator[int]:
        for image_id in _chunked(self._order):
            if image_id not in self._gone:
                yield image_id
        yield from self._extra

    def __len__(self) -> int:
        return len(self._order) - len(self._gone) + len(self._extra)

    def kept(self) -> Iterator[tuple[int, ImageCheck]]:
        """``(image id, check)`` of the checks not made from a receipt (problems among them), by id."""
        for image_id in self:
            c = self._made.get(image_id)
            if c is not None:
                yield image_id, c


def checks_with_kind(checks: StoreChecks) -> Iterator[tuple[int, ImageCheck]]:
    """``(image id, check)`` of every check with a :attr:`ImageCheck.kind` (a problem), in the order of
    :attr:`StoreChecks.images`, without making the checks of the images whose outputs hold.
    """
    items = checks.images.kept() if isinstance(checks.images, _ImageChecks) else checks.images.items()
    for image_id, c in items:
        if c.kind:
            yield image_id, c


class _ReceiptOf(Mapping[int, ReceiptRef]):
    """:attr:`StoreChecks.receipt_of` of a local store: each receipt's file named when asked for."""

    def __init__(self, order: np.ndarray | list[int], plain: Mapping[int, Receipt],
                 windows: Mapping[int, list[Receipt]], base: str) -> None:
        self._order, self._plain, self._windows, self._base = order, plain, windows, base

    def __getitem__(self, image_id: int) -> ReceiptRef:
        blocks = self._windows.get(image_id)
        if blocks:
            return _ref(self._base, blocks[0].key)
        rec = self._plain.get(image_id)
        if rec is None:
            raise KeyError(image_id)
        return _ref(self._base, rec.key)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._windows or image_id in self._plain

    def __iter__(self) -> Iterator[int]:
        for image_id in _chunked(self._order):
            if image_id in self:
                yield image_id

    def __len__(self) -> int:
        return len(self._plain) + sum(i not in self._plain for i in self._windows)


class _Vouched(Mapping[int, tuple[ReceiptRef, Mapping[str, Any]]]):
    """Image id → ``(receipt file, receipt)`` of the newest receipt of each image, the file named when asked for."""

    def __init__(self, plain: Mapping[int, Receipt], base: str) -> None:
        self._plain, self._base = plain, base

    def __getitem__(self, image_id: int) -> tuple[ReceiptRef, Mapping[str, Any]]:
        rec = self._plain[image_id]
        return _ref(self._base, rec.key), rec

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._plain

    def __iter__(self) -> Iterator[int]:
        return iter(self._plain)

    def __len__(self) -> int:
        return len(self._plain)


class _Slots:
    """Image id → its ``(stack, slot)`` places, from the stacks' ``ids``: sorted arrays (16 bytes a slot)
    rather than a dict of 100k lists, looked up by bisection; ids in two slots or more kept apart.
    """

    _SHIFT = 40  # a place is (stack number << 40) | slot

    def __init__(self, stacks: Mapping[str, _Stack]) -> None:
        self._names = list(stacks)
        ids, where = [], []
        for i, st in enumerate(stacks.values()):
            j = np.flatnonzero(st.ids >= 0)
            ids.append(np.asarray(st.ids[j], dtype=np.int64))
            where.append((np.int64(i) << self._SHIFT) | j.astype(np.int64))
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        all_where = np.concatenate(where) if where else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")  # one id's places in stack order, then slot order
        self._ids, self._where = all_ids[order], all_where[order]
        unique, counts = np.unique(self._ids, return_counts=True)
        self.unique: np.ndarray = unique  # every image id a slot holds, sorted
        self.dups: set[int] = set(unique[counts > 1].tolist())

    def ids(self) -> list[int]:
        """Every image id a slot holds."""
        return self.unique.tolist()  # type: ignore[no-any-return]

    def get(self, image_id: int, default: list[tuple[str, int]] | None = None) -> list[tuple[str, int]]:
        """The places of ``image_id`` (``default``, else empty, if no slot holds it)."""
        if not -(1 << 63) <= image_id < 1 << 63:
            return [] if default is None else default
        lo = int(np.searchsorted(self._ids, image_id, "left"))
        hi = int(np.searchsorted(self._ids, image_id, "right"))
        if lo == hi:
            return [] if default is None else default
        mask = (1 << self._SHIFT) - 1
        return [(self._names[w >> self._SHIFT], w & mask) for w in self._where[lo:hi].tolist()]

    def __getitem__(self, image_id: int) -> list[tuple[str, int]]:
        got = self.get(image_id)
        if not got:
            raise KeyError(image_id)
        return got

    def __contains__(self, image_id: int) -> bool:
        return bool(self.get(image_id))

    def count(self, image_id: int) -> int:
        """How many slots hold ``image_id``."""
        return len(self.get(image_id))


def plan_object_checks(loc: Location, receipts: Iterable[tuple[str, bytes | None]], *,
                       attrs: bool = False) -> StoreChecks:
    """:func:`plan_checks` of a store in object storage (groups, and stacks from their ``ids`` and ``done``).

    Args:
        loc: The store's location.
        receipts: ``(key, bytes)`` of every receipt (``ObjectLedger.read_all``; None: gone since listed).
        attrs: Also check every stack slot's ``attrs`` (:func:`check_stack_attrs`).
    """
    out = StoreChecks()
    images: dict[int, ImageCheck] = {}
    receipt_of: dict[int, ReceiptRef] = {}
    out.images, out.receipt_of = images, receipt_of
    parsed: list[Receipt] = []
    for key, data in receipts:
        if data is None:
            continue
        decoded, why = parse_receipt(data)
        if decoded is None:
            out.unreadable.append((loc.key_url(f".segpipe/ledger/{key}.json"), str(why)))
            continue
        parsed.append(KeyedReceipt(decoded, key))
        if parsed[-1].get("key", key) == key:
            out.finished.add(key)
    groups = {int(k.split("/")[1]) for k in loc.list("images")
              if k.count("/") == 2 and k.endswith("/zarr.json") and k.split("/")[1].lstrip("-").isdigit()}
    plain, windows = _receipts_by_image(parsed)
    stacks, slots_of = _object_stacks(loc)
    root = _UrlRoot(str(loc))
    for image_id in sorted(set(plain) | set(windows) | groups | set(slots_of.ids())):
        rec: Receipt
        where = loc.key_url(f"images/{image_id}")
        if image_id in plain and "stack" in plain[image_id]:  # a stacked image: as in a local store
            rec = plain[image_id]
            c = _receipt_check(root, image_id, rec, stacks, slots_of, groups) or _ok_check(rec)  # type: ignore[arg-type]
        elif image_id in slots_of and image_id not in plain and image_id not in windows:
            images[image_id] = _unvouched_check(root, image_id, stacks, slots_of, groups)  # type: ignore[arg-type]
            out.info[image_id] = _slot_info(loc, *slots_of[image_id][-1])
            continue
        elif image_id in windows:
            rec = windows[image_id][0]
            wins = {tuple(int(v) for v in r["window"]): str(dict(r.get("outputs") or {}).get("labels") or "")
                    for r in sorted(windows[image_id], key=lambda b: float(b.get("time", 0) or 0))}
            c = (ImageCheck(windows=tuple(sorted(wins.items())))  # type: ignore[arg-type]
                 if image_id in groups else
                 ImageCheck(f"its group is missing though {len(wins)} block receipts say done", where, kind="damaged"))
        elif image_id in plain:
            rec = plain[image_id]
            digests = {k: str(v) for k, v in dict(rec.get("outputs") or {}).items() if v}
            c = (ImageCheck(digests=digests) if image_id in groups else
                 ImageCheck(f"its group is missing though its receipt {_ref('', rec.key).name} says done", where,
                            kind="damaged"))
        else:
            images[image_id] = ImageCheck("no receipt vouches for its group (its task did not finish, or its "
                                          "receipt is damaged)", where, kind="unfinished")
            continue
        images[image_id] = c
        receipt_of[image_id] = _ref("", rec.key)
        if isinstance(rec.get("doubt"), dict):  # what the worker measured (segpipe.kernels.prelabel.doubt)
            out.doubt[image_id] = rec["doubt"]
        if c.problem:
            out.info[image_id] = {k: rec.get(k) for k in ("file", "width", "height", "sha256")}
    if attrs:
        vouched = _Vouched(plain, "")
        out.attrs = check_stack_attrs(loc, stacks, vouched)
        _attrs_problems(out, vouched)
    return out


def _attrs_problems(out: StoreChecks, plain: Mapping[int, tuple[ReceiptRef, Mapping[str, Any]]]) -> None:
    """Gives an image whose slot's ``attrs`` would misname it (and nothing worse) that problem (kind ``attrs``).

    A reader then fails the image, named from its receipt, rather than name its outputs after another
    image: attributes that cannot be read, or whose ``id`` or ``file`` is wrong. A stale ``sha256``
    or size alone names the right image; a ``--resume`` that redid a changed file leaves one (its
    slot kept, its attributes not rewritten), so readers let it pass, and fsck reports every fault
    (:attr:`StoreChecks.attrs`; ``--repair`` mends them).
    """
    for f in out.attrs:
        c = out.images.get(f.image_id)
        if c is None or c.problem or f.field not in ("", "id", "file"):
            continue
        out.images[f.image_id] = replace(c, problem=f"{f.problem} (`segpipe fsck --repair` mends it)", path=f.path,
                                         kind="attrs")
        if f.image_id in plain:
            rec = plain[f.image_id][1]
            out.info[f.image_id] = {k: rec.get(k) for k in ("file", "width", "height", "sha256")}


class _UrlRoot(str):
    """A store's (redacted) URL, joined with ``/`` as a :class:`~pathlib.Path` is (names objects in checks)."""

    def __truediv__(self, key: str) -> _UrlRoot:
        return _UrlRoot(f"{self}/{key}")


def _object_stacks(loc: Location) -> tuple[dict[str, _Stack], _Slots]:
    """The stacks of a store in object storage (``ids`` and ``done``), and the slots of each image id.

    Raises:
        InputError: A stack's ``ids`` or ``done`` array cannot be read (names the stacks).
    """
    try:
        slots = read_stack_slots(loc)
    except Exception:  # zarr's or obstore's own errors quote raw bytes: said in plain words
        raise InputError("a stack's ids or done array is damaged or cannot be read", path=loc.key_url(STACKS)) from None
    stacks = {name: _Stack(ids, done, Path(STACKS) / name) for name, (ids, done) in slots.items()}
    return stacks, _Slots(stacks)


def _read_stacks(root: Path) -> dict[str, _Stack]:
    """Every stack of the store (``stacks/<name>/zarr.json``), by name, sorted.

    Raises:
        InputError: A stack's ``ids`` or ``done`` array cannot be read (names the file).
    """
    stacks: dict[str, _Stack] = {}
    base = root / STACKS
    if (base / "zarr.json").is_file():
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.is_dir() and (Path(entry.path) / "zarr.json").is_file():
                stacks[entry.name] = _read_stack(Path(entry.path))
    return stacks


def _receipts_by_image(receipts: Sequence[Receipt]) -> tuple[dict[int, Receipt], dict[int, list[Receipt]]]:
    """``(plain, windows)``: the newest receipt of each image written whole (a slab's receipt counts
    once for each of its slices), and every window receipt of each scene.
    """
    plain: dict[int, Receipt] = {}
    windows: dict[int, list[Receipt]] = defaultdict(list)
    for rec in receipts:
        if "slices" in rec:  # a slab of a volume: one receipt for several slice groups
            for sid, digests in rec["slices"].items():
                _keep_newest(plain, int(sid), KeyedReceipt({**rec, "outputs": digests, "image_id": int(sid)}, rec.key))
        elif rec.get("window"):
            windows[int(rec["image_id"])].append(rec)
        else:
            _keep_newest(plain, int(rec["image_id"]), rec)
    return plain, windows


def _keep_newest(into: dict[int, Receipt], image_id: int, rec: Receipt) -> None:
    """Keeps the newer of two receipts of one image (a stale one is left by an interrupted redo)."""
    old = into.get(image_id)
    if old is None or float(rec.get("time", 0) or 0) >= float(old.get("time", 0) or 0):
        into[image_id] = rec


def _group_ids(root: Path) -> set[int]:
    """Ids of the images with a group (``images/<id>/zarr.json``)."""
    out: set[int] = set()
    try:
        entries = list(os.scandir(root / "images"))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for e in entries:
        if e.is_dir() and e.name.lstrip("-").isdigit() and os.path.isfile(os.path.join(e.path, "zarr.json")):
            out.add(int(e.name))
    return out


def _dup(image_id: int, slots: list[tuple[str, int]]) -> str:
    where = ", ".join(f"slot {j} of stacks/{n}" for n, j in slots)
    return f"image id {image_id} is in several slots ({where}): a duplicated slot id"


def _receipt_check(root: Path, image_id: int, rec: Receipt, stacks: dict[str, _Stack], slots_of: _Slots,
                   groups: set[int], files: _Files | None = None) -> ImageCheck | None:
    """The check of an image from its receipt: None when its outputs hold (:func:`_ok_check` makes it)."""
    if "stack" in rec:
        name, slot = str(rec["stack"]), int(rec["slot"])
        st = stacks.get(name)
        if st is not None and 0 <= slot < len(st.ids) and int(st.ids[slot]) == image_id and st.done[slot] \
                and image_id not in slots_of.dups:  # the common case, first: no paths built
            if files is None:
                return None
            digests = {k: str(v) for k, v in dict(rec.get("outputs") or {}).items() if v}
            why = files.slot_problem(name, slot, digests)
            if why is not None:
                return ImageCheck(why[1], str(why[0]), kind="damaged")
            return None
        where = root / "stacks" / name
        if st is None:
            return ImageCheck(f"its receipt names stack {name}, which is missing", str(where), kind="damaged")
        if not 0 <= slot < len(st.ids):
            return ImageCheck(f"its receipt names slot {slot}, outside the stack's {len(st.ids)} slots", str(where),
                              kind="damaged")
        if int(st.ids[slot]) != image_id:
            held = int(st.ids[slot])
            what = "no image" if held < 0 else f"image id {held}"
            return ImageCheck(f"slot {slot} of its receipt holds {what} (ids overwritten: a damaged stack)",
                              str(where / "ids"), kind="damaged")
        if image_id in slots_of.dups:
            return ImageCheck(_dup(image_id, slots_of[image_id]), str(where / "ids"), kind="duplicate")
        if not st.done[slot]:
            return ImageCheck(f"slot {slot} is not written (its done flag is 0) though its receipt "
                              f"{_ref('', rec.key).name} says done", str(where / "done"), kind="damaged")
        return None
    if image_id not in groups:
        return ImageCheck(f"its group is missing though its receipt {_ref('', rec.key).name} says done",
                          str(root / "images" / str(image_id)), kind="damaged")
    if files is None:
        return None
    why = files.group_problem(image_id, {k: str(v) for k, v in dict(rec.get("outputs") or {}).items() if v})
    if why is not None:
        return ImageCheck(why[1], str(why[0]), kind="damaged")
    return None


def _scene_check(root: Path, image_id: int, blocks: list[Receipt], groups: set[int]) -> ImageCheck:
    folder = root / "images" / str(image_id)
    if image_id not in groups:
        return ImageCheck(f"its group is missing though {len(blocks)} block receipts say done", str(folder),
                          kind="damaged")
    wins: dict[tuple[int, int, int, int], str] = {}
    for rec in sorted(blocks, key=lambda b: float(b.get("time", 0) or 0)):
        y0, y1, x0, x1 = (int(v) for v in rec["window"])
        wins[(y0, y1, x0, x1)] = str(dict(rec.get("outputs") or {}).get("labels") or "")
    h, w = (int(blocks[0].get(k) or 0) for k in ("height", "width"))
    covered = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in wins)
    if h * w and covered < h * w:
        return ImageCheck(f"only {covered} of its {h * w} pixels are in finished blocks ({len(wins)} block "
                          "receipts): the rest is unwritten", str(folder / "labels"), kind="unfinished")
    return ImageCheck(windows=tuple(sorted(wins.items())))


def _unvouched_check(root: Path, image_id: int, stacks: dict[str, _Stack], slots_of: _Slots,
                     groups: set[int]) -> ImageCheck:
    """An image with a slot or a group but no receipt."""
    slots = slots_of.get(image_id)
    if len(slots) > 1:
        return ImageCheck(_dup(image_id, slots), str(root / "stacks" / slots[0][0] / "ids"), kind="duplicate")
    if image_id in groups:
        # A task that failed or was killed after creating its group: the run reported it.
        return ImageCheck("no receipt vouches for its group (its task did not finish, or its receipt is damaged)",
                          str(root / "images" / str(image_id)), kind="unfinished")
    name, j = slots[0]
    if stacks[name].done[j]:
        return ImageCheck(f"no receipt vouches for slot {j} (its task did not finish, or its receipt is damaged)",
                          str(root / "stacks" / name / "done"), kind="unvouched")
    return ImageCheck(f"slot {j} was never written (the run that planned it failed or did not finish this "
                      "image; `segpipe prelabel --resume` retries it)", str(root / "stacks" / name),
                      kind="unfinished")


def _slot_info(root: Path | Location, name: str, slot: int) -> dict[str, Any]:
    """``file``, ``width``, ``height`` of a slot from its attributes (empty if they cannot be read)."""
    try:
        return dict(StackedImage(open_stack(root, name), slot).attrs)
    except Exception:  # the slot is reported anyway; its name is a nicety
        return {}


# ------------------------------------------------------------------------------------------ attrs

#: The attributes of a slot compared with its receipt (``id`` is compared with the stack's ``ids``).
_RECEIPT_FIELDS = ("file", "sha256", "width", "height")


def _open_stack_array(root: Path | Location, stack: str, name: str, mode: Literal["r", "r+"] = "r") -> Any:
    """Array ``name`` of ``stack`` through zarr-python, in a local store or one in object storage."""
    import zarr  # lazy: zarr costs ~0.5 s to import

    if isinstance(root, Location):
        return zarr.open_array(store=root.zarr_store(read_only=mode == "r"), path=f"{STACKS}/{stack}/{name}",
                               mode=mode, zarr_format=3)
    return zarr.open_array(os.fspath(Path(root) / STACKS / stack / name), mode=mode)


def _attrs_where(root: Path | Location, stack: str, key: str) -> str:
    """The file (or object URL) of ``key`` (``zarr.json``, ``c/0`` ...) of a stack's ``attrs`` array."""
    rel = f"{STACKS}/{stack}/attrs/{key}"
    return root.key_url(rel) if isinstance(root, Location) else os.path.join(root, *rel.split("/"))


def _attrs_key_exists(root: Path | Location, stack: str, key: str) -> bool:
    rel = f"{STACKS}/{stack}/attrs/{key}"
    return root.exists(rel) if isinstance(root, Location) else os.path.isfile(os.path.join(root, *rel.split("/")))


def read_stack_attrs(root: Path | Location, stack: str, n: int,
                     ) -> tuple[list[str | None], list[tuple[str, str]], int]:
    """Every slot's ``attrs`` string of a stack, each chunk decoded once (4096 slots a chunk as made).

    Args:
        root: The store's folder, or its place in object storage.
        stack: The stack's name.
        n: Slots to read (the length of the stack's ``ids``).

    Returns:
        ``(values, chunks, size)``: ``values[j]`` is slot ``j``'s string (``""`` where never
        written), or None where it cannot be read; ``chunks[c]`` is ``(file, why)`` of chunk ``c``,
        slots ``c * size`` to ``(c + 1) * size``, ``why`` empty when it was read.
    """
    size, parts = _stack_attrs_chunks(root, stack, n)
    values: list[str | None] = []
    chunks: list[tuple[str, str]] = []
    for _, got, chunk in parts:
        values += got
        chunks.append(chunk)
    return values, chunks, size


def _stack_attrs_chunks(root: Path | Location, stack: str, n: int,
                        ) -> tuple[int, Iterator[tuple[int, list[str | None], tuple[str, str]]]]:
    """:func:`read_stack_attrs` a chunk at a time: ``(size, chunks)``, each chunk ``(first slot, values,
    (file, why))`` as it is decoded (fsck holds one chunk's strings, not 100k slots' at once).

    Attributes that cannot be opened at all are one chunk of ``n`` slots (``size`` ``max(1, n)``).
    """
    try:
        arr = _open_stack_array(root, stack, "attrs")
        size = int(arr.chunks[0])
        encode = arr.metadata.encode_chunk_key
    except Exception:  # a missing or damaged zarr.json: every slot's attributes are lost
        doc = _attrs_where(root, stack, "zarr.json")
        why = "its zarr.json is missing" if not _attrs_key_exists(root, stack, "zarr.json") else \
            "its zarr.json is not an array zarr can open"
        lost: list[str | None] = [None] * n
        return max(1, n), iter([(0, lost, (doc, why))])

    def chunks() -> Iterator[tuple[int, list[str | None], tuple[str, str]]]:
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            key = encode((lo // size,))
            chunk = _attrs_where(root, stack, key)
            why = ""
            try:
                got: list[str | None] = [str(v) for v in np.asarray(arr[lo:min(hi, int(arr.shape[0]))]).tolist()]
                if not any(got) and not _attrs_key_exists(root, stack, key):
                    got, why = [None] * len(got), "its chunk file is missing"
            except Exception as e:  # zarr's and numcodecs' own errors quote raw bytes: said in plain words
                got, why = [None] * (hi - lo), f"its chunk does not decode ({type(e).__name__})"
            if len(got) < hi - lo:
                got += [None] * (hi - lo - len(got))
                why = why or "the attrs array is shorter than the stack's ids"
            yield lo, got, (chunk, why)

    return size, chunks()


def check_stack_attrs(root: Path | Location, stacks: Mapping[str, _Stack],
                      receipts: Mapping[int, tuple[ReceiptRef, Mapping[str, Any]]]) -> list[AttrsFault]:
    """The stack slots whose ``attrs`` are wrong: they must decode, name the id ``ids`` holds, and for a
    finished slot agree with its receipt on ``file``, ``sha256``, ``width`` and ``height``.

    Exports name each mask from these attributes: two slots' attributes swapped would name both
    masks after the wrong images, with nothing else amiss. Each chunk is decoded once, each slot's
    string parsed once; slots with no image (id -1) are not read.

    Args:
        root: The store's folder, or its place in object storage.
        stacks: The stacks' ``ids`` and ``done``, by name.
        receipts: Image id → its newest receipt (the one the checks use).

    Returns:
        One fault per slot at fault, in stack and slot order.
    """
    faults: list[AttrsFault] = []
    for name, st in stacks.items():
        _, parts = _stack_attrs_chunks(root, name, len(st.ids))
        for lo, values, chunk in parts:  # a chunk's slots at a time
            faults += _chunk_attrs_faults(name, lo, st.ids[lo:lo + len(values)].tolist(),
                                          st.done[lo:lo + len(values)].tolist(), values, chunk, receipts)
    return faults


def _chunk_attrs_faults(name: str, lo: int, ids: list[int], done: list[int], values: list[str | None],
                        chunk: tuple[str, str], receipts: Mapping[int, tuple[ReceiptRef, Mapping[str, Any]]],
                        ) -> list[AttrsFault]:
    """:func:`check_stack_attrs` of the slots ``lo`` on of stack ``name`` (one ``attrs`` chunk's)."""
    faults: list[AttrsFault] = []
    for k, image_id in enumerate(ids):
        j = lo + k
        if image_id < 0:
            continue
        found = receipts.get(image_id)
        rec = found[1] if found is not None and done[k] and found[1].get("slot") == j \
            and found[1].get("stack") == name else None
        text = values[k]
        attrs = _parse_json(text) if text else None
        if isinstance(attrs, dict) and attrs.get("id") == image_id:  # the common case: one parse, a few compares
            if rec is None:
                continue
            for f in _RECEIPT_FIELDS:
                if f in rec and attrs.get(f) != rec[f]:
                    break
            else:
                continue
        faults.append(_attrs_fault(name, j, image_id, text, attrs, chunk, found if rec else None))
    return faults


#: The C scanner that ``json.loads`` ends in, called without its two Python layers (half its cost per
#: call: 100k slots' attributes parse in ~0.2 s instead of ~0.45 s).
_SCAN: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in its __init__, not in typeshed


def _parse_json(text: str) -> Any:
    """``json.loads(text)``, or None where ``text`` is not JSON."""
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        value, end = None, -1
    if end == len(text):
        return value
    try:  # leading or trailing whitespace, or not JSON: json.loads judges
        return json.loads(text)
    except ValueError:
        return None


def _attrs_fault(stack: str, slot: int, image_id: int, text: str | None, attrs: Any, chunk: tuple[str, str],
                 found: tuple[ReceiptRef, Mapping[str, Any]] | None) -> AttrsFault:
    """The fault of a slot whose attributes failed :func:`check_stack_attrs`, in words.

    Args:
        stack: The stack's name.
        slot: The slot.
        image_id: The id the stack's ``ids`` holds there.
        text: Its ``attrs`` string (None: unreadable).
        attrs: ``text`` parsed (None: not JSON).
        chunk: ``(file, why it cannot be read)`` of the slot's ``attrs`` chunk.
        found: The receipt that vouches for the slot, if one does.
    """
    ref, rec = found if found is not None else (None, None)
    vouched = tuple((f, rec[f]) for f in _RECEIPT_FIELDS if f in rec) if rec is not None else ()
    at = f"slot {slot} of stacks/{stack} (image id {image_id})"
    path, why = chunk
    if not text:
        return AttrsFault(stack, slot, image_id, "", f"{at}: its attrs cannot be read: "
                          f"{why if text is None else 'empty (never written)'}", path, ref, vouched)
    if not isinstance(attrs, dict):
        return AttrsFault(stack, slot, image_id, "", f"{at}: its attrs are not a JSON object", path, ref, vouched)
    wrong = [] if attrs.get("id") == image_id else ["id"]
    wrong += [f for f, v in vouched if attrs.get(f) != v]
    by = [f"the stack's ids says {image_id}"] if wrong[0] == "id" else []
    if vouched and wrong[-1] != "id":
        by.append(f"its receipt {ref.name if ref is not None else ''} says " + ", ".join(
            f"{f} {json.dumps(v)}" for f, v in vouched if f in wrong))
    said = ", ".join(f"{f} {json.dumps(attrs.get(f))}" for f in wrong)
    return AttrsFault(stack, slot, image_id, wrong[0], f"{at}: attrs say {said}, where {' and '.join(by)}", path,
                      ref, vouched)


def repair_stack_attrs(root: Path | Location, rewrite: Mapping[tuple[str, int], str],
                       clear: Iterable[tuple[str, int]]) -> None:
    """Rewrites slots' ``attrs`` strings, and clears slots (``ids`` -1, ``done`` 0) whose cannot be rebuilt.

    A chunk is read, changed and written back whole; one that does not decode is removed first (its
    other slots are rewritten here or held no image). A cleared slot holds no image any more: the
    next ``--resume`` gives its image a fresh slot and writes its attributes anew.

    Args:
        root: The store's folder, or its place in object storage.
        rewrite: ``(stack, slot)`` → the slot's ``attrs`` string.
        clear: ``(stack, slot)`` of the slots to clear.
    """
    by_stack: dict[str, dict[int, str]] = defaultdict(dict)
    for (name, j), text in rewrite.items():
        by_stack[name][int(j)] = text
    for name, fixes in sorted(by_stack.items()):
        arr = _open_stack_array(root, name, "attrs", "r+")
        size, n = int(arr.chunks[0]), int(arr.shape[0])
        for c in sorted({j // size for j in fixes}):
            lo, hi = c * size, min((c + 1) * size, n)
            try:
                vals = [str(v) for v in np.asarray(arr[lo:hi]).tolist()]
            except Exception:  # an undecodable chunk: zarr would fail to merge into it, so it goes
                key = f"{STACKS}/{name}/attrs/{arr.metadata.encode_chunk_key((c,))}"
                if isinstance(root, Location):
                    root.delete(key)
                else:
                    os.remove(os.path.join(root, *key.split("/")))
                vals = [""] * (hi - lo)
            for j, text in fixes.items():
                if lo <= j < hi:
                    vals[j - lo] = text
            arr[lo:hi] = np.array(vals, dtype=object)
    cleared: dict[str, list[int]] = defaultdict(list)
    for name, j in clear:
        cleared[name].append(int(j))
    for name, slots in sorted(cleared.items()):
        ids = _open_stack_array(root, name, "ids", "r+")
        done = _open_stack_array(root, name, "done", "r+")
        for j in sorted(set(slots)):
            ids[j] = -1
            done[j] = 0


class _Files:
    """Cheap checks of the files that hold a receipt's outputs (no pixel is read or digested).

    A stack's shard file is checked once for all its slots: its index (at the end of the file,
    ``bytes`` + ``crc32c`` codecs) must pass its checksum and point inside the file. A slot whose
    index entry is empty (or whose shard file is missing) holds fill values only, which its receipt's
    digest must then be (the digest of zeros is computed once per stack). A group's array must have a
    chunk file, unless its receipt's digest is that of zeros.
    """

    _EMPTY = (1 << 64) - 1

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shards: dict[tuple[str, str, int], list[bool] | str | None] = {}
        self._per: dict[tuple[str, str], int | None] = {}
        self._zero_digests: dict[tuple[str, str, str], bool] = {}
        self._docs: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._zeros: dict[tuple[str, str], np.ndarray | None] = {}
        self._bases: dict[tuple[str, str], str] = {}

    def _doc(self, stack: str, name: str) -> dict[str, Any] | None:
        if (stack, name) not in self._docs:
            doc = zarrfast.read_array_document(self.root / "stacks" / stack / name)
            self._docs[(stack, name)] = doc if isinstance(doc, dict) else None
        return self._docs[(stack, name)]

    def _index(self, stack: str, name: str, shard: int, per_shard: int) -> list[bool] | str | None:
        """Which slots of a shard its file holds; None if the file is missing; the problem if it is damaged."""
        key = (stack, name, shard)
        if key not in self._shards:
            path = self._shard_path(stack, name, shard)
            n = per_shard * 16 + 4
            got: list[bool] | str | None
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                got = None
            else:
                try:
                    size = os.fstat(fd).st_size
                    tail = os.pread(fd, n, max(0, size - n)) if size >= n else b""
                finally:
                    os.close(fd)
                got = "damaged shard file (shorter than its index)"
                if len(tail) == n:
                    body, crc = tail[:-4], tail[-4:]
                    got = "damaged shard file (its index fails its checksum)"
                    if _crc32c(body) == crc:
                        index = np.frombuffer(body, dtype="<u8").reshape(per_shard, 2)
                        used = index[:, 0] != np.uint64(self._EMPTY)
                        ends = index[used, 0].astype(object) + index[used, 1].astype(object)
                        got = used.tolist() if all(e <= size - n for e in ends) else \
                            "damaged shard file (its index points past the end: truncated)"
            self._shards[key] = got
        return self._shards[key]

    def _shard_path(self, stack: str, name: str, shard: int) -> str:
        """:func:`shard_file` as a string (joined by hand: 12,500 shards' pathlib joins cost ~0.5 s)."""
        base = self._bases.get((stack, name))
        if base is None:
            base = self._bases[(stack, name)] = os.path.join(self.root, STACKS, stack, name, "c.")
        return base + str(shard) + (".0.0.0" if name == "probs" else ".0.0")

    def _is_zeros(self, stack: str, name: str, digest: str) -> bool:
        """Whether ``digest`` is that of an all-fill-value image of the stack (memoised: receipts repeat it)."""
        memo = self._zero_digests.get((stack, name, digest))
        if memo is not None:
            return memo
        if (stack, name) not in self._zeros:
            doc = self._doc(stack, name)
            try:
                # all fill value: 0 in stacks made before label maps took their void value as fill value
                self._zeros[(stack, name)] = np.full([int(d) for d in doc["shape"][1:]],  # type: ignore[index]
                                                     zarrfast.fill_of(doc),  # type: ignore[arg-type]
                                                     dtype=np.dtype(doc["data_type"]))  # type: ignore[index]
            except (KeyError, TypeError, ValueError):
                self._zeros[(stack, name)] = None
        z = self._zeros[(stack, name)]
        memo = self._zero_digests[(stack, name, digest)] = z is not None and digest_matches(z, digest)
        return memo

    def _per_shard(self, stack: str, name: str) -> int | None:
        """Slots per shard file of a stacked array (None: no such array, or not sharded)."""
        key = (stack, name)
        if key not in self._per:
            doc = self._doc(stack, name)
            try:
                self._per[key] = int(doc["chunk_grid"]["configuration"]["chunk_shape"][0])  # type: ignore[index]
            except (KeyError, TypeError, ValueError, IndexError):
                self._per[key] = None
        return self._per[key]

    def slot_problem(self, stack: str, slot: int, digests: Mapping[str, str]) -> tuple[Path, str] | None:
        """``(file, problem)`` of the first stacked array of a slot whose file contradicts its receipt."""
        for name in ("labels", "probs"):
            digest = digests.get(name)
            per_shard = self._per_shard(stack, name) if digest else None
            if not digest or not per_shard:
                continue
            index = self._index(stack, name, slot // per_shard, per_shard)
            if isinstance(index, list) and index[slot % per_shard]:
                continue  # the common case: the slot is in its whole shard file
            path = shard_file(self.root, stack, slot, name)
            if isinstance(index, str):
                return path, f"{name}: {index}"
            if not self._is_zeros(stack, name, digest):
                what = "the shard file is missing" if index is None else f"slot {slot} is not in its shard file"
                return path, f"{name}: {what} though its receipt says done"
        return None

    def group_problem(self, image_id: int, digests: Mapping[str, str]) -> tuple[Path, str] | None:
        """``(folder, problem)`` of the first array of a group missing a chunk file its receipt says holds data.

        An array with all its chunk files passes without a read. One with fewer files than chunks may
        still be whole, as zarr does not write chunks that hold only the fill value; so it is read and
        compared with its receipt (rare: only images with empty regions pay for it).
        """
        for name, digest in digests.items():
            folder = self.root / "images" / str(image_id) / name
            doc = zarrfast.read_array_document(folder)
            if not isinstance(doc, dict) or not str(doc.get("data_type", "")).startswith(("int", "uint", "float")):
                continue  # strings (instances/rle), groups: their readers check them
            n_files = sum(f != "zarr.json" and ".partial" not in f for _, _, fs in os.walk(folder) for f in fs)
            try:
                shape = [int(d) for d in doc["shape"]]
                grid = [int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"]]
                n_chunks = int(np.prod([-(-s // max(c, 1)) for s, c in zip(shape, grid, strict=True)]))
                zeros = None if n_files else np.full(shape, zarrfast.fill_of(doc), dtype=np.dtype(doc["data_type"]))
            except (KeyError, TypeError, ValueError):
                continue  # a document zarr cannot open either: its reader names it
            if n_files >= n_chunks:
                continue
            whole = digest_matches(zeros, digest) if zeros is not None else self._array_matches(folder, digest)
            if not whole:
                return folder, f"{name}: missing chunk file though its receipt says done"
        return None

    @staticmethod
    def _array_matches(folder: Path, digest: str) -> bool:
        """Whether the array at ``folder``, read whole, has ``digest`` (False if it cannot be read)."""
        import zarr  # lazy: zarr costs ~0.5 s to import

        try:
            arr = zarr.open_array(store=os.fspath(folder), mode="r")[...]
        except Exception:  # noqa: BLE001 - any failure to read means the array is not whole
            return False
        return matches(np.asarray(arr), digest)


# ------------------------------------------------------------------------------------------ reading


def verify_array(arr: np.ndarray, digest: str, path: Path, what: str) -> None:
    """Compares an array just read with its receipt's digest.

    Args:
        arr: The array as read (strings compared as ``str``, as the writer digested them).
        digest: The receipt's digest (xxh3-128 or a legacy sha256).
        path: The file that holds it (named in the error).
        what: The array, e.g. ``labels``.

    Raises:
        InputError: The digest differs: a chunk file is missing (read as background) or damaged.
    """
    if not matches(arr, digest):
        if not path.exists():
            raise InputError(f"{what}: the chunk file is missing (zarr would read it as background)", path=path)
        raise InputError(f"{what}: does not match its receipt (a missing or damaged chunk; not read as background)",
                         path=path)


def matches(arr: np.ndarray, digest: str) -> bool:
    """Whether an array as read has its receipt's digest (strings compared as ``str``, as written)."""
    # via object: numpy casts its variable-width StringDType (zarr 3's strings, kind "T") to no unsized str
    return digest_matches(arr.astype(object).astype(str) if arr.dtype.kind in ("U", "T", "O") else arr, digest)


class ShardReader:
    """Whole shards of stacked arrays decoded straight from their files (fsck reads each shard once).

    zarr-python takes 5-10 ms to read one small shard (its event loop and codec pipeline): at 100k
    images, 12,500 shards were most of ``fsck``'s time. A shard file is zstd frames and an index with
    a CRC32C (as :mod:`~segpipe.storage.zarrfast` writes it), decoded here in a fraction of that.
    Only arrays whose ``zarr.json`` is exactly what zarrfast writes are read so; for any other, and for
    a file that does not decode whole, :meth:`slot` returns None and the caller reads through
    zarr-python, which names the fault.
    """

    def __init__(self) -> None:
        self._layouts: dict[str, tuple[list[int], np.dtype[Any], int, float, str] | None] = {}
        self._key: tuple[str, int] | None = None
        self._block: np.ndarray | None = None

    def _layout(self, folder: str) -> tuple[list[int], np.dtype[Any], int, float, str] | None:
        """``(shape, dtype, slots per shard, fill value, key separator)``, or None: read through zarr."""
        if folder not in self._layouts:
            self._layouts[folder] = None
            doc = zarrfast.read_array_document(folder)
            try:
                shape = [int(s) for s in doc["shape"]]  # type: ignore[index]
                dtype = np.dtype(doc["data_type"])  # type: ignore[index]
                per = int(doc["chunk_grid"]["configuration"]["chunk_shape"][0])  # type: ignore[index]
                sep = str(doc["chunk_key_encoding"]["configuration"]["separator"])  # type: ignore[index]
                fill = doc["fill_value"]  # type: ignore[index]
            except (KeyError, TypeError, ValueError, IndexError):
                return None
            if len(shape) < 2 or sep not in ("/", ".") or isinstance(fill, bool) or not isinstance(fill, (int, float)):
                return None
            expected = zarrfast.sharded_array_document(shape, dtype, [1, *shape[1:]], [per, *shape[1:]], sep,
                                                       **zarrfast.doc_extras(doc))  # type: ignore[arg-type]
            if doc == expected:
                self._layouts[folder] = (shape, dtype, per, float(fill), sep)
        return self._layouts[folder]

    def slot(self, folder: str | Path, slot: int) -> np.ndarray | None:
        """``array[slot]`` of the stacked array at ``folder``, from its shard's decoded file.

        Returns:
            The slot's ``(d1, ...)`` array, or None: read it through zarr-python.
        """
        folder = os.fspath(folder)
        layout = self._layout(folder)
        if layout is None or not 0 <= slot < layout[0][0]:
            return None
        shape, _, per, _, _ = layout
        key = (folder, slot // per)
        if key != self._key:
            self._key, self._block = key, self._decode(folder, layout, slot // per)
        return None if self._block is None else self._block[slot % per]

    @staticmethod
    def _decode(folder: str, layout: tuple[list[int], np.dtype[Any], int, float, str], shard: int) -> np.ndarray | None:
        shape, dtype, per, fill, sep = layout
        path = os.path.join(folder, sep.join(["c", str(shard), *(["0"] * (len(shape) - 1))]))
        block = np.full([per, *shape[1:]], fill, dtype=dtype)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return block  # no file: every slot is fill value (zarr reads it so too)
        except OSError:
            return None
        n = per * 16 + 4
        if len(data) < n or _crc32c(data[-n:-4]) != data[-4:]:
            return None
        index = np.frombuffer(data[-n:-4], dtype="<u8").reshape(per, 2)
        from numcodecs import Zstd  # lazy: numcodecs costs ~0.3 s to import

        codec = Zstd()
        le = dtype.newbyteorder("<")
        size = int(np.prod(shape[1:]))
        for j in range(per):
            off, nbytes = int(index[j, 0]), int(index[j, 1])
            if off == int(zarrfast.EMPTY):
                continue
            if off + nbytes > len(data) - n:
                return None
            try:
                flat = np.frombuffer(codec.decode(data[off:off + nbytes]), dtype=le)
            except Exception:  # noqa: BLE001 - a damaged frame: zarr-python's read names it
                return None
            if flat.size != size:
                return None
            block[j] = flat.reshape(shape[1:])
        return block
