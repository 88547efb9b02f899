"""Stacks (store layout 2) in object storage, against a real S3 server (moto, tests/_s3.py).

A pre-label run of 28 same-size images into ``s3://`` stacks them as a local run does: one shard object
of ``labels`` (and one of ``probs``) per 8 images and one ``done`` chunk per shard, key for key and byte
for byte the local store's files, which are what zarr-python writes for the same arrays (checked here
by letting zarr-python write the arrays again). fsck, ``--resume`` and the exports read the stacks
from the bucket.

Entry points: ``segpipe prelabel SRC --out s3://…``, ``segpipe fsck``, ``segpipe export``;
``segpipe.storage.stacks.ShardWriter(location)`` and ``plan_stacks(location, …)`` underneath.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segpipe.storage.location import Location, parse_location
from segpipe.storage.stacks import SHARD
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests.conftest import run_cli

#: Images of the collection: 3 whole shards and one of 4 (its last 4 slots stay fill).
N = 28
STACK = "64x128"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/images``: 28 synthetic street-view images (64x128); ``unet.ckpt``: a tiny U-Net for their classes."""
    from tests.badinput._corpus import synth_with_unet

    root = tmp_path_factory.mktemp("objstacks")
    synth_with_unet(root / "data", root / "unet.ckpt", n=N, seed=5, size=(64, 128))
    return root


def _prelabel(root: Path, out: str, *extra: str) -> Any:
    """``segpipe prelabel data/images -m unet.ckpt -o OUT`` (in-process unless ``extra`` names a scheduler)."""
    r = run_cli("prelabel", str(root / "data" / "images"), "-m", str(root / "unet.ckpt"), "-o", out,
                "--threads", "1", *(extra or ("-w", "0")), cwd=root)
    return r


@pytest.fixture(scope="module")
def local_run(small: Path) -> Path:
    """The same run into a local store: what every run into the bucket must reproduce."""
    out = small / "local.zarr"
    r = _prelabel(small, str(out))
    assert r.returncode == 0, r.stderr
    return out


def _loc(url: str) -> Location:
    loc = parse_location(url)
    assert isinstance(loc, Location)
    return loc


def _local_stack_files(store: Path) -> dict[str, bytes]:
    """Every file below ``stacks/`` of a local store, by key."""
    base = store / "stacks"
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def _bucket_stack_objects(url: str) -> dict[str, bytes]:
    loc = _loc(url)
    return {k: loc.read_bytes(k) for k in loc.list("stacks")}


def _shard_keys(name: str, shards: range) -> set[str]:
    tail = ".0.0.0" if name == "probs" else ".0.0"
    return {f"stacks/{STACK}/{name}/c.{s}{tail}" for s in shards}


def _modified(url: str) -> dict[str, Any]:
    """Key → last-modified time of every stack object."""
    import obstore

    loc = _loc(url)
    return {str(m["path"]): m["last_modified"] for batch in obstore.list(loc.store, "stacks") for m in batch}


def _digests(store: str | Path) -> dict[int, dict[str, str]]:
    ledger: Any = ZarrStore.open(store).ledger()
    return {int(ledger.read(k)["image_id"]): ledger.read(k)["outputs"] for k in ledger.keys()}


