"""Store layout 2: slots planned by the driver, shards written whole by their task, read as groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from segpipe.storage import stacks, zarrfast
from segpipe.storage.stacks import SHARD, ShardWriter, StackCache, StackedImage, open_stack, plan_stacks, read_index
from segpipe.storage.zarrstore import ZarrStore, array_digest


class _Receipts:
    """The ledger's interface, kept in memory."""

    def __init__(self) -> None:
        self.written: dict[str, dict] = {}

    def write(self, key: str, receipt: dict) -> None:
        self.written[key] = receipt


def _items(ids: list[int], h: int = 6, w: int = 5) -> list[tuple[int, int, int, dict]]:
    return [(i, h, w, {"id": i, "file": f"{i}.png", "width": w, "height": h}) for i in ids]


def _label(i: int, h: int = 6, w: int = 5) -> np.ndarray:
    return ((np.arange(h * w).reshape(h, w) + i) % 7).astype(np.uint8)


def _run_shard(store: Path, placed: dict[int, tuple[str, int]], ids: list[int], ledger: _Receipts) -> None:
    w = ShardWriter(store)
    for i in ids:
        stack, slot = placed[i]
        p = w.slot(stack, slot)
        digest = p.put("labels", _label(i))
        p.put("probs", np.full((3, 6, 5), i % 256, np.uint8))
        w.done(p, f"k{i}", {"image_id": i, "outputs": {"labels": digest}})
    w.flush(ledger)


def test_plan_write_read_resume(tmp_path: Path) -> None:
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    ids = list(range(100, 100 + 11))
    placed = plan_stacks(store.path, _items(ids) + _items([7], 9, 9), labels_dtype=np.uint8, n_classes=3, probs=True)
    assert 7 not in placed  # a size with fewer than SHARD images keeps a group per image
    assert sorted(slot for _, slot in placed.values()) == list(range(11))
    root = zarr.open_group(str(store.path), mode="r")
    assert root["stacks/6x5/labels"].shape == (2 * SHARD, 6, 5)  # whole shards
    ledger = _Receipts()
    _run_shard(store.path, placed, ids[:SHARD], ledger)
    _run_shard(store.path, placed, ids[SHARD:], ledger)
    assert len(ledger.written) == 11
    # one file per shard, flat keys
    assert sorted(p.name for p in (store.path / "stacks" / "6x5" / "labels").iterdir()) == \
        ["c.0.0.0", "c.1.0.0", "zarr.json"]
    s = ZarrStore.open(store.path)
    assert s.image_ids() == ids
    for i in ids:
        g = s.group(i)
        assert g.attrs["id"] == i and np.array_equal(g["labels"][...], _label(i))
        assert g["probs"].shape == (3, 6, 5) and int(g["probs"][0, 0, 0]) == i % 256
        assert array_digest(np.asarray(g["labels"][...])) == ledger.written[f"k{i}"]["outputs"]["labels"]
        assert g.group_keys() == [] and "labels" in g and "panoptic" not in g
    # A resumed run keeps every slot and adds new images from a fresh shard on.
    again = plan_stacks(store.path, _items(ids + [500, 501]), labels_dtype=np.uint8, n_classes=3, probs=True)
    assert {i: again[i] for i in ids} == placed and again[500][1] == 2 * SHARD
    # Redoing one image of a finished shard keeps its neighbours (read back, rewritten unchanged).
    w = ShardWriter(store.path)
    p = w.slot(*placed[101])
    p.put("labels", np.zeros((6, 5), np.uint8))
    w.done(p, "k101", {"image_id": 101})
    w.flush(ledger)
    s = ZarrStore.open(store.path)
    assert not s.read(101, "labels").any()
    assert all(np.array_equal(s.read(i, "labels"), _label(i)) for i in ids if i != 101)
    # An image that failed (no receipt) is not done: readers do not list it.
    w = ShardWriter(store.path)
    w.slot(*again[500])
    w.flush(ledger)
    assert 500 not in ZarrStore.open(store.path).image_ids()


