"""Pre-labeling satellite scenes (GeoTIFF, block tasks) and medical volumes (NIfTI, slice tasks) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import ConvertRequest, convert
from segpipe.pipeline.prelabel import BLOCK, PrelabelRequest, fsck, prelabel

rasterio = pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")
nib = pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    kw = {"base": 4, "depth": 2}
    cats = [{"index": i, "id": i, "name": f"c{i}", "color": None, "isthing": True} for i in range(4)]
    path = tmp_path_factory.mktemp("ck") / "tiny.ckpt"
    save_checkpoint(path, build_model("unet", 4, **kw),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=4, categories=cats, tile_size=[256, 256],
                                   tile_overlap=0.25, model_kwargs=kw))
    return path


def test_scene_blocks_cover_the_scene_and_keep_georeference(tmp_path, tiny_ckpt):
    from segpipe.synth import synth

    synth("satellite", tmp_path / "sat", n=1, seed=0, size=(2600, 2200), image_format="geotiff")
    scene = next((tmp_path / "sat" / "images").glob("*.tif"))
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(tmp_path / "sat" / "images"), model=str(tiny_ckpt), out=out, threads=1,
                                   probs=False), ClusterSpec(workers=2))
    n_blocks = -(-2600 // BLOCK) * -(-2200 // BLOCK)
    assert rep["items"]["scenes"] == 1 and rep["images"]["done"] == n_blocks == 4
    f = fsck(out)
    assert f["ok"] == n_blocks and not f["bad"]
    # blocks write into one chunked scene array: the whole scene is labelled, never held whole by a task
    import zarr

    root = zarr.open_group(str(out), mode="r")
    (key,) = list(root["images"].group_keys())
    labels = root[f"images/{key}/labels"]
    assert labels.shape == (2600, 2200) and labels.chunks == (1024, 1024)
    # the same labels as predicting the scene in one pass, away from the block seams' context margin
    from segpipe.models.predict import Predictor
    from segpipe.storage.raster import open_raster

    src = open_raster(scene)
    whole = Predictor.from_checkpoint(tiny_ckpt, threads=1).predict_semantic(src[0:2600, 0:2200], keep_probs=False)
    got = np.asarray(labels[...])
    inner = np.ones_like(got, dtype=bool)
    for s in range(0, 2600, BLOCK)[1:]:
        inner[max(0, s - 256): s + 256] = False
    for s in range(0, 2200, BLOCK)[1:]:
        inner[:, max(0, s - 256): s + 256] = False
    assert np.array_equal(got[inner], whole.labels[inner])
    assert (got == whole.labels).mean() > 0.99
    # export keeps CRS, transform and size
    dst = tmp_path / "tif"
    convert(ConvertRequest(src=out, dst=dst, to="geotiff", from_="segpipe_zarr"), ClusterSpec(workers=0))
    exported = next((dst / "labels").glob("*.tif"))
    with rasterio.open(exported) as a, rasterio.open(scene) as b:
        assert a.crs == b.crs and a.transform == b.transform and a.shape == b.shape
        assert np.array_equal(a.read(1), got)


def test_volume_slices_and_nifti_export_keep_affine(tmp_path, tiny_ckpt):
    from segpipe.synth import synth

    synth("medical", tmp_path / "med", n=1, seed=0, image_format="nifti")
    vol = next((tmp_path / "med" / "volumes").glob("*.nii.gz"))
    depth = nib.load(vol).shape[2]
    out = tmp_path / "m.zarr"
    rep = prelabel(PrelabelRequest(source=str(tmp_path / "med" / "volumes"), model=str(tiny_ckpt), out=out,
                                   threads=1, window="40,400"), ClusterSpec(workers=0))
    assert rep["items"]["volumes"] == 1 and rep["images"]["done"] == depth
    dst = tmp_path / "nii"
    convert(ConvertRequest(src=out, dst=dst, to="nifti", from_="segpipe_zarr"), ClusterSpec(workers=0))
    a, b = nib.load(next((dst / "labels").glob("*.nii.gz"))), nib.load(vol)
    assert a.shape == b.shape and np.array_equal(a.affine, b.affine)
    assert json.loads((dst / "index.json").read_text())


def test_band_count_mismatch_is_one_line(tmp_path, tiny_ckpt):
    from segpipe.errors import InputError
    from segpipe.synth import synth

    synth("satellite", tmp_path / "sat", n=1, seed=0, size=(300, 300), image_format="geotiff")
    scene = next((tmp_path / "sat" / "images").glob("*.tif"))
    with rasterio.open(scene) as s:
        profile, data = s.profile, s.read()
    profile.update(count=5)
    five = tmp_path / "five"
    five.mkdir()
    with rasterio.open(five / "x.tif", "w", **profile) as d:
        d.write(np.concatenate([data, data[:2]], 0)[:5])
    with pytest.raises(InputError, match="5 band.* expects 3 .*--bands"):
        prelabel(PrelabelRequest(source=str(five), model=str(tiny_ckpt), out=tmp_path / "x.zarr", threads=1),
                 ClusterSpec(workers=0))
    rep = prelabel(PrelabelRequest(source=str(five), model=str(tiny_ckpt), out=tmp_path / "y.zarr", threads=1,
                                   bands=[3, 2, 1]), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 1
