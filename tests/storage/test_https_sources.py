"""Sources read over ``https://`` (read-only), against a real HTTPS server on 127.0.0.1 (issue 16, point 2).

What README and docs/cluster.md promise for ``https://``: reading single objects and manifests, and
GeoTIFF/COG scenes by window through GDAL (``/vsicurl/``); an HTTP server cannot be listed, so folders,
globs and datasets are refused (tests/badinput/test_https_sources.py), and nothing is written there.

The server (tests/_servers.py: ``https_server``) serves a folder with Range requests and records every
request; its certificate is signed by a CA made for this module, trusted through the standard bundle
variables only (``SSL_CERT_FILE`` for obstore, ``CURL_CA_BUNDLE`` for GDAL's curl; the Dask workers
inherit them): verification is never switched off.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.images import read_image
from segpipe.storage.raster import open_raster
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests._servers import HttpsServer, https_server
from tests.badinput._corpus import synth_with_unet
from tests.conftest import run_cli

__all__ = ["https_server"]  # the fixture, for pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(collection, checkpoint)``: 6 synthetic street-view images (COCO + masks) and a tiny U-Net for them."""
    root = tmp_path_factory.mktemp("httpsrc")
    synth_with_unet(root / "col", root / "unet.ckpt", n=6, seed=5, size=(64, 96))
    return root / "col", root / "unet.ckpt"


@pytest.fixture(scope="module")
def local_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run over the local images: what every run over https must reproduce."""
    col, ckpt = data
    out = tmp_path_factory.mktemp("httplocal") / "local.zarr"
    _run(str(col / "images"), ckpt, out)
    return out


def _run(source: str, ckpt: Path, out: Path) -> dict:
    return prelabel(PrelabelRequest(source=source, model=str(ckpt), out=out, threads=1), ClusterSpec(workers=0))


def _serve(server: HttpsServer, folder: Path) -> str:
    """Places every file of ``folder`` below a new prefix of the server; returns the prefix's URL."""
    prefix = uuid.uuid4().hex[:10]
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            server.put(f"{prefix}/{p.relative_to(folder).as_posix()}", p.read_bytes())
    return f"{server.url}/{prefix}"


def _same_stores(a: Path, b: Path) -> None:
    sa, sb = ZarrStore.open(a), ZarrStore.open(b)
    assert sa.image_ids() and sb.image_ids() == sa.image_ids()
    for i in sa.image_ids():
        for name in ("labels", "probs"):
            np.testing.assert_array_equal(sb.read(i, name), sa.read(i, name))