def test_changed_size_moves_the_image_and_clears_its_old_slot(tmp_path: Path) -> None:
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    ids = list(range(SHARD))
    placed = plan_stacks(store.path, _items(ids), labels_dtype=np.uint8, n_classes=3, probs=False)
    w = ShardWriter(store.path)
    for i in ids:
        p = w.slot(*placed[i])
        p.put("labels", _label(i))
        w.done(p, f"k{i}", {})
    w.flush(_Receipts())
    assert ZarrStore.open(store.path).image_ids() == ids
    # image 3 now has another size, and too few images of it share that size: it gets a group
    moved = plan_stacks(store.path, _items([3], 4, 4), labels_dtype=np.uint8, n_classes=3, probs=False)
    assert moved == {}
    ids_arr = zarr.open_array(str(store.path / "stacks" / "6x5" / "ids"), mode="r")[...]
    assert -1 in ids_arr and 3 not in ids_arr
    assert 3 not in ZarrStore.open(store.path).image_ids()
    # plain zarr finds every stacked image from ids and attrs
    st = zarr.open_group(str(store.path / "stacks" / "6x5"), mode="r")
    slot = int(np.flatnonzero(st["ids"][...] == 5)[0])
    assert json.loads(str(st["attrs"][slot]))["id"] == 5 and np.array_equal(st["labels"][slot], _label(5))


# ---------------------------------------------------------------- read_index and the attrs cache


def _zarr_index(root: Path) -> dict[int, tuple[str, int]]:
    """The index as zarr-python alone reads it (the reference for :func:`read_index`)."""
    sg = zarr.open_group(str(root / "stacks"), mode="r")
    out: dict[int, tuple[str, int]] = {}
    for name in sorted(sg.group_keys()):
        ids = np.asarray(sg[name]["ids"][...])
        done = np.asarray(sg[name]["done"][...])
        for j in np.flatnonzero((ids >= 0) & (done == 1)).tolist():
            out[int(ids[j])] = (name, int(j))
    return out


def _mixed_store(tmp_path: Path) -> tuple[Path, dict[int, tuple[str, int]]]:
    """Two stacks with missing done chunks, zero flags, cleared ids and stray files in ``done``."""
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    ids = list(range(1000, 1000 + 6 * SHARD - 3))  # the last shard is partly planned
    placed = plan_stacks(store.path, _items(ids) + _items(list(range(50, 50 + 2 * SHARD)), 4, 4),
                         labels_dtype=np.uint8, n_classes=3, probs=False)
    done = store.path / "stacks" / "6x5" / "done"
    n = int(zarr.open_array(str(done), mode="r").shape[0])
    flags = np.ones(n, np.uint8)
    flags[SHARD + 2] = flags[SHARD + 5] = 0  # a shard with some images not finished
    flags[2 * SHARD : 3 * SHARD] = 0  # a shard all zeros: its chunk file is left out
    for s in range(0, n, SHARD):
        if s // SHARD != 4:  # shard 4 never written: no chunk file
            assert zarrfast.write_region(done, flags[s : s + SHARD], (s,))
    assert not (done / "c.2").exists() and not (done / "c.4").exists()
    (done / "c.1.partial.999").write_bytes(b"half a frame")  # a writer about to replace c.1
    (done / "c.01").write_bytes(b"not a key zarr reads")
    ids_arr = zarr.open_array(str(store.path / "stacks" / "6x5" / "ids"), mode="r+")
    ids_arr[3] = -1  # a slot cleared (its image moved) while done says 1
    ids_arr[SHARD + 2] = -1  # cleared and not done
    other = zarr.open_array(str(store.path / "stacks" / "4x4" / "done"), mode="r+")
    other[:SHARD] = np.array([1, 0, 1, 0, 1, 0, 1, 1], np.uint8)  # through zarr-python; shard 1 missing
    return store.path, placed


