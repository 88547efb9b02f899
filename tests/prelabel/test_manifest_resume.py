"""A manifest source (``.jsonl``) is measured on the workers, never trusted as written.

Size, content hash, width, height, depth and kind come from each entry's file, as for a folder source:
``--resume`` then redoes exactly the image whose file changed since the first run (the manifest naming
it with or without a ``sha256``), and a stated field the file contradicts fails that entry alone,
naming the manifest, the file and the field, instead of labelling the file under a hash it lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, fsck, prelabel
from segpipe.storage.ledger import Ledger
from segpipe.storage.location import Location
from segpipe.storage.manifest import ManifestEntry, file_sha256, read_manifest
from segpipe.storage.zarrstore import ZarrStore
from tests._s3 import bucket, s3_server
from tests.conftest import run_cli

__all__ = ["bucket", "s3_server"]  # the fixtures, for pytest

#: A scheduler address nothing listens on: a run that tried to reach a cluster would fail.
NO_CLUSTER = ClusterSpec(scheduler="tcp://127.0.0.1:9")


def _source(tmp_path: Path, collection: Path, n: int = 6) -> list[Path]:
    """``n`` images of the collection, last modified an hour ago (well before any run's check time)."""
    src = tmp_path / "imgs"
    src.mkdir()
    old = time.time() - 3600
    files = []
    for p in sorted((collection / "images").iterdir())[:n]:
        q = src / p.name
        q.write_bytes(p.read_bytes())
        os.utime(q, (old, old))
        files.append(q)
    time.sleep(2.5)  # their status change time (now) must lie before the first run's check time too
    return files


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return path


def _entries(out: Path) -> dict[str, ManifestEntry]:
    return {e.file: e for e in read_manifest(out / ".segpipe" / "manifest.jsonl")}


def _labels(out: Path) -> dict[int, np.ndarray]:
    s = ZarrStore.open(out)
    return {i: s.read(i, "labels") for i in s.image_ids()}


def _receipts(out: Path) -> dict[str, int]:
    """Receipt key → the image id it vouches for."""
    return {k: json.loads(d)["image_id"] for k, d, _ in Ledger(out / ".segpipe").contents().sorted_items()}


def test_resume_of_a_manifest_redoes_exactly_the_changed_file(tmp_path, collection, checkpoint):
    files = _source(tmp_path, collection)
    # no sha256, width, height or kind: the manifest only names the images
    manifest = _write_lines(tmp_path / "m.jsonl", [{"id": 100 + k, "file": f"cam/{p.name}", "path": str(p)}
                                                   for k, p in enumerate(files)])
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(manifest), model=str(checkpoint), out=out, threads=1)
    assert prelabel(req, ClusterSpec(workers=0))["images"]["done"] == 6
    first = _entries(out)
    for k, p in enumerate(files):  # measured from the file; the manifest's id and file kept
        e = first[f"cam/{p.name}"]
        assert (e.id, e.path, e.kind, e.error) == (100 + k, str(p), "image", "")
        assert (e.sha256, e.bytes, (e.width, e.height)) == (file_sha256(p), p.stat().st_size, Image.open(p).size)
    labels, receipts = _labels(out), _receipts(out)

    # nothing changed: every entry reused by size and times, no cluster reached, no file hashed
    rep = prelabel(req.model_copy(update={"resume": True}), NO_CLUSTER)
    assert rep["images"]["skipped_already_done"] == 6 and rep["images"]["done"] == 0

    # one file rewritten with another image's bytes: that image alone is redone
    other = sorted((collection / "images").iterdir())[10]
    files[2].write_bytes(other.read_bytes())
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert rep["images"] == {**rep["images"], "done": 1, "skipped_already_done": 5, "failed": 0}, rep["images"]
    after = _entries(out)
    changed = f"cam/{files[2].name}"
    assert after[changed].sha256 == file_sha256(files[2]) != first[changed].sha256
    assert {k: v for k, v in after.items() if k != changed} == {k: v for k, v in first.items() if k != changed}
    # its receipt replaced, the others' kept; its labels are those of the new bytes
    now = _receipts(out)
    assert {k: i for k, i in now.items() if i != 102} == {k: i for k, i in receipts.items() if i != 102}
    assert [i for i in now.values() if i == 102] == [102] and set(now) != set(receipts)
    ref_src = tmp_path / "ref"
    ref_src.mkdir()
    (ref_src / files[2].name).write_bytes(other.read_bytes())
    prelabel(PrelabelRequest(source=str(ref_src), model=str(checkpoint), out=tmp_path / "ref.zarr", threads=1),
             ClusterSpec(workers=0))
    (ref,) = _labels(tmp_path / "ref.zarr").values()
    new_labels = _labels(out)
    np.testing.assert_array_equal(new_labels[102], ref)
    for i in labels:
        if i != 102:
            np.testing.assert_array_equal(new_labels[i], labels[i])
    assert fsck(out)["ok"] == 6

    # the same size, a byte changed (a PNG's last CRC byte): found by content too
    data = bytearray(files[4].read_bytes())
    data[-1] ^= 0xFF
    files[4].write_bytes(bytes(data))
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 1 and rep["images"]["skipped_already_done"] == 5, rep["images"]
    assert _entries(out)[f"cam/{files[4].name}"].sha256 == file_sha256(files[4])


