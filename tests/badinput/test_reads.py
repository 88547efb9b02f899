"""Reads verify what writes promised: damaged stores through the real CLI (issue 13, point 2).

Each case copies a store made by a real ``prelabel`` run, damages one thing (a deleted shard file, a
duplicated slot id, an unwritten slot, garbage chunk bytes, a truncated receipt, a corrupt
``zarr.json``) and runs ``export``, ``evaluate`` or ``fsck`` on it: the damaged images are per-image
problems naming the file and the command exits 1 (a corrupt ``zarr.json`` a store-level error, one
line, exit 2); nothing is ever read as background.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.badinput._corpus import check_bad_input, synth_with_unet
from tests.conftest import run_cli

STACK = "stacks/128x256"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``data/`` (16 street-view images with masks), ``unet.ckpt`` and two stores.

    ``s.zarr`` (layout 2: one stack of 16 slots, two shard files) and ``g.zarr`` (4 images: layout-1
    groups), both from real in-process prelabel runs.
    """
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    root = tmp_path_factory.mktemp("reads")
    synth_with_unet(root / "data", root / "unet.ckpt", n=16, seed=3, size=(128, 256))
    for out, limit in (("s.zarr", None), ("g.zarr", 4)):
        rep = prelabel(PrelabelRequest(source=str(root / "data" / "images"), model=str(root / "unet.ckpt"),
                                       out=root / out, threads=1, limit=limit), ClusterSpec(workers=0))
        assert rep["images"]["failed"] == 0
    assert (root / "s.zarr" / STACK / "labels" / "c.1.0.0").is_file()
    assert len(list((root / "g.zarr" / "images").iterdir())) == 5  # 4 groups and zarr.json
    return root


def _case(base: Path, tmp_path: Path, store: str = "s.zarr") -> Path:
    """A fresh copy of the data and ``store`` under ``tmp_path/case`` (the case's root)."""
    root = tmp_path / "case"
    root.mkdir()
    shutil.copytree(base / "data", root / "data")
    shutil.copytree(base / store, root / store)
    return root


def _slots(store: Path) -> list[tuple[int, str]]:
    """``(image id, file)`` of every slot of the stack, in slot order."""
    g = zarr.open_group(str(store / STACK), mode="r")
    return [(int(i), json.loads(str(a))["file"]) for i, a in zip(g["ids"][...], g["attrs"][...], strict=True)]


def _stem(file: str) -> str:
    return Path(file).stem


