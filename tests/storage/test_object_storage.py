"""Stores, receipts and locations in object storage, against a real S3 server (moto, tests/_s3.py)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segpipe.errors import ConfigError, InputError
from segpipe.kernels.prelabel.doubt import record_doubt
from segpipe.storage.ledger import ObjectLedger
from segpipe.storage.location import Location, names_object_storage, parse_location
from segpipe.storage.zarrstore import ZarrStore, array_digest, dimension_names, quantise_probs
from tests._dask_cluster import external_cluster

CATS = [{"id": 1, "name": "road"}, {"id": 2, "name": "tree"}]


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "labels": rng.integers(0, 3, (70, 90), dtype=np.uint8),
        "probs": quantise_probs(rng.random((3, 70, 90))),
        "rle": np.array(["abc", "de"], dtype=str),
    }


def _write_image(store: ZarrStore, image_id: int, seed: int) -> dict[str, str]:
    """Writes one image's arrays as a worker does; returns their digests."""
    group = store.image_group(image_id, {"file_name": f"{image_id}.png"})
    attrs = store.label_attributes()
    return {name: ZarrStore.write_array(group, name, data, chunks=(32, 32) if data.ndim == 2 else None,
                                        attributes=attrs if name == "labels" else None)
            for name, data in _arrays(seed).items()}


# ------------------------------------------------------------------ locations (no server)

def test_parse_location_local_and_urls(tmp_path: Path) -> None:
    assert parse_location(tmp_path) == tmp_path
    assert parse_location(str(tmp_path / "a.zarr")) == tmp_path / "a.zarr"
    assert parse_location(f"file://{tmp_path}") == tmp_path
    for url in ("s3://b/x.zarr", "gs://b/x.zarr", "az://c/x.zarr", "https://host/data"):
        loc = parse_location(url + "/")
        assert isinstance(loc, Location) and loc.url == url
    assert parse_location("s3://b/x").writable and not parse_location("https://h/x").writable  # type: ignore[union-attr]


@pytest.mark.parametrize(("url", "needle"), [("ftp://b/x", "unknown storage scheme 'ftp://'"),
                                              ("s3:///x", "no bucket")])
