"""Pre-labeling into object storage (S3 via moto), fsck and export from it (issue 16, point 2).

Entry points (stable names, for other tests that build on them):

* CLI: ``segpipe prelabel SRC --out s3://BUCKET/run.zarr [--resume|--overwrite] [-w 0|--scheduler ADDR]``,
  ``segpipe fsck s3://BUCKET/run.zarr [--repair]``, ``segpipe export s3://BUCKET/run.zarr DST --to coco``
  (DST local, or a URL for ``coco --layout single``).
* Python: ``segpipe.pipeline.prelabel.run_prelabel(req)`` with ``req.out`` an ``s3://`` URL;
  ``segpipe.pipeline.prelabel.fsck.check_store(url)``; ``segpipe.storage.zarrstore.ZarrStore.open(url)``
  (``.image_ids()``, ``.read(id, "labels")``, ``.ledger()`` → ``ObjectLedger``, ``.target``);
  ``segpipe.storage.location.as_location(target)`` (a Path made of a URL back to its ``Location``);
  ``segpipe.storage.outputs.check_store_location(loc, option=..., command=...)``.

Six images are fewer than a stack takes (``segpipe.storage.stacks.MIN_STACK``): each keeps a group
(``images/<id>``) here, as in a local store; stacks in object storage are tests/storage/test_object_stacks.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segpipe.storage.ledger import Ledger, ObjectLedger
from segpipe.storage.location import Location, parse_location
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests._s3 import ENV, bucket, s3_server  # noqa: F401  (fixtures: a moto S3 server, a new bucket)
from tests.conftest import run_cli

#: The fixed test credentials (tests/_s3.py): nothing segpipe writes or prints may hold them.
SECRETS = (ENV["AWS_ACCESS_KEY_ID"], ENV["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images/``: 6 synthetic street-view images (64x128); ``unet.ckpt``: a tiny U-Net for their classes."""
    from tests.badinput._corpus import synth_with_unet

    root = tmp_path_factory.mktemp("objstore")
    synth_with_unet(root / "data", root / "unet.ckpt", n=6, seed=11, size=(64, 128))
    return root


def _prelabel(root: Path, out: str, *extra: str) -> dict[str, object]:
    """``segpipe prelabel data/images -m unet.ckpt -o OUT`` (in this process unless ``extra`` says); its output."""
    r = run_cli("prelabel", str(root / "data" / "images"), "-m", str(root / "unet.ckpt"), "-o", out,
                "--threads", "1", *(extra or ("-w", "0")), cwd=root)
    return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}


@pytest.fixture(scope="module")
def local_run(small: Path) -> Path:
    """The same run into a local store: what every object-storage run must reproduce."""
    out = small / "local.zarr"
    r = _prelabel(small, str(out))
    assert r["rc"] == 0, r
    return out


def _receipts(ledger: Ledger | ObjectLedger) -> dict[int, dict[str, str]]:
    """Image id → its receipt's output digests."""
    out = {}
    for key in ledger.keys():
        rec = ledger.read(key)
        out[int(rec["image_id"])] = rec["outputs"]
    return out


def _assert_same_outputs(local: Path, url: str) -> None:
    """Same images, same label maps and probabilities image by image, same receipts' digests."""
    a, b = ZarrStore.open(local), ZarrStore.open(url)
    assert b.image_ids() == a.image_ids() and len(a.image_ids()) == 6
    for i in a.image_ids():
        for name in ("labels", "probs"):
            np.testing.assert_array_equal(b.read(i, name), a.read(i, name))
        assert dict(b.group(i).attrs)["sha256"] == dict(a.group(i).attrs)["sha256"]
    assert _receipts(b.ledger()) == _receipts(a.ledger())
    # the arrays are zarr's own: plain zarr over obstore reads them
    g = b.group(a.image_ids()[0])
    assert g["labels"].metadata.dimension_names == ("y", "x")


def _runs(keys: set[str]) -> list[str]:
    """The run reports among ``keys``."""
    return [k for k in keys if k.startswith(".segpipe/runs/")]


def _coco(doc: dict[str, object]) -> dict[str, object]:
    """A COCO export without what names the reading (the store's path and a per-reading token)."""
    return {k: v for k, v in doc.items() if k not in ("store", "store_token")}


def _objects(url: str) -> list[str]:
    loc = parse_location(url)
    assert isinstance(loc, Location)
    return list(loc.list())