def test_deleted_shard_is_a_per_image_problem_never_background(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    shard = "s.zarr/stacks/128x256/labels/c.1.0.0"
    (root / shard).unlink()
    lost = [f for _, f in _slots(root / "s.zarr")[8:16]]
    r = check_bad_input("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[shard, *lost], outputs=[root / "out"], one_line=False)
    assert "8/16 images, 8 failed" in r.stdout and "lossless: nothing" not in r.stdout
    written = sorted(p.stem for p in (root / "out" / "masks").iterdir())
    assert written == sorted(_stem(f) for _, f in _slots(root / "s.zarr")[:8])  # no background for the rest
    report = json.loads((root / "out" / "conversion_report.json").read_text())
    assert report["images"]["failed"] == 8 and {p["file"] for p in report["problems"]} == set(lost)
    r = check_bad_input("evaluate", "data", "s.zarr", "-w", "0", root=root, code=1, names=[shard, *lost],
                        one_line=False)
    assert "8/16 images evaluated, 8 failed" in r.stdout


def test_duplicated_slot_id(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    slots = _slots(root / "s.zarr")
    ids = zarr.open_array(str(root / "s.zarr" / STACK / "ids"), mode="r+")
    ids[3] = slots[5][0]  # slot 3 now claims the image of slot 5: its own image is nowhere
    r = check_bad_input("fsck", "s.zarr", root=root, code=1, names=["s.zarr/stacks/128x256/ids"], one_line=False)
    assert "several slots" in r.stderr and str(slots[5][0]) in r.stderr and str(slots[3][0]) in r.stderr
    r = check_bad_input("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[slots[3][1], slots[5][1]], outputs=[root / "out"], one_line=False)
    assert "14/16 images, 2 failed" in r.stdout


def test_unwritten_slot(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    file = _slots(root / "s.zarr")[2][1]
    zarr.open_array(str(root / "s.zarr" / STACK / "done"), mode="r+")[2] = 0
    r = check_bad_input("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[file, "s.zarr/stacks/128x256/done"], outputs=[root / "out"], one_line=False)
    assert "not written" in r.stderr and not (root / "out" / "masks" / f"{_stem(file)}.png").exists()
    check_bad_input("evaluate", "data", "s.zarr", "-w", "0", root=root, code=1, names=[file], one_line=False)
    check_bad_input("fsck", "s.zarr", root=root, code=1, names=["s.zarr/stacks/128x256/done"], one_line=False)


def test_garbage_chunk_bytes(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    shard = "s.zarr/stacks/128x256/labels/c.0.0.0"
    (root / shard).write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    first = [f for _, f in _slots(root / "s.zarr")[:8]]
    r = check_bad_input("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[shard, *first], outputs=[root / "out"], one_line=False)
    assert "damaged shard" in r.stderr and len(list((root / "out" / "masks").iterdir())) == 8
    check_bad_input("evaluate", "data", "s.zarr", "-w", "0", root=root, code=1, names=[shard], one_line=False)
    check_bad_input("fsck", "s.zarr", root=root, code=1, names=[shard], one_line=False)


def test_garbage_done_chunk_is_one_line(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    chunk = "s.zarr/stacks/128x256/done/c.1"
    (root / chunk).write_bytes(b"\x00garbage, not a zstd frame")
    for args in (("export", "s.zarr", "out", "--to", "maskdir", "-w", "0"), ("evaluate", "data", "s.zarr", "-w", "0")):
        check_bad_input(*args, root=root, code=2, names=[chunk], outputs=[root / "out"])
    check_bad_input("fsck", "s.zarr", root=root, code=1, names=[chunk], one_line=False)


@pytest.mark.parametrize("doc", ["s.zarr/zarr.json", "s.zarr/stacks/128x256/labels/zarr.json",
                                 "s.zarr/stacks/zarr.json"])
def test_corrupt_zarr_json_is_one_line_naming_it(base: Path, tmp_path: Path, doc: str) -> None:
    root = _case(base, tmp_path)
    (root / doc).write_text('{"zarr_format": 3, "node_ty')
    for args in (("export", "s.zarr", "out", "--to", "maskdir", "-w", "0"), ("evaluate", "data", "s.zarr", "-w", "0"),
                 ("fsck", "s.zarr")):
        check_bad_input(*args, root=root, code=2, names=[doc], outputs=[root / "out"])


def test_group_layout_missing_chunk_and_corrupt_metadata(base: Path, tmp_path: Path) -> None:
    """Layout-1 groups (``images/<id>/``) are verified against their receipts too."""
    root = _case(base, tmp_path, "g.zarr")
    groups = sorted(p for p in (root / "g.zarr" / "images").iterdir() if p.is_dir())
    chunk = next((groups[0] / "labels").glob("c.*"))
    chunk.unlink()  # its image would read as all background
    meta = groups[1] / "labels" / "zarr.json"
    meta.write_text("not json")
    files = [json.loads((g / "zarr.json").read_text())["attributes"]["file"] for g in groups[:2]]
    r = check_bad_input("export", "g.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[*files, str(groups[0].relative_to(root) / "labels"), str(meta.relative_to(root))],
                        outputs=[root / "out"], one_line=False)
    assert "2/4 images, 2 failed" in r.stdout
    check_bad_input("evaluate", "data", "g.zarr", "-w", "0", root=root, code=1, names=files, one_line=False)


def test_corrupt_receipt_is_redone_by_resume(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    ledger = root / "s.zarr" / ".segpipe" / "ledger"
    receipts = sorted(ledger.glob("*.json"))
    truncated, foreign = receipts[2], receipts[5]
    image = json.loads(truncated.read_text())
    truncated.write_bytes(truncated.read_bytes()[:60])
    foreign.write_text("[]")  # JSON, but no receipt
    rel = str(truncated.relative_to(root))
    r = check_bad_input("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[rel, str(foreign.relative_to(root)), image["file"]], outputs=[root / "out"],
                        one_line=False)
    assert "no receipt vouches" in r.stderr
    r = run_cli("prelabel", "data/images", "-m", str(base / "unet.ckpt"), "-o", "s.zarr", "-w", "0", "--threads", "1",
                "--resume", cwd=root)
    assert r.returncode == 0 and "2 done, 14 already done" in r.stdout, r.stdout + r.stderr
    redone = json.loads(truncated.read_text())
    assert redone["outputs"] == image["outputs"] and redone["slot"] == image["slot"]  # same key, same bytes
    assert json.loads(foreign.read_text())["status"] == "done"
    assert run_cli("fsck", "s.zarr", cwd=root).returncode == 0
    assert run_cli("export", "s.zarr", "out2", "--to", "maskdir", "-w", "0", cwd=root).returncode == 0


# ------------------------------------------------------------- resume trusts only what the store holds


def _damage(store: Path, how: str) -> list[int]:
    """Damages the stack of ``store`` one way; returns the slots whose images must be redone."""
    if how == "unwritten slot":
        zarr.open_array(str(store / STACK / "done"), mode="r+")[2] = 0
        return [2]
    if how == "garbage shard":
        (store / STACK / "labels" / "c.1.0.0").write_bytes(
            np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
        return list(range(8, 16))
    if how == "missing shard":
        (store / STACK / "probs" / "c.0.0.0.0").unlink()
        return list(range(8))
    ids = zarr.open_array(str(store / STACK / "ids"), mode="r+")
    ids[3] = ids[5]  # duplicated id: slot 3's own image is nowhere
    return [3, 5]


@pytest.mark.parametrize("how", ["unwritten slot", "garbage shard", "missing shard", "duplicated id"])
def test_resume_redoes_what_the_store_contradicts_and_fsck_is_clean(base: Path, tmp_path: Path, how: str) -> None:
    """--resume runs what is missing: a receipt whose slot, id or shard file the store contradicts is not done."""
    root = _case(base, tmp_path)
    before = {json.loads(p.read_text())["image_id"]: json.loads(p.read_text())["outputs"]
              for p in (root / "s.zarr" / ".segpipe" / "ledger").glob("*.json")}
    redo = _damage(root / "s.zarr", how)
    assert run_cli("fsck", "s.zarr", cwd=root).returncode == 1
    r = run_cli("-q", "prelabel", "data/images", "-m", str(base / "unet.ckpt"), "-o", "s.zarr", "-w", "0",
                "--threads", "1", "--resume", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(redo)} done, {16 - len(redo)} already done" in r.stdout, r.stdout
    f = run_cli("fsck", "s.zarr", cwd=root)
    clean = "16/16 receipts ok, 0 bad receipts, 0 orphans, 0 problems"
    assert f.returncode == 0 and clean in f.stdout, f.stdout + f.stderr
    after = {json.loads(p.read_text())["image_id"]: json.loads(p.read_text())["outputs"]
             for p in (root / "s.zarr" / ".segpipe" / "ledger").glob("*.json")}
    assert after == before  # the same key gives the same bytes
    r = run_cli("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", cwd=root)
    assert r.returncode == 0 and "16/16 images" in r.stdout, r.stdout + r.stderr


def test_fsck_names_the_missing_file_in_plain_words_and_counts_what_it_reports(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    shard = "s.zarr/stacks/128x256/labels/c.1.0.0"
    (root / shard).unlink()
    garbage = "s.zarr/stacks/128x256/probs/c.0.0.0.0"
    (root / garbage).write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    r = check_bad_input("fsck", "s.zarr", root=root, code=1, names=[shard, garbage], one_line=False)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert sum(f"{shard}: labels: missing shard file" in ln for ln in errors) == 8, r.stderr
    assert sum(f"{garbage}: probs: damaged shard file" in ln for ln in errors) == 8, r.stderr
    assert not any("Error:" in ln or "b'" in ln or "checksum mismatch" in ln for ln in errors), r.stderr
    assert "0/16 receipts ok, 16 bad receipts, 0 orphans, 0 problems" in r.stdout, r.stdout
