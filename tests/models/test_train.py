"""Training: the loss goes down, checkpoints and metrics are written, --resume continues, budgets stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segpipe.errors import ConfigError, UnsupportedError
from segpipe.models.checkpoint import load_checkpoint
from segpipe.models.train import train
from segpipe.synth import synth


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("street")
    synth("streetview", root, n=8, seed=0, size=(64, 96))
    return root


def test_loss_decreases_and_outputs_written(street: Path, tmp_path: Path) -> None:
    res = train(
        street,
        "unet",
        tmp_path,
        epochs=4,
        batch_size=4,
        lr=3e-3,
        progress=False,
        model_kwargs={"base": 8},
        crop=(64, 64),
    )
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2, 3, 4] and all("mean_iou" in ln for ln in lines)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.ckpt")) == [f"epoch_{i:03d}.ckpt" for i in range(1, 5)]
    best = load_checkpoint(tmp_path / "best.ckpt")
    assert best.meta.categories[6]["name"] == "car" and best.meta.categories[6]["isthing"]
    assert best.meta.provenance["metrics"]["mean_iou"] == pytest.approx(res.best_metric)
    assert best.meta.model_kwargs == {"base": 8}


def test_resume_continues_from_last_epoch(street: Path, tmp_path: Path) -> None:
    train(street, "unet", tmp_path, epochs=1, batch_size=4, progress=False, model_kwargs={"base": 8}, crop=(64, 64))
    res = train(
        street,
        "unet",
        tmp_path,
        epochs=2,
        batch_size=4,
        progress=False,
        model_kwargs={"base": 8},
        crop=(64, 64),
        resume=True,
    )
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert load_checkpoint(tmp_path / "epoch_002.ckpt").train_state["epoch"] == 2
    with pytest.raises(ConfigError):
        train(street, "unet", tmp_path / "empty", epochs=1, progress=False, resume=True)


def test_budget_stops_early(street: Path, tmp_path: Path) -> None:
    res = train(
        street,
        "unet",
        tmp_path,
        epochs=50,
        max_minutes=0.001,
        batch_size=2,
        progress=False,
        model_kwargs={"base": 8},
        crop=(64, 64),
    )
    assert res.stopped_by_budget and res.epochs_run == 1 and res.best_path is not None


def test_instance_and_landmark_training_run(tmp_path: Path) -> None:
    synth("streetview", tmp_path / "s", n=4, seed=0, size=(64, 96))
    r = train(tmp_path / "s", "yolact", tmp_path / "y", epochs=1, batch_size=2, progress=False)
    assert r.metric_name == "ap" and (tmp_path / "y" / "best.ckpt").is_file()
    synth("landmarks", tmp_path / "l", n=4, seed=0, size=(64, 64))
    r = train(
        tmp_path / "l",
        "hourglass",
        tmp_path / "h",
        epochs=1,
        batch_size=2,
        progress=False,
        model_kwargs={"channels": 16, "num_stacks": 1},
    )
    assert r.metric_name == "pck" and load_checkpoint(tmp_path / "h" / "best.ckpt").meta.keypoints[0] == "top_left"
    with pytest.raises(UnsupportedError):
        train(tmp_path / "s", "panoptic_fpn", tmp_path / "p", epochs=1, progress=False)


def test_cli_train_and_models(street: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "segpipe",
            "-q",
            "train",
            str(street),
            "--arch",
            "unet",
            "--out",
            str(tmp_path),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "best.ckpt" in r.stdout and (tmp_path / "best.ckpt").is_file()
    r = subprocess.run([sys.executable, "-m", "segpipe", "models"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in ("unet", "yolact", "panoptic_fpn", "hourglass", "lraspp_mobilenet_v3_large"):
        assert name in r.stdout
    assert "M " in r.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "segpipe", "train", str(street), "--arch", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unet" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_train_model_args(street: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "segpipe", "-q", "train", str(street), "--arch", "unet", "--epochs", "1",
            "--batch", "4", "--device", "cpu"]
    r = subprocess.run([*base, "--out", str(tmp_path / "a"), "--model-arg", "base=8", "--model-arg", "depth=2",
                        "--crop", "64x64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = load_checkpoint(tmp_path / "a" / "best.ckpt").meta
    assert meta.model_kwargs == {"base": 8, "depth": 2}
    bad = subprocess.run([*base, "--out", str(tmp_path / "b"), "--model-arg", "colour=red"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "colour" in bad.stderr
    assert not (tmp_path / "b").exists()


def test_train_refuses_3d_models(street: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="3-D"):
        train(street, "unet3d", tmp_path / "u3", epochs=1, progress=False)
    assert not (tmp_path / "u3").exists()
