"""The geotiff and geojson writers: a store's label maps out in the scene's georeference."""

from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")

from rasterio.crs import CRS  # noqa: E402
from rasterio.features import rasterize  # noqa: E402

from segpipe.errors import FormatError  # noqa: E402
from segpipe.formats import get_format  # noqa: E402
from segpipe.storage.raster import open_raster  # noqa: E402
from tests.modalities._store import blobs, export, make_store  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

WKT = CRS.from_epsg(32633).to_wkt()
T = [0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0]


def _geo(h, w, crs=WKT, t=T):
    return {"geo": {"crs": crs, "transform": t, "width": w, "height": h}}


def test_registered_writer_only():
    for name in ("geotiff", "geojson"):
        spec = get_format(name)
        assert spec.writer is not None and spec.reader is None


def test_geotiff_round_trip(tmp_path):
    a, b = blobs(300, 420, 0), blobs(97, 61, 1)
    store = make_store(tmp_path / "s.zarr", [(a, {**_geo(300, 420), "file": "scenes/a.tif"}), (b, {"file": "b.png"})])
    report = export(store, tmp_path / "out", "geotiff")
    with rasterio.open(tmp_path / "out" / "labels" / "scenes__a.tif") as ds:
        assert ds.crs == CRS.from_wkt(WKT)
        assert list(ds.transform)[:6] == T
        assert (ds.height, ds.width, ds.count) == (300, 420, 1)
        np.testing.assert_array_equal(ds.read(1), a)
        assert ds.nodata == 255
        assert ds.profile["tiled"]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"  # a Cloud-Optimized GeoTIFF
        cats = json.loads(ds.tags()["SEGPIPE_CATEGORIES"])
        assert [c["name"] for c in cats] == ["vegetation", "water", "road"]
    # the image without georeference is written in pixel space and reported
    plain = tmp_path / "out" / "labels" / "b.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(plain) as ds:
        assert ds.crs is None
        np.testing.assert_array_equal(ds.read(1), b)
    assert "georeference_missing" in json.dumps(report["losses"])
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [i["georeferenced"] for i in index["images"]] == [True, False]
    # and the written COG opens as a raster source with the same georeference
    src = open_raster(tmp_path / "out" / "labels" / "scenes__a.tif")
    assert src.transform == tuple(T) and CRS.from_wkt(src.crs) == CRS.from_wkt(WKT)


def test_geotiff_size_mismatch_is_an_error(tmp_path):
    store = make_store(tmp_path / "s.zarr", [(blobs(40, 50), _geo(41, 50))])
    with pytest.raises(FormatError, match="scene is 41x50"):
        export(store, tmp_path / "out", "geotiff")


def test_geojson_rerasterised_equals_label_map(tmp_path):
    lab = blobs(160, 200, 3)
    store = make_store(tmp_path / "s.zarr", [(lab, {**_geo(160, 200), "file": "a.tif"})])
    export(store, tmp_path / "out", "geojson")
    fc = json.loads((tmp_path / "out" / "labels" / "a.geojson").read_text())
    assert fc["type"] == "FeatureCollection"
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert fc["segpipe"]["transform"] == T and fc["segpipe"]["width"] == 200
    names = {f["properties"]["class"] for f in fc["features"]}
    assert names == {"vegetation", "water", "road"}
    xs = [pt[0] for f in fc["features"] for ring in f["geometry"]["coordinates"] for pt in ring]
    assert min(xs) >= 500000.0 and max(xs) <= 500000.0 + 200 * 0.5  # scene coordinates, not pixels
    shapes = [(f["geometry"], f["properties"]["label"]) for f in fc["features"]]
    back = rasterize(shapes, out_shape=lab.shape, transform=rasterio.Affine(*T), fill=0, dtype="uint8")
    expect = np.where(lab == 255, 0, lab)  # void and background are not polygons
    np.testing.assert_array_equal(back, expect)


def test_geojson_tiled_still_rerasterises(tmp_path):
    lab = blobs(130, 150, 4)
    store = make_store(tmp_path / "s.zarr", [(lab, {"file": "p.png"})])  # no georeference: pixel space
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.convert import Conversion, convert

    convert(Conversion(src=store, dst=tmp_path / "out", to="geojson", from_="segpipe_zarr",
                           writer_options={"tile": 64}), ClusterSpec(workers=0))
    fc = json.loads((tmp_path / "out" / "labels" / "p.geojson").read_text())
    assert "crs" not in fc and fc["segpipe"]["tile"] == 64
    assert any(f["properties"]["tile"] != [0, 0] for f in fc["features"])
    shapes = [(f["geometry"], f["properties"]["label"]) for f in fc["features"]]
    back = rasterize(shapes, out_shape=lab.shape, fill=0, dtype="uint8")
    np.testing.assert_array_equal(back, np.where(lab == 255, 0, lab))
