"""Store layout 2: slots planned by the driver, shards written whole by their task, read as groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from segpipe.storage.stacks import SHARD, ShardWriter, plan_stacks
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
