"""Pre-label sources read from object storage, against a real S3 server (moto, tests/_s3.py).

Entry points (for the cluster tests that read sources from the bucket):

* ``segpipe prelabel s3://BUCKET/PREFIX --model M --out STORE`` (or ``PrelabelRequest(source="s3://…")``):
  a folder prefix (every image below it), a glob (``s3://b/imgs/*.png``, ``**`` recursive), a COCO / VOC /
  YOLO dataset folder or its annotation file, a manifest (``.jsonl``), a GeoTIFF/COG scene (read by window).
* ``tests.storage.test_object_sources.upload_tree(bucket, prefix, folder)``: copies a local folder into the
  bucket (one PUT per file, through :class:`segpipe.storage.location.Location`).
* ``segpipe.pipeline.prelabel.source.list_source(url)`` lists on the driver (one LIST, no download);
  ``segpipe.kernels.prelabel.ingest.describe_images(url_root, names)`` runs on a worker, which reads the
  objects itself (endpoint and credentials from the standard AWS environment, set by the ``s3_server``
  fixture and inherited by Dask workers started afterwards).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from segpipe.errors import ImageDecodeError, InputError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import Conversion, convert
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.pipeline.prelabel.source import list_source
from segpipe.storage.images import read_image
from segpipe.storage.location import Location
from segpipe.storage.raster import gdal_cloud_options, gdal_path, open_raster
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests.badinput._corpus import synth_with_unet


def upload_tree(bucket: str, prefix: str, folder: Path) -> list[str]:
    """Copies every file below ``folder`` to ``s3://bucket/prefix/…``; returns the keys written."""
    loc = Location(f"s3://{bucket}")
    keys = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            key = f"{prefix}/{p.relative_to(folder).as_posix()}"
            loc.write_bytes(key, p.read_bytes())
            keys.append(key)
    return keys


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(collection, checkpoint)``: 6 synthetic street-view images (COCO + masks) and a tiny U-Net for them."""
    root = tmp_path_factory.mktemp("objsrc")
    synth_with_unet(root / "col", root / "unet.ckpt", n=6, seed=5, size=(64, 96))
    return root / "col", root / "unet.ckpt"


def _labels(store: Path) -> dict[int, np.ndarray]:
    """Image id → its label map, through the store's own API (stacked or not)."""
    s = ZarrStore.open(store)
    return {i: s.read(i, "labels") for i in s.image_ids()}


def _run(source: str, ckpt: Path, out: Path, workers: int = 0, scheduler: str | None = None) -> dict:
    req = PrelabelRequest(source=source, model=str(ckpt), out=out, threads=1)
    spec = ClusterSpec(workers=workers) if scheduler is None else ClusterSpec(scheduler=scheduler)
    return prelabel(req, spec)


def _same_stores(a: Path, b: Path) -> None:
    la, lb = _labels(a), _labels(b)
    assert la and sorted(la) == sorted(lb)
    for i in la:
        np.testing.assert_array_equal(la[i], lb[i])
    pa, pb = ZarrStore.open(a), ZarrStore.open(b)
    for i in la:
        np.testing.assert_array_equal(pa.read(i, "probs"), pb.read(i, "probs"))


# ------------------------------------------------------------------ images: folder prefix and glob

