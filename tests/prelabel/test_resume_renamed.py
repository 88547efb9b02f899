"""``--resume`` after an entry's ``file`` was renamed in a manifest source redoes that image under its new name.

A task key hashes the config, the id and the content, not the name (existing stores' receipts keep
matching), so a renamed entry used to count as "already done": its receipt and stack ``attrs`` kept the
old name, the exports named its mask after it while the store's manifest had the new one, and fsck
found nothing. Now a receipt whose ``file`` is not its planned entry's is not done: the image is redone
in its slot, and its receipt, its attributes and the exports carry the new name. Real runs (the prelabel
API, in-process workers), checked and exported through the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.ledger import Ledger
from segpipe.storage.stacks import SHARD
from tests.conftest import run_cli

STACK = "128x256"


def _write(manifest: Path, names: list[str], images: list[Path]) -> None:
    manifest.write_text("".join(json.dumps({"id": k + 1, "file": n, "path": str(p)}) + "\n"
                                for k, (n, p) in enumerate(zip(names, images, strict=True))))


def _run(manifest: Path, out: Path, checkpoint: Path, resume: bool) -> dict:
    return prelabel(PrelabelRequest(source=str(manifest), model=str(checkpoint), out=out, threads=1, probs=False,
                                    resume=resume), ClusterSpec(workers=0))


def _names(out: Path) -> dict[int, str]:
    """Image id → the ``file`` its receipt records, asserted equal to its slot's (or group's) attributes."""
    recs = [json.loads(data) for data, _ in Ledger(out / ".segpipe").contents().receipts.values()]
    receipts = {int(r["image_id"]): r["file"] for r in recs}
    if (out / "stacks").exists():
        attrs = [json.loads(str(v)) for v in zarr.open_array(str(out / "stacks" / STACK / "attrs"), mode="r")[...]
                 .tolist() if str(v)]
        stored = {int(a["id"]): a["file"] for a in attrs}
    else:
        stored = {i: zarr.open_group(str(out / "images" / str(i)), mode="r").attrs["file"] for i in receipts}
    assert {i: stored[i] for i in receipts} == receipts
    return receipts


@pytest.mark.parametrize("n", [SHARD, 4], ids=["stacked", "groups"])
def test_a_renamed_and_two_swapped_entries_are_redone_under_their_new_names(tmp_path: Path, collection: Path,
                                                                            checkpoint: Path, n: int) -> None:
    """``n`` images: a stack's slots (a shard's worth), or a group each (too few to stack)."""
    images = sorted((collection / "images").glob("*.png"))[:n]
    first = [f"{k:02d}.png" for k in range(n)]
    manifest, out = tmp_path / "m.jsonl", tmp_path / "s.zarr"
    _write(manifest, first, images)
    assert _run(manifest, out, checkpoint, False)["images"]["done"] == n
    assert (out / "stacks").exists() == (n == SHARD)

    now = ["00.png", "renamed.png", "03.png", "02.png", *first[4:]]  # 1 renamed, 2 and 3 swapped
    _write(manifest, now, images)
    rep = _run(manifest, out, checkpoint, True)
    assert (rep["images"]["done"], rep["images"]["skipped_already_done"]) == (3, n - 3)
    assert _names(out) == {k + 1: name for k, name in enumerate(now)}
    f = run_cli("fsck", str(out))
    assert f.returncode == 0 and f"{n}/{n} receipts ok, 0 bad receipts, 0 orphans, 0 problems\n" in f.stdout, \
        f.stdout + f.stderr
    r = run_cli("export", str(out), str(tmp_path / "coco"), "--to", "coco", "-w", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert sorted((i["id"], i["file_name"]) for i in doc["images"]) == [(k + 1, name) for k, name in enumerate(now)]
    sem = tmp_path / "coco" / "annotations" / "semantic_train"
    assert sorted(p.name for p in sem.iterdir()) == sorted(now)

    rep = _run(manifest, out, checkpoint, True)  # nothing renamed since: all done
    assert (rep["images"]["done"], rep["images"]["skipped_already_done"]) == (0, n)
