"""Warnings reach the user as one line each (``warning: ...``), never as Python's two-line format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

rasterio = pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")


def test_scene_without_crs_warns_in_one_line(tmp_path: Path) -> None:
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    with rasterio.open(scenes / "nocrs.tif", "w", driver="GTiff", width=80, height=64, count=3, dtype="uint8") as dst:
        dst.write(data)
    torch.manual_seed(0)
    kw = {"base": 4, "depth": 1}
    ckpt = tmp_path / "t.ckpt"
    save_checkpoint(ckpt, build_model("unet", 2, **kw),
                    CheckpointMeta.for_arch("unet", 2, model_kwargs=kw, tile_size=[64, 64]))
    proc = run_cli("-q", "prelabel", str(scenes), "-m", str(ckpt), "-o", str(tmp_path / "s.zarr"), "-w", "2")
    assert proc.returncode == 0, proc.stderr
    warn = [ln for ln in proc.stderr.splitlines() if "CRS" in ln or "crs" in ln]
    assert warn and all(ln.startswith("warning: ") for ln in warn), proc.stderr
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
