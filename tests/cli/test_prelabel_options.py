"""`segpipe prelabel` raster options: --stretch / --percentiles reach the reader; bad values are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

rasterio = pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")


@pytest.fixture(scope="module")
def scene_and_ckpt(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    import torch
    from rasterio.transform import from_origin

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    root = tmp_path_factory.mktemp("opt")
    (root / "scenes").mkdir()
    data = np.random.default_rng(0).integers(100, 4000, (3, 64, 80)).astype(np.uint16)
    with rasterio.open(root / "scenes" / "s.tif", "w", driver="GTiff", width=80, height=64, count=3,
                       dtype="uint16", crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(data)
    torch.manual_seed(0)
    kw = {"base": 4, "depth": 1}
    ckpt = root / "t.ckpt"
    save_checkpoint(ckpt, build_model("unet", 2, **kw), CheckpointMeta.for_arch("unet", 2, model_kwargs=kw,
                                                                                 tile_size=[64, 64]))
    return root / "scenes", ckpt, data


@pytest.mark.parametrize(("args", "flag"), [(["--percentiles", "98,2"], "--percentiles"),
                                            (["--bands", "1,x,3"], "--bands"),
                                            (["--stretch", "gamma"], "stretch")])
def test_bad_raster_options_are_one_line(scene_and_ckpt, tmp_path, args, flag) -> None:
    scenes, ckpt, _ = scene_and_ckpt
    proc = run_cli("-q", "prelabel", str(scenes), "-m", str(ckpt), "-o", str(tmp_path / "x.zarr"), "-w", "0", *args)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and flag in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_stretch_options_reach_the_scene_reader(scene_and_ckpt, tmp_path) -> None:
    scenes, ckpt, data = scene_and_ckpt
    out = tmp_path / "mm.zarr"
    proc = run_cli("-q", "prelabel", str(scenes), "-m", str(ckpt), "-o", str(out), "-w", "0", "--stretch", "minmax")
    assert proc.returncode == 0, proc.stderr
    (group,) = [p for p in (out / "images").iterdir() if p.is_dir()]
    geo = json.loads((group / "zarr.json").read_text())["attributes"]["geo"]
    assert geo["ranges"] == [[float(b.min()), float(b.max())] for b in data]
    out2 = tmp_path / "pc.zarr"
    proc = run_cli("-q", "prelabel", str(scenes), "-m", str(ckpt), "-o", str(out2), "-w", "0",
                   "--percentiles", "10,90")
    assert proc.returncode == 0, proc.stderr
    (group,) = [p for p in (out2 / "images").iterdir() if p.is_dir()]
    ranges = json.loads((group / "zarr.json").read_text())["attributes"]["geo"]["ranges"]
    assert ranges[0][0] > float(data[0].min()) and ranges[0][1] < float(data[0].max())
