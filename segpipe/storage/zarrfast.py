"""Direct writes of whole Zarr v3 nodes on a local file system, byte-identical to zarr-python's.

A worker that owns an image writes its group and arrays from scratch, every chunk at once. zarr-python
spends most of that time outside the data: each call crosses into its event-loop thread, ``overwrite``
lists and deletes prefixes, and metadata are written and re-read node by node. For a 1024² label map
that was 12 ms per image, about 10× the zstd cost of the data (bench/RESULTS.md, issue 5).

This module writes the same files zarr would (the same ``zarr.json`` documents, the same chunk keys,
the same zstd frames from numcodecs, chunks equal to the fill value left out as zarr's
``write_empty_chunks=False`` does), each atomically (temporary file + rename, as zarr's LocalStore).
``tests/storage/test_zarrfast.py`` compares the files with zarr's own for every dtype written here and
reads them back with plain zarr. Anything else (strings, remote stores) goes through zarr-python.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.jsonio import jsonable

if TYPE_CHECKING:
    from segpipe.storage.location import Location

#: numpy dtypes written directly (zarr v3 data type names are numpy's names for these).
FAST_DTYPES = frozenset(
    ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)
ZSTD_LEVEL = 0  # zarr-python's default ZstdCodec(level=0, checksum=False)
#: Chunk keys of arrays written whole (an image's arrays): ``c.0.0`` beside the array's ``zarr.json``
#: (zarr v3's default key encoding with its "." separator), not ``c/0/0``. A folder costs 0.1–0.25 ms
#: to create on this project's VM, more than its chunk file: this keeps an image at two folders
#: (its group and each array) instead of four. Scenes' arrays, made by zarr-python, keep "/".
WHOLE_ARRAY_SEPARATOR = "."


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=True).encode()  # as zarr-python writes


def dump_document(doc: Mapping[str, Any]) -> bytes:
    """A ``zarr.json`` document's bytes, as zarr-python writes them."""
    return _dump(doc)


def group_document(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``zarr.json`` of a v3 group."""
    return {"attributes": jsonable(dict(attributes or {})), "zarr_format": 3, "node_type": "group"}


def array_document(shape: Sequence[int], dtype: np.dtype[Any], chunks: Sequence[int],
                   separator: str = "/", *, fill_value: float = 0,
                   dimension_names: Sequence[str] | None = None,
                   attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``zarr.json`` zarr-python writes for ``create_array(shape, dtype, chunks, fill_value=...,
    dimension_names=..., attributes=...)``.

    Args:
        shape: Array shape.
        dtype: One of :data:`FAST_DTYPES`.
        chunks: Chunk shape (same rank as ``shape``).
        separator: Of the default chunk key encoding ("/" is zarr's default; "." as given
            ``chunk_key_encoding={"name": "default", "separator": "."}``).
        fill_value: What a chunk never written reads as (0 by default; label maps use their void
            value, so that nothing unwritten reads as a class).
        dimension_names: One name per axis (xarray's dimensions), or None (no ``dimension_names``
            key, as arrays written before they were added).
        attributes: The array's attributes.
    """
    dt = np.dtype(dtype)
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dt.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    doc: dict[str, Any] = {
        "shape": [int(s) for s in shape],
        "data_type": dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [int(c) for c in chunks]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": separator}},
        "fill_value": float(fill_value) if dt.kind == "f" else int(fill_value),
        "codecs": [bytes_codec, {"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": False}}],
        "attributes": jsonable(dict(attributes or {})),
    }
    if dimension_names is not None:  # zarr-python's place for it: after the attributes
        doc["dimension_names"] = [str(d) for d in dimension_names]
    doc.update({"zarr_format": 3, "node_type": "array", "storage_transformers": []})
    return doc