def test_a_stated_sha256_the_file_contradicts_fails_that_entry_on_a_dask_worker(tmp_path, collection, checkpoint):
    files = _source(tmp_path, collection)
    lines = [{"id": k + 1, "file": p.name, "path": str(p), "sha256": file_sha256(p)} for k, p in enumerate(files)]
    _write_lines(tmp_path / "m.jsonl", lines)
    args = ("prelabel", "m.jsonl", "--model", str(checkpoint), "--out", "s.zarr", "-w", "1", "--threads", "1")
    r = run_cli(*args, cwd=tmp_path)  # -w 1: one worker process of an embedded Dask cluster measures them
    assert r.returncode == 0, r.stderr
    assert "6 done" in r.stdout
    # the file changes after the run; the manifest, as it is, states the old hash: that entry fails
    # (it used to keep its stale labels, the manifest's hash matching the old receipt's key)
    other = sorted((collection / "images").iterdir())[10]
    files[3].write_bytes(other.read_bytes())
    r = run_cli(*args, "--resume", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "0 done, 5 already done, 1 failed" in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {files[3].name}: sha256 in the manifest m.jsonl does not match the file {files[3]}: "
                      f"the manifest says {lines[3]['sha256'][:12]}…, the file has {file_sha256(files[3])[:12]}…"]
    report = json.loads(next(iter(sorted((tmp_path / "s.zarr" / ".segpipe" / "runs").glob("*.json"))[-1:])).read_text())
    assert [(f["file"], f["image_id"]) for f in report["failed"]] == [(files[3].name, 4)]
    e = _entries(tmp_path / "s.zarr")[files[3].name]
    assert e.kind == "invalid" and e.sha256 == file_sha256(files[3])  # the file's hash, never the manifest's
    # a wrong width, and a wrong byte count: each fails its entry, naming its field; the rest are done
    lines[3]["sha256"] = file_sha256(files[3])
    lines[1]["width"] = 999
    lines[5]["bytes"] = 7
    _write_lines(tmp_path / "m.jsonl", lines)
    r = run_cli(*args, "--resume", cwd=tmp_path)
    assert r.returncode == 1 and "1 done, 3 already done, 2 failed" in r.stdout, r.stdout + r.stderr
    assert f"error: {files[1].name}: width in the manifest m.jsonl does not match the file {files[1]}: " \
           f"the manifest says 999, the file has 256" in r.stderr
    assert f"error: {files[5].name}: bytes in the manifest m.jsonl does not match the file {files[5]}: " \
           f"the manifest says 7, the file has {files[5].stat().st_size}" in r.stderr


