"""``segpipe fsck`` checks every stack slot's ``attrs`` against the stack's ``ids`` and the slot's receipt.

A stack's ``attrs[slot]`` is the image's attributes as JSON (file, sha256, size ...), written by the
driver at plan time; exports name each mask from it. Two slots' attributes swapped used to pass fsck
while COCO and VOC exports named the masks after the wrong images; a deleted ``attrs`` chunk passed
fsck too and ``--repair`` could not mend it. Now fsck names the stack, the slot and the field;
``--repair`` rebuilds the attributes exactly from the receipts and ``manifest.jsonl`` (or from the
receipt alone when the manifest lacks the entry; where neither can, a slot its receipt vouches for is
left as it is and reported, exit 1: a missing manifest never costs labels); and the exports are those
of the undamaged store again. Stores are made by real runs (the prelabel API, in-process workers) and
checked and exported through the real CLI; a store in a bucket is checked on a real S3 server (moto).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.location import Location, parse_location
from segpipe.storage.manifest import read_manifest
from segpipe.storage.stacks import slot_attrs_json
from tests._s3 import bucket, s3_server  # noqa: F401  (fixtures: a moto S3 server, a new bucket)
from tests.conftest import run_cli

STACK = "128x256"
N = 24


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, collection: Path, checkpoint: Path) -> Path:
    """A real run's store of the 24 images (one stack of 128x256, three shards), labels only."""
    out = tmp_path_factory.mktemp("attrs") / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1,
                                   probs=False), ClusterSpec(workers=0))
    assert rep["images"]["done"] == N
    return out


def _copy(base: Path, tmp_path: Path) -> Path:
    store = tmp_path / "s.zarr"
    shutil.copytree(base, store)
    return store


def _attrs(store: Path | Any) -> Any:
    return zarr.open_array(store=store if not isinstance(store, Path) else str(store / "stacks" / STACK / "attrs"),
                           mode="r+")


def _swap(arr: Any, a: int, b: int) -> list[str]:
    """Swaps two slots' attribute strings with zarr, as a hand edit would; returns the strings before."""
    before = [str(v) for v in np.asarray(arr[...]).tolist()]
    after = list(before)
    after[a], after[b] = before[b], before[a]
    arr[...] = np.array(after, dtype=object)
    return before


def _export(store: Path, to: str, dst: Path) -> None:
    r = run_cli("export", str(store), str(dst), "--to", to, "-w", "0")
    assert r.returncode == 0, r.stdout + r.stderr


def _coco_bytes(folder: Path) -> bytes:
    """The COCO JSON's bytes (no per-export token is written: two exports of one store are equal)."""
    path = folder / "annotations" / "instances_train.json"
    assert b"store_token" not in path.read_bytes()
    return path.read_bytes()


def _files(folder: Path) -> dict[str, bytes]:
    """Every exported file's bytes but the conversion report's (it times the export)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "conversion_report.json"}


def test_the_rebuild_is_what_the_driver_wrote(base: Path) -> None:
    """Every slot's attributes, as the run wrote them, are rebuilt byte for byte from the manifest."""
    entries = {e.id: e for e in read_manifest(base / ".segpipe" / "manifest.jsonl")}
    ids = zarr.open_array(str(base / "stacks" / STACK / "ids"), mode="r")[...].tolist()
    stored = [str(v) for v in zarr.open_array(str(base / "stacks" / STACK / "attrs"), mode="r")[...].tolist()]
    assert len(ids) == N and all(i >= 0 for i in ids)
    assert [slot_attrs_json(entries[i]) for i in ids] == stored


