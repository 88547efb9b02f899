"""Large collections (issue 16 point 5): ``--resume`` reuses the manifest entries of unchanged files, fsck
reads each stack shard once.

Only new or changed files are hashed again, and a resume that finds every task done starts no cluster
and loads no model.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, fsck, prelabel
from segpipe.storage import ledger as ledgers
from segpipe.storage.ledger import Ledger
from segpipe.storage.manifest import file_sha256, read_manifest
from segpipe.storage.packs import PACKS, decode_pack

#: A scheduler address nothing listens on: a run that tried to reach a cluster would fail.
NO_CLUSTER = ClusterSpec(scheduler="tcp://127.0.0.1:9")


def _source(tmp_path: Path, collection: Path, n: int = 6) -> Path:
    """``n`` images of the collection, last modified an hour ago (well before any run's check time)."""
    src = tmp_path / "imgs"
    src.mkdir()
    old = time.time() - 3600
    for p in sorted((collection / "images").iterdir())[:n]:
        q = src / p.name
        q.write_bytes(p.read_bytes())
        os.utime(q, (old, old))
    # the files' status change time (st_ctime, now) must lie before the first run's check time too
    time.sleep(2.5)
    return src


def _manifest(out: Path) -> dict[str, str]:
    return {e.file: e.sha256 for e in read_manifest(out / ".segpipe" / "manifest.jsonl")}


def test_resume_with_everything_done_starts_no_cluster(tmp_path, collection, checkpoint):
    src = _source(tmp_path, collection)
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1)
    assert prelabel(req, ClusterSpec(workers=0))["images"]["done"] == 6
    manifest = (out / ".segpipe" / "manifest.jsonl").read_bytes()
    lines: list[str] = []
    # no scheduler listens at NO_CLUSTER: the run finishes only if it never reaches for one
    t0 = time.perf_counter()
    rep = prelabel(req.model_copy(update={"resume": True}), NO_CLUSTER, log=lines.append)
    assert time.perf_counter() - t0 < 30
    assert rep["images"] == {**rep["images"], "total": 6, "done": 0, "skipped_already_done": 6, "failed": 0,
                             "not_run": 0}
    assert rep["stage_seconds"] == {"decode": 0.0, "infer": 0.0, "write": 0.0}
    assert any("nothing left to run" in ln for ln in lines), lines
    assert (out / ".segpipe" / "manifest.jsonl").read_bytes() == manifest  # same entries, same bytes
    runs = sorted((out / ".segpipe" / "runs").glob("*.json"))
    assert len(runs) == 2 and json.loads(runs[-1].read_text())["images"]["skipped_already_done"] == 6  # newest last


def test_resume_hashes_only_changed_and_new_files(tmp_path, collection, checkpoint):
    src = _source(tmp_path, collection)
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1)
    prelabel(req, ClusterSpec(workers=0))
    before = _manifest(out)
    names = sorted(before)
    # a changed file (another image's bytes: its modification time is now), and a new one
    extra = sorted((collection / "images").iterdir())
    (src / names[0]).write_bytes(extra[10].read_bytes())
    (src / "zz_new.png").write_bytes(extra[11].read_bytes())
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 2 and rep["images"]["skipped_already_done"] == 5, rep["images"]
    after = _manifest(out)
    assert after[names[0]] == file_sha256(src / names[0]) != before[names[0]]
    assert after["zz_new.png"] == file_sha256(src / "zz_new.png")
    assert {k: after[k] for k in names[1:]} == {k: before[k] for k in names[1:]}
    # a file rewritten with the same size but touched after the check is hashed again, too
    p = src / names[1]
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF  # the last byte of a PNG's IEND CRC: still the same size
    p.write_bytes(bytes(data))
    prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert _manifest(out)[names[1]] == file_sha256(p) != before[names[1]]


def test_fsck_reads_a_shard_once_yet_names_the_one_damaged_slot(tmp_path, collection, checkpoint):
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1,
                                   probs=False), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 24
    assert fsck(out)["ok"] == 24
    shards = sorted((out / "stacks").glob("*/labels/c.1.0.0"))
    assert len(shards) == 1
    data = bytearray(shards[0].read_bytes())
    data[:64] = bytes(64)  # the first slot's inner chunk of the second shard (the index at its end holds)
    shards[0].write_bytes(bytes(data))
    # zarr itself, slot by slot: the slots whose inner chunks no longer decode
    labels = zarr.open_array(shards[0].parent, mode="r")
    unreadable = set()
    for slot in range(8, 16):
        try:
            np.asarray(labels[slot])
        except Exception:
            unreadable.add(slot)
    assert 0 < len(unreadable) < 8
    r = fsck(out)
    # the shard cannot be read whole, yet its other slots still read and match: only theirs are bad
    assert r["receipts"] == 24 and r["ok"] == 24 - len(unreadable), r
    assert {json.loads(Path(b["file"]).read_text())["slot"] for b in r["bad"]} == unreadable
    assert all(b["problem"] == f"{shards[0]}: labels: damaged shard file (cannot be decoded)" for b in r["bad"])


# ------------------------------------------------------------------------------------------ packed ledgers


