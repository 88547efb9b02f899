"""Packed ledgers (issue 16 point 5): many receipts in one checksummed file per run.

The packs are written and read through :class:`~segpipe.storage.ledger.Ledger` on real files; the
compactions that are killed are real processes killed with SIGKILL at a chosen system call (an audit
hook in the child kills it when it is about to make that call), and the concurrent ones real processes
running side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segpipe.storage.ledger import Ledger, ObjectLedger, orphan_partials
from segpipe.storage.packs import PACKS, decode_pack, encode_pack

REPO = Path(__file__).resolve().parents[2]


def _receipt(i: int) -> dict[str, object]:
    return {"image_id": 1000 + i, "file": f"d/{i:05d}.png", "stack": "16x16", "slot": i, "status": "done",
            "outputs": {"labels": f"xxh3-128:{i:032x}"}, "width": 16, "height": 16, "time": 1.5e9 + i}


def _ledger(tmp_path: Path, n: int, durable: bool = True) -> tuple[Ledger, dict[str, bytes]]:
    """A ledger of ``n`` loose receipts written as workers write them (``durable``: through
    :meth:`Ledger.write`, else the same bytes without an fsync each); their keys and bytes."""
    ledger = Ledger(tmp_path / ".segpipe")
    ledger.ensure()
    for i in range(n):
        if durable:
            ledger.write(f"pl-{i:08x}", _receipt(i))
        else:
            ledger.path(f"pl-{i:08x}").write_text(json.dumps({"key": f"pl-{i:08x}", **_receipt(i)}) + "\n")
    return ledger, {k: p.read_bytes() for k, p in ledger.items()}


def _view(ledger: Ledger) -> dict[str, bytes]:
    """Key → receipt bytes (stripped) of every receipt, loose or packed."""
    return {k: d.strip() for k, d, _ in ledger.contents().sorted_items()}


def test_a_packed_ledger_reads_back_as_the_loose_one(tmp_path: Path) -> None:
    ledger, loose = _ledger(tmp_path, 50)
    finished, keys = ledger.finished(), ledger.keys()
    records = {k: ledger.read(k) for k in loose}
    assert ledger.compact("20260101T000000.000001-aaaaaa") == 50
    assert list(ledger.items()) == []  # no loose file left
    assert [p.name for p in (ledger.dir / PACKS).iterdir()] == ["20260101T000000.000001-aaaaaa.pack"]
    assert _view(ledger) == {k: d.strip() for k, d in loose.items()}  # the same bytes
    assert ledger.finished() == finished and ledger.keys() == keys
    assert {k: Ledger(tmp_path / ".segpipe").read(k) for k in loose} == records
    assert not ledger.done("pl-00000001")  # done() is about loose receipts (what a worker re-running a task asks)
    # idempotent: nothing loose, nothing to pack
    assert ledger.compact("20260101T000000.000001-aaaaaa") == 0
    # a receipt written after the pack (a redo) is read from its loose file, over the packed one
    ledger.write("pl-00000003", {**_receipt(3), "time": 2e9})
    assert ledger.read("pl-00000003")["time"] == 2e9
    assert ledger.compact("20260101T000000.000002-bbbbbb") == 1
    assert ledger.read("pl-00000003")["time"] == 2e9  # the newer pack's copy wins
    assert ledger.pack_count() == 2 and len(ledger.keys()) == 50


def test_only_receipts_that_decode_are_packed(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path, 5)
    ledger.path("pl-bad").write_bytes(b'{"status": "do')  # a truncated receipt stays loose, for fsck to name
    ledger.path("pl-copied").write_bytes(json.dumps({"key": "pl-00000001", **_receipt(1)}).encode())
    assert ledger.compact("r1") == 5
    assert sorted(k for k, _ in ledger.items()) == ["pl-bad", "pl-copied"]
    assert ledger.finished() == {f"pl-{i:08x}" for i in range(5)}


def test_removing_a_packed_receipt_rewrites_its_pack(tmp_path: Path) -> None:
    ledger, loose = _ledger(tmp_path, 6)
    ledger.compact("r1")
    ledger.remove_many(["pl-00000002", "pl-00000004"])
    assert set(_view(ledger)) == set(loose) - {"pl-00000002", "pl-00000004"}
    with pytest.raises(FileNotFoundError):
        ledger.read("pl-00000002")
    pack = decode_pack((ledger.dir / PACKS / "r1.pack").read_bytes())
    assert pack.problem is None and pack.damaged == [] and len(pack.receipts) == 4
    ledger.remove_many(list(set(loose) - {"pl-00000002", "pl-00000004"}))
    assert ledger.keys() == set() and ledger.pack_count() == 0  # an empty pack is deleted


def test_a_cut_pack_never_yields_a_wrong_receipt(tmp_path: Path) -> None:
    items = [(f"pl-{i:04d}", json.dumps(_receipt(i)).encode()) for i in range(4)]
    data = encode_pack(items)
    whole = dict(items)
    assert decode_pack(data).receipts == items and decode_pack(data).problem is None
    for cut in range(len(data)):
        pack = decode_pack(data[:cut])
        assert pack.problem is not None, cut  # truncated (or its header cut)
        assert all(whole[k] == body for k, body in pack.receipts), cut
    for pos in range(len(data)):  # one byte changed anywhere: a damaged line or header, never a wrong receipt
        bad = bytearray(data)
        bad[pos] ^= 0x01
        pack = decode_pack(bytes(bad))
        assert all(whole.get(k) == body for k, body in pack.receipts), pos
        assert pack.problem is not None or pack.damaged, pos


def test_keys_and_receipts_that_cannot_be_framed_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be packed"):
        encode_pack([("a\tb", b"{}")])
    with pytest.raises(ValueError, match="cannot be packed"):
        encode_pack([("a", b'{"x":\n1}')])


_KILL_AT = """
import os, signal, sys
from segpipe.storage.ledger import Ledger
event, nth = sys.argv[2], int(sys.argv[3])
seen = 0
def hook(name, args):
    global seen
    if name == event and (event == "os.link" or str(args[0]).endswith(".json")):
        seen += 1
        if seen == nth:
            os.kill(os.getpid(), signal.SIGKILL)  # killed just before the call, as a power cut would