def _https_manifest(local_run: Path, images_url: str, *, relative_to: str | None = None) -> bytes:
    """The local run's manifest with each ``path`` naming the image on the server (or relative to a folder)."""
    lines = []
    for ln in (local_run / ".segpipe" / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(ln)
        url = f"{images_url}/{entry['file']}"
        entry["path"] = url[len(relative_to) + 1:] if relative_to else url
        lines.append(json.dumps(entry) + "\n")
    return "".join(lines).encode()


def test_images_decode_exactly_as_local_files(https_server: HttpsServer, data: tuple[Path, Path]) -> None:
    col, _ = data
    url = _serve(https_server, col / "images")
    for p in sorted((col / "images").iterdir()):
        np.testing.assert_array_equal(read_image(f"{url}/{p.name}"), read_image(p))


def test_manifest_of_https_images_equals_the_local_run(https_server: HttpsServer, data: tuple[Path, Path],
                                                       local_run: Path, tmp_path: Path) -> None:
    col, ckpt = data
    root = _serve(https_server, col)
    images = f"{root}/images"
    https_server.put(f"{root.rsplit('/', 1)[1]}/lists/m.jsonl", _https_manifest(local_run, images))
    first = len(https_server.requests)
    rep = _run(f"{root}/lists/m.jsonl", ckpt, tmp_path / "https.zarr")
    assert rep["images"]["done"] == 6 and rep["images"]["failed"] == 0
    _same_stores(local_run, tmp_path / "https.zarr")
    # every image was read from the server, by its URL, which the store's manifest records
    got = {r.path for r in https_server.requests[first:] if r.method == "GET" and r.status in (200, 206)}
    assert {f"/{images.split('/', 3)[3]}/{p.name}" for p in (col / "images").iterdir()} <= got
    manifest = (tmp_path / "https.zarr" / ".segpipe" / "manifest.jsonl").read_text()
    assert sorted(json.loads(ln)["path"] for ln in manifest.splitlines()) == \
        sorted(f"{images}/{p.name}" for p in (col / "images").iterdir())

    # a manifest's relative paths resolve against its own folder on the server
    https_server.put(f"{root.rsplit('/', 1)[1]}/rel.jsonl", _https_manifest(local_run, images, relative_to=root))
    rep = _run(f"{root}/rel.jsonl", ckpt, tmp_path / "rel.zarr")
    assert rep["images"]["done"] == 6
    _same_stores(local_run, tmp_path / "rel.zarr")


def test_two_dask_workers_read_https_themselves(https_server: HttpsServer, data: tuple[Path, Path],
                                                local_run: Path, tmp_path: Path) -> None:
    """``dask worker`` processes trust the server through the ``SSL_CERT_FILE`` they inherited, nothing else."""
    col, ckpt = data
    root = _serve(https_server, col)
    https_server.put(f"{root.rsplit('/', 1)[1]}/m.jsonl", _https_manifest(local_run, f"{root}/images"))
    with external_cluster(tmp_path, [[], []]) as address:
        r = run_cli("prelabel", f"{root}/m.jsonl", "-m", str(ckpt), "-o", str(tmp_path / "dask.zarr"),
                    "--threads", "1", "--scheduler", address, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 done, 0 already done, 0 failed of 6 images" in r.stdout
    _same_stores(local_run, tmp_path / "dask.zarr")


def test_one_https_image(https_server: HttpsServer, data: tuple[Path, Path], local_run: Path,
                         tmp_path: Path) -> None:
    col, ckpt = data
    root = _serve(https_server, col / "images")
    rep = _run(f"{root}/00002.png", ckpt, tmp_path / "one.zarr")
    assert rep["images"]["done"] == 1
    one, local = ZarrStore.open(tmp_path / "one.zarr"), ZarrStore.open(local_run)
    (iid,) = one.image_ids()
    want = next(i for i in local.image_ids() if dict(local.group(i).attrs)["sha256"] ==
                dict(one.group(iid).attrs)["sha256"])
    np.testing.assert_array_equal(one.read(iid, "labels"), local.read(want, "labels"))


# ------------------------------------------------------------------ a COG through GDAL's /vsicurl/

def _write_cog(path: Path, rgb: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import Affine

    h, w, _ = rgb.shape
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 4000000), blocksize=256, compress="deflate") as d:
        d.write(np.moveaxis(rgb, -1, 0))


def test_a_cog_window_reads_only_its_blocks(https_server: HttpsServer, tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    rgb = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)  # noise: no compression
    _write_cog(tmp_path / "big.tif", rgb)
    size = (tmp_path / "big.tif").stat().st_size
    url = _serve(https_server, tmp_path) + "/big.tif"
    first = len(https_server.requests)
    src = open_raster(url, stretch="none")
    try:
        assert src.shape == (1024, 1024) and "UTM" in (src.crs or "")
        window = src[0:64, 0:64]
    finally:
        src.close()
    np.testing.assert_array_equal(window, rgb[:64, :64])
    served = [r for r in https_server.requests[first:] if r.path.endswith("/big.tif")]
    assert served and all(r.method == "HEAD" or r.status == 206 for r in served), served
    assert sum(r.sent for r in served) < size / 4, (sum(r.sent for r in served), size)


def test_cog_scene_over_https_equals_the_local_scene_run(https_server: HttpsServer, data: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    col, ckpt = data
    tiles = [read_image(p) for p in sorted((col / "images").iterdir())]
    mosaic = np.concatenate([np.concatenate(tiles[:3], axis=1), np.concatenate(tiles[3:], axis=1)], axis=0)
    mosaic = np.tile(mosaic, (3, 2, 1))  # (384, 576, 3): several 256² blocks
    (tmp_path / "scenes").mkdir()
    _write_cog(tmp_path / "scenes" / "s.tif", mosaic)
    url = _serve(https_server, tmp_path / "scenes") + "/s.tif"
    _run(str(tmp_path / "scenes"), ckpt, tmp_path / "local.zarr")
    rep = _run(url, ckpt, tmp_path / "https.zarr")
    assert rep["items"]["scenes"] == 1 and rep["images"]["failed"] == 0
    _same_stores(tmp_path / "local.zarr", tmp_path / "https.zarr")
    store = ZarrStore.open(tmp_path / "https.zarr")
    assert store.group(store.image_ids()[0]).attrs["geo"]["source"] == url


def test_gdal_trusts_the_bundle_the_standard_variables_name() -> None:
    """GDAL's curl reads GDAL_CURL_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE in that order; rasterio sets the
    first to certifi's bundle when imported, so segpipe hands GDAL the others unless the first is the user's."""
    import certifi

    from segpipe.storage.raster import gdal_cloud_options

    assert gdal_cloud_options({"SSL_CERT_FILE": "/ca.pem"}) == {"GDAL_CURL_CA_BUNDLE": "/ca.pem"}
    assert gdal_cloud_options({"CURL_CA_BUNDLE": "/curl.pem", "SSL_CERT_FILE": "/ca.pem"}) == {
        "GDAL_CURL_CA_BUNDLE": "/curl.pem"}
    assert gdal_cloud_options({"SSL_CERT_FILE": "/ca.pem", "GDAL_CURL_CA_BUNDLE": certifi.where()}) == {
        "GDAL_CURL_CA_BUNDLE": "/ca.pem"}
    assert gdal_cloud_options({"SSL_CERT_FILE": "/ca.pem", "GDAL_CURL_CA_BUNDLE": "/mine.pem"}) == {}
