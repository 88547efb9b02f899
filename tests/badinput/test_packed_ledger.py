"""A damaged packed ledger (issue 16 point 5) through the real CLI: named, never a traceback.

A store made by a real ``prelabel`` run whose ledger was packed (``Ledger.compact``, what a run of
``PACK_MIN`` images or more does at its end) has one line of its pack damaged, or the pack cut short.
``fsck`` names the pack and exits 1; ``export`` reports the images whose receipts were lost, per image,
and exits 1; ``fsck --repair`` rewrites the pack with what it still holds, and ``--resume`` redoes the
lost images: the store is whole again. Nothing is ever read as background.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from segpipe.storage.ledger import Ledger
from segpipe.storage.packs import PACKS, decode_pack
from tests.badinput._corpus import check_bad_input, synth_with_unet
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` (8 street-view images), ``unet.ckpt`` and ``s.zarr`` (a real run, its ledger packed)."""
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    root = tmp_path_factory.mktemp("packed")
    synth_with_unet(root / "data", root / "unet.ckpt", n=8, seed=5, size=(128, 256))
    rep = prelabel(PrelabelRequest(source=str(root / "data" / "images"), model=str(root / "unet.ckpt"),
                                   out=root / "s.zarr", threads=1), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 8
    assert Ledger(root / "s.zarr" / ".segpipe").compact("20260101T000000.000000-packed") == 8
    return root


def _case(base: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "case"
    root.mkdir()
    shutil.copytree(base / "data", root / "data")
    shutil.copytree(base / "s.zarr", root / "s.zarr")
    pack = next((root / "s.zarr" / ".segpipe" / "ledger" / PACKS).glob("*.pack"))
    return root, pack


@pytest.mark.parametrize("how", ["damaged line", "truncated"])
def test_a_damaged_pack_is_named_and_repair_then_resume_restore_the_store(base: Path, tmp_path: Path,
                                                                         how: str) -> None:
    root, pack = _case(base, tmp_path)
    data = pack.read_bytes()
    lines = data.split(b"\n")
    lost = json.loads(lines[-2].split(b"\t", 2)[2])  # the last receipt: lost either way
    if how == "damaged line":
        lines[-2] = lines[-2].replace(b'"status"', b'"statuX"')  # its JSON changed: its checksum fails
        pack.write_bytes(b"\n".join(lines))
        why = "line 9: receipt fails its checksum (damaged)"
    else:
        pack.write_bytes(data[:-30])
        why = "packed ledger truncated: 7 of its 8 receipts read"
    rel = str(pack.relative_to(root))
    r = check_bad_input("fsck", "s.zarr", root=root, code=1, names=[rel], one_line=False)
    assert f"error: {rel}: bad receipt: {why}" in r.stderr, r.stderr
    r = check_bad_input("export", "s.zarr", "out", "--to", "maskdir", "-w", "0", root=root, code=1,
                        names=[lost["file"]], outputs=[root / "out"], one_line=False)
    assert "7/8 images, 1 failed" in r.stdout, r.stdout
    r = run_cli("fsck", "s.zarr", "--repair", cwd=root)
    assert f"rewrote: {rel}: bad receipt: {why}" in r.stdout + r.stderr, r.stdout + r.stderr
    again = decode_pack(pack.read_bytes())
    assert again.problem is None and not again.damaged and len(again.receipts) == 7
    r = run_cli("-q", "prelabel", "data/images", "-m", str(base / "unet.ckpt"), "-o", "s.zarr", "-w", "0",
                "--threads", "1", "--resume", cwd=root)
    assert r.returncode == 0 and "1 done, 7 already done" in r.stdout, r.stdout + r.stderr
    f = run_cli("fsck", "s.zarr", cwd=root)
    assert f.returncode == 0 and "8/8 receipts ok, 0 bad receipts, 0 orphans, 0 problems" in f.stdout, f.stdout