sys.addaudithook(hook)
Ledger(sys.argv[1]).compact("r1")
"""


@pytest.mark.parametrize(("event", "nth"), [("open", 20), ("os.link", 1), ("os.remove", 1), ("os.remove", 17)])
def test_a_killed_compaction_loses_nothing_and_finishes_when_run_again(tmp_path: Path, event: str, nth: int) -> None:
    """Killed while it reads the receipts into its pack, before it links the pack in, or after it
    deleted some loose receipts."""
    ledger, loose = _ledger(tmp_path, 40)
    finished = ledger.finished()
    r = subprocess.run([sys.executable, "-c", _KILL_AT, str(tmp_path / ".segpipe"), event, str(nth)],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    # every receipt is still there, once, with its bytes: loose, packed, or (killed mid-way) both
    assert _view(ledger) == {k: d.strip() for k, d in loose.items()}
    assert ledger.finished() == finished
    left = orphan_partials(tmp_path)  # a pack killed before its rename or link: a partial file
    assert [PACKS in str(p) and ".partial" in p.name for p in left] == [True] * (event in ("open", "os.link"))
    still_loose = len(list(ledger.items()))
    assert still_loose == (40 if event != "os.remove" else 40 - nth + 1)
    assert ledger.compact("r1") == still_loose  # run again: packs what the killed run left loose
    assert list(ledger.items()) == [] and _view(ledger) == {k: d.strip() for k, d in loose.items()}
    assert ledger.pack_count() == 1
    for p in left:  # what fsck --repair does with the partial file
        p.unlink()
    assert _view(ledger) == {k: d.strip() for k, d in loose.items()}


_COMPACT = """
import sys, time
from segpipe.storage.ledger import Ledger
while time.time() < float(sys.argv[3]):
    pass
Ledger(sys.argv[1]).compact(sys.argv[2])
"""

_READ = """
import json, sys, time
from segpipe.storage.ledger import Ledger
seen = []
while time.time() < float(sys.argv[2]):
    seen.append(len(Ledger(sys.argv[1]).finished()))
print(json.dumps(seen))
"""


def test_concurrent_compactions_and_readers(tmp_path: Path) -> None:
    """Two CLIs packing one ledger at once (two run ids) while a third reads it: no reader ever misses a
    receipt, and the receipts end up packed (some possibly in both packs: read as one)."""
    import time

    ledger, loose = _ledger(tmp_path, 3000, durable=False)
    root, env = str(tmp_path / ".segpipe"), {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.time() + 4  # all three have imported segpipe by then
    reader = subprocess.Popen([sys.executable, "-c", _READ, root, str(start + 10)], env=env,
                              stdout=subprocess.PIPE, text=True)
    packers = [subprocess.Popen([sys.executable, "-c", _COMPACT, root, f"r{i}", str(start)], env=env)
               for i in (1, 2)]
    assert [p.wait(timeout=300) for p in packers] == [0, 0]
    out, _ = reader.communicate(timeout=300)
    seen = json.loads(out)
    assert seen and set(seen) == {3000}, sorted(set(seen))
    assert list(ledger.items()) == [] and _view(ledger) == {k: d.strip() for k, d in loose.items()}


def test_an_object_ledger_packs_with_put_if_absent(bucket: str) -> None:
    from segpipe.storage.zarrstore import ZarrStore

    store = ZarrStore.create(f"s3://{bucket}/p.zarr", {"task": "semantic"})
    ledger = store.ledger()
    assert isinstance(ledger, ObjectLedger)
    for i in range(12):
        ledger.write(f"pl-{i:08x}", _receipt(i))
    before = {k: d for k, d in ledger.read_all()}
    finished = ledger.finished()
    assert ledger.compact("r1") == 12
    assert ledger.loose_count() == 0 and ledger.pack_count() == 1
    assert {k: d for k, d in ledger.read_all()} == before and ledger.finished() == finished
    # again under the same name (a compaction killed after its PUT): the pack stays as it was, the
    # receipts it holds are deleted, a newer one stays loose
    ledger.write("pl-00000001", {**_receipt(1), "time": 2e9})
    ledger.write("pl-000000ff", _receipt(255))
    assert ledger.compact("r1") == 0  # neither is in r1's pack with these bytes
    assert ledger.loose_count() == 2 and ledger.read("pl-00000001")["time"] == 2e9
    assert ledger.compact("r2") == 2 and ledger.loose_count() == 0
    ledger.remove("pl-00000005")
    assert "pl-00000005" not in ledger.keys() and len(ledger.keys()) == 12
    priv = store.private_location
    assert priv is not None
    data = priv.read_bytes("ledger/packs/r1.pack")
    priv.write_bytes("ledger/packs/r1.pack", data[: len(data) // 2])  # truncated
    assert ledger.contents().faults and ledger.contents().faults[0][2].startswith("truncated")
