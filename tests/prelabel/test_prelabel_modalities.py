"""Pre-labeling satellite scenes (GeoTIFF, block tasks) and medical volumes (NIfTI, slice tasks) end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import Conversion, convert
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
    assert labels.shape == (2600, 2200) and labels.chunks == (2048, 2048)  # one chunk per block task
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
    convert(Conversion(src=out, dst=dst, to="geotiff", from_="segpipe_zarr"), ClusterSpec(workers=0))
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
    convert(Conversion(src=out, dst=dst, to="nifti", from_="segpipe_zarr"), ClusterSpec(workers=0))
    a, b = nib.load(next((dst / "labels").glob("*.nii.gz"))), nib.load(vol)
    assert a.shape == b.shape and np.array_equal(a.affine, b.affine)
    assert json.loads((dst / "index.json").read_text())


def test_band_count_mismatch_is_one_line(tmp_path, tiny_ckpt):
    """A scene whose band count does not fit the model fails alone, in one line; the others are labelled."""
    from segpipe.synth import synth
    from tests.conftest import run_cli

    synth("satellite", tmp_path / "sat", n=2, seed=0, size=(300, 300), image_format="geotiff")
    scenes = sorted((tmp_path / "sat" / "images").glob("*.tif"))
    assert len(scenes) == 2
    with rasterio.open(scenes[0]) as s:
        profile, data = s.profile, s.read()
    profile.update(count=5)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sc in scenes:
        (mixed / sc.name).write_bytes(sc.read_bytes())
    with rasterio.open(mixed / "x_five.tif", "w", **profile) as d:
        d.write(np.concatenate([data, data[:2]], 0)[:5])
    rep = prelabel(PrelabelRequest(source=str(mixed), model=str(tiny_ckpt), out=tmp_path / "x.zarr", threads=1),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 2 and rep["images"]["failed"] == 1 and rep["images"]["not_run"] == 0
    (f,) = rep["failed"]
    assert f["file"] == "x_five.tif" and "\n" not in f["reason"]
    assert re.search(r"x_five\.tif.*5 band.* expects 3 .*--bands", f["reason"]), f["reason"]
    import zarr

    root = zarr.open_group(str(tmp_path / "x.zarr"), mode="r")
    labelled = {root[f"images/{k}"].attrs["file"] for k in root["images"].group_keys()}
    assert labelled == {sc.name for sc in scenes}
    # the CLI: the run goes on and exits as for any failed image (1 with --on-error fail), naming the file
    r = run_cli("prelabel", str(mixed), "-m", str(tiny_ckpt), "-o", str(tmp_path / "f.zarr"), "-w", "0",
                "--on-error", "fail", "--threads", "1")
    assert r.returncode == 1, r.stderr
    assert re.search(r"error: x_five\.tif: .*x_five\.tif.*5 band\(s\) but the model expects 3", r.stderr), r.stderr
    assert "2 done" in r.stdout
    assert re.search(r"of \d+ tasks \(3 scenes\); [\d.]+ tasks/s", r.stdout), r.stdout  # counts are block tasks
    # an explicit band selection feeds any scene to the model
    rep = prelabel(PrelabelRequest(source=str(mixed), model=str(tiny_ckpt), out=tmp_path / "y.zarr", threads=1,
                                   bands=[1, 2, 3]), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 3 and rep["images"]["failed"] == 0


def _ckpt_with_ids(path: Path, ids: list[int]) -> Path:
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    kw = {"base": 4, "depth": 2}
    cats = [{"index": i, "id": c, "name": f"c{c}", "color": None, "isthing": True} for i, c in enumerate(ids)]
    save_checkpoint(path, build_model("unet", len(ids), **kw),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=len(ids), categories=cats,
                                   tile_size=[256, 256], tile_overlap=0.25, model_kwargs=kw))
    return path


def test_nodata_pixels_are_void_in_store_and_exports(tmp_path):
    """A 16-bit scene with nodata=0: those pixels are void (255) in the store, masked in the GeoTIFF
    export and covered by no GeoJSON polygon; every other pixel is as predicted without the nodata tag."""
    import zarr
    from affine import Affine
    from rasterio.features import rasterize

    # Category ids 1..4: no pixel is background, so every valid pixel lies in some GeoJSON polygon.
    ckpt = _ckpt_with_ids(tmp_path / "ids.ckpt", [1, 2, 3, 4])
    rng = np.random.default_rng(0)
    # 16² squares of 8 levels: the 2-98 % stretch is the same with or without the 0.8 % of nodata zeros.
    levels = rng.integers(1, 9, size=(3, 32, 32)) * 1000
    data = np.kron(levels, np.ones((16, 16), dtype=np.int64)).astype(np.uint16)
    data[:, :40, :50] = 0
    region = np.zeros((512, 512), dtype=bool)
    region[:40, :50] = True
    prof = {"driver": "GTiff", "width": 512, "height": 512, "count": 3, "dtype": "uint16", "crs": "EPSG:32633",
            "transform": Affine(10, 0, 500000, 0, -10, 4600000), "tiled": True, "blockxsize": 256, "blockysize": 256}
    stores = {}
    for name, nodata in (("nd", 0), ("plain", None)):
        folder = tmp_path / name
        folder.mkdir()
        tag = {"nodata": nodata} if nodata is not None else {}
        with rasterio.open(folder / "scene.tif", "w", **prof, **tag) as d:
            d.write(data)
        out = tmp_path / f"{name}.zarr"
        rep = prelabel(PrelabelRequest(source=str(folder), model=str(ckpt), out=out, threads=1),
                       ClusterSpec(workers=0))
        assert rep["images"]["done"] == 1 and rep["images"]["failed"] == 0, rep["failed"]
        root = zarr.open_group(str(out), mode="r")
        (key,) = list(root["images"].group_keys())
        stores[name] = (out, root[f"images/{key}"])
    g, gp = stores["nd"][1], stores["plain"][1]
    assert g.attrs["geo"]["ranges"] == gp.attrs["geo"]["ranges"]  # same stretch: the same model input
    assert g.attrs["geo"]["nodata"] == 255
    labels, plain = np.asarray(g["labels"][...]), np.asarray(gp["labels"][...])
    assert (labels[region] == 255).all() and not (plain == 255).any()
    assert np.array_equal(labels[~region], plain[~region])
    probs = np.asarray(g["probs"][...])
    assert not probs[:, region].any() and (probs[:, ~region].sum(0) > 0).all()
    assert np.array_equal(probs[:, ~region], np.asarray(gp["probs"][...])[:, ~region])
    assert fsck(stores["nd"][0])["ok"] == 1

    # GeoTIFF export: declares 255 as nodata, so the dataset mask masks exactly the nodata region.
    dst = tmp_path / "tif"
    convert(Conversion(src=stores["nd"][0], dst=dst, to="geotiff", from_="segpipe_zarr"), ClusterSpec(workers=0))
    with rasterio.open(next((dst / "labels").glob("*.tif"))) as ds:
        assert ds.nodata == 255
        assert np.array_equal(ds.dataset_mask() == 0, region)
        assert np.array_equal(ds.read(1), labels)
        transform = ds.transform
    # GeoJSON export: no polygon over the nodata region; the polygons rasterise back to the labels.
    dst = tmp_path / "gj"
    convert(Conversion(src=stores["nd"][0], dst=dst, to="geojson", from_="segpipe_zarr"), ClusterSpec(workers=0))
    fc = json.loads(next((dst / "labels").glob("*.geojson")).read_text())
    assert fc["features"] and all(f["properties"]["label"] != 255 for f in fc["features"])
    burned = rasterize([(f["geometry"], f["properties"]["label"]) for f in fc["features"]], out_shape=(512, 512),
                       transform=transform, fill=0, dtype="uint16")
    assert not burned[region].any()
    assert np.array_equal(burned[~region], labels[~region])


def test_nodata_is_65535_in_uint16_label_maps(tmp_path):
    """Category ids above 254 make uint16 label maps: their void / nodata value is 65535."""
    import zarr
    from affine import Affine

    ckpt = _ckpt_with_ids(tmp_path / "big.ckpt", [0, 1, 2, 300])
    data = np.full((3, 96, 80), 500, dtype=np.uint16)
    data[:, 10:20] = 900
    data[:, :40, :50] = 7
    folder = tmp_path / "s"
    folder.mkdir()
    with rasterio.open(folder / "scene.tif", "w", driver="GTiff", width=80, height=96, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 960), nodata=7) as d:
        d.write(data)
    out = tmp_path / "u16.zarr"
    rep = prelabel(PrelabelRequest(source=str(folder), model=str(ckpt), out=out, threads=1, probs=False),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 1
    root = zarr.open_group(str(out), mode="r")
    (key,) = list(root["images"].group_keys())
    g = root[f"images/{key}"]
    labels = np.asarray(g["labels"][...])
    assert labels.dtype == np.uint16 and g.attrs["geo"]["nodata"] == 65535
    assert (labels[:40, :50] == 65535).all() and not (labels[40:] == 65535).any()
    dst = tmp_path / "tif"
    convert(Conversion(src=out, dst=dst, to="geotiff", from_="segpipe_zarr"), ClusterSpec(workers=0))
    with rasterio.open(next((dst / "labels").glob("*.tif"))) as ds:
        assert ds.nodata == 65535 and ds.dtypes[0] == "uint16"
        m = ds.dataset_mask() == 0
        assert m[:40, :50].all() and m.sum() == 40 * 50


class _Pointwise3D:
    """Builder of a voxel-wise 3-D model (translation-equivariant: 3-D tiling must not change it)."""

    def __call__(self, num_classes: int, pretrained_backbone: bool = False, **kw):  # type: ignore[no-untyped-def]
        import torch
        from torch import nn

        torch.manual_seed(2)
        conv = nn.Conv3d(1, num_classes, 1)
        nn.init.normal_(conv.weight, std=3.0)
        return conv


@pytest.fixture(scope="module")
def pointwise3d_ckpt(tmp_path_factory) -> Path:
    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import MODELS, ModelSpec, build_model, model_names, register_model

    model_names()  # load the registry before adding to it
    if "test_pointwise3d" not in MODELS:
        register_model(ModelSpec("test_pointwise3d", "semantic", _Pointwise3D(), (16, 16), "test", dims=3,
                                 default_depth=8))
    cats = [{"index": i, "id": i, "name": f"c{i}", "color": None, "isthing": False} for i in range(3)]
    path = tmp_path_factory.mktemp("ck3") / "pw3d.ckpt"
    save_checkpoint(path, build_model("test_pointwise3d", 3),
                    CheckpointMeta(arch="test_pointwise3d", task="semantic", num_classes=3, categories=cats,
                                   tile_size=[8, 16, 16], tile_overlap=0.25))
    return path


def test_3d_model_tiles_volumes_in_slabs(tmp_path, pointwise3d_ckpt):
    """A 3-D model pre-labels a volume slab by slab with 3-D tiles: the same labels as one pass."""
    from segpipe.models.predict import Predictor
    from segpipe.pipeline.prelabel import SLAB, slice_id
    from segpipe.storage.manifest import describe
    from segpipe.storage.volume import open_volume
    from segpipe.storage.zarrstore import ZarrStore
    from segpipe.synth.native import synth_native

    depth = SLAB + 9
    synth_native("medical", tmp_path / "med", n=1, seed=0, size=(40, 36), fmt="nifti", depth=depth)
    vols = tmp_path / "med" / "volumes"
    vol = next(vols.glob("*.nii.gz"))
    out = tmp_path / "m3.zarr"
    req = PrelabelRequest(source=str(vols), model=str(pointwise3d_ckpt), out=out, threads=1, window="40,400")
    rep = prelabel(req, ClusterSpec(workers=0))
    assert rep["images"] == {**rep["images"], "done": 2, "failed": 0}  # two slabs: [0, 32), [32, 41)
    # Every slice written once, equal to predicting the whole volume in one 3-D pass.
    v = open_volume(vol, window="40,400")
    stack = np.stack([v.slice(z)[..., 0] for z in range(len(v))])
    whole = Predictor.from_checkpoint(pointwise3d_ckpt, threads=1, tile=64).predict_volume(stack)
    store = ZarrStore.open(out)
    entry = describe(vols, vol.name)
    assert len(store.image_ids()) == depth
    for z in range(depth):
        assert np.array_equal(store.read(slice_id(entry, z), "labels"), whole.labels[z])
    f = fsck(out)
    assert f["ok"] == 2 and not f["bad"]
    again = prelabel(PrelabelRequest(**{**req.__dict__, "resume": True}), ClusterSpec(workers=0))
    assert again["images"]["skipped_already_done"] == 2 and again["images"]["done"] == 0
    # NIfTI export: the source's shape and affine.
    dst = tmp_path / "nii3"
    convert(Conversion(src=out, dst=dst, to="nifti", from_="segpipe_zarr"), ClusterSpec(workers=0))
    a, b = nib.load(next((dst / "labels").glob("*.nii.gz"))), nib.load(vol)
    assert a.shape == b.shape and np.array_equal(a.affine, b.affine)
    assert np.array_equal(np.asarray(a.dataobj).transpose(2, 1, 0), whole.labels)


def test_3d_model_refuses_images_per_image(tmp_path, pointwise3d_ckpt):
    from segpipe.synth import synth

    synth("streetview", tmp_path / "st", n=2, seed=0, size=(32, 48))
    rep = prelabel(PrelabelRequest(source=str(tmp_path / "st" / "images"), model=str(pointwise3d_ckpt),
                                   out=tmp_path / "x.zarr", threads=1), ClusterSpec(workers=0))
    assert rep["images"]["failed"] == 2 and "3-D model" in rep["failed"][0]["reason"]


def test_unet3d_on_dask_workers(tmp_path):
    """The registered 3-D U-Net runs through real Dask workers; fsck passes."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model
    from segpipe.synth.native import synth_native

    synth_native("medical", tmp_path / "med", n=1, seed=1, size=(32, 32), fmt="nifti", depth=12)
    torch.manual_seed(0)
    kw = {"base": 4, "depth": 1}
    ckpt = tmp_path / "u3.ckpt"
    save_checkpoint(ckpt, build_model("unet3d", 3, **kw),
                    CheckpointMeta.for_arch("unet3d", 3, model_kwargs=kw, tile_size=[8, 32, 32]))
    out = tmp_path / "u3.zarr"
    rep = prelabel(PrelabelRequest(source=str(tmp_path / "med" / "volumes"), model=str(ckpt), out=out, threads=1,
                                   window="40,400"), ClusterSpec(workers=1))
    assert rep["images"]["done"] == 1 and rep["images"]["failed"] == 0
    assert fsck(out)["ok"] == 1