def test_listing_is_one_list_and_matches_the_local_one(bucket: str, data: tuple[Path, Path]) -> None:
    col, _ = data
    upload_tree(bucket, "col", col)
    for rel in ("images", "images/", "images/*.png", "**/0000[0-4].png", "images/**/*.png", "*/00001.*"):
        got, local = list_source(f"s3://{bucket}/col/{rel}"), list_source(f"{col}/{rel}")
        assert list(got.groups.values()) == list(local.groups.values()), rel
        assert got.listed_bytes == sum(Path(root, name).stat().st_size for root, items in local.groups.items()
                                       for name, _ in items), rel
    # a dataset folder keeps its own image ids, as locally
    assert list(list_source(f"s3://{bucket}/col").groups.values()) == list(list_source(str(col)).groups.values())
    assert list(list_source(f"s3://{bucket}/col/annotations.json").groups.values()) == \
        list(list_source(str(col / "annotations.json")).groups.values())


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_voc_and_yolo_datasets_on_s3_list_as_local_ones(bucket: str, data: tuple[Path, Path], tmp_path: Path,
                                                          fmt: str) -> None:
    col, _ = data
    convert(Conversion(src=col, dst=tmp_path / fmt, to=fmt), ClusterSpec(workers=0))
    upload_tree(bucket, fmt, tmp_path / fmt)
    local, remote = list_source(str(tmp_path / fmt)), list_source(f"s3://{bucket}/{fmt}")
    assert [(Path(k).relative_to(tmp_path).as_posix(), v) for k, v in local.groups.items()] == \
        [(k.removeprefix(f"s3://{bucket}/"), v) for k, v in remote.groups.items()]
    assert sum(len(v) for v in remote.groups.values()) == 6


def test_images_decode_exactly_as_local_files(bucket: str, data: tuple[Path, Path]) -> None:
    col, _ = data
    upload_tree(bucket, "imgs", col / "images")
    for p in sorted((col / "images").iterdir()):
        np.testing.assert_array_equal(read_image(f"s3://{bucket}/imgs/{p.name}"), read_image(p))


def test_prelabel_folder_and_glob_from_s3_equal_the_local_run(bucket: str, data: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    col, ckpt = data
    upload_tree(bucket, "imgs", col / "images")
    _run(str(col / "images"), ckpt, tmp_path / "local.zarr")
    rep = _run(f"s3://{bucket}/imgs", ckpt, tmp_path / "s3.zarr")
    assert rep["images"]["done"] == 6 and rep["images"]["failed"] == 0
    _same_stores(tmp_path / "local.zarr", tmp_path / "s3.zarr")
    rep = _run(f"s3://{bucket}/imgs/0000[024].png", ckpt, tmp_path / "glob.zarr")
    assert rep["images"]["done"] == 3
    glob_labels, local = _labels(tmp_path / "glob.zarr"), _labels(tmp_path / "local.zarr")
    for i, lab in glob_labels.items():
        np.testing.assert_array_equal(lab, local[i])
    # each item records the URL it was read from (no credentials in it)
    manifest = (tmp_path / "s3.zarr" / ".segpipe" / "manifest.jsonl").read_text()
    assert f'"path": "s3://{bucket}/imgs/00000.png"' in manifest and "segpipe-test-secret" not in manifest


def test_coco_dataset_on_s3_keeps_its_ids_and_labels(bucket: str, data: tuple[Path, Path], tmp_path: Path) -> None:
    col, ckpt = data
    upload_tree(bucket, "ds", col)
    _run(str(col), ckpt, tmp_path / "local.zarr")
    rep = _run(f"s3://{bucket}/ds", ckpt, tmp_path / "s3.zarr")
    assert rep["images"]["done"] == 6
    _same_stores(tmp_path / "local.zarr", tmp_path / "s3.zarr")
    gt_ids = {im["id"] for im in json.loads((col / "annotations.json").read_text())["images"]}
    assert set(_labels(tmp_path / "s3.zarr")) == gt_ids


def test_manifest_on_s3(bucket: str, data: tuple[Path, Path], tmp_path: Path) -> None:
    col, ckpt = data
    upload_tree(bucket, "imgs", col / "images")
    _run(f"s3://{bucket}/imgs", ckpt, tmp_path / "first.zarr")
    # the manifest of a run from the bucket names the objects: run again from it, kept in the bucket
    loc = Location(f"s3://{bucket}")
    loc.write_bytes("lists/m.jsonl", (tmp_path / "first.zarr" / ".segpipe" / "manifest.jsonl").read_bytes())
    rep = _run(f"s3://{bucket}/lists/m.jsonl", ckpt, tmp_path / "again.zarr")
    assert rep["images"]["done"] == 6
    _same_stores(tmp_path / "first.zarr", tmp_path / "again.zarr")
    # a manifest's relative paths resolve against its own folder in the bucket
    manifest = tmp_path / "first.zarr" / ".segpipe" / "manifest.jsonl"
    lines = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    for d in lines:
        d["path"] = f"imgs/{d['file']}"
    loc.write_bytes("rel.jsonl", "".join(json.dumps(d) + "\n" for d in lines).encode())
    rep = _run(f"s3://{bucket}/rel.jsonl", ckpt, tmp_path / "rel.zarr")
    assert rep["images"]["done"] == 6
    _same_stores(tmp_path / "first.zarr", tmp_path / "rel.zarr")


def test_two_dask_workers_read_the_bucket_themselves(bucket: str, data: tuple[Path, Path], tmp_path: Path) -> None:
    col, ckpt = data
    upload_tree(bucket, "imgs", col / "images")
    _run(str(col / "images"), ckpt, tmp_path / "local.zarr")
    # two `dask worker` processes: their tasks carry only URLs, each worker reads the objects itself
    with external_cluster(tmp_path, [[], []]) as address:
        rep = _run(f"s3://{bucket}/imgs", ckpt, tmp_path / "s3.zarr", scheduler=address)
    assert rep["images"]["done"] == 6
    _same_stores(tmp_path / "local.zarr", tmp_path / "s3.zarr")
    entries = [json.loads(ln) for ln in (tmp_path / "s3.zarr" / ".segpipe" / "manifest.jsonl").read_text().splitlines()]
    assert all(e["path"].startswith(f"s3://{bucket}/imgs/") for e in entries) and len(entries) == 6


# ------------------------------------------------------------------ scenes (COG) read by window

def _write_cog(path: Path, rgb: np.ndarray, *, block: int = 256) -> None:
    import rasterio
    from rasterio.transform import Affine

    h, w, _ = rgb.shape
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 4000000), blocksize=block, compress="deflate") as d:
        d.write(np.moveaxis(rgb, -1, 0))