def test_prelabel_into_s3_stacks_like_a_local_store(small: Path, local_run: Path, bucket: str,
                                                    tmp_path: Path) -> None:
    url = f"s3://{bucket}/run.zarr"
    with external_cluster(tmp_path, [[], []]) as address:  # two real workers sharing nothing but the bucket
        r = _prelabel(small, url, "--scheduler", address)
    assert r.returncode == 0, r.stderr
    assert f"{N} done, 0 already done, 0 failed of {N} images" in r.stdout
    keys = list(_loc(url).list())
    # one shard object per 8 images (and per array), one done chunk per shard: no group per image
    shards = range(-(-N // SHARD))
    assert {k for k in keys if k.startswith(f"stacks/{STACK}/labels/c.")} == _shard_keys("labels", shards)
    assert {k for k in keys if k.startswith(f"stacks/{STACK}/probs/c.")} == _shard_keys("probs", shards)
    assert {k for k in keys if k.startswith(f"stacks/{STACK}/done/c.")} == {f"stacks/{STACK}/done/c.{s}"
                                                                           for s in shards}
    assert [k for k in keys if k.startswith("images/")] == ["images/zarr.json"]
    assert sum(k.startswith(".segpipe/ledger/") for k in keys) == N
    # the stacks are the local store's, object for object and byte for byte; so are the receipts' digests
    assert _bucket_stack_objects(url) == _local_stack_files(local_run)
    assert _digests(url) == _digests(local_run)
    store, ref = ZarrStore.open(url), ZarrStore.open(local_run)
    assert store.image_ids() == ref.image_ids() and len(ref.image_ids()) == N
    for i in ref.image_ids()[:3]:
        for name in ("labels", "probs"):
            np.testing.assert_array_equal(store.read(i, name), ref.read(i, name))
        assert dict(store.group(i).attrs) == dict(ref.group(i).attrs)

    f = run_cli("fsck", url)
    assert f.returncode == 0, f.stdout + f.stderr
    assert f"{url}: {N}/{N} receipts ok, 0 bad receipts, 0 orphans, 0 problems" in f.stdout


def test_stacks_in_the_bucket_are_what_zarr_writes(small: Path, local_run: Path, bucket: str,
                                                   tmp_path: Path) -> None:
    """Plain zarr over obstore opens the stacks; zarr-python writing the same arrays writes the same objects."""
    import zarr
    from obstore.store import from_url

    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url).returncode == 0
    endpoint_store = from_url(url, client_options={"allow_http": True})
    bucket_root = zarr.open_group(store=zarr.storage.ObjectStore(endpoint_store, read_only=True), mode="r")
    local_root = zarr.open_group(str(local_run), mode="r")
    objects = _bucket_stack_objects(url)
    for name in ("labels", "probs", "done", "ids", "attrs"):
        a, b = bucket_root[f"stacks/{STACK}/{name}"], local_root[f"stacks/{STACK}/{name}"]
        assert a.metadata.to_dict() == b.metadata.to_dict()
        data = np.asarray(a[...])
        np.testing.assert_array_equal(data, np.asarray(b[...]))
        # zarr-python writes the same array (same zarr.json) into a folder of its own
        folder = tmp_path / name
        folder.mkdir()
        doc = objects[f"stacks/{STACK}/{name}/zarr.json"]
        (folder / "zarr.json").write_bytes(doc)
        zarr.open_array(str(folder), mode="r+")[...] = data
        theirs = {f"stacks/{STACK}/{name}/{p.relative_to(folder).as_posix()}": p.read_bytes()
                  for p in folder.rglob("*") if p.is_file()}
        ours = {k: v for k, v in objects.items() if k.startswith(f"stacks/{STACK}/{name}/")}
        assert ours == theirs, name
    labels = np.asarray(bucket_root[f"stacks/{STACK}/labels"][...])
    assert labels.shape == (32, 64, 128) and (labels[N:] == 255).all()  # the tail slots: void, never written
    assert np.asarray(bucket_root[f"stacks/{STACK}/done"][...]).tolist() == [1] * N + [0] * (32 - N)


def test_fsck_names_a_damaged_shard_object_then_repair_and_resume(small: Path, local_run: Path,
                                                                  bucket: str) -> None:
    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url).returncode == 0
    loc = _loc(url)
    shard = f"stacks/{STACK}/labels/c.1.0.0"
    loc.write_bytes(shard, b"not a shard" * 10)
    f = run_cli("fsck", url)
    assert f.returncode == 1, f.stdout + f.stderr
    assert f"{N - SHARD}/{N} receipts ok, {SHARD} bad receipts" in f.stdout
    assert f"{url}/{shard}: labels: damaged shard object" in f.stderr
    assert "Traceback" not in f.stderr
    f = run_cli("fsck", url, "--repair")
    assert f"{SHARD} repaired" in f.stdout, f.stdout + f.stderr
    r = _prelabel(small, url, "-w", "0", "--resume")
    assert r.returncode == 0 and f"{SHARD} done, {N - SHARD} already done" in r.stdout, r.stdout + r.stderr
    assert run_cli("fsck", url).returncode == 0
    assert _bucket_stack_objects(url) == _local_stack_files(local_run)


def test_resume_rewrites_only_the_shards_it_must(small: Path, local_run: Path, bucket: str) -> None:
    """Shard 0's task died before its done chunk and receipts; shard 2's labels object was removed; two
    receipts of shard 3 were removed. ``--resume`` redoes those images, rewrites shards 0, 2 and 3
    whole (shard 3's two other images read back) and leaves shard 1 as it was.
    """
    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url).returncode == 0
    loc = _loc(url)
    ledger: Any = ZarrStore.open(url).ledger()
    by_slot = {int(ledger.read(k)["slot"]): k for k in ledger.keys()}
    for slot in [*range(0, SHARD), 3 * SHARD, 3 * SHARD + 1]:
        ledger.remove(by_slot[slot])
    loc.delete(f"stacks/{STACK}/done/c.0")
    loc.delete(f"stacks/{STACK}/labels/c.2.0.0")
    before = _modified(url)
    time.sleep(1.1)  # last-modified times have a resolution of a second
    r = _prelabel(small, url, "-w", "0", "--resume")
    assert r.returncode == 0, r.stderr
    redone = SHARD + SHARD + 2
    assert f"{redone} done, {N - redone} already done, 0 failed of {N} images" in r.stdout
    after = _modified(url)
    rewritten = {k for k in after if before.get(k) != after[k]}
    assert rewritten == _shard_keys("labels", range(0, 4, 2)) | _shard_keys("labels", range(3, 4)) \
        | _shard_keys("probs", range(0, 4, 2)) | _shard_keys("probs", range(3, 4)) \
        | {f"stacks/{STACK}/done/c.{s}" for s in (0, 2, 3)}
    assert _bucket_stack_objects(url) == _local_stack_files(local_run)
    assert _digests(url) == _digests(local_run)
    f = run_cli("fsck", url)
    assert f.returncode == 0 and f"{N}/{N} receipts ok" in f.stdout, f.stdout + f.stderr


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_source(doc: dict[str, Any]) -> dict[str, Any]:
    """An export's JSON without what names where it was read from and written to (the store, a per-reading
    token, the report's source and target paths) and how long it took.
    """
    if isinstance(doc, dict):
        return {k: _without_source(v) for k, v in doc.items()
                if k not in ("store", "store_token", "elapsed_s") and not (k == "path" and "format" in doc)}
    if isinstance(doc, list):
        return [_without_source(v) for v in doc]  # type: ignore[return-value]
    return doc


