"""Direct Zarr writes produce the very files zarr-python writes, and plain zarr reads them back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.storage import zarrfast
from segpipe.storage.zarrstore import LocalGroup, ZarrStore, array_digest


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _zarr_reference(root: Path, data: np.ndarray, chunks: tuple[int, ...]) -> None:
    """The array as zarr-python writes it with the key encoding of whole-array writes (``c.0.0``)."""
    arr = zarr.create_array(str(root), shape=data.shape, dtype=data.dtype, chunks=chunks, fill_value=0,
                            chunk_key_encoding={"name": "default", "separator": zarrfast.WHOLE_ARRAY_SEPARATOR})
    if data.size:
        arr[...] = data


@pytest.mark.parametrize("dtype", sorted(zarrfast.FAST_DTYPES))
def test_same_files_as_zarr(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((37, 53)) * 50).astype(dtype)
    data[:16] = 0  # a chunk row equal to the fill value: left out by both
    if np.dtype(dtype).kind == "f":
        data[20, 0] = -0.0  # -0.0 is not the fill value bit for bit: stored by both
    chunks = (16, 20)
    zarrfast.write_array(tmp_path / "fast", data, chunks)
    _zarr_reference(tmp_path / "ref", data, chunks)
    fast, ref = _files(tmp_path / "fast"), _files(tmp_path / "ref")
    assert fast.keys() == ref.keys() and "c.2.0" in fast  # flat chunk keys: no folder per chunk row
    assert json.loads(fast.pop("zarr.json")) == json.loads(ref.pop("zarr.json"))
    assert fast == ref  # chunk bytes identical
    back = zarr.open_array(str(tmp_path / "fast"), mode="r")[...]
    assert back.dtype == data.dtype and np.array_equal(back, data)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=3),
    chunk=st.lists(st.integers(1, 5), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_round_trip_any_shape(tmp_path_factory: pytest.TempPathFactory, shape: list[int], chunk: list[int],
                              seed: int) -> None:
    root = tmp_path_factory.mktemp("rt")
    data = np.random.default_rng(seed).integers(0, 3, shape).astype(np.int16)
    chunks = tuple(chunk[: len(shape)])
    zarrfast.write_array(root / "a", data, chunks)
    _zarr_reference(root / "b", data, chunks)
    assert _files(root / "a").keys() == _files(root / "b").keys()
    assert np.array_equal(zarr.open_array(str(root / "a"), mode="r")[...], data)


def test_store_groups_are_direct_and_replace_stale_chunks(tmp_path: Path) -> None:
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    g = store.image_group(7, {"id": 7, "file": "a.jpg", "width": np.int64(3)})
    assert isinstance(g, LocalGroup)
    full = np.arange(1, 2049 * 3 + 1, dtype=np.uint16).reshape(2049, 3) % 7 + 1
    assert store.write_array(g, "labels", full) == array_digest(full)
    # A re-executed task writes an image whose second chunk row is all background: no stale chunk.
    g = store.image_group(7, {"id": 7, "file": "a.jpg", "width": 3})
    part = full.copy()
    part[1024:] = 0
    store.write_array(g, "labels", part)
    assert np.array_equal(store.read(7, "labels"), part)
    grp = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["images/7"]
    assert dict(grp.attrs) == {"id": 7, "file": "a.jpg", "width": 3}
    # Strings and zarr-group operations go through zarr-python on the same handle.
    store.write_array(g, "names", np.array(["a", "bc"]))
    g.attrs["segments"] = [{"id": 1}]
    sub = g.require_group("instances")
    store.write_array(sub, "scores", np.array([0.5, 0.25], np.float32))
    grp = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["images/7"]
    assert list(grp["names"][...]) == ["a", "bc"] and grp.attrs["segments"] == [{"id": 1}]
    assert np.array_equal(grp["instances/scores"][...], [0.5, 0.25])
    assert store.image_ids() == [7]


def test_group_document_bytes_match_zarr_with_non_ascii(tmp_path: Path) -> None:
    attrs = {"file": "é/ß.png", "id": 3}
    zarr.open_group(str(tmp_path / "ref"), mode="w").create_group("g", attributes=attrs)
    zarrfast.write_group(tmp_path / "fast" / "g", attrs)
    assert (tmp_path / "fast" / "g" / "zarr.json").read_bytes() == (tmp_path / "ref" / "g" / "zarr.json").read_bytes()


@pytest.mark.parametrize(("dtype", "separator"), [("uint8", "/"), ("uint16", "/"), ("float32", "/"), ("uint8", ".")])
def test_region_writes_match_zarr_region_writes(tmp_path: Path, dtype: str, separator: str) -> None:
    """Chunk-aligned blocks written into a driver-made array: the same files as zarr's region writes.

    A second pass rewrites one block with fill values: both remove that block's chunk files.
    """
    rng = np.random.default_rng(1)
    shape, chunks = (3, 45, 70), (3, 16, 32)  # edge chunks on both axes
    full = (rng.random(shape) * 40).astype(dtype)
    full[:, :16, :32] = 0  # one chunk equal to the fill value
    for name in ("fast", "ref"):
        zarr.create_array(str(tmp_path / name), shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                          chunk_key_encoding={"name": "default", "separator": separator})
    ref = zarr.open_array(str(tmp_path / "ref"), mode="r+")
    blocks = [(0, 0), (0, 64), (32, 0), (32, 64), (0, 32), (32, 32)]  # (y, x) origins of 32×32 blocks
    for y, x in blocks:
        part = full[:, y : y + 32, x : x + 32]
        assert zarrfast.write_region(tmp_path / "fast", part, (0, y, x))
        ref[:, y : y + part.shape[1], x : x + part.shape[2]] = part
    fast_files, ref_files = _files(tmp_path / "fast"), _files(tmp_path / "ref")
    assert fast_files == ref_files
    assert np.array_equal(zarr.open_array(str(tmp_path / "fast"), mode="r")[...], full)
    zero = np.zeros((3, 32, 32), dtype=dtype)
    assert zarrfast.write_region(tmp_path / "fast", zero, (0, 0, 32))
    ref[:, 0:32, 32:64] = zero
    assert _files(tmp_path / "fast") == _files(tmp_path / "ref")
    assert len(_files(tmp_path / "fast")) < len(fast_files)


def test_region_writes_refuse_what_they_cannot_write_exactly(tmp_path: Path) -> None:
    arr = zarr.create_array(str(tmp_path / "a"), shape=(40, 40), dtype="uint8", chunks=(16, 16), fill_value=0)
    block = np.ones((16, 16), np.uint8)
    assert not zarrfast.write_region(tmp_path / "a", block, (8, 0))  # not chunk-aligned
    assert not zarrfast.write_region(tmp_path / "a", np.ones((20, 16), np.uint8), (0, 0))  # ends mid-chunk
    assert not zarrfast.write_region(tmp_path / "a", block.astype(np.uint16), (0, 0))  # another dtype
    assert not zarrfast.write_region(tmp_path / "missing", block, (0, 0))
    zarr.create_array(str(tmp_path / "b"), shape=(40, 40), dtype="uint8", chunks=(16, 16), fill_value=0,
                      compressors=None)
    assert not zarrfast.write_region(tmp_path / "b", block, (0, 0))  # another codec
    assert not _files(tmp_path / "a").keys() - {"zarr.json"}  # nothing was written
    assert zarrfast.write_region(tmp_path / "a", np.ones((8, 16), np.uint8), (32, 16))  # ends at the edge
    assert arr[32:40, 16:32].sum() == 8 * 16


@pytest.mark.parametrize(("dtype", "separator"), [("uint8", "/"), ("uint16", "/"), ("float32", "."), ("uint8", ".")])
def test_shards_match_zarr_shard_writes(tmp_path: Path, dtype: str, separator: str) -> None:
    """Stacked images written a shard at a time: the same files as zarr-python's sharding codec."""
    rng = np.random.default_rng(2)
    n, h, w, s = 21, 16, 24, 8  # the last shard holds 5 images
    data = (rng.random((n, h, w)) * 9).astype(dtype)
    data[[1, 9, 10]] = 0  # images equal to the fill value are left out of their shard
    data[8:16] = 0  # a shard with nothing in it: no file
    for name in ("fast", "ref"):
        arr = zarr.create_array(str(tmp_path / name), shape=(n, h, w), dtype=dtype, chunks=(1, h, w),
                                shards=(s, h, w), fill_value=0,
                                chunk_key_encoding={"name": "default", "separator": separator})
    doc = json.loads((tmp_path / "fast" / "zarr.json").read_bytes())
    assert doc == zarrfast.sharded_array_document((n, h, w), np.dtype(dtype), (1, h, w), (s, h, w), separator)
    ref = zarr.open_array(str(tmp_path / "ref"), mode="r+")
    for start in (0, 8, 16):  # one task per shard
        part = data[start : start + s]
        assert zarrfast.write_shards(tmp_path / "fast", part, start)
        ref[start : start + len(part)] = part
    assert _files(tmp_path / "fast") == _files(tmp_path / "ref")
    assert np.array_equal(zarr.open_array(str(tmp_path / "fast"), mode="r")[...], data)
    # a shard rewritten with nothing in it is removed, by both
    assert zarrfast.write_shards(tmp_path / "fast", np.zeros((s, h, w), dtype), 0)
    ref[0:s] = 0
    assert _files(tmp_path / "fast") == _files(tmp_path / "ref")
    assert arr is not None


