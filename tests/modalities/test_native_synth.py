"""Synthetic data in native formats: EXIF JPEGs (masks upright), GeoTIFF scenes, volumes via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segpipe.storage.images import image_size, read_image, read_label_map
from segpipe.synth import synth
from segpipe.synth.native import synth_native


def test_exif_jpeg_masks_upright(tmp_path):
    synth_native("streetview", tmp_path / "e", n=8, seed=5, size=(72, 120), exif=True)
    synth("streetview", tmp_path / "p", n=8, seed=5, size=(72, 120))
    orient = json.loads((tmp_path / "e" / "exif_orientation.json").read_text())
    assert len(set(orient.values())) > 2  # several orientations, swapped sides included
    coco = json.loads((tmp_path / "e" / "annotations.json").read_text())
    for i, im in enumerate(coco["images"]):
        f = tmp_path / "e" / "images" / im["file_name"]
        o = orient[im["file_name"]]
        with Image.open(f) as raw:
            assert raw.getexif().get(0x0112) == o
            stored_wh = raw.size
        assert (im["width"], im["height"]) == image_size(f) == (120, 72)  # upright sizes
        if o in (5, 6, 7, 8):
            assert stored_wh == (72, 120)
        upright = read_image(f).astype(int)
        mask = read_label_map(tmp_path / "e" / "masks" / f"{i:05d}.png")
        np.testing.assert_array_equal(mask, read_label_map(tmp_path / "p" / "masks" / f"{i:05d}.png"))
        ref = read_image(tmp_path / "p" / "images" / f"{i:05d}.png").astype(int)
        err = np.abs(upright - ref).mean()
        assert err < 14, (o, err)  # JPEG of a noisy photo; a wrong orientation gives ~40+
        if o != 1:
            wrong = read_image(f, exif=False).astype(int)
            if wrong.shape == ref.shape:
                assert np.abs(wrong - ref).mean() > err + 10


def test_satellite_geotiff(tmp_path):
    pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")
    from segpipe.storage.raster import open_raster

    synth_native("satellite", tmp_path / "g", n=2, seed=0, size=(64, 96), fmt="geotiff")
    synth("satellite", tmp_path / "p", n=2, seed=0, size=(64, 96))
    coco = json.loads((tmp_path / "g" / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["00000.tif", "00001.tif"]
    src = open_raster(tmp_path / "g" / "images" / "00001.tif")
    assert "UTM zone 33N" in (src.crs or "")
    assert src.transform == (0.5, 0.0, 500000.0 + 96 * 0.5, 0.0, -0.5, 5000000.0)
    np.testing.assert_array_equal(src[:, :], read_image(tmp_path / "p" / "images" / "00001.png"))
    assert (tmp_path / "g" / "masks" / "00001.png").exists() and (tmp_path / "g" / "labelmap.txt").exists()


def test_cli_medical_formats(tmp_path, cli):
    pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
    pytest.importorskip("pydicom", reason="pydicom (segpipe[medical]) is not installed")
    r = cli("synth", "medical", str(tmp_path / "d"), "--format", "dicom", "--n", "1", "--depth", "3", "--size", "32x32")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "d" / "dicom" / "00000").iterdir()) == [
        "IM00000.dcm", "IM00001.dcm", "IM00002.dcm"]
    index = json.loads((tmp_path / "d" / "volumes.json").read_text())
    assert index["volumes"][0]["shape"] == [3, 32, 32]
    r = cli("synth", "satellite", str(tmp_path / "x"), "--format", "nifti", "--n", "1")
    assert r.returncode == 2 and "medical" in r.stderr and len(r.stderr.strip().splitlines()) == 1