def test_swapped_attrs_are_found_repaired_and_the_exports_are_the_undamaged_stores(base: Path,
                                                                                     tmp_path: Path) -> None:
    store = _copy(base, tmp_path)
    _export(store, "coco", tmp_path / "coco0")
    _export(store, "voc", tmp_path / "voc0")
    before = _swap(_attrs(store), 0, 1)
    files = [json.loads(before[j])["file"] for j in (0, 1)]

    f = run_cli("fsck", str(store))
    assert f.returncode == 1, f.stdout + f.stderr
    chunk = f"{store}/stacks/{STACK}/attrs/c/0"
    errors = [ln for ln in f.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in f.stderr, f.stderr
    for j, ln in enumerate(errors):
        assert ln.startswith(f"error: {chunk}: slot {j} of stacks/{STACK} (image id "), ln
        assert f'file "{files[1 - j]}"' in ln and f'says file "{files[j]}"' in ln, ln  # the field, both values
    assert f"{N}/{N} receipts ok, 0 bad receipts, 0 orphans, 0 problems, 2 slots with wrong attrs" in f.stdout

    # an export no longer names masks after the wrong images: it fails those two, naming them
    e = run_cli("export", str(store), str(tmp_path / "coco1"), "--to", "coco", "-w", "0")
    assert e.returncode == 1 and "Traceback" not in e.stderr, e.stdout + e.stderr
    assert {ln.split(":")[1].strip() for ln in e.stderr.splitlines() if ln.startswith("error:")} == set(files)

    r = run_cli("fsck", str(store), "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [ln.split(": slot")[0] for ln in r.stdout.splitlines() if ln.startswith("rewrote:")] == \
        [f"rewrote: {chunk}"] * 2, r.stdout
    assert "2 slots with wrong attrs, 2 repaired" in r.stdout
    assert [str(v) for v in _attrs(store)[...].tolist()] == before  # byte for byte what the run wrote
    f = run_cli("fsck", str(store))
    assert f.returncode == 0 and f"{N}/{N} receipts ok, 0 bad receipts, 0 orphans, 0 problems\n" in f.stdout, \
        f.stdout + f.stderr
    _export(store, "coco", tmp_path / "coco2")
    _export(store, "voc", tmp_path / "voc2")
    assert _coco_bytes(tmp_path / "coco2") == _coco_bytes(tmp_path / "coco0")
    assert _files(tmp_path / "voc2") == _files(tmp_path / "voc0")


def test_a_deleted_attrs_chunk_is_found_and_rebuilt(base: Path, tmp_path: Path) -> None:
    store = _copy(base, tmp_path)
    _export(store, "coco", tmp_path / "coco0")
    before = [str(v) for v in _attrs(store)[...].tolist()]
    chunk = store / "stacks" / STACK / "attrs" / "c" / "0"
    chunk.unlink()

    f = run_cli("fsck", str(store))
    assert f.returncode == 1, f.stdout + f.stderr
    errors = [ln for ln in f.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {chunk}: slot {j} of stacks/{STACK} (image id {i}): its attrs cannot be read: its "
                      "chunk file is missing" for j, i in enumerate(json.loads(b)["id"] for b in before)], f.stderr
    r = run_cli("fsck", str(store), "--repair")
    assert r.returncode == 0 and f"{N} slots with wrong attrs, {N} repaired" in r.stdout, r.stdout + r.stderr
    assert chunk.is_file() and [str(v) for v in _attrs(store)[...].tolist()] == before
    assert run_cli("fsck", str(store)).returncode == 0
    _export(store, "coco", tmp_path / "coco1")
    assert _coco_bytes(tmp_path / "coco1") == _coco_bytes(tmp_path / "coco0")


def test_vouched_attrs_with_no_path_known_are_kept_and_reported_not_cleared(base: Path, tmp_path: Path) -> None:
    """Slot 0's image lost its manifest line and its slot holds slot 1's attributes: no ``path`` is known
    for it, so its attributes cannot be rebuilt exactly. Its receipt vouches for its labels, so the slot
    is left as it is (not cleared: that used to delete good labels) and reported, exit 1; slot 1's are
    rebuilt. With the manifest back, ``--repair`` rebuilds slot 0 too."""
    store = _copy(base, tmp_path)
    _export(store, "coco", tmp_path / "coco0")
    before = _swap(_attrs(store), 0, 1)
    lost = json.loads(before[0])
    manifest = store / ".segpipe" / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(ln for ln in lines if json.loads(ln)["id"] != lost["id"]))
    ids_before = zarr.open_array(str(store / "stacks" / STACK / "ids"), mode="r")[...].tolist()

    r = run_cli("fsck", str(store), "--repair")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    chunk = f"{store}/stacks/{STACK}/attrs/c/0"
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {chunk}: slot 0 of stacks/{STACK} (image id "
                                                     f"{lost['id']})"), r.stderr
    assert f"not repairable: no path is known for image {lost['id']} (the store's manifest.jsonl has no usable " \
           f"entry for image {lost['id']})" in errors[0], errors[0]
    assert sum(ln.startswith("rewrote: ") and f"slot 1 of stacks/{STACK}" in ln for ln in r.stdout.splitlines()) == 1
    assert "removed:" not in r.stdout and "cleared:" not in r.stdout, r.stdout
    assert zarr.open_array(str(store / "stacks" / STACK / "ids"), mode="r")[...].tolist() == ids_before
    assert str(_attrs(store)[0]) == before[1] and str(_attrs(store)[1]) == before[1]  # slot 0 left as it was
    f = run_cli("fsck", str(store))
    assert f.returncode == 1 and f"{N}/{N} receipts ok" in f.stdout, f.stdout + f.stderr  # no receipt lost

    manifest.write_text("".join(lines))  # what --resume writes again from the source anyway
    r = run_cli("fsck", str(store), "--repair")
    assert r.returncode == 0 and "1 slots with wrong attrs, 1 repaired" in r.stdout, r.stdout + r.stderr
    assert [str(v) for v in _attrs(store)[...].tolist()] == before
    _export(store, "coco", tmp_path / "coco1")
    assert _coco_bytes(tmp_path / "coco1") == _coco_bytes(tmp_path / "coco0")


def _damage_manifest(store: Path, how: str) -> None:
    """The store's ``manifest.jsonl`` as a later run or an accident leaves it."""
    manifest = store / ".segpipe" / "manifest.jsonl"
    if how == "limit":  # ``--resume --limit 2`` writes the 2 entries it planned
        manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:2]))
    elif how == "deleted":
        manifest.unlink()
    else:
        manifest.write_bytes(b"\xff\xfe garbage\n")