def test_prelabel_into_s3_equals_local_then_fsck_and_export(small: Path, local_run: Path, bucket: str,  # noqa: F811
                                                            tmp_path: Path) -> None:
    url = f"s3://{bucket}/run.zarr"
    r = _prelabel(small, url)
    assert r["rc"] == 0, r
    assert f"{url}: 6 done, 0 already done, 0 failed of 6 images" in str(r["stdout"])
    _assert_same_outputs(local_run, url)
    keys = _objects(url)
    # one group per image (too few images of a size to stack), receipts, the manifest and the run report
    assert not any(k.startswith("stacks/") for k in keys)
    assert sum(k.startswith(".segpipe/ledger/") for k in keys) == 6
    runs = [k for k in keys if k.startswith(".segpipe/runs/")]
    assert len(runs) == 1
    loc = parse_location(url)
    assert isinstance(loc, Location)
    report = json.loads(loc.read_bytes(runs[0]))
    assert report["store"] == url and report["images"]["done"] == 6
    manifest = loc.read_bytes(".segpipe/manifest.jsonl")
    assert manifest == (local_run / ".segpipe" / "manifest.jsonl").read_bytes()
    for blob in (json.dumps(report), manifest.decode(), str(r["stdout"]), str(r["stderr"])):
        assert not any(s in blob for s in SECRETS)

    f = run_cli("fsck", url)
    assert f.returncode == 0, f.stderr
    assert f"{url}: 6/6 receipts ok, 0 bad receipts, 0 orphans, 0 problems" in f.stdout

    # COCO from the bucket equals COCO from the local store; and it may be uploaded to the bucket
    for src, dst in ((str(local_run), str(tmp_path / "coco_local")), (url, str(tmp_path / "coco_s3"))):
        e = run_cli("export", src, dst, "--to", "coco", "--layout", "single", "-w", "0")
        assert e.returncode == 0, e.stderr
    a = _coco(json.loads((tmp_path / "coco_local" / "annotations.json").read_text()))
    b = _coco(json.loads((tmp_path / "coco_s3" / "annotations.json").read_text()))
    assert a == b and len(a["images"]) == 6 and a["annotations"]
    out = f"s3://{bucket}/exports/coco"
    e = run_cli("export", url, out, "--to", "coco", "--layout", "single", "-w", "0")
    assert e.returncode == 0, e.stderr
    assert f"report: {out}/conversion_report.json" in e.stdout
    assert sorted(_objects(out)) == sorted(p.relative_to(tmp_path / "coco_s3").as_posix()
                                           for p in (tmp_path / "coco_s3").rglob("*") if p.is_file())
    up = parse_location(out)
    assert isinstance(up, Location)
    assert _coco(json.loads(up.read_bytes("annotations.json"))) == b
    assert json.loads(up.read_bytes("conversion_report.json"))["target"]["path"] == out
    # a second export is refused without --overwrite and replaces the first with it
    e = run_cli("export", url, out, "--to", "coco", "--layout", "single", "-w", "0")
    assert e.returncode == 2 and "pass --overwrite" in e.stderr
    e = run_cli("export", url, out, "--to", "coco", "--layout", "single", "-w", "0", "--overwrite")
    assert e.returncode == 0, e.stderr
    assert _coco(json.loads(up.read_bytes("annotations.json"))) == b


def test_resume_redo_and_overwrite_in_s3(small: Path, local_run: Path, bucket: str) -> None:  # noqa: F811
    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url)["rc"] == 0
    # a second run without a flag is refused; --resume skips what is done
    r = _prelabel(small, url)
    assert r["rc"] == 2 and "store exists" in str(r["stderr"]) and url in str(r["stderr"])
    r = _prelabel(small, url, "-w", "0", "--resume")
    assert r["rc"] == 0 and "0 done, 6 already done" in str(r["stdout"]), r
    # a chunk damaged in the bucket: fsck names it, --repair drops its receipt, --resume redoes the image
    loc = parse_location(url)
    assert isinstance(loc, Location)
    chunk = next(k for k in _objects(url) if k.startswith("images/") and "/labels/c/" in k)
    loc.write_bytes(chunk, b"not a zstd chunk")
    f = run_cli("fsck", url)
    assert f.returncode == 1 and "1 bad receipts" in f.stdout
    assert f"{url}/{chunk.rsplit('/labels/', 1)[0]}/labels: labels: damaged chunk" in f.stderr
    f = run_cli("fsck", url, "--repair")
    assert f.returncode == 0 and "1 repaired" in f.stdout, f.stdout + f.stderr
    r = _prelabel(small, url, "-w", "0", "--resume")
    assert r["rc"] == 0 and "1 done, 5 already done" in str(r["stdout"]), r
    assert run_cli("fsck", url).returncode == 0
    _assert_same_outputs(local_run, url)
    # --overwrite with another config replaces the store: its earlier receipts and reports are gone
    before = set(_objects(url))
    r = _prelabel(small, url, "-w", "0", "--overwrite", "--no-probs")
    assert r["rc"] == 0 and "6 done, 0 already done" in str(r["stdout"]), r
    after = set(_objects(url))
    assert not any("/probs/" in k for k in after)
    assert len([k for k in after if k.startswith(".segpipe/runs/")]) == 1
    assert len([k for k in after if k.startswith(".segpipe/ledger/")]) == 6
    assert any("/probs/" in k for k in before) and set(_runs(before)) - after == set(_runs(before))
    assert ZarrStore.open(url).attrs()["config"]["probs"] is False


def test_overwrite_never_deletes_what_segpipe_did_not_write(small: Path, bucket: str) -> None:  # noqa: F811
    url = f"s3://{bucket}/run.zarr"
    assert _prelabel(small, url)["rc"] == 0
    loc = parse_location(url)
    assert isinstance(loc, Location)
    loc.write_bytes("notes.txt", b"mine")
    before = {k: loc.read_bytes(k) for k in _objects(url)}
    r = _prelabel(small, url, "-w", "0", "--overwrite")
    assert r["rc"] == 2 and "holds 'notes.txt'" in str(r["stderr"]) and "Traceback" not in str(r["stderr"])
    assert {k: loc.read_bytes(k) for k in _objects(url)} == before


def test_prelabel_into_s3_on_two_dask_workers(small: Path, local_run: Path, bucket: str,  # noqa: F811
                                              tmp_path: Path) -> None:
    """Two ``dask worker`` processes, each in its own folder, share nothing but the bucket."""
    url = f"s3://{bucket}/dask.zarr"
    with external_cluster(tmp_path, [[], []]) as address:
        r = _prelabel(small, url, "--scheduler", address)
    assert r["rc"] == 0, r
    assert "6 done" in str(r["stdout"])
    _assert_same_outputs(local_run, url)
    workers = {ZarrStore.open(url).ledger().read(k)["worker"] for k in ZarrStore.open(url).ledger().keys()}
    assert workers  # receipts record the worker that wrote them
    assert run_cli("fsck", url).returncode == 0
