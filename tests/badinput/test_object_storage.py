"""Bad outputs in object storage (issue 16, point 2): refused in one line, nothing written or deleted.

Against a real S3 server (moto, tests/_s3.py): a bucket that does not exist, a prefix that holds
something segpipe did not make, a read-only scheme. Each case goes through :func:`check_bad_input`
(exit 2, one ``error:`` line naming the URL and the option, no traceback, the local inputs unchanged),
and the bucket's objects are compared before and after.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segpipe.storage.location import Location, parse_location
from tests._s3 import bucket, s3_server  # noqa: F401  (fixtures: a moto S3 server, a new bucket)
from tests.badinput._corpus import check_bad_input, synth_with_unet


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` (2 synthetic street-view images) and ``unet.ckpt``."""
    root = tmp_path_factory.mktemp("objbad")
    synth_with_unet(root / "data", root / "unet.ckpt", n=2, seed=5, size=(64, 64))
    return root


def _loc(url: str) -> Location:
    loc = parse_location(url)
    assert isinstance(loc, Location)
    return loc


def _state(loc: Location) -> dict[str, bytes]:
    return {k: loc.read_bytes(k) for k in loc.list()}


def test_prelabel_into_a_bucket_that_does_not_exist(base: Path, s3_server: object) -> None:  # noqa: F811
    url = "s3://segpipe-no-such-bucket/run.zarr"
    r = check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", url, "-w", "0", root=base, code=2,
                        names=[url, "--out", "the bucket does not exist"])
    assert "segpipe-test-secret" not in r.stderr


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]], ids=["plain", "overwrite", "resume"])
def test_prelabel_refuses_a_prefix_it_did_not_make(base: Path, bucket: str, flag: list[str]) -> None:  # noqa: F811
    url = f"s3://{bucket}/mine"
    loc = _loc(url)
    loc.write_bytes("notes.txt", b"my notes")
    loc.write_bytes("images/keep.png", b"not really a png")
    before = _state(loc)
    check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", url, *flag, "-w", "0", root=base, code=2,
                    names=[url, "not a segpipe store"])
    assert _state(loc) == before


def test_prelabel_refuses_a_store_holding_a_foreign_object(base: Path, bucket: str) -> None:  # noqa: F811
    url = f"s3://{bucket}/run.zarr"
    loc = _loc(url)
    loc.write_bytes("zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {"segpipe": {"layout": 2}}}')
    loc.write_bytes("notes.txt", b"my notes")
    before = _state(loc)
    check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", url, "--overwrite", "-w", "0", root=base,
                    code=2, names=[url, "holds 'notes.txt'"])
    assert _state(loc) == before


def test_export_refuses_a_prefix_it_did_not_make(base: Path, bucket: str, tmp_path: Path) -> None:  # noqa: F811
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    store = f"s3://{bucket}/run.zarr"
    prelabel(PrelabelRequest(source=str(base / "data" / "images"), model=str(base / "unet.ckpt"), out=store,
                             threads=1), ClusterSpec(workers=0))
    dst = _loc(f"s3://{bucket}/mine")
    dst.write_bytes("notes.txt", b"my notes")
    before = _state(dst)
    check_bad_input("export", store, dst.url, "--to", "coco", "--overwrite", "-w", "0", root=base, code=2,
                    names=[dst.url, "not made by segpipe"])
    assert _state(dst) == before
    check_bad_input("export", store, store, "--to", "coco", "--overwrite", "-w", "0", root=base, code=2,
                    names=[store, "DST is the input"])


@pytest.mark.parametrize("url", ["https://host/x.zarr", "https://user:secret@host/x.zarr"])
def test_outputs_at_a_read_only_scheme_are_refused(base: Path, url: str) -> None:
    """``https://`` is read-only: refused before any request, the credential in the URL never echoed."""
    r = check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", url, "-w", "0", root=base, code=2,
                        names=["https://host/x.zarr", "--out", "read-only"])
    assert "secret" not in r.stderr and not (base / "https:").exists()
    r = check_bad_input("export", "nothing.zarr", url, "--to", "coco", "-w", "0", root=base, code=2,
                        names=["https://host/x.zarr", "DST", "read-only"])
    assert "secret" not in r.stderr and not (base / "https:").exists()


@pytest.mark.parametrize("tail", ["#v2", "?versionId=3"])
def test_a_query_or_fragment_is_refused_not_dropped(base: Path, bucket: str, tail: str) -> None:  # noqa: F811
    """``--out s3://b/x.zarr#v2`` once wrote (or, with --overwrite, replaced) ``x.zarr``; ``-m …?versionId=`` read
    the current object: refused in one line naming the URL as given, the bucket unchanged."""
    url = f"s3://{bucket}/run.zarr{tail}"
    before = _state(_loc(f"s3://{bucket}"))
    check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", url, "--overwrite", "-w", "0", root=base,
                    code=2, names=[url, "not part of an object's key"])
    check_bad_input("prelabel", "data/images", "-m", f"s3://{bucket}/unet.ckpt{tail}", "-o", "x.zarr", "-w", "0",
                    root=base, code=2, names=[f"s3://{bucket}/unet.ckpt{tail}", "not part of an object's key"],
                    outputs=[base / "x.zarr"])
    assert _state(_loc(f"s3://{bucket}")) == before and not (base / "x.zarr").exists()
