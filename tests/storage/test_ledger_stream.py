"""The ledger streamed and its receipts kept slim: what ``--resume`` and ``fsck`` read at 100k receipts.

A pack is read a line at a time (:func:`~segpipe.storage.packs.read_pack_file`,
:func:`~segpipe.storage.packs.iter_local_ledger`) and each usable receipt kept as a
:class:`~segpipe.storage.verify.SlimReceipt`; the checks' per-image tables are made when asked for.
Each must read exactly as the whole-file, whole-dict reading did: the same receipts, the same faults
in the same order, the same values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segpipe.storage.packs import (
    PACKS,
    Pack,
    _digest,
    decode_pack,
    encode_pack,
    iter_local_ledger,
    read_local_ledger,
    read_pack_file,
)
from segpipe.storage.verify import (
    ImageCheck,
    KeyedReceipt,
    PackedReceipt,
    SlimReceipt,
    _ImageChecks,
    _Slots,
    _Stack,
    keyed_receipt,
    parse_receipt,
    read_checked_receipts,
    read_receipts,
    slim_receipt,
)


def _receipt(i: int, **extra: Any) -> dict[str, Any]:
    return {"key": f"pl-{i:04d}", "image_id": 1000 + i, "file": f"d/{i:05d}.png",
            "sha256": f"{i:064x}", "stack": "16x16", "slot": i, "status": "done",
            "outputs": {"labels": f"xxh3-128:{i:032x}"}, "width": 16, "height": 16,
            "timings": {"decode": 0.1}, "worker": "vm:1", "time": 1.5e9 + i, **extra}


def _old_decode(data: bytes) -> Pack:
    """The whole-bytes reading the streamed one replaced (the reference it must match)."""
    out = Pack()
    lines = data.split(b"\n")
    tail = lines.pop()
    try:
        head = json.loads(lines[0]) if lines else None
    except ValueError:
        head = None
    expected = None
    if isinstance(head, dict) and head.get("format") == "segpipe-ledger-pack" and head.get("version") == 1 \
            and isinstance(head.get("receipts"), int):
        expected = int(head["receipts"])
        body = lines[1:]
    else:
        out.problem = "damaged header (not a segpipe ledger pack of a known version)"
        body = lines[1:] if lines else []
    for n, line in enumerate(body, 2):
        parts = line.split(b"\t", 2)
        if len(parts) != 3 or _digest(parts[0], parts[2]) != parts[1]:
            out.damaged.append((n, "fails its checksum (damaged)"))
            continue
        try:
            key = parts[0].decode()
        except UnicodeDecodeError:
            out.damaged.append((n, "fails its checksum (damaged)"))
            continue
        out.receipts.append((key, parts[2]))
    if out.problem is None and expected is not None:
        if tail or len(body) < expected:
            out.problem = f"truncated: {len(out.receipts)} of its {expected} receipts read"
        elif len(body) > expected:
            out.problem = f"holds {len(body)} receipt lines, its header {expected}"
    return out


def _pack_bytes(n: int = 5) -> bytes:
    return encode_pack([(f"pl-{i:04d}", json.dumps(_receipt(i)).encode()) for i in range(n)])


def test_a_pack_read_a_line_at_a_time_reads_as_read_whole(tmp_path: Path) -> None:
    data = _pack_bytes()
    variants = [data, b"", b"\n", b"garbage", b"garbage\n" + data.split(b"\n", 1)[1], data + b"extra",
                data.replace(b'"receipts": 5', b'"receipts": 9'), data.replace(b'"receipts": 5', b'"receipts": 2'),
                data + data.split(b"\n", 1)[1]]
    variants += [data[:cut] for cut in range(0, len(data), 7)]
    for pos in range(0, len(data), 5):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        variants.append(bytes(bad))
    f = tmp_path / "x.pack"
    for v in variants:
        want = _old_decode(v)
        for got in (decode_pack(v), _read(f, v)):
            assert (got.receipts, got.damaged, got.problem) == (want.receipts, want.damaged, want.problem), v[:60]


def _read(f: Path, data: bytes) -> Pack:
    f.write_bytes(data)
    got = read_pack_file(f)
    assert got is not None
    return got


def test_a_pack_removed_since_listed_reads_as_none(tmp_path: Path) -> None:
    assert read_pack_file(tmp_path / "gone.pack") is None


def _ledger_with_overlaps(tmp_path: Path) -> Path:
    """Loose receipts, two packs sharing keys with them and each other, a key twice in a pack, a damaged line."""
    folder = tmp_path / "ledger"
    (folder / PACKS).mkdir(parents=True)
    for i in (1, 3):
        (folder / f"pl-{i:04d}.json").write_text(json.dumps(_receipt(i, file=f"loose{i}.png")))
    (folder / "pl-0009.json").write_text("{not json")
    old = [(f"pl-{i:04d}", json.dumps(_receipt(i, file=f"old{i}.png")).encode()) for i in range(6)]
    (folder / PACKS / "a.pack").write_bytes(encode_pack(old))
    new = encode_pack([(f"pl-{i:04d}", json.dumps(_receipt(i, file=f"new{i}.png")).encode()) for i in (2, 3, 4)])
    twice = json.dumps(_receipt(4, file="twice.png")).encode()
    line = b"pl-0004\t%s\t%s\n" % (_digest(b"pl-0004", twice), twice)
    damaged = b"pl-0007\t0000000000000000\t{}\n"
    head, body = new.split(b"\n", 1)
    (folder / PACKS / "b.pack").write_bytes(head + b"\n" + body + line + damaged)
    return folder


def test_the_streamed_ledger_keeps_the_receipt_the_whole_reading_keeps(tmp_path: Path) -> None:
    folder = _ledger_with_overlaps(tmp_path)
    whole = read_local_ledger(folder)
    faults: list[tuple[str, int | None, str]] = []
    latest: dict[str, tuple[bytes, str]] = {}
    loose: set[str] = set()
    for key, data, where, is_loose in iter_local_ledger(folder, faults):
        latest[key] = (data, where)  # a consumer keeps the last item of each key
        if is_loose:
            loose.add(key)
    assert latest == whole.receipts and loose == whole.loose and faults == whole.faults
    assert json.loads(latest["pl-0004"][0])["file"] == "twice.png"  # the later line of a key in one pack
    assert json.loads(latest["pl-0003"][0])["file"] == "loose3.png"  # a loose file over any pack
    assert json.loads(latest["pl-0002"][0])["file"] == "new2.png"  # the newer pack over the older


def test_slim_receipts_read_as_the_decoded_ones(tmp_path: Path) -> None:
    folder = _ledger_with_overlaps(tmp_path)
    good, bad = read_receipts(folder)
    slim, slim_bad = read_checked_receipts(folder)
    assert slim_bad == bad
    assert [r.key for r in slim] == [p.name[:-5] for p, _ in good]
    for (_, rec), s in zip(good, slim, strict=True):
        assert isinstance(s, PackedReceipt)  # a worker's receipt of a stacked image
        assert dict(s) == {k: v for k, v in rec.items() if k not in ("timings", "worker")}


@pytest.mark.parametrize("rec", [
    _receipt(1),
    _receipt(1, width=16.0, height=True),  # kept as they are: not the 16 a shared shape holds
    _receipt(1, time=1500000000),  # an int time: not packed as a float
    _receipt(1, image_id=1 << 70),
    {k: v for k, v in _receipt(1).items() if k != "height"},
    _receipt(2, doubt={"mean": 0.5}),
    _receipt(3, sha256="ABC" + "0" * 61),  # upper case: kept as text
    _receipt(4, sha256="short", slot="7"),
    {k: v for k, v in _receipt(5).items() if k not in ("stack", "slot", "sha256", "time")},
    _receipt(6, outputs={"labels": "xxh3-128:00", "probs": "", "instances/rle": "x"}),
    _receipt(7, outputs={"labels": "xxh3-128:" + "AB" * 16, "probs": "xxh3-128:" + "ab" * 16}),
])
def test_a_slim_receipt_reads_as_its_receipt(rec: dict[str, Any]) -> None:
    key = rec["key"]
    s = slim_receipt(key, rec)
    assert isinstance(s, (SlimReceipt, PackedReceipt)) and s.key == key
    want = {k: v for k, v in rec.items() if k not in ("timings", "worker")}
    assert dict(s) == want and list(s) == list(want) and len(s) == len(want)
    for name in ("image_id", "file", "sha256", "stack", "slot", "outputs", "width", "height", "time", "doubt",
                 "status", "key", "window", "slices", "timings"):
        assert (name in s) == (name in want), name
        assert s.get(name, "-") == want.get(name, "-"), name
    with pytest.raises(KeyError):
        s["window"]
    assert keyed_receipt(key, s) is s


@pytest.mark.parametrize("rec", [
    _receipt(1, window=[0, 8, 0, 8]),  # a scene's block
    {**_receipt(2), "key": "pl-other"},  # a receipt under another key
    {k: v for k, v in _receipt(3).items() if k != "key"},
    {**_receipt(4), "slices": {"5": {"labels": "x"}}},
])
def test_receipts_a_slim_one_cannot_hold_are_kept_whole(rec: dict[str, Any]) -> None:
    parsed, why = parse_receipt(json.dumps(rec).encode())
    assert parsed is not None, why
    s = slim_receipt("pl-0001", parsed)
    assert isinstance(s, KeyedReceipt) and s == parsed and s.key == "pl-0001"


def _stack(ids: list[int]) -> _Stack:
    return _Stack(np.array(ids, dtype=np.int64), np.ones(len(ids), dtype=np.uint8), Path("x"))


def test_the_slot_index_finds_every_slot_of_an_id_in_stack_then_slot_order() -> None:
    slots = _Slots({"8x8": _stack([5, -1, 7, 5]), "16x16": _stack([9, 5, -1])})
    assert slots.get(5) == [("8x8", 0), ("8x8", 3), ("16x16", 1)]
    assert slots.get(7) == [("8x8", 2)] and slots[9] == [("16x16", 0)]
    assert slots.get(4) == [] and 4 not in slots and 9 in slots and slots.get(1 << 70) == []
    assert slots.dups == {5} and slots.ids() == [5, 7, 9] and slots.count(5) == 3
    with pytest.raises(KeyError):
        slots[-1]
    assert _Slots({}).ids() == []


def test_the_image_checks_make_a_sound_image_s_check_from_its_receipt() -> None:
    plain = {1: slim_receipt("pl-0001", _receipt(1)), 3: slim_receipt("pl-0003", {
        k: v for k, v in _receipt(3).items() if k not in ("stack", "slot")})}
    images = _ImageChecks(np.array([1, 2, 3]), plain)
    images.made(2, ImageCheck("lost", "here", kind="unvouched"))
    assert images[1] == ImageCheck(hint=("16x16", 1), digests={"labels": f"xxh3-128:{1:032x}"})
    assert images[3] == ImageCheck(digests={"labels": f"xxh3-128:{3:032x}"})
    assert list(images) == [1, 2, 3] and len(images) == 3 and 2 in images and 4 not in images
    assert images.get(4) is None and list(images.kept()) == [(2, ImageCheck("lost", "here", kind="unvouched"))]
    images[1] = ImageCheck("attrs", kind="attrs")  # replaced in place (fsck's attrs problems)
    images[8] = ImageCheck("new")
    assert list(images) == [1, 2, 3, 8] and images[1].kind == "attrs" and len(images) == 4
    del images[3]
    del images[8]
    assert list(images) == [1, 2] and 3 not in images and len(images) == 2
    with pytest.raises(KeyError):
        images[3]
    images[3] = ImageCheck("back")
    assert list(images) == [1, 2, 3] and images[3].problem == "back"


def test_slim_and_keyed_receipts_pickle_as_themselves() -> None:
    import pickle  # lazy: only this test pickles

    for rec in (slim_receipt("pl-0001", {k: v for k, v in _receipt(1).items() if k != "time"}),
                slim_receipt("pl-0001", _receipt(1)),
                KeyedReceipt(_receipt(2, window=[0, 1, 0, 1]), "pl-0002")):
        back = pickle.loads(pickle.dumps(rec))
        assert type(back) is type(rec) and back == rec and back.key == rec.key
        assert ("time" in back) == ("time" in rec) and back.get("time", "-") == rec.get("time", "-")


def test_worker_receipts_of_stacked_images_are_packed_and_share_their_shape() -> None:
    a, b = slim_receipt("pl-0001", _receipt(1)), slim_receipt("pl-0002", _receipt(2))
    assert isinstance(a, PackedReceipt) and isinstance(b, PackedReceipt) and a._shape is b._shape
    c = slim_receipt("pl-0003", _receipt(3, width=16.0))
    assert c["width"] == 16.0 and type(c["width"]) is float and type(a["width"]) is int
    for rec in (_receipt(4, time=1500000000), _receipt(5, outputs={"labels": "xxh3-128:00"}),
                _receipt(6, sha256="A" * 64), _receipt(7, doubt={"mean": 0.5})):
        assert isinstance(slim_receipt(rec["key"], rec), SlimReceipt)
