"""The driver's columnar manifest and the tasks that are its rows: every entry reads back as it was added,
a table's tasks are the same tasks (keys, entries, parts, pickles) as the entries', and ``plan_stacks``'
array-backed placement answers as the dict it replaced.
"""

from __future__ import annotations

import hashlib
import pickle
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.kernels.prelabel.tasks import PrelabelTask, StackSlot, WholeImage
from segpipe.pipeline.prelabel.plan import TableTask, batch_tasks, image_id_clash, plain_tasks, plan_tasks
from segpipe.storage.manifest import ManifestEntry
from segpipe.storage.manifest_table import ManifestTable
from segpipe.storage.stacks import Placement, _PlacementBuilder

_sha = st.one_of(st.just(""), st.binary(min_size=32, max_size=32).map(bytes.hex),
                 st.binary(min_size=32, max_size=32).map(lambda b: b.hex().upper()), st.text(max_size=70))
_name = st.text(min_size=0, max_size=12)  # surrogates, NUL, "./" and empty names included
_entry = st.builds(
    ManifestEntry,
    id=st.one_of(st.integers(0, (1 << 53) - 1), st.integers(-(1 << 70), 1 << 70)),
    file=_name,
    path=st.one_of(_name, st.tuples(st.sampled_from(["/data/", "/other/x/", ""]), _name).map("".join)),
    width=st.one_of(st.integers(0, 70000), st.integers(-5, 1 << 40)),
    height=st.integers(0, 70000),
    sha256=_sha,
    bytes=st.one_of(st.integers(0, 1 << 40), st.integers(-3, 1 << 70)),
    kind=st.sampled_from(["image", "scene", "volume", "invalid", "other"]),
    depth=st.integers(0, 3),
    error=st.sampled_from(["", "a symlink leaves the root"]),
)


@given(st.lists(_entry, max_size=30))
@settings(max_examples=300, deadline=None)
def test_every_entry_reads_back_equal_in_order(entries):
    table = ManifestTable(entries)
    assert len(table) == len(entries)
    assert list(table) == entries
    assert [table[i] for i in range(len(entries))] == entries
    assert [table.file(i) for i in range(len(entries))] == [e.file for e in entries]
    assert [table.sha256(i) for i in range(len(entries))] == [e.sha256 for e in entries]
    assert [table.size(i) for i in range(len(entries))] == [(e.height, e.width) for e in entries]
    for kind in ("image", "scene", "volume", "invalid", "other"):
        assert table.count(kind) == sum(e.kind == kind for e in entries)
    assert list(table.take(reversed(range(len(entries))))) == entries[::-1]
    assert list(table.sorted_by_file()) == sorted(entries, key=lambda e: e.file)


@given(st.lists(_entry, max_size=15), st.lists(_entry, max_size=15))
@settings(max_examples=200, deadline=None)
def test_merging_two_sorted_tables_is_a_stable_sort_of_both(a, b):
    a, b = sorted(a, key=lambda e: e.file), sorted(b, key=lambda e: e.file)
    assert list(ManifestTable(a).merged(ManifestTable(b))) == sorted([*a, *b], key=lambda e: e.file)


def _images(n: int, root: str = "/data/images/") -> list[ManifestEntry]:
    return [ManifestEntry(id=1000 + i, file=f"d{i // 100:02d}/{i:05d}.png", path=f"{root}d{i // 100:02d}/{i:05d}.png",
                          width=16 + i % 3, height=16, sha256=hashlib.sha256(str(i).encode()).hexdigest(), bytes=70 + i)
            for i in range(n)]


def test_an_image_row_costs_about_a_hundred_bytes_not_an_object():
    entries = _images(20_000)
    tracemalloc.start()
    table = ManifestTable(entries)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert not table.odd_rows()  # every image held in columns
    assert held / len(entries) < 150  # vs ≈ 450 bytes as ManifestEntry objects with their strings


def test_a_tables_tasks_are_the_entries_tasks():
    vol = ManifestEntry(id=7, file="v.nii.gz", path="/data/images/v.nii.gz", sha256="ab" * 32, kind="volume", depth=3)
    bad = ManifestEntry(id=8, file="bad.png", path="/elsewhere", kind="invalid", error="a symlink leaves the root")
    entries = [*_images(40), vol, bad, *_images(2, "/other/")[::-1]]
    plain, rows = plan_tasks(entries, "cfg"), plan_tasks(ManifestTable(entries), "cfg")
    assert [(t.key, t.entry, t.part, t.image_ids()) for t in rows] == \
        [(t.key, t.entry, t.part, t.image_ids()) for t in plain]
    assert sum(isinstance(t, TableTask) for t in rows) == 42 and len(rows) == 45  # 3 slices of the volume
    assert [[t.key for t in b] for b in batch_tasks(rows, 2)] == [[t.key for t in b] for b in batch_tasks(plain, 2)]
    # what a worker receives is always a plain task, equal to the entries' own
    sent = plain_tasks(rows)
    assert all(type(t) is PrelabelTask for t in sent) and sent == plain
    assert pickle.loads(pickle.dumps(rows[0])) == plain[0] and type(pickle.loads(pickle.dumps(rows[0]))) is PrelabelTask
    # a placed row reports its slot; the others still write whole images
    rows[3].place("16x17", 9)
    assert rows[3].part == StackSlot("16x17", 9) and rows[4].part == WholeImage()
    assert rows[3].task() == PrelabelTask(plain[3].key, plain[3].entry, StackSlot("16x17", 9))


def test_an_id_written_twice_is_found_in_a_table_as_in_a_list():
    entries = _images(5)
    twice = [*entries, ManifestEntry(id=entries[2].id, file="z.png", path="/data/images/z.png", sha256="0" * 64)]
    assert image_id_clash(ManifestTable(entries)) is None
    found = image_id_clash(ManifestTable(twice))
    assert found is not None and found[0] == entries[2].id and found == image_id_clash(twice)


def test_placement_answers_as_the_dict_it_replaced():
    b = _PlacementBuilder()
    b.add("4x4", [5, 1, 9], range(0, 3))
    b.add("8x8", [np.int64(2)], [7])
    placed = b.build()
    expected = {5: ("4x4", 0), 1: ("4x4", 1), 9: ("4x4", 2), 2: ("8x8", 7)}
    assert placed == expected and dict(placed) == expected and len(placed) == 4 and placed
    assert 9 in placed and np.int64(9) in placed and 3 not in placed and "9" not in placed and True not in placed
    assert placed.get(4) is None and placed[np.int64(2)] == ("8x8", 7) and sorted(placed) == [1, 2, 5, 9]
    empty = _PlacementBuilder().build()
    assert not empty and len(empty) == 0 and empty == {} and isinstance(empty, Placement)