def test_shards_refuse_partial_shards_and_other_arrays(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "a"), shape=(20, 4, 4), dtype="uint8", chunks=(1, 4, 4), shards=(8, 4, 4),
                      fill_value=0)
    one = np.ones((8, 4, 4), np.uint8)
    assert not zarrfast.write_shards(tmp_path / "a", one, 4)  # does not begin a shard
    assert not zarrfast.write_shards(tmp_path / "a", one[:5], 0)  # ends inside a shard
    assert not zarrfast.write_shards(tmp_path / "a", one.astype(np.uint16), 0)  # another dtype
    assert zarrfast.write_shards(tmp_path / "a", one[:4], 16)  # the last shard ends at the array's end
    zarr.create_array(str(tmp_path / "b"), shape=(16, 4, 4), dtype="uint8", chunks=(1, 2, 4), shards=(8, 4, 4),
                      fill_value=0)
    assert not zarrfast.write_shards(tmp_path / "b", one, 0)  # inner chunks that split an image
    zarr.create_array(str(tmp_path / "c"), shape=(16, 4, 4), dtype="uint8", chunks=(8, 4, 4), fill_value=0)
    assert not zarrfast.write_shards(tmp_path / "c", one, 0)  # not sharded
    assert set(_files(tmp_path / "a")) == {"zarr.json", "c/2/0/0"}