def test_a_manifest_of_s3_objects_is_measured_and_resumes_by_content(bucket, collection, checkpoint, tmp_path):
    loc = Location(f"s3://{bucket}")
    images = sorted((collection / "images").iterdir())[:4]
    for p in images:
        loc.write_bytes(f"imgs/{p.name}", p.read_bytes())
    lines: list[dict[str, Any]] = [{"id": k + 1, "file": p.name, "path": f"s3://{bucket}/imgs/{p.name}"}
                                   for k, p in enumerate(images)]
    lines[1]["sha256"] = "ab" * 32  # wrong
    loc.write_bytes("m.jsonl", "".join(json.dumps(d) + "\n" for d in lines).encode())
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=f"s3://{bucket}/m.jsonl", model=str(checkpoint), out=out, threads=1)
    # one worker process of an embedded Dask cluster reads the objects (an in-process run would reuse the
    # decoder child an earlier test of this process started, before the S3 server's environment was set)
    rep = prelabel(req, ClusterSpec(workers=1))
    assert rep["images"]["done"] == 3 and rep["images"]["failed"] == 1, (rep["images"], rep["failed"])
    assert [(f["file"], f["reason"]) for f in rep["failed"]] == [(
        images[1].name, f"sha256 in the manifest s3://{bucket}/m.jsonl does not match the file "
                        f"s3://{bucket}/imgs/{images[1].name}: the manifest says abababababab…, the file has "
                        f"{file_sha256(images[1])[:12]}…")]
    entries = _entries(out)
    assert {f: (e.sha256, e.bytes, e.kind) for f, e in entries.items() if f != images[1].name} == \
        {p.name: (file_sha256(p), p.stat().st_size, "image") for p in images if p != images[1]}
    # an object replaced by other bytes, and the wrong hash removed: both redone, the others skipped
    other = sorted((collection / "images").iterdir())[10]
    loc.write_bytes(f"imgs/{images[0].name}", other.read_bytes())
    del lines[1]["sha256"]
    loc.write_bytes("m.jsonl", "".join(json.dumps(d) + "\n" for d in lines).encode())
    rep = prelabel(req.model_copy(update={"resume": True}), ClusterSpec(workers=1))
    assert rep["images"] == {**rep["images"], "done": 2, "skipped_already_done": 2, "failed": 0}, rep["images"]
    assert _entries(out)[images[0].name].sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
    assert fsck(out)["ok"] == 4


def test_a_volume_named_by_a_manifest_is_measured_as_a_volume(tmp_path, checkpoint):
    nib = pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
    from segpipe.storage.volume import open_volume
    from segpipe.synth import synth

    synth("medical", tmp_path / "med", n=1, seed=0, image_format="nifti")
    vol = next((tmp_path / "med" / "volumes").glob("*.nii.gz"))
    depth = nib.load(vol).shape[2]
    # no kind, no depth: both come from the file; its sha256 as `sha256sum` prints it is accepted
    manifest = _write_lines(tmp_path / "m.jsonl", [{"id": 7, "file": "ct/v.nii.gz", "path": str(vol),
                                                    "sha256": file_sha256(vol)}])
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(manifest), model=str(checkpoint), out=out, threads=1, window="40,400",
                          probs=False)
    rep = prelabel(req, ClusterSpec(workers=0))
    assert rep["items"]["volumes"] == 1 and rep["images"]["done"] == depth and rep["images"]["failed"] == 0
    e = _entries(out)["ct/v.nii.gz"]
    assert (e.kind, e.bytes, (e.depth, e.height, e.width)) == ("volume", vol.stat().st_size, open_volume(vol).shape)
    assert e.depth == depth


