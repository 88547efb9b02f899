"""Every shipped pipeline validates, and runs end to end on synth data (scaled down for speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from segpipe.pipeline.run import run_pipeline
from segpipe.pipeline.runspec import load_pipeline, validate_pipeline_file
from tests.conftest import run_cli

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


def test_pipelines_exist():
    names = {p.stem for p in PIPELINES}
    assert {"streetview", "bulk_eval", "satellite", "medical"} <= names


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_validates(path):
    assert list(validate_pipeline_file(path)) == []
    r = run_cli("validate", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def _scaled(path: Path, tmp: Path) -> Path:
    """The same pipeline with tiny sizes: few images, one short epoch, a small model."""
    data = yaml.safe_load(path.read_text())
    data["workers"] = 2
    for stage in data["stages"]:
        (name, step), = stage.items()
        if name == "synth":
            step["n"] = min(step.get("n", 16), 6 if step.get("format") in (None, "png", "jpg") else 1)
            if step.get("format") == "geotiff":
                step["size"] = [2300, 2100]  # larger than one block: the scene is split across tasks
            elif step.get("format") != "nifti":
                step["size"] = [64, 128] if step["kind"] == "streetview" else [64, 64]
        if name == "train":  # two epochs whatever the load: bulk_eval ranks both epochs' checkpoints
            step["epochs"] = 2
            step.pop("max_minutes", None)
    out = tmp / path.name
    out.write_text(yaml.safe_dump(data))
    return out


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_runs(path, tmp_path):
    spec = load_pipeline(path)
    scaled = _scaled(path, tmp_path)
    summaries = run_pipeline(scaled, workdir=tmp_path / "work", log=lambda m: None)
    assert [s["step"] for s in summaries] == [s.step()[0] for s in spec.stages]
    work = tmp_path / "work"
    if path.stem == "streetview":
        assert (work / "prelabels.zarr" / "zarr.json").exists()
        assert (work / "export" / "coco" / "annotations" / "instances_train.json").exists()  # no split: train
        assert (work / "export" / "voc" / "VOCdevkit" / "VOC2012" / "SegmentationClass").is_dir()
        assert (work / "export" / "labelstudio" / "tasks.json").exists()
        # The new photos are EXIF-rotated JPEGs: every export is upright (the ground truth's sizes).
        orient = json.loads((work / "data" / "new" / "exif_orientation.json").read_text())
        assert any(v >= 5 for v in orient.values())
        from PIL import Image

        maps = sorted((work / "export" / "cityscapes").rglob("*labelIds.png"))
        assert len(maps) == len(orient)
        gt = json.loads((work / "data" / "new" / "annotations.json").read_text())
        assert {Image.open(m).size for m in maps} == {(im["width"], im["height"]) for im in gt["images"]}
        report = json.loads((work / "report" / "report.json").read_text())
        assert 0.0 <= report["semantic"]["mean_iou"] <= 1.0
        assert report["images"]["evaluated"] == len(orient) and report["images"]["unmatched_gt"] == 0
    elif path.stem == "satellite":
        pytest.importorskip("rasterio")
        assert list((work / "export" / "geotiff" / "labels").glob("*.tif"))
        assert list((work / "export" / "geojson").rglob("*.geojson"))
        report = json.loads((work / "report" / "report.json").read_text())
        assert report["images"]["evaluated"] == 1 and report["images"]["failed"] == 0
        assert 0.0 <= report["semantic"]["mean_iou"] <= 1.0
    elif path.stem == "medical":
        assert list((work / "export" / "nifti" / "labels").glob("*.nii.gz"))
        # the evaluation pairs every slice of the ground-truth label volumes with the store
        import nibabel as nib

        depth = sum(nib.load(f).shape[2] for f in (work / "data" / "volumes" / "labels").glob("*.nii.gz"))
        report = json.loads((work / "report" / "report.json").read_text())
        assert report["gt"]["format"] == "nifti"
        assert report["images"]["evaluated"] == report["images"]["gt"] == report["images"]["pred"] == depth > 0
        assert report["images"]["unmatched_gt"] == report["images"]["unmatched_pred"] == 0
        assert 0.0 <= report["semantic"]["mean_iou"] <= 1.0
    else:
        board = json.loads((work / "report" / "leaderboard.json").read_text())
        assert len(board["rows"]) == 2 and board["best"]
        assert (work / "report" / "metrics.png").exists() and (work / "report" / "leaderboard.md").exists()


def test_stage_output_outside_workdir_is_refused(tmp_path):
    bad = tmp_path / "esc.yaml"
    bad.write_text("version: 1\nstages:\n  - synth: {kind: streetview, out: ../../escaped, n: 2}\n")
    r = run_cli("run", str(bad), "--workdir", str(tmp_path / "work"))
    assert r.returncode == 2
    assert "esc.yaml: stages[0].synth.out: output '../../escaped' is outside the work folder" in r.stderr
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "escaped").exists()
