"""Bad manifest sources (``segpipe prelabel LIST.jsonl``): one line naming the manifest, the file and the field.

A manifest's entries are measured from their files on the workers, so a stated ``sha256``, ``bytes``,
``width`` or ``height`` the file contradicts fails that entry alone (exit 1, the others done), never
labelled under the manifest's value. An entry whose ``file`` (its name inside the collection, which
exports write under) is not a relative path inside it, or whose fields have the wrong type, is refused
when the manifest is read (exit 2, nothing written). A volume named by URL fails alone, its URL kept
whole (it was printed ``s3:/bucket/…`` through a path). An ``https://`` URL to a plain-HTTP server says so
in one line, naming the URL.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from segpipe.errors import InputError
from segpipe.storage.location import Location
from segpipe.storage.volume import open_volume
from tests._s3 import bucket, s3_server
from tests.badinput._corpus import check_bad_input, unet_model_fixture

__all__ = ["bucket", "s3_server"]  # the fixtures, for pytest


model = unet_model_fixture("manifestbad")


def _images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):
        Image.new("RGB", (32, 24), (60 * i, 90, 200)).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))


@pytest.mark.parametrize(("field", "value", "measured"), [
    ("sha256", "0" * 64, lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:12] + "…"),
    ("bytes", 12, lambda p: str(p.stat().st_size)),
    ("width", 24, lambda p: "32"),  # its height: width and height swapped
    ("height", 32, lambda p: "24"),
])
def test_a_stated_field_the_file_contradicts_fails_that_entry(tmp_path: Path, model: Path, field: str, value: Any,
                                                              measured: Any) -> None:
    paths = _images(tmp_path / "p")
    lines = [{"id": i + 1, "file": p.name, "path": str(p)} for i, p in enumerate(paths)]
    lines[1][field] = value
    _write(tmp_path / "m.jsonl", lines)
    out = tmp_path / "s.zarr"
    r = check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                        code=1, outputs=[out],
                        names=(f"error: 1.png: {field} in the manifest m.jsonl does not match the file {paths[1]}",
                               f"the file has {measured(paths[1])}"))
    assert "2 done" in r.stdout and "1 failed" in r.stdout
    stored = [json.loads(ln) for ln in (out / ".segpipe" / "manifest.jsonl").read_text().splitlines()]
    # the store records what the file holds, never the manifest's value
    assert stored[1]["kind"] == "invalid" and stored[1][field] != value


def test_an_entry_whose_file_is_missing_fails_alone_naming_its_path(tmp_path: Path, model: Path) -> None:
    paths = _images(tmp_path / "p", n=2)
    gone = tmp_path / "p" / "gone.png"
    _write(tmp_path / "m.jsonl", [{"id": i + 1, "file": p.name, "path": str(p)} for i, p in enumerate([*paths, gone])])
    out = tmp_path / "s.zarr"
    r = check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                        code=1, outputs=[out], names=(f"error: gone.png: {gone}: cannot read: No such file",))
    assert "2 done" in r.stdout and "1 failed" in r.stdout


@pytest.mark.parametrize(("file", "says"), [
    ("../../x.png", "file name escapes the dataset root: '../../x.png'"),
    ("/etc/x.png", "file name is absolute: '/etc/x.png'"),
    ("s3://b/x.png", "file name is a URL, not a path"),
    ("", "file name is empty or not a string"),
])
def test_an_entry_file_outside_the_collection_is_refused_when_the_manifest_is_read(
        tmp_path: Path, model: Path, file: str, says: str) -> None:
    paths = _images(tmp_path / "p", n=2)
    _write(tmp_path / "m.jsonl", [{"id": 1, "file": "0.png", "path": str(paths[0])},
                                  {"id": 2, "file": file, "path": str(paths[1])}])
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, names=("m.jsonl", "line 2, field file", says), outputs=[out])
    assert not out.exists()


@pytest.mark.parametrize(("field", "value", "says"), [
    ("id", "7", "id must be a whole number, 0 or more: '7'"),
    ("width", -3, "width must be a whole number, 0 or more: -3"),
    ("sha256", 12, "sha256 must be a string: 12"),
    ("path", "", "path is empty or not a string"),
])
def test_an_entry_field_of_the_wrong_type_is_refused(tmp_path: Path, model: Path, field: str, value: Any,
                                                     says: str) -> None:
    paths = _images(tmp_path / "p", n=1)
    _write(tmp_path / "m.jsonl", [{"id": 1, "file": "0.png", "path": str(paths[0]), field: value}])
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, names=("m.jsonl", f"line 1, field {field}", says), outputs=[out])
    assert not out.exists()


def test_a_manifest_in_a_bucket_refuses_a_file_outside_the_collection(bucket: str, model: Path,
                                                                      tmp_path: Path) -> None:
    loc = Location(f"s3://{bucket}")
    lines = [{"id": 1, "file": "../x.png", "path": "imgs/0.png"}]
    loc.write_bytes("lists/m.jsonl", "".join(json.dumps(d) + "\n" for d in lines).encode())
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", f"s3://{bucket}/lists/m.jsonl", "--model", str(model), "--out", out.name, "-w", "0",
                    root=tmp_path, code=2, outputs=[out],
                    names=(f"s3://{bucket}/lists/m.jsonl", "line 1, field file", "escapes"))
    assert not out.exists()


def test_a_volume_named_by_url_fails_alone_naming_its_url_whole(bucket: str, model: Path, tmp_path: Path) -> None:
    loc = Location(f"s3://{bucket}")
    Image.new("RGB", (32, 32), (10, 90, 200)).save(tmp_path / "0.png")
    loc.write_bytes("imgs/0.png", (tmp_path / "0.png").read_bytes())
    loc.write_bytes("v.nii.gz", b"a volume in a bucket")
    lines = [{"id": 1, "file": "v.nii.gz", "path": f"s3://{bucket}/v.nii.gz", "kind": "volume"},
             {"id": 2, "file": "0.png", "path": f"s3://{bucket}/imgs/0.png"}]
    loc.write_bytes("m.jsonl", "".join(json.dumps(d) + "\n" for d in lines).encode())
    out = tmp_path / "s.zarr"
    r = check_bad_input("prelabel", f"s3://{bucket}/m.jsonl", "--model", str(model), "--out", out.name, "-w", "0",
                        root=tmp_path, code=1, outputs=[out],
                        names=(f"error: v.nii.gz: s3://{bucket}/v.nii.gz: volumes (NIfTI, DICOM) are read from "
                               "local files only",))
    assert f"s3:/{bucket}" not in r.stderr and "1 done" in r.stdout
    # the volume reader itself keeps a URL a URL too (it went through a path: "s3:/bucket/v.nii.gz")
    with pytest.raises(InputError) as e:
        open_volume(f"s3://{bucket}/v.nii.gz")
    assert str(e.value).startswith(f"s3://{bucket}/v.nii.gz: volumes (NIfTI, DICOM) are read from local files")


@pytest.fixture()
def plain_http(tmp_path: Path) -> Iterator[str]:
    """``python -m http.server``'s server on 127.0.0.1 serving ``tmp_path/www``: its ``host:port``."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_an_https_url_to_a_plain_http_server_says_so(plain_http: str, model: Path, tmp_path: Path) -> None:
    (tmp_path / "www" / "x.ckpt").write_bytes(model.read_bytes())
    paths = _images(tmp_path / "p", n=1)
    url = f"https://{plain_http}/x.ckpt"
    check_bad_input("prelabel", str(paths[0].parent), "--model", url, "--out", "s.zarr", "-w", "0", root=tmp_path,
                    code=2, outputs=[tmp_path / "s.zarr"],
                    names=(url, "the server did not answer in TLS (an https:// URL to a plain http:// server?)"))
    assert not (tmp_path / "s.zarr").exists()
    # a source read from it, too
    Image.new("RGB", (32, 32)).save(tmp_path / "www" / "a.png")
    url = f"https://{plain_http}/a.png"
    check_bad_input("prelabel", url, "--model", str(model), "--out", "s.zarr", "-w", "0", root=tmp_path,
                    code=2, outputs=[tmp_path / "s.zarr"], names=(url, "did not answer in TLS"))