@pytest.mark.parametrize("remember_fresh", [False, True])
def test_cached_metadata_follows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          remember_fresh: bool) -> None:
    """The parsed zarr.json is reused only while the file is unchanged: a resize or a replaced array is seen."""
    if remember_fresh:  # cache files however recent they are, to see that a change of the file is noticed
        monkeypatch.setattr(zarrfast, "_SETTLED_NS", -(10**18))
    arr = zarr.create_array(str(tmp_path / "a"), shape=(16, 4, 4), dtype="uint8", chunks=(1, 4, 4), shards=(8, 4, 4),
                            fill_value=0)
    one = np.ones((8, 4, 4), np.uint8)
    assert zarrfast.write_shards(tmp_path / "a", one, 0)
    assert not zarrfast.write_shards(tmp_path / "a", one, 16)  # beyond the array
    arr.resize((24, 4, 4))  # the driver grows a stack between runs
    assert zarrfast.write_shards(tmp_path / "a", one * 2, 16)
    assert np.array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[16:24], one * 2)
    # the same folder holding an array of another codec now: refused, written by zarr-python instead
    zarr.create_array(str(tmp_path / "a"), shape=(24, 4, 4), dtype="uint8", chunks=(1, 4, 4), shards=(8, 4, 4),
                      fill_value=0, compressors=None, overwrite=True)
    assert not zarrfast.write_shards(tmp_path / "a", one, 0)
    zarr.create_array(str(tmp_path / "r"), shape=(16, 16), dtype="uint8", chunks=(8, 8), fill_value=0)
    assert zarrfast.write_region(tmp_path / "r", np.ones((8, 8), np.uint8), (0, 0))
    zarr.create_array(str(tmp_path / "r"), shape=(16, 16), dtype="uint8", chunks=(8, 8), fill_value=0,
                      compressors=None, overwrite=True)
    assert not zarrfast.write_region(tmp_path / "r", np.ones((8, 8), np.uint8), (0, 0))
    if remember_fresh:  # a new run forgets what an earlier one cached (its driver may have changed arrays)
        assert zarrfast._META_CACHE
        zarrfast.forget_metadata()
        assert not zarrfast._META_CACHE