def test_cog_scene_on_s3_equals_the_local_scene_run(bucket: str, data: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    col, ckpt = data
    tiles = [read_image(p) for p in sorted((col / "images").iterdir())]
    mosaic = np.concatenate([np.concatenate(tiles[:3], axis=1), np.concatenate(tiles[3:], axis=1)], axis=0)
    mosaic = np.tile(mosaic, (4, 2, 1))  # (512, 576, 3): several 256² blocks
    (tmp_path / "scenes").mkdir()
    _write_cog(tmp_path / "scenes" / "s.tif", mosaic)
    upload_tree(bucket, "scenes", tmp_path / "scenes")
    _run(str(tmp_path / "scenes"), ckpt, tmp_path / "local.zarr")
    rep = _run(f"s3://{bucket}/scenes", ckpt, tmp_path / "s3.zarr")
    assert rep["items"]["scenes"] == 1 and rep["images"]["failed"] == 0
    _same_stores(tmp_path / "local.zarr", tmp_path / "s3.zarr")
    g = ZarrStore.open(tmp_path / "s3.zarr").group(ZarrStore.open(tmp_path / "s3.zarr").image_ids()[0])
    assert g.attrs["geo"]["source"] == f"s3://{bucket}/scenes/s.tif" and "UTM" in g.attrs["geo"]["crs"]

    # The scene from the bucket into a store in the bucket: each block task writes its own chunk there.
    rep = _run(f"s3://{bucket}/scenes", ckpt, f"s3://{bucket}/scene.zarr")  # type: ignore[arg-type]
    assert rep["images"]["failed"] == 0
    local, remote = ZarrStore.open(tmp_path / "local.zarr"), ZarrStore.open(f"s3://{bucket}/scene.zarr")
    assert remote.image_ids() == local.image_ids()
    for i in local.image_ids():
        for name in ("labels", "probs"):
            np.testing.assert_array_equal(remote.read(i, name), local.read(i, name))
    # and a resumed run finds every block done
    req = PrelabelRequest(source=f"s3://{bucket}/scenes", model=str(ckpt), out=f"s3://{bucket}/scene.zarr",
                          threads=1, resume=True)
    again = prelabel(req, ClusterSpec(workers=0))
    assert again["images"]["failed"] == 0 and again["images"]["done"] == 0
    assert again["images"]["skipped_already_done"] == again["images"]["total"] == 1


def test_a_window_reads_only_its_blocks(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("rasterio")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)  # noise: deflate cannot shrink it
    _write_cog(tmp_path / "big.tif", rgb)
    size = (tmp_path / "big.tif").stat().st_size
    Location(f"s3://{bucket}").write_bytes("big.tif", (tmp_path / "big.tif").read_bytes())
    monkeypatch.setenv("CPL_DEBUG", "ON")  # GDAL's /vsis3/ then logs every range it downloads
    with caplog.at_level(logging.DEBUG, logger="rasterio"):
        src = open_raster(f"s3://{bucket}/big.tif", stretch="none")
        window = src[0:64, 0:64]
        src.close()
    np.testing.assert_array_equal(window, rgb[:64, :64])
    ranges = [tuple(map(int, m.groups())) for r in caplog.records
              if (m := re.search(r"Downloading (\d+)-(\d+) \(", r.getMessage()))]
    assert ranges, "GDAL logged no download"
    fetched = 16384 + sum(b - a + 1 for a, b in ranges)  # + the header GDAL reads to size the object
    assert fetched < size / 4, (fetched, size)


def test_gdal_options_come_from_the_standard_environment() -> None:
    assert gdal_cloud_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}) == {
        "AWS_S3_ENDPOINT": "127.0.0.1:9000", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}
    env = {"AWS_ENDPOINT_URL_S3": "https://s3.example.org", "AWS_ENDPOINT_URL": "http://x"}
    assert gdal_cloud_options(env) == {
        "AWS_S3_ENDPOINT": "s3.example.org", "AWS_HTTPS": "YES", "AWS_VIRTUAL_HOSTING": "FALSE"}
    assert gdal_cloud_options({}) == {}  # AWS itself: GDAL's defaults
    # GDAL's own names win
    assert gdal_cloud_options({"AWS_ENDPOINT_URL": "http://h:1", "AWS_S3_ENDPOINT": "mine"}) == {}
    assert gdal_cloud_options({"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "k"}) == {
        "AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_ACCESS_KEY": "k"}
    assert gdal_path("s3://b/a/x.tif") == "/vsis3/b/a/x.tif"
    assert gdal_path("gs://b/x.tif") == "/vsigs/b/x.tif" and gdal_path("az://c/x.tif") == "/vsiaz/c/x.tif"
    assert gdal_path("https://host/d/x.tif") == "/vsicurl/https://host/d/x.tif"


# ------------------------------------------------------------------ refusals (one line naming the URL)

def test_refusals_name_the_url(bucket: str, data: tuple[Path, Path]) -> None:
    col, _ = data
    upload_tree(bucket, "imgs", col / "images")
    Location(f"s3://{bucket}").write_bytes("docs/readme.md", b"no images here")
    cases = [
        (f"s3://{bucket}/nothing", "no images found"),
        (f"s3://{bucket}/docs", "no images found"),
        (f"s3://{bucket}-missing/imgs", "no such bucket"),
        (f"s3://{bucket}/imgs/*.jpg", "no images found"),
        (f"s3://{bucket}/none.jsonl", "no such object"),
        ("https://user:pw@example.invalid/imgs", "credentials"),
        ("https://example.invalid/imgs", "cannot be listed"),
    ]
    for url, needle in cases:
        with pytest.raises(InputError, match=needle) as e:
            list_source(url)
        assert "\n" not in str(e.value) and "pw@" not in str(e.value)
        assert url.replace("user:pw@", "").rstrip("/*.jpg").split("/")[2] in str(e.value)
    with pytest.raises(InputError, match="no such object"):
        read_image(f"s3://{bucket}/imgs/missing.png")
    Location(f"s3://{bucket}").write_bytes("imgs/broken.png", b"not a png")
    with pytest.raises(ImageDecodeError, match=f"s3://{bucket}/imgs/broken.png: not a recognised image file"):
        read_image(f"s3://{bucket}/imgs/broken.png")