@pytest.mark.parametrize("fmt", ["coco", "voc", "labelstudio"])
def test_exports_from_the_bucket_equal_exports_from_the_local_store(small: Path, local_run: Path, bucket: str,
                                                                    tmp_path: Path, fmt: str) -> None:
    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url).returncode == 0
    trees = []
    for src, dst in ((str(local_run), tmp_path / "local"), (url, tmp_path / "bucket")):
        e = run_cli("export", src, str(dst), "--to", fmt, "-w", "0")
        assert e.returncode == 0, e.stderr
        trees.append(_tree(dst))
    a, b = trees
    assert sorted(a) == sorted(b) and len(a) > 1
    for key in a:
        if key.endswith(".json"):
            assert _without_source(json.loads(a[key])) == _without_source(json.loads(b[key])), key
        else:
            assert a[key] == b[key], key


def test_plan_stacks_in_the_bucket_replaces_stale_groups_and_clears_moved_slots(bucket: str) -> None:
    """The driver's layout in object storage: a group an earlier run wrote for an image now stacked is
    deleted (no reader finds it first); a slot whose image is written whole now (it grew) is cleared.
    """
    from segpipe.storage.stacks import plan_stacks, read_stack_slots

    url = f"s3://{bucket}/plan.zarr"
    store = ZarrStore.create(url, {"task": "semantic", "categories": [{"id": 1, "name": "road"}]})
    loc = _loc(url)
    stale = store.image_group(3, {"id": 3})
    ZarrStore.write_array(stale, "labels", np.ones((4, 6), dtype=np.uint8))
    other = store.image_group(99, {"id": 99})  # an image that is not stacked keeps its group
    ZarrStore.write_array(other, "labels", np.ones((4, 6), dtype=np.uint8))
    assert any(k.startswith("images/3/") for k in loc.list())
    items = [(i, 4, 6, {"id": i}) for i in range(SHARD)]
    placed = plan_stacks(loc, items, labels_dtype=np.uint8, n_classes=2, probs=True)
    assert placed == {i: ("4x6", i) for i in range(SHARD)}
    keys = list(loc.list())
    assert not any(k.startswith("images/3/") for k in keys)
    assert "images/99/labels/zarr.json" in keys
    ((ids, done),) = read_stack_slots(loc).values()
    assert ids.tolist() == list(range(SHARD)) and done.tolist() == [0] * SHARD
    # a resumed run: image 5 is written whole now; every other slot is kept, and nothing is added
    assert plan_stacks(loc, [it for it in items if it[0] != 5], labels_dtype=np.uint8, n_classes=2, probs=True,
                       elsewhere=[5]) == {i: ("4x6", i) for i in range(SHARD) if i != 5}
    ((ids, _),) = read_stack_slots(loc).values()
    assert ids.tolist() == [0, 1, 2, 3, 4, -1, 6, 7]


def test_a_damaged_stack_in_the_bucket_is_one_error_line(small: Path, bucket: str, tmp_path: Path) -> None:
    """A stack's ``ids`` that cannot be decoded: the export refuses in one line naming the stacks, fsck
    reports it as a problem; nothing is written and the bucket is left as it was.
    """
    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url).returncode == 0
    loc = _loc(url)
    loc.write_bytes(f"stacks/{STACK}/ids/c/0", b"not zstd")
    before = {k: loc.read_bytes(k) for k in loc.list()}
    e = run_cli("export", url, str(tmp_path / "out"), "--to", "coco", "-w", "0")
    assert e.returncode == 2, e.stdout + e.stderr
    errors = [ln for ln in e.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {url}/stacks: a stack's ids or done array is damaged or cannot be read"], e.stderr
    assert "Traceback" not in e.stderr and not (tmp_path / "out").exists()
    f = run_cli("fsck", url)
    assert f.returncode == 1 and f"{url}/stacks" in f.stderr and "Traceback" not in f.stderr, f.stdout + f.stderr
    assert {k: loc.read_bytes(k) for k in loc.list()} == before