def test_parse_location_refuses(url: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_location(url)


def test_names_object_storage_also_in_a_path_made_of_a_url() -> None:
    assert names_object_storage("s3://b/x.zarr") == "s3://b/x.zarr"
    assert names_object_storage(Path("s3://b/x.zarr")) == "s3://b/x.zarr"  # what Typer's Path makes of it
    assert names_object_storage(Path("https://u:pw@h/x")) == "https://h/x"
    assert names_object_storage("ftp://b/x") == "ftp://b/x"  # any URL is no local path
    for local in ("x.zarr", "/data/s3/x.zarr", "s3:x", "./s3://b", "C:/data"):
        assert names_object_storage(local) is None, local


def test_location_never_shows_credentials() -> None:
    loc = parse_location("https://user:hunter2@example.com:8443/data")
    assert isinstance(loc, Location)
    assert "hunter2" not in repr(loc) and "hunter2" not in str(loc) and "user" not in str(loc)
    assert str(loc) == "https://example.com:8443/data"
    with pytest.raises(ConfigError, match="read-only") as e:
        loc.write_bytes("k", b"x")
    assert "hunter2" not in str(e.value)
    assert pickle.loads(pickle.dumps(loc)) == loc  # only the URL travels to workers


# ------------------------------------------------------------------ against moto

def test_location_bytes_listing_and_put_if_absent(bucket: str) -> None:
    loc = parse_location(f"s3://{bucket}/some/prefix")
    assert isinstance(loc, Location)
    assert not loc.exists("a/k.json")
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/some/prefix/a/k.json"):
        loc.read_bytes("a/k.json")
    assert loc.put_if_absent("a/k.json", b"first") is True
    assert loc.put_if_absent("a/k.json", b"second") is False  # If-None-Match: * refused by the server
    assert loc.read_bytes("a/k.json") == b"first"
    loc.write_bytes("b.txt", b"plain")
    assert list(loc.list()) == ["a/k.json", "b.txt"]
    assert list(loc.list("a")) == ["a/k.json"]
    loc.delete("b.txt")
    loc.delete("b.txt")  # absent: no error
    assert list(loc.list()) == ["a/k.json"]
    # Nothing leaked outside the prefix.
    assert list(parse_location(f"s3://{bucket}").list()) == ["some/prefix/a/k.json"]  # type: ignore[union-attr]


def test_store_round_trip(bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/runs/x.zarr"
    store = ZarrStore.create(url, {"task": "semantic", "categories": CATS})
    assert store.location is not None and str(store.location) == url
    digests = {i: _write_image(store, i, seed=i) for i in (3, 11)}

    again = ZarrStore.open(url)
    assert again.attrs()["task"] == "semantic" and again.attrs()["categories"] == CATS
    assert again.attrs()["layout"] == 2
    assert again.image_ids() == [3, 11]
    for i in (3, 11):
        want = _arrays(i)
        for name, data in want.items():
            got = again.read(i, name)
            np.testing.assert_array_equal(got, data)
            plain = np.array(got.tolist(), dtype=str) if got.dtype.kind in "UTO" else got
            assert array_digest(plain) == digests[i][name]
        g = again.group(i)
        assert g.attrs["file_name"] == f"{i}.png"
        assert g["labels"].fill_value == 255 and g["labels"].metadata.dimension_names == ("y", "x")
        assert g["labels"].attrs["flag_meanings"] == "road tree"
        assert g["labels"].chunks == (32, 32)
    # Every group opens with xarray straight from the bucket (dimension names travel with the arrays).
    import xarray as xr

    ds = xr.open_zarr(again.location.zarr_store(read_only=True), group="images/3", consolidated=False)  # type: ignore[union-attr]
    assert ds["labels"].dims == ("y", "x") and ds["probs"].dims[0] == "class"
    np.testing.assert_array_equal(ds["labels"].values, _arrays(3)["labels"])
    again.update_attrs(run="r1")
    assert ZarrStore.open(url).attrs()["run"] == "r1"
    # The same arrays written to a local store read back equal (the local fast path is unchanged).
    local = ZarrStore.create(tmp_path / "x.zarr", {"task": "semantic", "categories": CATS})
    _write_image(local, 3, seed=3)
    for name in ("labels", "probs", "rle"):
        np.testing.assert_array_equal(local.read(3, name), again.read(3, name))


def test_store_open_refuses_what_is_no_store(bucket: str) -> None:
    with pytest.raises(InputError, match=f"s3://{bucket}/nothing.zarr: not a Zarr store"):
        ZarrStore.open(f"s3://{bucket}/nothing.zarr")
    loc = parse_location(f"s3://{bucket}/bad.zarr")
    assert isinstance(loc, Location)
    loc.write_bytes("zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {"segpipe": {"layout": 9}}}')
    with pytest.raises(InputError, match="unsupported segpipe store layout 9"):
        ZarrStore.open(loc.url)


def test_store_callers_not_wired_refuse_instead_of_writing_locally(bucket: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ZarrStore.create(f"s3://{bucket}/x.zarr", {"task": "semantic"})
    with pytest.raises(ConfigError, match="does not support stores in object storage yet"):
        _ = store.private
    with pytest.raises(ConfigError):
        _ = store.path
    assert list(tmp_path.iterdir()) == []  # no local folder named after the URL


def test_receipts_put_if_absent(bucket: str) -> None:
    store = ZarrStore.create(f"s3://{bucket}/x.zarr", {"task": "semantic"})
    ledger = store.ledger()
    assert isinstance(ledger, ObjectLedger)
    ledger.ensure()
    assert ledger.keys() == set() and ledger.finished() == set()
    first = {"status": "done", "image_id": 3, "outputs": {"labels": "xxh3:00"}}
    assert ledger.write("k1", first) is True
    assert ledger.write("k1", {**first, "image_id": 4}) is False  # the first finished run's receipt stays
    assert ledger.done("k1") and not ledger.done("k2")
    assert ledger.read("k1") == {"key": "k1", **first}
    # A receipt that does not decode, or that was copied under another key, vouches for nothing.
    priv = store.private_location
    assert priv is not None
    priv.write_bytes("ledger/k2.json", b'{"status": "do')
    priv.write_bytes("ledger/k3.json", b'{"key": "k1", "status": "done", "image_id": 3, "outputs": {}}')
    assert ledger.keys() == {"k1", "k2", "k3"}
    assert ledger.finished() == {"k1"}
    with pytest.raises(ValueError, match="ledger/k2.json: receipt does not decode"):
        ledger.read("k2")
    # Receipts live beside the arrays, under the store's private prefix.
    assert ZarrStore.open(store.location.url).ledger().finished() == {"k1"}  # type: ignore[union-attr]


def _worker_writes(store: ZarrStore, image_id: int) -> dict[str, str]:
    """Runs on a Dask worker: writes an image and its receipt, as a prelabel task does."""
    digests = _write_image(store, image_id, seed=image_id)
    store.ledger().write(f"task-{image_id}", {"status": "done", "image_id": image_id, "outputs": digests})
    return digests


def test_workers_write_one_store(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker processes (sharing no disk with the store) write images; the driver reads them back."""
    from distributed import Client

    url = f"s3://{bucket}/shared.zarr"
    store = ZarrStore.create(url, {"task": "semantic", "categories": CATS})
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # workers import this module
    with external_cluster(tmp_path, [[], []]) as address, Client(address) as client:
        ids = list(range(1, 7))
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2
        # Each worker writes every other image (pinned, so that both write into the one store).
        futures = [client.submit(_worker_writes, store, i, pure=False, workers=[workers[i % 2]],
                                 allow_other_workers=False) for i in ids]
        results = client.gather(futures)
    again = ZarrStore.open(url)
    assert again.image_ids() == ids
    assert again.ledger().finished() == {f"task-{i}" for i in ids}
    for i, digests in zip(ids, results, strict=True):
        assert again.ledger().read(f"task-{i}")["outputs"] == digests
        for name, data in _arrays(i).items():
            np.testing.assert_array_equal(again.read(i, name), data)


def test_image_writes_are_zarrs_own_objects_in_three_puts(bucket: str, s3_server: Any) -> None:
    """An image's group in object storage: the objects zarr itself writes, byte for byte, and only PUTs."""
    import zarr

    url = f"s3://{bucket}/w.zarr"
    store = ZarrStore.create(url, {"task": "semantic", "categories": CATS})
    attrs = store.label_attributes()
    rng = np.random.default_rng(5)
    arrays = {"labels": rng.integers(0, 3, (70, 90), dtype=np.uint8), "probs": quantise_probs(rng.random((3, 70, 90))),
              "heatmaps": rng.random((2, 20, 30)).astype(np.float16), "rle": np.array(["abc", "de"], dtype=str)}
    arrays["labels"][:32, :32] = 255  # a chunk all void: left out, as zarr does
    before = s3_server.log.read_text().count("\n")
    group = store.image_group(7, {"file_name": "7.png", "width": 90})
    ZarrStore.write_array(group, "labels", arrays["labels"], chunks=(32, 32), attributes=attrs)
    requests = s3_server.log.read_text().splitlines()[before:]
    for name in ("probs", "heatmaps", "rle"):
        ZarrStore.write_array(group, name, arrays[name])
    # group zarr.json, labels zarr.json and its 8 chunks that are not all void: PUTs alone (no LIST,
    # no GET, no parent re-PUT)
    assert sorted(r.split('"')[1].split()[0] for r in requests if "/w.zarr/" in r) == ["PUT"] * 10, requests

    # The same group written by zarr itself, beside it.
    ref_root = zarr.open_group(store=store.location.zarr_store(read_only=False), mode="a",  # type: ignore[union-attr]
                               zarr_format=3)
    ref = ref_root.create_group("images/ref", attributes={"file_name": "7.png", "width": 90})
    for name, data in arrays.items():
        chunks = (32, 32) if name == "labels" else data.shape
        kw: dict[str, Any] = ({"fill_value": 255, "attributes": {**attrs, "void_value": 255}} if name == "labels"
                              else {"fill_value": 0} if data.dtype.kind != "U" else {})
        dims = dimension_names(name, data.ndim)
        arr = ref.create_array(name, shape=data.shape, dtype=str if data.dtype.kind == "U" else data.dtype,
                               chunks=chunks, dimension_names=dims, **kw)
        arr[...] = data
    loc = store.location
    assert loc is not None
    ours = sorted(k.removeprefix("images/7/") for k in loc.list("images/7"))
    theirs = sorted(k.removeprefix("images/ref/") for k in loc.list("images/ref"))
    assert ours == theirs and "labels/c/0/0" not in ours
    for key in ours:
        assert loc.read_bytes(f"images/7/{key}") == loc.read_bytes(f"images/ref/{key}"), key
    again = ZarrStore.open(url)
    for name, data in arrays.items():
        np.testing.assert_array_equal(again.read(7, name), data)
    # What the task reads back (its doubt) comes from what it wrote, without a request; the doubt
    # record re-PUTs the group's document, and nothing else.
    np.testing.assert_array_equal(group["labels"], arrays["labels"])
    assert "instances" not in group
    before = s3_server.log.read_text().count("\n")
    rec = record_doubt("semantic", group)
    requests = [r.split('"')[1] for r in s3_server.log.read_text().splitlines()[before:]]
    assert rec is not None and [r.split()[0] for r in requests] == ["PUT"], requests
    assert "/w.zarr/images/7/zarr.json " in requests[0]
    assert again.group(7).attrs["doubt"] == rec and again.group(7).attrs["width"] == 90
    # A rerun of the task writes the same keys; a chunk now all void loses its stale object.
    labels = arrays["labels"].copy()
    labels[:32, 32:64] = 255
    ZarrStore.write_array(store.image_group(7, {"file_name": "7.png"}), "labels", labels, chunks=(32, 32),
                          attributes=attrs)
    assert not loc.exists("images/7/labels/c/0/1") and loc.exists("images/7/labels/c/1/1")
    np.testing.assert_array_equal(ZarrStore.open(url).read(7, "labels"), labels)