@pytest.mark.parametrize("how", ["limit", "deleted", "garbage"])
def test_a_wrong_file_is_rebuilt_from_the_receipt_whatever_the_manifest(base: Path, tmp_path: Path,
                                                                      how: str) -> None:
    """The receipt records file, sha256 and size; the slot's own attributes still give its ``path``."""
    store = _copy(base, tmp_path)
    before = [str(v) for v in _attrs(store)[...].tolist()]
    arr = _attrs(store)
    edited = json.loads(before[5])
    edited["file"] = "typo.png"
    arr[5] = json.dumps(edited, sort_keys=True)
    _damage_manifest(store, how)
    r = run_cli("fsck", str(store), "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [ln.split(" (image")[0] for ln in r.stdout.splitlines() if ln.startswith("rewrote:")] == \
        [f"rewrote: {store}/stacks/{STACK}/attrs/c/0: slot 5 of stacks/{STACK}"], r.stdout
    assert [str(v) for v in _attrs(store)[...].tolist()] == before  # byte for byte what the run wrote
    f = run_cli("fsck", str(store))
    assert f.returncode == 0 and f"{N}/{N} receipts ok, 0 bad receipts, 0 orphans, 0 problems\n" in f.stdout, \
        f.stdout + f.stderr


@pytest.mark.parametrize("how,why", [("deleted", "the store's manifest.jsonl is missing"),
                                     ("garbage", "the store's manifest.jsonl is unreadable (no line of it decodes)")])
def test_lost_attrs_without_a_manifest_are_kept_naming_the_manifest(base: Path, tmp_path: Path, how: str,
                                                                    why: str) -> None:
    """An ``attrs`` chunk that does not decode and no manifest: no ``path`` is known for any slot. Every
    slot is reported not repairable, saying what is wrong with the manifest; nothing is changed."""
    store = _copy(base, tmp_path)
    chunk = store / "stacks" / STACK / "attrs" / "c" / "0"
    chunk.write_bytes(b"not a zstd frame" * 4)
    _damage_manifest(store, how)
    receipts = sorted(p.name for p in (store / ".segpipe" / "ledger").rglob("*") if p.is_file())
    r = run_cli("fsck", str(store), "--repair")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == N and all(ln.startswith(f"error: {chunk}: slot ") and why in ln for ln in errors), r.stderr
    assert f"{N} slots with wrong attrs, 0 repaired" in r.stdout, r.stdout
    assert chunk.read_bytes() == b"not a zstd frame" * 4
    assert sorted(p.name for p in (store / ".segpipe" / "ledger").rglob("*") if p.is_file()) == receipts
    assert min(zarr.open_array(str(store / "stacks" / STACK / "ids"), mode="r")[...].tolist()) >= 0


def _loc(url: str) -> Location:
    loc = parse_location(url)
    assert isinstance(loc, Location)
    return loc


def test_swapped_attrs_in_a_bucket_store_are_found_and_repaired(collection: Path, checkpoint: Path,
                                                                bucket: str) -> None:  # noqa: F811
    url = f"s3://{bucket}/run.zarr"
    r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", url, "--threads", "1",
                "--no-probs", "-w", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    loc = _loc(url)
    arr = zarr.open_array(store=loc.zarr_store(read_only=False), path=f"stacks/{STACK}/attrs", mode="r+",
                          zarr_format=3)
    before = _swap(arr, 5, 9)
    f = run_cli("fsck", url)
    assert f.returncode == 1, f.stdout + f.stderr
    errors = [ln for ln in f.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in f.stderr, f.stderr
    for j, k, ln in ((5, 9, errors[0]), (9, 5, errors[1])):
        assert ln.startswith(f"error: {url}/stacks/{STACK}/attrs/c/0: slot {j} of stacks/{STACK} (image id "), ln
        assert f'file "{json.loads(before[k])["file"]}"' in ln and f'says file "{json.loads(before[j])["file"]}"' \
            in ln, ln
    r = run_cli("fsck", url, "--repair")
    assert r.returncode == 0 and "2 slots with wrong attrs, 2 repaired" in r.stdout, r.stdout + r.stderr
    fresh = zarr.open_array(store=loc.zarr_store(read_only=True), path=f"stacks/{STACK}/attrs", mode="r",
                            zarr_format=3)
    assert [str(v) for v in fresh[...].tolist()] == before
    f = run_cli("fsck", url)
    assert f.returncode == 0 and f"{N}/{N} receipts ok, 0 bad receipts, 0 orphans, 0 problems\n" in f.stdout, \
        f.stdout + f.stderr


def test_a_resumed_run_rewrites_the_attrs_of_an_image_redone_in_its_slot(tmp_path: Path, collection: Path,
                                                                         checkpoint: Path) -> None:
    """A file changed between runs keeps its slot on ``--resume`` and is redone there: its ``attrs``
    (sha256, the bytes exports and fsck vouch for) are those of the new file, not the first run's."""
    from PIL import Image

    from segpipe.storage.manifest import file_sha256

    images = tmp_path / "images"
    shutil.copytree(collection / "images", images)
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(images), model=str(checkpoint), out=out, threads=1, probs=False)
    assert prelabel(req, ClusterSpec(workers=0))["images"]["done"] == N
    changed = sorted(images.glob("*.png"))[3]
    with Image.open(changed) as im:
        pixels = np.asarray(im.convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(changed)
    before = [str(v) for v in np.asarray(_attrs(out)[...]).tolist()]
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert (rep["images"]["done"], rep["images"]["skipped_already_done"]) == (1, N - 1)
    after = [str(v) for v in np.asarray(_attrs(out)[...]).tolist()]
    moved = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(moved) == 1 and json.loads(after[moved[0]])["file"] == changed.name
    assert json.loads(after[moved[0]])["sha256"] == file_sha256(changed) != json.loads(before[moved[0]])["sha256"]
    r = run_cli("fsck", str(out))
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_exports_of_one_store_are_byte_identical(base: Path, tmp_path: Path) -> None:
    """The store reader's per-reading cache token is not written: COCO and VOC exports of one store, made
    one after the other, are equal file for file (it used to make every export's JSON differ)."""
    for to in ("coco", "voc"):
        a, b = tmp_path / f"{to}-a", tmp_path / f"{to}-b"
        _export(base, to, a)
        _export(base, to, b)
        assert _files(a) == _files(b)
        assert all(b"store_token" not in data for data in _files(a).values())