def test_read_index_reads_done_files_as_zarr_does(tmp_path: Path) -> None:
    root, placed = _mixed_store(tmp_path)
    for name in ("6x5", "4x4"):  # the direct reader applies (no fallback) and reads what zarr reads
        direct = stacks._read_all_done(root / "stacks" / name / "done")
        assert direct is not None
        assert np.array_equal(direct, zarr.open_array(str(root / "stacks" / name / "done"), mode="r")[...])
    expected = _zarr_index(root)
    assert read_index(root) == expected
    assert list(read_index(root).items()) == list(expected.items())  # same order too
    assert 1003 not in expected and 1000 + SHARD + 5 not in expected and 1000 + 4 * SHARD not in expected
    assert expected[1000] == placed[1000] and expected[50] == ("4x4", 0) and 51 not in expected
    assert ZarrStore.open(root).image_ids() == sorted(expected)


def test_read_index_threads_and_empty_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = _mixed_store(tmp_path)
    monkeypatch.setattr(stacks, "_PARALLEL_READS", 1)  # the threaded read, as for a large stack
    monkeypatch.setattr(stacks, "_READ_BATCH", 2)
    assert read_index(root) == _zarr_index(root)
    for f in (root / "stacks" / "4x4" / "done").glob("c.*"):
        f.unlink()  # no chunk written at all: every flag is the fill value
    assert stacks._read_all_done(root / "stacks" / "4x4" / "done") is not None
    assert read_index(root) == _zarr_index(root)
    assert not any(name == "4x4" for name, _ in read_index(root).values())


def _recreate_done(root: Path, name: str, **kwargs: Any) -> None:
    """Replaces a stack's ``done`` array with one of other metadata, same flags."""
    path = str(root / "stacks" / name / "done")
    flags = np.asarray(zarr.open_array(path, mode="r")[...])
    arr = zarr.create_array(path, shape=flags.shape, dtype="uint8", fill_value=0, overwrite=True, **kwargs)
    arr[...] = flags


@pytest.mark.parametrize("kwargs, direct", [
    ({"chunks": (SHARD,), "chunk_key_encoding": {"name": "default", "separator": "/"}}, True),  # c/3
    ({"chunks": (2 * SHARD,), "chunk_key_encoding": {"name": "default", "separator": "."}}, False),
    ({"chunks": (SHARD,), "chunk_key_encoding": {"name": "v2", "separator": "."}}, False),
    ({"chunks": (SHARD,), "compressors": None}, False),
    ({"chunks": (SHARD,), "shards": (4 * SHARD,)}, False),
])
def test_read_index_other_done_metadata(tmp_path: Path, kwargs: dict[str, Any], direct: bool) -> None:
    root, _ = _mixed_store(tmp_path)
    expected = _zarr_index(root)
    _recreate_done(root, "6x5", **kwargs)
    assert _zarr_index(root) == expected
    assert (stacks._read_all_done(root / "stacks" / "6x5" / "done") is not None) == direct
    assert read_index(root) == expected  # through zarr-python where the files are not as expected


def test_read_index_damaged_done_chunk_falls_back(tmp_path: Path) -> None:
    root, _ = _mixed_store(tmp_path)
    done = root / "stacks" / "6x5" / "done"
    (done / "c.0").write_bytes(zarrfast._codec().encode(np.ones(2 * SHARD, np.uint8)))  # 16 flags, not 8
    assert stacks._read_all_done(done) is None  # zarr-python judges such a chunk
    (done / "c.0").write_bytes(b"not zstd")
    assert stacks._read_all_done(done) is None


def _big_store(tmp_path: Path, n: int) -> tuple[ZarrStore, dict[int, tuple[str, int]], dict[int, dict]]:
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    items = [(i, 2, 2, {"id": i, "file": f"img_{i:05d}.jpg", "width": 2, "height": 2, "k": [i % 7, "é"]})
             for i in range(n)]
    placed = plan_stacks(store.path, items, labels_dtype=np.uint8, n_classes=3, probs=False)
    return store, placed, {i: a for i, _, _, a in items}