def doc_extras(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`array_document` that an existing document has (fill value,
    dimension names, attributes): what :func:`write_region` and :func:`write_shards` compare with.
    """
    return {"fill_value": doc.get("fill_value", 0), "dimension_names": doc.get("dimension_names"),
            "attributes": doc.get("attributes") or {}}


def fill_of(doc: Mapping[str, Any]) -> float:
    """The fill value of an array document (0 when absent or not a number)."""
    v = doc.get("fill_value", 0)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


@functools.lru_cache(maxsize=256)
def _array_document_bytes(shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], separator: str,
                          fill_value: float = 0, dimension_names: tuple[str, ...] | None = None,
                          attributes_json: str = "{}") -> bytes:
    # A collection has few distinct image sizes: each document is encoded once per worker.
    return _dump(array_document(shape, np.dtype(dtype), chunks, separator, fill_value=fill_value,
                                dimension_names=dimension_names, attributes=json.loads(attributes_json)))


@functools.lru_cache(maxsize=1)
def _codec() -> Any:
    from numcodecs import Zstd  # lazy: numcodecs costs ~0.3 s to import

    return Zstd(level=ZSTD_LEVEL, checksum=False)


def _fresh_folder(p: Path) -> None:
    """Creates the folder ``p``, replacing whatever was there (a re-executed task leaves no stale file)."""
    try:
        os.mkdir(p)
    except FileExistsError:
        shutil.rmtree(p)
        os.mkdir(p)
    except FileNotFoundError:
        p.mkdir(parents=True)


def supported(data: np.ndarray) -> bool:
    """Whether :func:`write_array` writes ``data`` itself (numeric dtypes, at least one dimension)."""
    return data.dtype.name in FAST_DTYPES and data.ndim >= 1


def write_group(path: str | Path, attributes: Mapping[str, Any] | None) -> None:
    """Creates (replacing whatever was there) the group at folder ``path`` with ``attributes``."""
    p = Path(path)
    _fresh_folder(p)
    write_bytes_atomic(p / "zarr.json", _dump(group_document(attributes)))


def write_array(path: str | Path, data: np.ndarray, chunks: Sequence[int], *, fill_value: float = 0,
                dimension_names: Sequence[str] | None = None, attributes: Mapping[str, Any] | None = None) -> None:
    """Writes ``data`` as a whole v3 array at folder ``path`` (replacing any array there).

    Args:
        path: The array's folder (``GROUP/name``).
        data: ``(d0, d1, ...)`` array of a :data:`FAST_DTYPES` dtype.
        chunks: Chunk shape; edge chunks are padded with the fill value, as the v3 regular grid says.
        fill_value: The array's fill value (chunks equal to it are left out).
        dimension_names: One name per axis, or None.
        attributes: The array's attributes (JSON-able).
    """
    if not supported(data):
        raise ValueError(f"direct writes take numeric arrays, got {data.dtype}")
    p = Path(path)
    _fresh_folder(p)
    chunks = tuple(int(c) for c in chunks)
    sep = WHOLE_ARRAY_SEPARATOR
    dims = tuple(str(d) for d in dimension_names) if dimension_names is not None else None
    doc = _array_document_bytes(tuple(int(s) for s in data.shape), data.dtype.name, chunks, sep, fill_value, dims,
                                json.dumps(jsonable(dict(attributes or {})), sort_keys=True))
    write_bytes_atomic(p / "zarr.json", doc)
    _write_chunks(p, data, [0] * data.ndim, chunks, _codec(), data.dtype.newbyteorder("<"), sep, unlink_empty=False,
                  fill=fill_value)


def tiny_frame(nbytes: int) -> int:
    """Compressed size up to which a chunk of ``nbytes`` may be all fill value.

    zstd turns zeros into about 1 byte per 32 KiB (1,363 bytes for 44 MB), so a frame larger than
    1/512 of its input plus 64 bytes certainly holds something else: the exact scan is skipped then.
    """
    return 64 + nbytes // 512


def _is_fill(part: np.ndarray, fill: float) -> bool:
    """Whether every element of ``part`` is bit for bit the fill value (zarr's test for leaving a chunk out)."""
    if fill == 0 and not (isinstance(fill, float) and np.signbit(fill)):
        return not part.view(f"u{part.itemsize}").any()
    ref = np.array(fill, dtype=part.dtype).reshape(1).view(f"u{part.itemsize}")[0]
    return bool((part.view(f"u{part.itemsize}") == ref).all())


def _write_chunks(p: Path, data: np.ndarray, origin: Sequence[int], chunks: Sequence[int], codec: Any,
                  le: np.dtype[Any], separator: str, *, unlink_empty: bool, fill: float = 0) -> None:
    """Encodes and writes every chunk of ``data`` (placed at ``origin``, chunk-aligned) as ``p/c<sep>i<sep>j…``.

    Chunks bit for bit equal to the fill value are left out, as zarr's ``write_empty_chunks=False``
    does; with ``unlink_empty`` an existing file for such a chunk is removed, as zarr does when it
    overwrites a chunk with fill values. Edge chunks are padded with the fill value.
    """
    grid = [range(0, s, c) for s, c in zip(data.shape, chunks, strict=True)]
    made: set[str] = set()
    root = os.fspath(p)
    # One reused buffer for chunks that are not contiguous in ``data`` (or are padded edges): a fresh
    # MiB-sized array per chunk page-faults on first touch, which cost as much as zstd on this VM.
    scratch: np.ndarray | None = None
    for starts in itertools.product(*grid):
        sl = tuple(slice(s, s + c) for s, c in zip(starts, chunks, strict=True))
        block = data[sl]
        key = os.path.join(root, separator.join(
            ["c", *(str((o + s) // c) for o, s, c in zip(origin, starts, chunks, strict=True))]))
        parent = os.path.dirname(key)
        part = block
        if block.shape != tuple(chunks) or not block.flags.c_contiguous or block.dtype != le:
            if scratch is None:
                scratch = np.empty(tuple(chunks), dtype=le)
            if block.shape != tuple(chunks):
                scratch.fill(fill)
            scratch[tuple(slice(0, n) for n in block.shape)] = block
            block = scratch
        frame = codec.encode(block)
        # A chunk bit for bit equal to the fill value (zarr stores -0.0, not 0.0) is left out, as
        # zarr does. Only a chunk that compressed to almost nothing can be one: the full scan runs
        # for those alone.
        if len(frame) <= tiny_frame(block.nbytes) and _is_fill(part, fill):
            if unlink_empty:
                try:
                    os.unlink(key)
                except FileNotFoundError:
                    pass
            continue
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        write_bytes_atomic(key, frame)


class _Meta:
    """An array's parsed ``zarr.json`` and what this module decided about it (see :func:`_array_meta`)."""

    __slots__ = ("doc", "shape", "chunks", "dtype", "sep", "verdicts")

    def __init__(self, doc: dict[str, Any], shape: list[int], chunks: list[int], dtype: np.dtype[Any],
                 sep: str) -> None:
        self.doc, self.shape, self.chunks, self.dtype, self.sep = doc, shape, chunks, dtype, sep
        self.verdicts: dict[str, bool] = {}  # "region" / "shards": whether the document is one we write

    def is_ours(self, kind: str, expected: Callable[[], dict[str, Any]]) -> bool:
        """Whether the document is ``expected()`` with a "/" or "." key separator (decided once per kind)."""
        ok = self.verdicts.get(kind)
        if ok is None:
            ok = self.verdicts[kind] = self.sep in ("/", ".") and self.doc == expected()
        return ok


#: ``{zarr.json path: (its stat signature, its _Meta)}``: a shard task reads the same few documents
#: again and again, and reading and checking them cost about as much per image as writing its file
#: (bench/RESULTS.md, session 5). Keyed by inode, size, mtime and ctime: metadata is rewritten only by
#: the driver between runs (zarr replaces the file), never while tasks of a run write chunks.
_META_CACHE: dict[str, tuple[tuple[int, int, int, int], _Meta]] = {}
_META_CACHE_SIZE = 512
_SETTLED_NS = 100_000_000  # 0.1 s


def _meta_of(doc: Any) -> _Meta | None:
    """The :class:`_Meta` of a parsed ``zarr.json`` document, or None if it is no array document."""
    try:
        return _Meta(doc, [int(s) for s in doc["shape"]],
                     [int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"]], np.dtype(doc["data_type"]),
                     str(doc.get("chunk_key_encoding", {}).get("configuration", {}).get("separator") or ""))
    except (AttributeError, ValueError, KeyError, TypeError, IndexError):
        return None


def _array_meta(p: Path) -> _Meta | None:
    """The parsed ``zarr.json`` of the array at folder ``p`` (cached while the file is unchanged), or None."""
    f = os.path.join(os.fspath(p), "zarr.json")
    try:
        st = os.stat(f)
    except OSError:
        return None
    sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _META_CACHE.get(f)
    if hit is not None and hit[0] == sig:
        return hit[1]
    try:
        with open(f, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    meta = _meta_of(doc)
    if meta is None:
        return None
    # As git does with its index ("racy git"): a file changed within the clock's granularity of now
    # may change again without its size or times changing, so only settled files are remembered.
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        if len(_META_CACHE) >= _META_CACHE_SIZE:
            _META_CACHE.clear()
        _META_CACHE[f] = (sig, meta)
    return meta


def forget_metadata() -> None:
    """Drops every cached ``zarr.json`` (a new run: its driver may have resized or replaced arrays).

    The stat signature alone can miss a change on file systems whose attributes are cached (NFS
    answers ``stat`` from its cache for up to a minute) or whose times are coarse, and the workers of
    a user's cluster live from one run to the next. Documents read from object storage
    (:func:`read_object_document`) have no signature at all: they are kept until this is called.
    """
    _META_CACHE.clear()
    _OBJECT_DOCS.clear()


#: ``{document URL: its _Meta, or None if absent}`` of arrays in object storage: a GET is a round trip,
#: and a shard task reads the same few documents (its stack's) as every other task of its run.
_OBJECT_DOCS: dict[str, _Meta | None] = {}


def read_object_document(location: Location, key: str, *, fresh: bool = False) -> dict[str, Any] | None:
    """The ``zarr.json`` document of the array at ``key`` of ``location`` (do not modify it), or None.

    Read once per process and run (:func:`forget_metadata` drops them: a worker's plugin calls it
    when a run starts, as the driver's metadata changes only between runs).

    Args:
        location: The store in object storage.
        key: The array's key (``stacks/<name>/labels``).
        fresh: Read it again (a cached document that no longer fits, e.g. a slot past its shape).
    """
    url = f"{location.url}/{key}/zarr.json"
    if fresh or url not in _OBJECT_DOCS:
        try:
            doc = json.loads(location.read_bytes(f"{key}/zarr.json"))
        except FileNotFoundError:
            doc = None
        except ValueError:  # not JSON: the caller reads through zarr-python, whose error names it
            doc = None
        if len(_OBJECT_DOCS) >= _META_CACHE_SIZE:
            _OBJECT_DOCS.clear()
        _OBJECT_DOCS[url] = _meta_of(doc) if isinstance(doc, dict) else None
    meta = _OBJECT_DOCS[url]
    return None if meta is None else meta.doc


def read_array_document(path: str | Path) -> dict[str, Any] | None:
    """The ``zarr.json`` document of the array at folder ``path`` (do not modify it), or None."""
    meta = _array_meta(Path(path))
    return None if meta is None else meta.doc


def write_region(path: str | Path, data: np.ndarray, origin: Sequence[int]) -> bool:
    """Writes ``data`` into the existing array at folder ``path`` at ``origin``, chunk by chunk.

    For the block tasks of a large image: each owns whole chunks of an array the driver created.
    The array must be one this module would write (its ``zarr.json`` equal to
    :func:`array_document` for its shape, dtype, chunks, fill value, dimension names and attributes)
    and the region must be chunk-aligned (ending on a chunk boundary or at the array's edge);
    otherwise nothing is written and False is returned, and the caller writes through zarr-python.

    Args:
        path: The array's folder.
        data: ``(d0, d1, ...)`` values, same rank as the array.
        origin: Index of ``data[0, 0, ...]`` in the array.

    Returns:
        Whether the region was written.
    """
    p = Path(path)
    meta = _array_meta(p)
    if meta is None:
        return False
    shape, chunks, dtype, sep = meta.shape, meta.chunks, meta.dtype, meta.sep
    if not supported(data) or data.dtype != dtype or data.ndim != len(shape) or len(origin) != len(shape):
        return False
    if not meta.is_ours("region", lambda: array_document(shape, dtype, chunks, sep, **doc_extras(meta.doc))):
        return False  # another codec or key encoding: zarr-python knows how
    for o, n, s, c in zip(origin, data.shape, shape, chunks, strict=True):
        if o < 0 or o % c or o + n > s or ((o + n) % c and o + n != s):
            return False
    _write_chunks(p, data, origin, chunks, _codec(), dtype.newbyteorder("<"), sep, unlink_empty=True,
                  fill=fill_of(meta.doc))
    return True


# ------------------------------------------------------------------------------------------- shards
# Building block of store layout 2 (docs/design/store-layout-2.md): same-size images stacked along
# axis 0, one inner chunk per image, S images per shard file, each shard written whole by one task.

EMPTY = np.uint64(2**64 - 1)  # an absent inner chunk's (offset, nbytes) in a shard index


def sharded_array_document(shape: Sequence[int], dtype: np.dtype[Any], chunks: Sequence[int],
                           shards: Sequence[int], separator: str = "/", **extras: Any) -> dict[str, Any]:
    """The ``zarr.json`` zarr-python writes for ``create_array(shape, dtype, chunks, shards, ...)``.

    ``separator`` is that of the default chunk key encoding, and ``extras`` (fill value, dimension
    names, attributes) are as :func:`array_document` takes them.
    """
    doc = array_document(shape, dtype, shards, separator, **extras)
    inner = doc.pop("codecs")
    doc["codecs"] = [{
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [int(c) for c in chunks],
            "codecs": inner,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": "end",
        },
    }]
    # keep zarr-python's key order: codecs before attributes
    return {k: doc[k] for k in ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
                                "attributes", "dimension_names", "zarr_format", "node_type", "storage_transformers")
            if k in doc}


def write_shards(path: str | Path, data: np.ndarray | Sequence[np.ndarray | None], start: int) -> bool:
    """Writes images ``start … start + len(data)`` of a stacked array whose shards are whole files.

    The array (``(N, d1, ...)``, inner chunks ``(1, d1, ...)``, shards ``(S, d1, ...)``, as
    :func:`sharded_array_document` describes) must exist, ``start`` must begin a shard and the data
    must end on a shard boundary or at the array's end: every shard touched is written whole, so no
    two tasks that own different shards ever touch the same file. A shard whose images are all fill
    value is removed, as zarr does. Otherwise nothing is written and False is returned.

    Args:
        path: The array's folder.
        data: ``(n, d1, ...)`` images, or a sequence of ``n`` images ``(d1, ...)`` where None stands
            for an image of fill values (no stacked copy of a shard's images is needed).
        start: Index of ``data[0]`` along axis 0.

    Returns:
        Whether the shards were written.
    """
    p = Path(path)
    meta = _array_meta(p)
    shards = _shard_objects(meta, data, start) if meta is not None else None
    if shards is None:
        return False
    for rel, blob in shards:
        key = os.path.join(p, rel)
        if blob is None:
            try:
                os.unlink(key)
            except FileNotFoundError:
                pass
            continue
        try:
            write_bytes_atomic(key, blob)
        except FileNotFoundError:  # the shard's folder does not exist yet ("/" keys): made once, not per shard
            os.makedirs(os.path.dirname(key), exist_ok=True)
            write_bytes_atomic(key, blob)
    return True


def encode_shards(doc: Mapping[str, Any], data: np.ndarray | Sequence[np.ndarray | None],
                  start: int) -> list[tuple[str, bytes | None]] | None:
    """The shard objects :func:`write_shards` would write, for a store without files (object storage).

    Args:
        doc: The stacked array's parsed ``zarr.json``.
        data: As :func:`write_shards` takes it.
        start: Index of ``data[0]`` along axis 0 (the first slot of a shard).

    Returns:
        ``[(shard key relative to the array, its bytes, or None where the shard is all fill value and
        zarr leaves it out)]``, or None when the array or the data is not one written this way (the
        caller writes through zarr-python).
    """
    meta = _meta_of(dict(doc))
    out = _shard_objects(meta, data, start) if meta is not None else None
    return None if out is None else list(out)


def _shard_objects(meta: _Meta, data: np.ndarray | Sequence[np.ndarray | None],
                   start: int) -> Iterator[tuple[str, bytes | None]] | None:
    """Checks ``data`` against the stacked array ``meta``; then its shards, encoded one at a time.

    Returns:
        None when nothing may be written this way; else an iterator of ``(key relative to the
        array, shard bytes or None for an all-fill shard)``.
    """
    images: Sequence[np.ndarray | None] = list(data) if isinstance(data, np.ndarray) else data
    if isinstance(data, np.ndarray) and data.ndim != len(meta.shape):
        return None
    if not _whole_image_stack(meta, images):
        return None
    shape, s, n = meta.shape, meta.chunks[0], len(images)
    if start < 0 or start % s or start + n > shape[0] or ((start + n) % s and start + n != shape[0]):
        return None
    return _encode_shard_objects(meta, images, start)


def _encode_shard_objects(meta: _Meta, images: Sequence[np.ndarray | None],
                          start: int) -> Iterator[tuple[str, bytes | None]]:
    from numcodecs import CRC32C  # lazy: numcodecs costs ~0.3 s to import

    shape, s = meta.shape, meta.chunks[0]
    codec, crc = _codec(), CRC32C()
    fill = fill_of(meta.doc)
    le = meta.dtype.newbyteorder("<")
    for k in range(0, len(images), s):
        rel = meta.sep.join(["c", str((start + k) // s), *("0" for _ in shape[1:])])
        yield rel, _shard_blob(images[k : k + s], s, codec, crc, le, fill)


def _whole_image_stack(meta: _Meta, images: Sequence[np.ndarray | None]) -> bool:
    """Whether ``images`` can be written straight into the array: a stack of whole images (inner chunks
    ``(1, d1, ...)``, shards ``(S, d1, ...)``) in the layout this module writes, each image of its dtype
    and ``(d1, ...)`` shape.
    """
    shape, shard, dtype, sep = meta.shape, meta.chunks, meta.dtype, meta.sep
    try:
        inner = [int(c) for c in meta.doc["codecs"][0]["configuration"]["chunk_shape"]]
    except (KeyError, TypeError, IndexError, ValueError):
        return False
    for img in images:
        if img is not None and (not supported(img) or img.dtype != dtype or list(img.shape) != shape[1:]):
            return False
    if len(shape) < 2 or inner[0] != 1 or inner[1:] != shape[1:] or shard[1:] != shape[1:]:
        return False  # only stacks of whole images: inner chunks in C order are then in file order
    return meta.is_ours("shards", lambda: sharded_array_document(shape, dtype, inner, shard, sep,
                                                                 **doc_extras(meta.doc)))


def _shard_blob(images: Sequence[np.ndarray | None], s: int, codec: Any, crc: Any, le: np.dtype,
                fill: Any) -> bytes | None:
    """One shard file's bytes: the images' compressed frames, then the ``(s, 2)`` index and its CRC32C.

    None stands for an image of fill values; an image that is all fill value is left out, as zarr
    does. Returns None when no image is left (the shard file is then removed).
    """
    frames: list[bytes] = []
    index = np.full((s, 2), EMPTY, dtype="<u8")
    offset = 0
    for j, img in enumerate(images):
        if img is None:
            continue
        frame = codec.encode(np.ascontiguousarray(img, dtype=le))
        # Only an image that compresses to almost nothing can be all fill value (see tiny_frame):
        # the full scan runs for those alone (zarr leaves fill-value chunks out of the shard).
        if len(frame) <= tiny_frame(img.nbytes) and _is_fill(np.ascontiguousarray(img), fill):
            continue
        index[j] = (offset, len(frame))
        offset += len(frame)
        frames.append(frame)
    if not frames:
        return None
    return b"".join(frames) + bytes(crc.encode(index.tobytes()))


def encode_array(data: np.ndarray, chunks: Sequence[int], separator: str = "/", *, fill_value: float = 0,
                 dimension_names: Sequence[str] | None = None,
                 attributes: Mapping[str, Any] | None = None) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """The objects of a whole v3 array as zarr-python writes them, for a store without files (object storage).

    Args:
        data: ``(d0, d1, ...)`` array of a :data:`FAST_DTYPES` dtype.
        chunks: Chunk shape; edge chunks are padded with the fill value.
        separator: Of the chunk key encoding ("/", zarr's default, on object storage: no folders to make).
        fill_value: The array's fill value.
        dimension_names: One name per axis, or None.
        attributes: The array's attributes (JSON-able).

    Returns:
        ``(zarr.json bytes, [(chunk key relative to the array, zstd frame or None)])``: None for a chunk
        bit for bit equal to the fill value, which zarr leaves out (a rewrite deletes its key).
    """
    if not supported(data):
        raise ValueError(f"direct writes take numeric arrays, got {data.dtype}")
    chunks = tuple(int(c) for c in chunks)
    dims = tuple(str(d) for d in dimension_names) if dimension_names is not None else None
    # the attributes in their given order, as zarr keeps them (a cache key per order, not sorted)
    doc = _array_document_bytes(tuple(int(s) for s in data.shape), data.dtype.name, chunks, separator, fill_value,
                                dims, json.dumps(jsonable(dict(attributes or {}))))
    return doc, _encode_chunks(data, [0] * data.ndim, chunks, separator, fill_value)


def encode_region(doc: Mapping[str, Any], data: np.ndarray,
                  origin: Sequence[int]) -> list[tuple[str, bytes | None]] | None:
    """The chunk objects :func:`write_region` would write, for a store without files (object storage).

    Args:
        doc: The existing array's parsed ``zarr.json`` (one this module writes).
        data: ``(d0, d1, ...)`` values, same rank and dtype as the array.
        origin: Index of ``data[0, 0, ...]`` in the array (chunk-aligned).

    Returns:
        ``[(chunk key relative to the array, zstd frame, or None for a chunk of fill values that zarr
        leaves out: its object is deleted)]``, or None when :func:`write_region` would refuse (the
        caller writes through zarr-python).
    """
    meta = _meta_of(dict(doc))
    if meta is None:
        return None
    shape, chunks, dtype, sep = meta.shape, meta.chunks, meta.dtype, meta.sep
    if not supported(data) or data.dtype != dtype or data.ndim != len(shape) or len(origin) != len(shape):
        return None
    if not meta.is_ours("region", lambda: array_document(shape, dtype, chunks, sep, **doc_extras(meta.doc))):
        return None
    for o, n, s, c in zip(origin, data.shape, shape, chunks, strict=True):
        if o < 0 or o % c or o + n > s or ((o + n) % c and o + n != s):
            return None
    return _encode_chunks(data, origin, chunks, sep, fill_of(meta.doc))


def _encode_chunks(data: np.ndarray, origin: Sequence[int], chunks: Sequence[int], separator: str,
                   fill_value: float) -> list[tuple[str, bytes | None]]:
    """Every chunk of ``data`` (placed at chunk-aligned ``origin``) as ``(key, zstd frame or None)``.

    None stands for a chunk bit for bit equal to the fill value (zarr leaves it out); edge chunks are
    padded with the fill value.
    """
    chunks = tuple(int(c) for c in chunks)
    codec, le = _codec(), data.dtype.newbyteorder("<")
    out: list[tuple[str, bytes | None]] = []
    for starts in itertools.product(*(range(0, s, c) for s, c in zip(data.shape, chunks, strict=True))):
        block = data[tuple(slice(s, s + c) for s, c in zip(starts, chunks, strict=True))]
        part = block
        if block.shape != chunks or not block.flags.c_contiguous or block.dtype != le:
            padded = np.full(chunks, fill_value, dtype=le)
            padded[tuple(slice(0, n) for n in block.shape)] = block
            block = padded
        frame = codec.encode(block)
        key = separator.join(["c", *(str((o + s) // c) for o, s, c in zip(origin, starts, chunks, strict=True))])
        empty = len(frame) <= tiny_frame(block.nbytes) and _is_fill(np.ascontiguousarray(part), fill_value)
        out.append((key, None if empty else bytes(frame)))
    return out
