"""Street view end to end on EXIF-rotated JPEGs: synth → train → prelabel (Dask) → export → evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import export
from segpipe.pipeline.evaluate import EvaluateRequest, evaluate
from segpipe.pipeline.prelabel import PrelabelRequest, fsck, prelabel
from segpipe.pipeline.requests import ExportRequest
from segpipe.synth.native import synth_native


def test_exif_streetview_chain(tmp_path: Path) -> None:
    from segpipe.models.train import train

    size = (48, 80)  # non-square: a transposing orientation (5..8) swaps the stored sides
    synth_native("streetview", tmp_path / "train", n=8, seed=1, size=size, fmt="jpg", exif=True)
    synth_native("streetview", tmp_path / "new", n=8, seed=2, size=size, fmt="jpg", exif=True)
    orient = json.loads((tmp_path / "new" / "exif_orientation.json").read_text())
    assert any(v >= 5 for v in orient.values()), orient  # some photos are stored transposed
    res = train(tmp_path / "train", "unet", tmp_path / "ckpt", epochs=1, batch_size=4, progress=False,
                model_kwargs={"base": 8, "depth": 2}, crop=(48, 48))
    assert res.best_path is not None
    store = tmp_path / "new.zarr"
    rep = prelabel(PrelabelRequest(source=str(tmp_path / "new"), model=str(res.best_path), out=store, threads=1),
                   ClusterSpec(workers=2))
    assert rep["images"]["done"] == 8 and rep["images"]["failed"] == 0 and fsck(store)["ok"] == 8
    # Exports are upright: every Cityscapes label-id map has the upright size of its photo.
    export(ExportRequest(store=store, out=tmp_path / "cs", to="cityscapes"), ClusterSpec(workers=0))
    maps = sorted((tmp_path / "cs").rglob("*labelIds.png"))
    assert len(maps) == 8
    for m in maps:
        assert Image.open(m).size == (size[1], size[0])
    export(ExportRequest(store=store, out=tmp_path / "coco", to="coco"), ClusterSpec(workers=0))
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert {(im["height"], im["width"]) for im in coco["images"]} == {size}
    # Evaluation pairs every photo with its upright ground truth.
    ev = evaluate(EvaluateRequest(gt=tmp_path / "new", pred=store, task="semantic"), ClusterSpec(workers=0))
    assert ev["images"]["evaluated"] == 8 and ev["images"]["unmatched_gt"] == 0 and not ev["problems"]
    assert 0.0 <= ev["mean_iou"] <= 1.0 and np.isfinite(ev["pixel_accuracy"])
