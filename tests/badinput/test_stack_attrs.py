"""A stack's ``attrs`` (each slot's image attributes, which exports name masks by) damaged, through the CLI.

A store of 8 images made by a real ``prelabel`` run (one stack, one shard) has one slot's ``file``
attribute hand-edited, its ``attrs`` chunk replaced by bytes that do not decode, or its ``attrs``
metadata broken. ``fsck`` names the chunk file, the stack, the slot and the field, exits 1 and
changes nothing; an export fails the image it would have misnamed, naming it; nothing is ever
exported under another image's name.
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

STACK = "128x256"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` (8 street-view images: one stack of 128x256), ``unet.ckpt`` and ``s.zarr`` (a real run)."""
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    root = tmp_path_factory.mktemp("stackattrs")
    synth_with_unet(root / "data", root / "unet.ckpt", n=8, seed=5, size=(128, 256))
    rep = prelabel(PrelabelRequest(source=str(root / "data" / "images"), model=str(root / "unet.ckpt"),
                                   out=root / "s.zarr", threads=1, probs=False), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 8
    return root


def _case(base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "case"
    root.mkdir()
    shutil.copytree(base / "data", root / "data")
    shutil.copytree(base / "s.zarr", root / "s.zarr")
    return root


def test_one_slot_whose_file_attribute_was_edited(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    arr = zarr.open_array(str(root / "s.zarr" / "stacks" / STACK / "attrs"), mode="r+")
    values = [str(v) for v in np.asarray(arr[...]).tolist()]
    attrs = json.loads(values[3])
    real = attrs["file"]
    attrs["file"] = "someone_else.png"
    values[3] = json.dumps(attrs, sort_keys=True)
    arr[...] = np.array(values, dtype=object)
    chunk = f"s.zarr/stacks/{STACK}/attrs/c/0"
    r = check_bad_input("fsck", "s.zarr", root=root, code=1,
                        names=[chunk, f"slot 3 of stacks/{STACK}", 'attrs say file "someone_else.png"',
                               f'says file "{real}"'])
    assert "1 slots with wrong attrs" in r.stdout, r.stdout
    r = check_bad_input("export", "s.zarr", "out", "--to", "coco", "-w", "0", root=root, code=1,
                        names=[real, chunk, "file"], outputs=[root / "out"], one_line=False)
    assert "7/8 images, 1 failed" in r.stdout, r.stdout
    assert "someone_else" not in (root / "out" / "annotations" / "instances_train.json").read_text()


def test_an_attrs_chunk_that_does_not_decode(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    chunk = root / "s.zarr" / "stacks" / STACK / "attrs" / "c" / "0"
    chunk.write_bytes(b"not a zstd frame" * 4)
    r = check_bad_input("fsck", "s.zarr", root=root, code=1, one_line=False,
                        names=[f"s.zarr/stacks/{STACK}/attrs/c/0",
                               "its attrs cannot be read: its chunk does not decode"])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert [ln.split(" (image id")[0].split(": ", 2)[2] for ln in errors] == [f"slot {j} of stacks/{STACK}"
                                                                           for j in range(8)], r.stderr
    r = run_cli("fsck", "s.zarr", "--repair", cwd=root)
    assert r.returncode == 0 and "8 slots with wrong attrs, 8 repaired" in r.stdout, r.stdout + r.stderr
    assert run_cli("fsck", "s.zarr", cwd=root).returncode == 0


def test_attrs_metadata_that_is_not_json(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path)
    (root / "s.zarr" / "stacks" / STACK / "attrs" / "zarr.json").write_bytes(b"{not json")
    check_bad_input("fsck", "s.zarr", root=root, code=2, names=[f"s.zarr/stacks/{STACK}/attrs/zarr.json"])