def _pack(out: Path) -> Path:
    packs = sorted((out / ".segpipe" / "ledger" / PACKS).glob("*.pack"))
    assert len(packs) == 1, packs
    return packs[0]


def _fsck_summary(rep: dict[str, Any]) -> tuple[int, int, list[str], list[str]]:
    return (rep["receipts"], rep["ok"], [b["problem"] for b in rep["bad"]], [p["problem"] for p in rep["problems"]])


def test_a_packed_ledger_resumes_and_fscks_as_the_loose_one(tmp_path, collection, checkpoint, monkeypatch):
    src = _source(tmp_path, collection, n=8)
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1, probs=False)
    assert prelabel(req, ClusterSpec(workers=0))["images"]["done"] == 8
    ledger = Ledger(out / ".segpipe")
    loose = {k: p.read_bytes().strip() for k, p in ledger.items()}
    assert len(loose) == 8 and not (ledger.dir / PACKS).exists()  # a small run leaves its receipts loose
    before = fsck(out)
    assert _fsck_summary(before) == (8, 8, [], [])
    # --resume of a store of loose receipts: nothing to run; at its end the ledger is packed (PACK_MIN lowered)
    monkeypatch.setattr(ledgers, "PACK_MIN", 4)
    rep = prelabel(req.model_copy(update={"resume": True}), NO_CLUSTER)
    assert rep["images"]["skipped_already_done"] == 8 and rep["images"]["done"] == 0
    assert list(ledger.items()) == [] and _pack(out).name == f"{rep['run_id']}.pack"
    assert {k: d.strip() for k, d, _ in ledger.contents().sorted_items()} == loose  # the same bytes
    assert _fsck_summary(fsck(out)) == _fsck_summary(before)
    # resume after packing: nothing left; then a changed file and a new one are redone, the changed
    # image's old receipt is taken out of the pack
    rep = prelabel(req.model_copy(update={"resume": True}), NO_CLUSTER)
    assert rep["images"]["skipped_already_done"] == 8 and rep["images"]["done"] == 0
    names = sorted(p.name for p in src.iterdir())
    extra = sorted((collection / "images").iterdir())
    old_key = next(k for k in loose if json.loads(loose[k])["file"] == names[0])
    (src / names[0]).write_bytes(extra[10].read_bytes())
    (src / "zz_new.png").write_bytes(extra[11].read_bytes())
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 2 and rep["images"]["skipped_already_done"] == 7, rep["images"]
    assert old_key not in ledger.keys() and old_key not in {k for k, _ in decode_pack(_pack(out).read_bytes()).receipts}
    assert len(list(ledger.items())) == 2  # fewer than PACK_MIN: left loose, beside the pack
    assert _fsck_summary(fsck(out)) == (9, 9, [], [])
    monkeypatch.setattr(ledgers, "PACK_MIN", 1)
    # (the two files just written are hashed again: too recent to trust their modification times)
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert rep["images"]["skipped_already_done"] == 9 and rep["images"]["done"] == 0
    assert list(ledger.items()) == [] and ledger.pack_count() == 2 and len(ledger.finished()) == 9
    assert _fsck_summary(fsck(out)) == (9, 9, [], [])


def test_fsck_names_a_damaged_or_truncated_pack_and_repair_lets_resume_redo_its_images(
        tmp_path, collection, checkpoint, monkeypatch):
    monkeypatch.setattr(ledgers, "PACK_MIN", 1)
    src = _source(tmp_path, collection, n=8)
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1, probs=False)
    assert prelabel(req, ClusterSpec(workers=0))["images"]["done"] == 8
    pack = _pack(out)
    lines = pack.read_bytes().split(b"\n")
    damaged = bytearray(lines[3])
    damaged[-5] ^= 0x01  # a byte of the third receipt's JSON
    lines[3] = bytes(damaged)
    pack.write_bytes(b"\n".join(lines))
    rep = fsck(out)
    assert rep["receipts"] == 8 and rep["ok"] == 7
    assert [(b["file"], b["problem"]) for b in rep["bad"]] == [
        (str(pack), "line 4: receipt fails its checksum (damaged)")]
    assert [p["problem"].split(": ", 1)[1] for p in rep["problems"]][0].startswith("no receipt vouches for slot")
    # truncated in the middle of its last line, too
    data = pack.read_bytes()
    pack.write_bytes(data[: len(data) - 40])
    rep = fsck(out)
    assert rep["ok"] == 6 and sorted(b["problem"] for b in rep["bad"]) == [
        "line 4: receipt fails its checksum (damaged)", "packed ledger truncated: 6 of its 8 receipts read"]
    assert {b["file"] for b in rep["bad"]} == {str(pack)} and len(rep["problems"]) == 2
    rep = fsck(out, repair=True)
    assert rep["repaired"] == 2
    again = decode_pack(pack.read_bytes())  # rewritten with the receipts it still held whole
    assert again.problem is None and again.damaged == [] and len(again.receipts) == 6
    assert _fsck_summary(fsck(out))[:3] == (6, 6, [])
    # --resume redoes the two images whose receipts were lost; the store is whole again
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 2 and rep["images"]["skipped_already_done"] == 6, rep["images"]
    assert _fsck_summary(fsck(out)) == (8, 8, [], [])
