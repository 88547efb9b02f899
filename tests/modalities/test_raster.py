"""Windowed GeoTIFF reading: windows equal full reads, bounded memory, stretch, nodata, georeference."""

from __future__ import annotations

import gc
import pickle
import warnings

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="rasterio (segpipe[geo]) is not installed")

from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from segpipe.errors import InputError  # noqa: E402
from segpipe.storage import raster  # noqa: E402
from segpipe.storage.raster import GeoreferenceWarning, check_bands, open_raster  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def _write(path, data, *, crs="EPSG:32633", transform=None, nodata=None, overviews=False, block=64):
    count, h, w = data.shape
    prof = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
            "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate"}
    if crs:
        prof.update(crs=crs, transform=transform or from_origin(500000, 5000000, 10, 10))
    if nodata is not None:
        prof["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterio's NotGeoreferencedWarning for the no-CRS case
        with rasterio.open(path, "w", **prof) as ds:
            ds.write(data)
            if overviews:
                ds.build_overviews([2, 4, 8])
    return path


@pytest.fixture()
def small16(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(100, 5000, (4, 130, 170), dtype=np.uint16)
    data[:, :7, :9] = 0
    return _write(tmp_path / "s.tif", data, nodata=0), data


@pytest.mark.parametrize("backend", ["rasterio", "tifffile"])
def test_windows_equal_full_read(small16, backend):
    path, data = small16
    if backend == "tifffile":
        pytest.importorskip("tifffile", reason="tifffile is not installed")
    src = open_raster(path, backend=backend)
    assert src.shape == (130, 170) and src.bands == 4 and src.dtype == np.uint16
    assert src.transform == (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    assert src.nodata == 0
    full = src[:, :]
    assert full.shape == (130, 170, 3) and full.dtype == np.uint8
    for ys, xs in [(slice(0, 64), slice(0, 64)), (slice(50, 129), slice(33, 170)), (slice(120, 500), slice(-20, None))]:
        np.testing.assert_array_equal(src[ys, xs], full[ys, xs])
    # nodata → 0 and the mask accessor says where
    assert not full[:7, :9].any()
    assert src.nodata_mask((slice(0, 10), slice(0, 10)))[:7, :9].all()
    assert not src.nodata_mask()[7:, 9:].any()
    # picklable: a copy reopens the file itself and reads the same
    copy = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(copy[10:90, 20:150], full[10:90, 20:150])


def test_backends_agree(small16):
    pytest.importorskip("tifffile", reason="tifffile is not installed")
    path, _ = small16
    a, b = open_raster(path, backend="rasterio"), open_raster(path, backend="tifffile")
    assert a.ranges == b.ranges
    np.testing.assert_array_equal(a[:, :], b[:, :])
    assert b.crs == "EPSG:32633" and rasterio.crs.CRS.from_wkt(a.crs).to_epsg() == 32633


def test_percentile_stretch_from_a_sample(tmp_path):
    h, w = 600, 700
    ramp = (np.arange(h)[:, None] * 7 + np.arange(w)[None, :] * 3).astype(np.uint16) + 1000
    data = np.stack([ramp, ramp * 2, ramp + 500])
    for overviews in (False, True):
        path = _write(tmp_path / f"r{overviews}.tif", data, overviews=overviews, block=128)
        src = open_raster(path, bands=[3, 1, 2], percentiles=(2, 98))
        assert src.band_indexes == (3, 1, 2)
        for k, b in enumerate((3, 1, 2)):
            lo, hi = np.percentile(data[b - 1], (2, 98))
            got_lo, got_hi = src.ranges[k]
            span = float(data[b - 1].max() - data[b - 1].min())
            # a sample, not the full scene: close to the full-scene percentiles, not equal
            assert abs(got_lo - lo) < 0.03 * span and abs(got_hi - hi) < 0.03 * span
        lo, hi = src.ranges[1]
        win = src[100:110, 200:260]
        expect = np.clip((data[0, 100:110, 200:260].astype(np.float32) - lo) * (255 / (hi - lo)) + 0.5, 0, 255)
        np.testing.assert_array_equal(win[..., 1], expect.astype(np.uint8))
    # uint8 scenes pass through unchanged under the default "auto" stretch
    u8 = (np.arange(60 * 80).reshape(1, 60, 80) % 256).astype(np.uint8).repeat(3, axis=0)
    src8 = open_raster(_write(tmp_path / "u8.tif", u8))
    assert src8.ranges is None
    np.testing.assert_array_equal(src8[:, :], np.moveaxis(u8, 0, -1))


def test_bounded_memory_tile_by_tile(tmp_path):
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "big.tif"
    n = 4000
    prof = {"driver": "GTiff", "width": n, "height": n, "count": 3, "dtype": "uint16", "crs": "EPSG:32633",
            "transform": from_origin(500000, 5000000, 1, 1), "tiled": True, "blockxsize": 512, "blockysize": 512,
            "compress": "deflate"}
    rng = np.random.default_rng(1)
    with rasterio.open(path, "w", **prof) as ds:
        for y in range(0, n, 512):
            hh = min(512, n - y)
            band = (np.arange(y, y + hh)[:, None] + np.arange(n)[None, :]).astype(np.uint16)
            band += rng.integers(0, 64, band.shape, dtype=np.uint16)
            ds.write(np.stack([band, band // 2, band // 3]), window=Window(0, y, n, hh))
    # a full read would need 96 MB raw + 48 MB output + float temporaries: well above the bound
    gc.collect()
    proc = psutil.Process()
    src = open_raster(path)
    before = proc.memory_info().rss
    peak = before
    checksum = 0
    for y in range(0, n, 500):
        for x in range(0, n, 500):
            tile = src[y:y + 500, x:x + 500]
            assert tile.shape == (500, 500, 3)
            checksum += int(tile[0, 0, 0])
            peak = max(peak, proc.memory_info().rss)
    assert (peak - before) < 100 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MB"
    assert checksum > 0


def test_no_crs_is_a_warning_not_an_error(tmp_path):
    path = _write(tmp_path / "plain.tif", np.ones((1, 20, 30), np.uint8), crs=None)
    with pytest.warns(GeoreferenceWarning, match="no CRS"):
        src = open_raster(path)
    assert src.crs is None and src.transform is None
    assert src[:, :].shape == (20, 30, 3)  # one band → grey RGB
    assert src.geo_attrs()["crs"] is None


def test_band_count_mismatch_is_one_line(small16):
    path, _ = small16
    src = open_raster(path)
    with pytest.raises(InputError) as e:
        check_bands(src, 3)
    msg = str(e.value)
    assert "\n" not in msg and "4 band(s)" in msg and "expects 3" in msg and str(path) in msg
    check_bands(open_raster(path, bands=[4, 3, 2]), 3)  # an explicit choice is accepted
    with pytest.raises(InputError, match="band 5 does not exist"):
        open_raster(path, bands=[5, 1, 2])


def test_not_a_tiff_is_one_line(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage" * 3)
    with pytest.raises(InputError) as e:
        open_raster(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_usable_as_predictor_image(small16):
    """The predictor only needs ``shape`` and ``image[y0:y1, x0:x1]``; check that contract directly."""
    path, _ = small16
    src = open_raster(path)
    h, w = src.shape[:2]
    out = np.zeros((h, w, 3), np.uint8)
    for y0 in range(0, h, 48):
        for x0 in range(0, w, 64):
            out[y0:y0 + 48, x0:x0 + 64] = src[y0:min(h, y0 + 48), x0:min(w, x0 + 64)]
    np.testing.assert_array_equal(out, src[:, :])
    assert raster.SAMPLE_GRID * raster.SAMPLE_WINDOW > 0


def test_predictor_streams_from_a_raster_source(small16):
    torch = pytest.importorskip("torch")
    from segpipe.models.checkpoint import CheckpointMeta
    from segpipe.models.predict import Predictor

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 1)
    meta = CheckpointMeta(arch="unet", task="semantic", num_classes=4, tile_size=[64, 64], tile_overlap=0.25)
    pred = Predictor(net, meta, device="cpu", tile=64, overlap=16)
    path, _ = small16
    src = open_raster(path)
    sink = np.zeros(src.shape, np.uint8)
    pred.predict_semantic(src, label_sink=sink, keep_probs=False)
    ref = pred.predict_semantic(src[:, :], keep_probs=False).labels
    np.testing.assert_array_equal(sink, ref)
