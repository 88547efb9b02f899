"""Regressions for defects found in review: each reproduces the reported command and checks the fix."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import convert
from segpipe.pipeline.requests import ConvertRequest
from segpipe.storage.images import read_label_map
from tests.conftest import run_cli

#: Where the default VOC layout puts the VOC root (torchvision's VOCSegmentation(root=out) looks there).
VOC_ROOT = "VOCdevkit/VOC2012"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from segpipe.synth import synth

    out = tmp_path_factory.mktemp("synth")
    synth("streetview", out, n=4, seed=0, size=(64, 128))
    return out


def test_synth_folder_to_voc_keeps_every_class(synth_dir, tmp_path):
    """A folder with annotations.json (objects) and masks/ (every class) keeps its stuff classes."""
    rep = convert(ConvertRequest(src=synth_dir, out=tmp_path / "voc", to="voc"), ClusterSpec(workers=0))
    for mask in sorted((synth_dir / "masks").glob("*.png")):
        want = read_label_map(mask)
        got = read_label_map(tmp_path / "voc" / VOC_ROOT / "SegmentationClass" / mask.name)
        names = [ln.split(":")[0] for ln in (tmp_path / "voc" / VOC_ROOT / "labelmap.txt").read_text().splitlines()
                 if ln and not ln.startswith("#")]
        src_names = [ln.split(":")[0] for ln in (synth_dir / "labelmap.txt").read_text().splitlines()
                     if ln and not ln.startswith("#")]
        lut = np.array([names.index(n) if n in names else 255 for n in src_names] + [255] * 256, dtype=np.int64)
        assert np.array_equal(got, np.where(want == 255, 255, lut[want])), mask.name
    assert rep["losses"]["lossless"]


def test_solaris_samples_convert(testdata, tmp_path, cli):
    for i, sample in enumerate(sorted((testdata / "solaris").rglob("coco_sample_*.json"))):
        r = cli("convert", str(sample), str(tmp_path / f"o{i}"), "--to", "voc", "-w", "0")
        assert r.returncode == 0, r.stderr
        report = json.loads((tmp_path / f"o{i}" / "conversion_report.json").read_text())
        assert all(isinstance(p, dict) for p in report["repairs"])


def test_panoptic_to_voc_keeps_stuff(testdata, tmp_path):
    src = testdata / "panopticapi" / "sample_data" / "panoptic_examples.json"
    rep = convert(ConvertRequest(src=src, out=tmp_path / "voc", to="voc"), ClusterSpec(workers=0))
    cin, cout = rep["losses"]["counts_in"], rep["losses"]["counts_out"]
    for stuff in ("grass-merged", "sky-other-merged", "tree-merged"):
        assert cout.get(stuff) == cin.get(stuff), stuff
    names = [ln.split(":")[0] for ln in (tmp_path / "voc" / VOC_ROOT / "labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    values = set()
    for p in (tmp_path / "voc" / VOC_ROOT / "SegmentationClass").glob("*.png"):
        values |= set(np.unique(read_label_map(p)).tolist())
    assert names.index("sky-other-merged") in values
    assert rep["images"]["missing_files"] == 2  # counted once each


def test_overwrite_replaces_instead_of_merging(synth_dir, tmp_path):
    from segpipe.synth import synth

    small = tmp_path / "small"
    synth("streetview", small, n=2, seed=1, size=(64, 128))
    dst = tmp_path / "voc"
    convert(ConvertRequest(src=synth_dir, out=dst, to="voc"), ClusterSpec(workers=0))
    convert(ConvertRequest(src=small, out=dst, to="voc", overwrite=True), ClusterSpec(workers=0))
    assert len(list((dst / VOC_ROOT / "SegmentationClass").glob("*.png"))) == 2


def test_non_dask_service_as_scheduler_is_one_line(tmp_path, synth_dir):
    server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(line.split(" port ")[1].split()[0])
        t0 = time.time()
        r = run_cli("convert", str(synth_dir), str(tmp_path / "o"), "--to", "coco",
                    "--scheduler", f"tcp://127.0.0.1:{port}", timeout=120)
        assert r.returncode == 2
        assert "did not answer" in r.stderr or "no Dask scheduler answered" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert time.time() - t0 < 60
        assert not (tmp_path / "o").exists()
    finally:
        server.kill()
    r = run_cli("convert", str(synth_dir), str(tmp_path / "o"), "--to", "coco", "--scheduler", "notanaddress")
    assert r.returncode == 2 and "not a scheduler address" in r.stderr


def test_evaluate_checkpoints_agrees_with_evaluate(synth_dir, tmp_path):
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model
    from segpipe.pipeline.checkpoints import EvaluateCheckpointsRequest, evaluate_checkpoints
    from segpipe.pipeline.evaluate import EvaluateRequest, evaluate

    names = [ln.split(":")[0] for ln in (synth_dir / "labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    kw = {"base": 4, "depth": 2}
    ckpts = []
    for seed in (1, 2):  # two different models: the shared cluster must swap the loaded one
        torch.manual_seed(seed)
        ck = tmp_path / f"epoch_00{seed}.ckpt"
        save_checkpoint(ck, build_model("unet", len(cats), **kw),
                        CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                                       tile_size=[64, 64], model_kwargs=kw))
        ckpts.append(ck)
    board = evaluate_checkpoints(EvaluateCheckpointsRequest(gt=synth_dir, checkpoints=ckpts,
                                                            images=synth_dir / "images", report_dir=tmp_path / "r"),
                                 ClusterSpec(workers=2), log=lambda m: None)
    for row, ck in zip(board["rows"], ckpts):
        # the same numbers as evaluating each checkpoint's store directly, and as pre-labeling it alone
        direct = evaluate(EvaluateRequest(gt=synth_dir, pred=tmp_path / "r" / "stores" / f"{ck.stem}.zarr",
                                          task="semantic"), ClusterSpec(workers=0))
        assert row["mIoU"] == pytest.approx(direct["semantic"]["mean_iou"], abs=1e-12)
        from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

        alone = tmp_path / f"alone_{ck.stem}.zarr"
        prelabel(PrelabelRequest(source=str(synth_dir / "images"), model=str(ck), out=alone, probs=False),
                 ClusterSpec(workers=0))
        solo = evaluate(EvaluateRequest(gt=synth_dir, pred=alone, task="semantic"), ClusterSpec(workers=0))
        assert row["mIoU"] == pytest.approx(solo["semantic"]["mean_iou"], abs=1e-9)
    assert board["rows"][0]["mIoU"] != board["rows"][1]["mIoU"]


def test_truncated_image_is_caught_by_validate_and_convert(synth_dir, tmp_path, cli):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    victim = sorted((bad / "images").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:3000])
    r = cli("validate", str(bad))
    assert r.returncode == 1 and victim.name in r.stdout and "truncated" in r.stdout
    r = cli("convert", str(bad), str(tmp_path / "o"), "--to", "voc", "-w", "0")
    assert r.returncode == 2 and victim.name in r.stderr
    assert not (tmp_path / "o").exists()
    r = cli("convert", str(bad), str(tmp_path / "o2"), "--to", "voc", "-w", "0", "--on-error", "skip")
    assert r.returncode == 1
    assert not (tmp_path / "o2" / VOC_ROOT / "JPEGImages" / f"{victim.stem}.jpg").exists()