def test_a_dicom_series_is_measured_from_its_folder_or_one_of_its_files(tmp_path):
    pytest.importorskip("pydicom", reason="pydicom (segpipe[medical]) is not installed")
    from segpipe.kernels.prelabel.ingest import describe_entries
    from segpipe.storage.volume import open_volume
    from segpipe.synth import synth

    synth("medical", tmp_path / "med", n=1, seed=0, image_format="dicom")
    series = next((tmp_path / "med" / "dicom").iterdir())
    one = sorted(series.iterdir())[3]
    given = [ManifestEntry(1, "a", str(series)), ManifestEntry(2, "b", str(one), kind="image")]
    a, b = describe_entries("m.jsonl", given)
    files = sorted(series.iterdir())
    # one item, the series: every file hashed (as a folder source hashes it), whichever path names it
    assert (a.kind, b.kind) == ("volume", "volume") and a.sha256 == b.sha256 != file_sha256(one)
    assert (a.depth, a.height, a.width) == open_volume(series).shape and a.depth == len(files)
    assert a.bytes == b.bytes == sum(f.stat().st_size for f in files)
    assert (b.id, b.file, b.path) == (2, "b", str(one))  # the manifest's own id, file and path kept


@pytest.mark.parametrize("damage", [b"\xff\xfe garbage\n", b'{"id": 1, "file": '], ids=["not utf-8", "torn line"])
def test_a_store_manifest_that_cannot_be_read_is_named_once_and_resume_hashes_again(tmp_path, collection,
                                                                                    checkpoint, damage):
    # a non-UTF-8 store manifest stopped --resume with "not UTF-8 text (byte …)", naming no file (the user's
    # manifest was fine); a torn one was passed over in silence
    files = _source(tmp_path, collection, n=3)
    manifest = _write_lines(tmp_path / "m.jsonl", [{"id": 10 + k, "file": p.name, "path": str(p)}
                                                   for k, p in enumerate(files)])
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(manifest), model=str(checkpoint), out=out, threads=1)
    assert prelabel(req, ClusterSpec(workers=0))["images"]["done"] == 3
    first = _entries(out)
    store_manifest = out / ".segpipe" / "manifest.jsonl"
    store_manifest.write_bytes(damage)
    r = run_cli("prelabel", str(manifest), "--model", str(checkpoint), "--out", str(out), "-w", "0", "--resume",
                cwd=tmp_path)
    assert r.returncode == 0 and "0 done, 3 already done" in r.stdout, r.stderr
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and f"{store_manifest}: line 1: " in warned[0], r.stderr
    assert "every item is measured and hashed again" in warned[0]
    assert "Traceback" not in r.stderr and "error:" not in r.stderr
    assert _entries(out) == first  # written anew from the files, as the first run wrote it
    assert fsck(out)["ok"] == 3


def test_a_relative_path_is_read_beside_the_manifest_whatever_the_current_folder(tmp_path, collection, checkpoint):
    """``path: imgs/a.png`` names the file beside the manifest, as a manifest in a bucket names one beside it:
    run from another folder that holds a different ``imgs/a.png``, the run still labels the manifest's."""
    files = _source(tmp_path, collection, n=2)
    manifest = _write_lines(tmp_path / "m.jsonl", [{"id": 7 + k, "file": p.name, "path": f"imgs/{p.name}"}
                                                   for k, p in enumerate(files)])
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "imgs").mkdir(parents=True)
    decoy = sorted((collection / "images").iterdir())[10]
    for p in files:  # the same names, other images: what the current folder would have read
        (elsewhere / "imgs" / p.name).write_bytes(decoy.read_bytes())
    out = tmp_path / "s.zarr"
    r = run_cli("prelabel", str(manifest), "-m", str(checkpoint), "-o", str(out), "-w", "0", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    for k, p in enumerate(files):
        e = _entries(out)[p.name]
        assert (e.id, e.path, e.sha256) == (7 + k, str(p), file_sha256(p)) != (7 + k, str(p), file_sha256(decoy))
    # resumed from the manifest's own folder: the same files, nothing redone
    r = run_cli("prelabel", "m.jsonl", "-m", str(checkpoint), "-o", str(out), "-w", "0", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(sorted((out / ".segpipe" / "runs").glob("*.json"))[-1].read_text())["images"]["done"] == 0
