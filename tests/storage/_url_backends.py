"""The cases object-storage backends pass, run against a real server per backend.

``tests/storage/test_azure_store.py`` (Azurite) and ``test_gcs_store.py`` (fake-gcs-server) import these
test functions and give them two fixtures: ``bucket_url`` (``az://CONTAINER``, ``gs://BUCKET``: a new,
empty bucket on that backend's server, reached through its standard environment, tests/_servers.py) and
``put_tree`` (copies a local folder into the bucket). S3 has its own, longer suite (test_object_*.py
against moto).

* Read side (``test_location_reads_lists_and_deletes``, ``test_coco_dataset_and_glob_…``,
  ``test_prelabel_from_the_bucket_…``, ``test_cog_…``): a source read from the bucket (folder prefix,
  glob, COCO dataset, a COG read by window through GDAL) gives what the local copy gives, in the CLI's
  process and on real ``dask worker`` processes that share nothing but the bucket; a location reads,
  lists and deletes.
* Write side (``test_location_writes_…``, ``test_prelabel_into_the_bucket_…``, ``test_source_and_store_…``:
  where the emulator takes obstore's uploads): a store written there by
  ``segpipe prelabel`` equals the same run into a local folder image by image, ``segpipe fsck`` passes
  it, ``--resume`` finds it done, its COCO export equals the local store's, built locally or uploaded to
  the bucket and read back; conditional create (receipts) refuses a second writer.

The cases assert behaviour, never object keys (the layout of a store in a bucket is the store's own).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from segpipe.storage.location import Location, parse_location, wait_all
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests.conftest import run_cli


def location(url: str) -> Location:
    """The :class:`Location` of ``url`` (asserting it is one)."""
    loc = parse_location(url)
    assert isinstance(loc, Location)
    return loc


#: Copies every file below a local folder to ``URL/…`` (``put_tree(url, folder)``); returns the keys written.
PutTree = Callable[[str, Path], list[str]]


def upload_tree(url: str, folder: Path) -> list[str]:
    """:data:`PutTree` through segpipe's own :class:`Location` (one PUT per file), for writable backends."""
    loc = location(url)
    keys = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            key = p.relative_to(folder).as_posix()
            loc.write_bytes(key, p.read_bytes())
            keys.append(key)
    return keys


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/``: 6 synthetic street-view images (64x128) with their COCO file; ``unet.ckpt``: a tiny U-Net."""
    from tests.badinput._corpus import synth_with_unet

    root = tmp_path_factory.mktemp("backend")
    synth_with_unet(root / "data", root / "unet.ckpt", n=6, seed=11, size=(64, 128))
    return root


def prelabel_cli(root: Path, source: str, out: str, *extra: str) -> str:
    """``segpipe prelabel SOURCE -m unet.ckpt -o OUT`` (in the CLI's process unless ``extra`` says); its stdout."""
    r = run_cli("prelabel", source, "-m", str(root / "unet.ckpt"), "-o", out, "--threads", "1",
                *(extra or ("-w", "0")), cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def local_run(small: Path) -> Path:
    """The same run into a local store: what every run through the bucket must reproduce."""
    out = small / "local.zarr"
    prelabel_cli(small, str(small / "data" / "images"), str(out))
    return out


def _receipts(store: ZarrStore) -> dict[int, dict[str, str]]:
    """Image id → its receipt's output digests."""
    ledger = store.ledger()
    return {int(rec["image_id"]): rec["outputs"] for rec in (ledger.read(k) for k in ledger.keys())}


def same_outputs(local: Path, target: str | Path) -> None:
    """Same images, label maps, probabilities and receipts' digests as the local store."""
    a, b = ZarrStore.open(local), ZarrStore.open(target)
    assert b.image_ids() == a.image_ids() and len(a.image_ids()) == 6
    for i in a.image_ids():
        for name in ("labels", "probs"):
            np.testing.assert_array_equal(b.read(i, name), a.read(i, name))
    assert _receipts(b) == _receipts(a)


def _coco(doc: dict[str, object]) -> dict[str, object]:
    """A COCO export without what names the reading (the store's path and a per-reading token)."""
    return {k: v for k, v in doc.items() if k not in ("store", "store_token")}


def test_location_reads_lists_and_deletes(bucket_url: str, put_tree: PutTree, tmp_path: Path) -> None:
    for rel, data in (("a/k.json", b"first"), ("b.txt", b"plain"), ("c/d/e.txt", b"deep"), ("x.txt", b"out")):
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(data)
    (tmp_path / "tree" / "x.txt").unlink()
    put_tree(f"{bucket_url}/some/prefix", tmp_path / "tree")
    put_tree(f"{bucket_url}/other", tmp_path / "tree" / "c")
    loc = location(f"{bucket_url}/some/prefix")
    assert loc.exists("a/k.json") and not loc.exists("a/none.json")
    assert loc.read_bytes("a/k.json") == b"first"
    with pytest.raises(FileNotFoundError, match=f"{bucket_url}/some/prefix/a/none.json"):
        loc.read_bytes("a/none.json")
    assert list(loc.list()) == ["a/k.json", "b.txt", "c/d/e.txt"]
    assert list(loc.list("c")) == ["c/d/e.txt"]
    assert loc.top_level() == ("a", "b.txt", "c")
    loc.delete("b.txt")
    loc.delete("b.txt")  # absent: no error
    loc.delete_many(["c/d/e.txt", "never/was.txt"])  # an absent key among them: no error either
    assert list(loc.list()) == ["a/k.json"]
    assert sorted(location(bucket_url).list()) == ["other/d/e.txt", "some/prefix/a/k.json"]


def test_location_writes_and_put_if_absent(bucket_url: str) -> None:
    loc = location(f"{bucket_url}/some/prefix")
    assert loc.put_if_absent("a/k.json", b"first") is True
    assert loc.put_if_absent("a/k.json", b"second") is False  # the service's conditional create refused it
    assert loc.read_bytes("a/k.json") == b"first"
    loc.write_bytes("a/k.json", b"replaced")
    wait_all([loc.write_later(f"many/{i}.bin", bytes([i]) * 100) for i in range(20)])
    assert loc.read_bytes("a/k.json") == b"replaced"
    assert [loc.read_bytes(f"many/{i}.bin") for i in range(20)] == [bytes([i]) * 100 for i in range(20)]
    wait_all([loc.delete_later(f"many/{i}.bin") for i in range(20)])
    assert list(loc.list()) == ["a/k.json"]


def test_prelabel_into_the_bucket_equals_local_then_fsck_and_export(small: Path, local_run: Path, bucket_url: str,
                                                                    tmp_path: Path) -> None:
    url = f"{bucket_url}/run.zarr"
    out = prelabel_cli(small, str(small / "data" / "images"), url)
    assert f"{url}: 6 done, 0 already done, 0 failed of 6 images" in out
    same_outputs(local_run, url)
    assert location(url).read_bytes(".segpipe/manifest.jsonl") == \
        (local_run / ".segpipe" / "manifest.jsonl").read_bytes()

    f = run_cli("fsck", url)
    assert f.returncode == 0, f.stderr
    assert f"{url}: 6/6 receipts ok, 0 bad receipts, 0 orphans, 0 problems" in f.stdout
    # a second run is refused without a flag; --resume finds every image done
    r = run_cli("prelabel", str(small / "data" / "images"), "-m", str(small / "unet.ckpt"), "-o", url, "-w", "0")
    assert r.returncode == 2 and "store exists" in r.stderr and "Traceback" not in r.stderr
    assert "0 done, 6 already done" in prelabel_cli(small, str(small / "data" / "images"), url, "-w", "0", "--resume")

    # COCO from the bucket equals COCO from the local store, built locally or uploaded to the bucket
    for src, dst in ((str(local_run), str(tmp_path / "coco_local")), (url, str(tmp_path / "coco_remote"))):
        e = run_cli("export", src, dst, "--to", "coco", "--layout", "single", "-w", "0")
        assert e.returncode == 0, e.stderr
    a = _coco(json.loads((tmp_path / "coco_local" / "annotations.json").read_text()))
    b = _coco(json.loads((tmp_path / "coco_remote" / "annotations.json").read_text()))
    assert a == b and len(a["images"]) == 6 and a["annotations"]  # type: ignore[arg-type]
    up = f"{bucket_url}/exports/coco"
    e = run_cli("export", url, up, "--to", "coco", "--layout", "single", "-w", "0")
    assert e.returncode == 0, e.stderr
    assert _coco(json.loads(location(up).read_bytes("annotations.json"))) == b
    assert json.loads(location(up).read_bytes("conversion_report.json"))["target"]["path"] == up


def test_source_and_store_in_the_bucket_on_two_dask_workers(small: Path, local_run: Path, bucket_url: str,
                                                            tmp_path: Path) -> None:
    """Two ``dask worker`` processes read the images from the bucket and write the store there themselves."""
    upload_tree(f"{bucket_url}/imgs", small / "data" / "images")
    url = f"{bucket_url}/dask.zarr"
    with external_cluster(tmp_path, [[], []]) as address:
        out = prelabel_cli(small, f"{bucket_url}/imgs", url, "--scheduler", address)
    assert "6 done" in out
    same_outputs(local_run, url)
    entries = [json.loads(ln) for ln in location(url).read_bytes(".segpipe/manifest.jsonl").decode().splitlines()]
    assert sorted(e["path"] for e in entries) == sorted(f"{bucket_url}/imgs/{p.name}"
                                                        for p in (small / "data" / "images").iterdir())
    f = run_cli("fsck", url)
    assert f.returncode == 0 and "6/6 receipts ok" in f.stdout, f.stdout + f.stderr


def test_coco_dataset_and_glob_in_the_bucket_list_as_local_ones(small: Path, bucket_url: str,
                                                                put_tree: PutTree) -> None:
    from segpipe.pipeline.prelabel.source import list_source

    data = small / "data"
    put_tree(f"{bucket_url}/ds", data)
    local_ids = list(list_source(str(data)).groups.values())
    assert list(list_source(f"{bucket_url}/ds").groups.values()) == local_ids  # the dataset's own ids
    assert list(list_source(f"{bucket_url}/ds/annotations.json").groups.values()) == local_ids
    for rel in ("images", "images/", "images/*.png", "**/0000[0-2].png"):
        got, want = list_source(f"{bucket_url}/ds/{rel}"), list_source(f"{data}/{rel}")
        assert list(got.groups.values()) == list(want.groups.values()), rel


def test_prelabel_from_the_bucket_equals_local_on_two_dask_workers(small: Path, local_run: Path, bucket_url: str,
                                                                   put_tree: PutTree, tmp_path: Path) -> None:
    """The CLI lists the bucket; two ``dask worker`` processes read the images from it themselves."""
    put_tree(f"{bucket_url}/imgs", small / "data" / "images")
    with external_cluster(tmp_path, [[], []]) as address:
        out = prelabel_cli(small, f"{bucket_url}/imgs", str(tmp_path / "dask.zarr"), "--scheduler", address)
    assert "6 done, 0 already done, 0 failed of 6 images" in out
    same_outputs(local_run, tmp_path / "dask.zarr")
    entries = [json.loads(ln) for ln in (tmp_path / "dask.zarr" / ".segpipe" / "manifest.jsonl").read_text()
               .splitlines()]
    assert sorted(e["path"] for e in entries) == sorted(f"{bucket_url}/imgs/{p.name}"
                                                        for p in (small / "data" / "images").iterdir())
    # a glob and the dataset itself, in the CLI's own process
    out = prelabel_cli(small, f"{bucket_url}/imgs/0000[0-2].png", str(tmp_path / "glob.zarr"))
    assert "3 done" in out
    glob, local = ZarrStore.open(tmp_path / "glob.zarr"), ZarrStore.open(local_run)
    assert len(glob.image_ids()) == 3
    for i in glob.image_ids():
        np.testing.assert_array_equal(glob.read(i, "labels"), local.read(i, "labels"))


def _write_cog(path: Path, rgb: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import Affine

    h, w, _ = rgb.shape
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 4000000), blocksize=256, compress="deflate") as d:
        d.write(np.moveaxis(rgb, -1, 0))


def test_cog_in_the_bucket_read_by_window(bucket_url: str, put_tree: PutTree, tmp_path: Path) -> None:
    """GDAL reads the scene through its own driver for the scheme (``/vsiaz/``, ``/vsigs/``), configured from
    the standard environment by segpipe."""
    pytest.importorskip("rasterio")
    from segpipe.storage.raster import open_raster

    rgb = np.random.default_rng(3).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    (tmp_path / "scenes").mkdir()
    _write_cog(tmp_path / "scenes" / "s.tif", rgb)
    put_tree(f"{bucket_url}/scenes", tmp_path / "scenes")
    src = open_raster(f"{bucket_url}/scenes/s.tif", stretch="none")
    try:
        assert src.shape == (600, 700) and "UTM" in (src.crs or "")
        np.testing.assert_array_equal(src[300:364, 500:600], rgb[300:364, 500:600])
        np.testing.assert_array_equal(src[:, :], rgb)
    finally:
        src.close()