def test_attrs_of_many_slots_across_chunks(tmp_path: Path) -> None:
    n = 4096 + 3 * SHARD  # two attrs chunks
    store, placed, attrs = _big_store(tmp_path, n)
    g = open_stack(store.path, "2x2")
    assert g["attrs"].chunks == (4096,) and g["attrs"].shape[0] == n
    small = StackCache(max_slots=100)  # smaller than one chunk: every chunk change evicts the other
    order = sorted(attrs) + sorted(attrs, reverse=True)[:300] + [0, n - 1, 5, 4100, 7, 4097]
    for i in order:
        stack, slot = placed[i]
        for cache in (small, None):
            view = StackedImage(g, slot, cache)
            assert view.attrs == attrs[i] and view.array_keys() == ["labels"]
    assert small._held <= 4096 and len(small._chunks) == 1  # bounded: the chunk just read
    # Through the store: its views share one group object per stack, and so the decoded chunks.
    s = ZarrStore.open(store.path)
    a, b = s.group(0, placed[0]), s.group(4099, placed[4099])
    assert a._g is b._g and a.attrs == attrs[0] and b.attrs == attrs[4099]
    # Each view has its own dict: changing one does not change what the next view reads.
    a.attrs["id"] = -5
    assert a.attrs["id"] == -5 and s.group(0, placed[0]).attrs == attrs[0]
    assert StackedImage(g, placed[0][1]).attrs == attrs[0]
    with pytest.raises(IndexError):
        StackedImage(g, n).attrs  # noqa: B018 - read on first use


def test_attrs_cache_follows_a_grown_stack(tmp_path: Path) -> None:
    store, placed, attrs = _big_store(tmp_path, 3 * SHARD)
    g = open_stack(store.path, "2x2")
    cache = StackCache()
    last = StackedImage(g, 3 * SHARD - 1, cache)
    assert last.attrs == attrs[3 * SHARD - 1] and last["labels"].shape == (2, 2)
    # A resumed run adds images: the same group handle reads the new slots (its chunk read again).
    more = {i: {"id": i, "file": f"new_{i}.png", "width": 2, "height": 2} for i in range(900, 900 + SHARD)}
    again = plan_stacks(store.path, [(i, 2, 2, a) for i, a in more.items()],
                        labels_dtype=np.uint8, n_classes=3, probs=False)
    for i, a in more.items():
        view = StackedImage(g, again[i][1], cache)
        # a grown array's handle reopened; a slot not written yet reads as void (255), never background
        assert view.attrs == a and (view["labels"][...] == 255).all()
    assert StackedImage(g, 0, cache).attrs == attrs[0]


def test_attrs_cache_uses_the_arrays_chunks(tmp_path: Path) -> None:
    store, placed, attrs = _big_store(tmp_path, 2 * SHARD)
    path = str(store.path / "stacks" / "2x2" / "attrs")
    values = np.asarray(zarr.open_array(path, mode="r")[...])
    arr = zarr.create_array(path, shape=values.shape, dtype=str, chunks=(3,), overwrite=True)
    arr[...] = values
    g = open_stack(store.path, "2x2")
    cache = StackCache(max_slots=7)
    for i in sorted(attrs, reverse=True):
        assert StackedImage(g, placed[i][1], cache).attrs == attrs[i]
    assert cache._held <= 7 and all(len(v) <= 3 for _, v in cache._chunks.values())


def test_iter_groups_of_a_stacked_store(tmp_path: Path) -> None:
    store, placed, attrs = _big_store(tmp_path, 5 * SHARD)
    done = store.path / "stacks" / "2x2" / "done"
    assert zarrfast.write_region(done, np.ones(5 * SHARD, np.uint8), (0,))
    s = ZarrStore.open(store.path)
    seen = {i: dict(g.attrs) for i, g in s.iter_groups()}
    assert seen == attrs and list(seen) == sorted(attrs)
