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

import itertools
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.jsonio import jsonable

#: numpy dtypes written directly (zarr v3 data type names are numpy's names for these).
FAST_DTYPES = frozenset(
    ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)
ZSTD_LEVEL = 0  # zarr-python's default ZstdCodec(level=0, checksum=False)


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=True).encode()  # as zarr-python writes


def group_document(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``zarr.json`` of a v3 group."""
    return {"attributes": jsonable(dict(attributes or {})), "zarr_format": 3, "node_type": "group"}


def array_document(shape: Sequence[int], dtype: np.dtype[Any], chunks: Sequence[int]) -> dict[str, Any]:
    """The ``zarr.json`` zarr-python writes for ``create_array(shape, dtype, chunks, fill_value=0)``.

    Args:
        shape: Array shape.
        dtype: One of :data:`FAST_DTYPES`.
        chunks: Chunk shape (same rank as ``shape``).
    """
    dt = np.dtype(dtype)
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dt.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    return {
        "shape": [int(s) for s in shape],
        "data_type": dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [int(c) for c in chunks]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dt.kind == "f" else 0,
        "codecs": [bytes_codec, {"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": False}}],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def supported(data: np.ndarray) -> bool:
    """Whether :func:`write_array` writes ``data`` itself (numeric dtypes, at least one dimension)."""
    return data.dtype.name in FAST_DTYPES and data.ndim >= 1


def write_group(path: str | Path, attributes: Mapping[str, Any] | None) -> None:
    """Creates (replacing whatever was there) the group at folder ``path`` with ``attributes``."""
    p = Path(path)
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)
    write_bytes_atomic(p / "zarr.json", _dump(group_document(attributes)))


def write_array(path: str | Path, data: np.ndarray, chunks: Sequence[int]) -> None:
    """Writes ``data`` as a whole v3 array at folder ``path`` (replacing any array there).

    Args:
        path: The array's folder (``GROUP/name``).
        data: ``(d0, d1, ...)`` array of a :data:`FAST_DTYPES` dtype.
        chunks: Chunk shape; edge chunks are padded with the fill value 0, as the v3 regular grid says.
    """
    from numcodecs import Zstd

    if not supported(data):
        raise ValueError(f"direct writes take numeric arrays, got {data.dtype}")
    p = Path(path)
    if p.exists():
        shutil.rmtree(p)  # a re-executed task: no stale chunk may survive
    p.mkdir(parents=True)
    write_bytes_atomic(p / "zarr.json", _dump(array_document(data.shape, data.dtype, chunks)))
    codec = Zstd(level=ZSTD_LEVEL, checksum=False)
    le = data.dtype.newbyteorder("<")
    grid = [range(0, s, c) for s, c in zip(data.shape, chunks, strict=True)]
    made: set[Path] = set()
    for starts in itertools.product(*grid):
        sl = tuple(slice(s, s + c) for s, c in zip(starts, chunks, strict=True))
        block = data[sl]
        if not block.view(f"u{block.itemsize}").any():
            continue  # bit for bit the fill value (zarr stores -0.0, not 0.0): zarr leaves it out too
        if block.shape != tuple(chunks):
            full = np.zeros(tuple(chunks), dtype=le)
            full[tuple(slice(0, n) for n in block.shape)] = block
            block = full
        key = p.joinpath("c", *(str(s // c) for s, c in zip(starts, chunks, strict=True)))
        if key.parent not in made:
            key.parent.mkdir(parents=True, exist_ok=True)
            made.add(key.parent)
        write_bytes_atomic(key, codec.encode(np.ascontiguousarray(block, dtype=le)))