@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_large_fill_value_chunks_are_left_out(tmp_path: Path, dtype: str) -> None:
    """All-zero chunks far larger than a zstd block (whose frames are not tiny) are still left out."""
    data = np.zeros((3, 700, 650), dtype=dtype)
    data[2, 600:, 600:] = 1
    zarrfast.write_array(tmp_path / "fast", data, (3, 512, 512))
    _zarr_reference(tmp_path / "ref", data, (3, 512, 512))
    assert _files(tmp_path / "fast") == _files(tmp_path / "ref")
    assert set(_files(tmp_path / "fast")) == {"zarr.json", "c.0.1.1"}
    import numcodecs

    if dtype == "float64":  # 6 MiB of zeros: a frame above 64 bytes, the case a fixed threshold missed
        assert len(numcodecs.Zstd(level=0).encode(np.zeros((3, 512, 512), dtype))) > 64


def test_array_digest_streams_and_reads_through_views() -> None:
    """The receipt digest covers dtype, shape and C-order bytes, whatever the array's memory layout."""
    from segpipe.storage.zarrstore import ArrayDigest, digest_matches

    a = np.arange(3 * 50 * 7, dtype=np.uint16).reshape(3, 50, 7)
    view = np.asfortranarray(a)[:, ::1]
    assert array_digest(view) == array_digest(a.copy()) and array_digest(a).startswith("xxh3-128:")
    stream = ArrayDigest(a.dtype, a.shape)
    for y in range(0, 3):  # band by band, as scenes are digested
        stream.update(a[y : y + 1])
    assert stream.hexdigest() == array_digest(a)
    assert array_digest(a.astype(np.uint8)) != array_digest(a)  # dtype is part of it
    assert array_digest(a.reshape(50, 3, 7)) != array_digest(a)  # and shape
    b = a.copy()
    b[2, 49, 6] ^= 1
    assert not digest_matches(b, array_digest(a))
    # Receipts from before the xxh3 scheme hold a bare sha256 hex: still verified, either way.
    import hashlib

    legacy = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()
    assert array_digest(a, legacy=True) == legacy
    assert digest_matches(a, legacy) and not digest_matches(b, legacy)


@pytest.mark.parametrize("fill", [255, 7])
def test_fill_value_dimension_names_and_attributes_as_zarr_writes_them(tmp_path: Path, fill: int) -> None:
    """Label maps have their void value as fill value, dimension names and attributes: same files as zarr's."""
    data = np.full((37, 53), fill, np.uint8)
    data[20:, 30:] = 0  # background: stored, not left out (it is no longer the fill value)
    data[0, 0] = 3
    dims, attrs = ("y", "x"), {"flag_values": [0, 3], "flag_meanings": "background car"}
    zarrfast.write_array(tmp_path / "fast", data, (16, 20), fill_value=fill, dimension_names=dims, attributes=attrs)
    arr = zarr.create_array(str(tmp_path / "ref"), shape=data.shape, dtype=data.dtype, chunks=(16, 20),
                            fill_value=fill, dimension_names=dims, attributes=attrs,
                            chunk_key_encoding={"name": "default", "separator": zarrfast.WHOLE_ARRAY_SEPARATOR})
    arr[...] = data
    fast, ref = _files(tmp_path / "fast"), _files(tmp_path / "ref")
    assert json.loads(fast.pop("zarr.json")) == json.loads(ref.pop("zarr.json"))
    assert fast == ref and "c.0.1" not in fast  # the chunk all fill value is left out by both
    # regions and shards of such arrays are written directly too, padding and leaving out by the fill value
    zarr.create_array(str(tmp_path / "reg"), shape=(40, 40), dtype="uint8", chunks=(16, 16), fill_value=fill,
                      dimension_names=dims)
    block = np.full((16, 16), fill, np.uint8)
    assert zarrfast.write_region(tmp_path / "reg", block, (0, 0))
    assert not (tmp_path / "reg" / "c" / "0" / "0").exists()
    assert zarrfast.write_region(tmp_path / "reg", np.zeros((8, 16), np.uint8), (32, 16))
    back = zarr.open_array(str(tmp_path / "reg"), mode="r")[...]
    assert (back[32:, 16:32] == 0).all() and (back[:32] == fill).all()
    sh = zarr.create_array(str(tmp_path / "sh"), shape=(16, 4, 4), dtype="uint8", chunks=(1, 4, 4),
                           shards=(8, 4, 4), fill_value=fill, dimension_names=("slot", "y", "x"))
    imgs: list[np.ndarray | None] = [np.zeros((4, 4), np.uint8), None, np.full((4, 4), fill, np.uint8)] + [None] * 5
    assert zarrfast.write_shards(tmp_path / "sh", imgs, 0)
    got = sh[0:8]
    assert (got[0] == 0).all() and (got[1:] == fill).all()  # None and all-fill slots read as the fill value
