"""Issue 17 point 2 through a pipeline file: ``classes`` and ``num_classes`` in a prelabel stage reach the
store and the exports exactly as the CLI options do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from segpipe.errors import ConfigError
from segpipe.pipeline.run import run_pipeline
from segpipe.storage.zarrstore import ZarrStore


class _Tiny(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class _Fixed(nn.Module):
    """Traced for 64 × 64 only: the 128-pixel probe that counts classes fails, so ``num_classes`` is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x).reshape(1, 3, 64, 64)


def _category_names(path: Path) -> list[str]:
    return [c["name"] for c in json.loads(path.read_text())["categories"]]


def test_pipeline_file_carries_classes_and_num_classes(tmp_path: Path) -> None:
    torch.manual_seed(3)
    torch.onnx.export(_Tiny(3).eval(), (torch.randn(1, 3, 64, 64),), str(tmp_path / "m.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    torch.jit.save(torch.jit.trace(_Fixed().eval(), torch.randn(1, 3, 64, 64)), str(tmp_path / "f.pt"))
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "labelmap.txt").write_text("meadow:0,128,0::\nforest:0,64,0::\nlake:0,0,200::\n")
    (tmp_path / "names.yaml").write_text("names:\n  0: sand\n  1: rock\n  2: water\n")
    spec = {
        "version": 1, "name": "byo model classes", "workers": 0,
        "stages": [
            {"prelabel": {"source": str(tmp_path / "imgs"), "model": str(tmp_path / "m.onnx"),
                          "classes": str(tmp_path / "labelmap.txt"), "out": "onnx.zarr"}},
            {"prelabel": {"source": str(tmp_path / "imgs"), "model": str(tmp_path / "f.pt"), "num_classes": 3,
                          "tile": 64, "classes": str(tmp_path / "names.yaml"), "out": "ts.zarr"}},
            {"export": {"store": "onnx.zarr", "out": "coco_onnx", "to": "coco", "layout": "single"}},
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    work = tmp_path / "work"
    summaries = run_pipeline(path, workdir=work, log=lambda m: None)
    assert [s["step"] for s in summaries] == ["prelabel", "prelabel", "export"]

    names = ZarrStore.open(work / "onnx.zarr").label_attributes()
    assert "meadow" in json.dumps(names) and "lake" in json.dumps(names)
    assert _category_names(work / "coco_onnx" / "annotations.json") == ["meadow", "forest", "lake"]
    ts = ZarrStore.open(work / "ts.zarr")
    assert all(n in json.dumps(ts.label_attributes()) for n in ("sand", "rock", "water"))
    for image_id in ts.image_ids():
        assert int(ts.read(image_id, "labels").max()) < 3

    # A named table whose size is not the model's is refused before anything runs, naming the stage.
    spec["stages"] = [{"prelabel": {**spec["stages"][1]["prelabel"], "classes": "VOC", "out": "voc.zarr"}}]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.prelabel: --classes VOC has tables of 21 or 20 classes"):
        run_pipeline(path, workdir=work, log=lambda m: None)
    assert not (work / "voc.zarr").exists()
