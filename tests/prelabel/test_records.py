"""The typed records of pre-labeling against what a real run writes: receipts, run reports, task keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.kernels.prelabel.tasks import (
    PrelabelTask,
    Receipt,
    SceneBlock,
    VolumeSlab,
    VolumeSlice,
    WholeImage,
)
from segpipe.pipeline.prelabel import PrelabelReport, PrelabelRequest, fsck, prelabel
from segpipe.pipeline.prelabel.plan import plan_tasks, task_key
from segpipe.storage.manifest import ManifestEntry

#: The run report's keys, in the order of every run file written so far.
REPORT_KEYS = ["run_id", "segpipe_version", "store", "source", "model", "images", "items", "failed",
               "throughput_img_s", "stage_seconds", "workers", "threads_per_worker", "dashboard", "stopped_on_error",
               "elapsed_s", "prompts"]


def _receipts(store: Path) -> list[tuple[bytes, dict]]:
    files = sorted((store / ".segpipe" / "ledger").rglob("*.json"))
    return [(p.read_bytes(), json.loads(p.read_bytes())) for p in files]


def _same_json(record: dict, written: bytes) -> bool:
    """``record`` written as the ledger writes a receipt (compact, key order kept) gives ``written``."""
    return (json.dumps(record, ensure_ascii=False) + "\n").encode() == written


def test_receipts_and_the_run_report_are_the_typed_records_json(tmp_path, collection, checkpoint):
    """Stacked images, one too large to stack: every receipt reads back into a Receipt and writes the same bytes."""
    from PIL import Image

    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted((collection / "images").iterdir()):
        (src / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (1100, 1000), (40, 90, 160)).save(src / "zz_large.png")  # above STACK_PIXELS: its own group
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 25 and fsck(out)["ok"] == 25
    receipts = _receipts(out)
    assert sum("stack" in rec for _, rec in receipts) == 24 and sum("stack" not in rec for _, rec in receipts) == 1
    for written, rec in receipts:
        assert _same_json(Receipt.from_json(rec).to_json(), written)
    (run,) = (out / ".segpipe" / "runs").glob("*.json")
    on_disk = json.loads(run.read_text())
    assert list(on_disk) == REPORT_KEYS and on_disk == rep
    assert PrelabelReport.model_validate(on_disk).model_dump(mode="json") == on_disk


def test_volume_slices_and_scene_blocks_receipts_round_trip(tmp_path, checkpoint):
    pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")
    pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
    from segpipe.synth import synth

    synth("medical", tmp_path / "med", n=1, seed=0, image_format="nifti")
    synth("satellite", tmp_path / "sat", n=1, seed=0, size=(300, 260), image_format="geotiff")
    for name, source, kw in (("m", tmp_path / "med" / "volumes", {"window": "40,400"}),
                             ("g", tmp_path / "sat" / "images", {})):
        out = tmp_path / f"{name}.zarr"
        rep = prelabel(PrelabelRequest(source=str(source), model=str(checkpoint), out=out, threads=1, **kw),
                       ClusterSpec(workers=0))
        assert rep["images"]["failed"] == 0 and rep["images"]["done"] == fsck(out)["ok"] > 0
        receipts = _receipts(out)
        assert all(("z" in rec) == (name == "m") and ("window" in rec) == (name == "g") for _, rec in receipts)
        for written, rec in receipts:
            assert _same_json(Receipt.from_json(rec).to_json(), written)


def test_plan_keys_name_each_part_as_earlier_stores_did():
    """Resume finds an earlier run's receipts only if every key is hashed from the same part string."""
    cfg = "c" * 64
    img = ManifestEntry(id=1, file="a.png", path="/x/a.png", width=64, height=48, sha256="s1")
    scene = ManifestEntry(id=2, file="s.tif", path="/x/s.tif", width=2100, height=3000, sha256="s2", kind="scene")
    vol = ManifestEntry(id=3, file="v.nii.gz", path="/x/v.nii.gz", width=8, height=8, sha256="s3", kind="volume",
                        depth=3)
    bad = ManifestEntry(id=4, file="b.png", path="/x/b.png", kind="invalid", error="unreadable")
    tasks = plan_tasks([img, scene, vol, bad], cfg)
    windows = [(0, 2048, 0, 2048), (0, 2048, 2048, 2100), (2048, 3000, 0, 2048), (2048, 3000, 2048, 2100)]
    assert tasks == [
        PrelabelTask(task_key(cfg, img), img, WholeImage()),
        *(PrelabelTask(task_key(cfg, scene, f"block{list(w)}"), scene, SceneBlock(w)) for w in windows),
        *(PrelabelTask(task_key(cfg, vol, f"z{z}"), vol, VolumeSlice(z)) for z in range(3)),
    ]
    assert tasks[1].key == task_key(cfg, scene, "block[0, 2048, 0, 2048]")
    slabs = plan_tasks([vol], cfg, slab=2)
    assert slabs == [PrelabelTask(task_key(cfg, vol, "slab[0, 2]"), vol, VolumeSlab(0, 2)),
                     PrelabelTask(task_key(cfg, vol, "slab[2, 3]"), vol, VolumeSlab(2, 3))]
    assert slabs[1].image_ids() == [tasks[-1].image_ids()[0]]  # slice 2: the same image id either way


def test_the_run_report_fits_its_checked_in_schema(tmp_path, collection, checkpoint):
    """``schemas/prelabel_report.schema.json`` (what editors and other tools read) accepts what a real run writes,
    and refuses a report missing a field; the run goes through the Python API's typed request."""
    import jsonschema

    import segpipe
    from tests.conftest import REPO

    out = tmp_path / "s.zarr"
    rep = segpipe.prelabel(str(collection / "images"), model=checkpoint, out=out, threads=1, limit=3, workers=0)
    assert rep.images.done == 3
    (run,) = (out / ".segpipe" / "runs").glob("*.json")
    schema = json.loads((REPO / "schemas" / "prelabel_report.schema.json").read_text())
    on_disk = json.loads(run.read_text())
    jsonschema.validate(on_disk, schema)
    del on_disk["images"]
    with pytest.raises(jsonschema.ValidationError, match="images"):
        jsonschema.validate(on_disk, schema)


def test_run_report_names_sort_in_the_order_the_runs_started():
    """Names made within one second (a quick ``--resume``) sort as made, and after a name of the old form."""
    from segpipe.pipeline.prelabel.driver import _run_id

    made = [_run_id() for _ in range(200)]
    assert sorted(made) == made and len(set(made)) == 200
    second = made[0].split(".")[0]
    assert sorted([made[0], f"{second}-ffffff"]) == [f"{second}-ffffff", made[0]]  # written before this change
