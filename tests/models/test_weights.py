"""Pretrained weights come from the local cache only; absence is one clear, fast error."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segpipe.errors import UnknownNameError, WeightsUnavailableError


@pytest.fixture()
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub._hub_dir = None  # back to the environment default


def test_missing_weights_name_the_file_fast(empty_cache: Path) -> None:
    from segpipe.models.weights import build_with_weights

    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as ei:
        build_with_weights("deeplabv3_resnet50:DEFAULT")
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert "deeplabv3_resnet50_coco-cd0a2569.pth" in msg
    assert str(empty_cache / "hub" / "checkpoints") in msg
    assert "\n" not in msg


def test_pretrained_backbone_refused_offline(empty_cache: Path) -> None:
    from segpipe.models.registry import build_model

    with pytest.raises(WeightsUnavailableError, match=r"resnet50-.*\.pth"):
        build_model("pspnet", 3, pretrained_backbone=True)


def test_cached_weights_are_loaded(empty_cache: Path) -> None:
    import torchvision

    from segpipe.models.weights import build_with_weights, weights_path

    ref = torchvision.models.mobilenet_v3_small(weights=None)
    path = weights_path("mobilenet_v3_small:DEFAULT")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    model = build_with_weights("mobilenet_v3_small:DEFAULT")
    assert torch.equal(model.state_dict()["features.0.0.weight"], ref.state_dict()["features.0.0.weight"])


def test_bad_spec() -> None:
    from segpipe.models.weights import resolve

    with pytest.raises(UnknownNameError):
        resolve("resnet50")
    with pytest.raises(UnknownNameError, match="DEFAULT"):
        resolve("resnet50:NOPE")


def test_subprocess_with_empty_torch_home_does_not_hang(tmp_path: Path) -> None:
    code = (
        "from segpipe.models.weights import build_with_weights\n"
        "build_with_weights('lraspp_mobilenet_v3_large:DEFAULT')\n"
    )
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", code],
        env={"TORCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - t0 < 30
    assert r.returncode != 0
    assert "WeightsUnavailableError" in r.stderr and "lraspp_mobilenet_v3_large-d234d4ea.pth" in r.stderr
