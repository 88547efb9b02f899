"""Bad manifest sources (``segpipe prelabel LIST.jsonl``): one line naming the manifest, the file and the field.

A manifest's entries are measured from their files on the workers, so a stated ``sha256``, ``bytes``,
``width`` or ``height`` the file contradicts fails that entry alone (exit 1, the others done), never
labelled under the manifest's value. An entry whose ``file`` (its name inside the collection, which
exports write under) is not a relative path inside it, or whose fields have the wrong type, is refused
when the manifest is read (exit 2, nothing written), and so is one whose ``file`` is not a normalised
POSIX path (``.``, ``a/``, ``x//a.png``, a control character or a backslash), two ``file`` names equal but
for case, an ``id`` beyond 2^53-1, a NUL in ``path``, a line that is not UTF-8 (named with its line) and a
manifest with no entries; an entry id equal to a volume slice's id is refused once the volume is measured,
before anything is written. A volume named by URL fails alone, its URL kept
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
from segpipe.kernels.prelabel.ingest import describe_entries
from segpipe.storage.location import Location
from segpipe.storage.manifest import ManifestEntry, read_manifest
from segpipe.storage.volume import open_volume
from segpipe.storage.zarrstore import ZarrStore
from tests._s3 import bucket, s3_server
from tests.badinput._corpus import check_bad_input, unet_model_fixture
from tests.conftest import run_cli

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


# --------------------------------------------------------------- hunt 11: ids, names, bytes, empty


def test_an_id_equal_to_a_volume_slice_id_is_refused_before_the_run(tmp_path: Path, model: Path) -> None:
    # the run wrote the image over slice 0 (one group, "5 done"), and only fsck found a checksum mismatch
    pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
    from segpipe.storage.manifest import stable_id
    from segpipe.synth import synth

    synth("medical", tmp_path / "med", n=1, seed=0, image_format="nifti")
    vol = next((tmp_path / "med" / "volumes").glob("*.nii.gz"))
    paths = _images(tmp_path / "p", n=1)
    clash = stable_id("vol.nii.gz#z00000")  # the id of the volume's slice 0
    _write(tmp_path / "m.jsonl", [{"id": 300, "file": "vol.nii.gz", "path": str(vol)},
                                  {"id": clash, "file": "photo.png", "path": str(paths[0])}])
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, outputs=[out],
                    names=("m.jsonl", "line 2, field id", f"id {clash} of 'photo.png' is also the id of slice 0 "
                                                          "of volume 'vol.nii.gz'"))
    assert not out.exists()


@pytest.mark.parametrize(("value", "says"), [
    (2**63, f"id {2**63} is too large: at most 2^53-1 = {2**53 - 1}"),  # crashed stacking: OverflowError
    (2**53, f"id {2**53} is too large"),  # ran, but COCO readers hold it as a double: another image's id
])
def test_an_id_beyond_53_bits_is_refused(tmp_path: Path, model: Path, value: int, says: str) -> None:
    _refused_on_line_2(tmp_path, model, {"id": 1, "file": "0.png"}, {"id": value, "file": "1.png"}, "id", says)


def _refused_on_line_2(tmp_path: Path, model: Path, first: dict[str, Any], second: dict[str, Any], field: str,
                       says: str) -> None:
    """A two-entry manifest (of two real images) whose second line is refused at reading, naming ``field``:
    exit 2, one line, no store."""
    paths = _images(tmp_path / "p", n=2)
    _write(tmp_path / "m.jsonl", [{**first, "path": str(paths[0])}, {**second, "path": str(paths[1])}])
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, names=("m.jsonl", f"line 2, field {field}", says), outputs=[out])
    assert not out.exists()


def test_ids_0_and_2_pow_53_less_1_are_kept(tmp_path: Path, model: Path) -> None:
    paths = _images(tmp_path / "p", n=2)
    _write(tmp_path / "m.jsonl", [{"id": 0, "file": "0.png", "path": str(paths[0])},
                                  {"id": 2**53 - 1, "file": "1.png", "path": str(paths[1])}])
    r = run_cli("prelabel", "m.jsonl", "--model", str(model), "--out", "s.zarr", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(ZarrStore.open(tmp_path / "s.zarr").image_ids()) == [0, 2**53 - 1]


def test_a_nul_byte_in_path_is_refused_and_fails_alone_past_the_check(tmp_path: Path, model: Path) -> None:
    paths = _images(tmp_path / "p", n=1)
    _write(tmp_path / "m.jsonl", [{"id": 1, "file": "0.png", "path": f"{paths[0]}\x00"}])
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, names=("m.jsonl", "line 1, field path", "path contains a NUL byte"), outputs=[out])
    assert not out.exists()
    # an entry that reaches a worker unchecked fails alone ("internal error: ValueError: embedded null byte")
    (e,) = describe_entries("m.jsonl", [ManifestEntry(1, "0.png", f"{paths[0]}\x00")])
    assert e.kind == "invalid" and "null byte" in e.error and e.error.startswith(f"{paths[0]}\x00: cannot read")


@pytest.mark.parametrize(("file", "says"), [
    (".", "file name names no file: '.'"),  # export: "internal error: ValueError: PosixPath('.') has an empty name"
    ("a/", "file name names no file: 'a/'"),  # exported as a.png
    ("a\nb.png", r"file name contains a control character ('\n')"),  # a file with a newline in its name
    ("a\tb.png", r"file name contains a control character ('\t')"),
    ("a\\b.png", r"file name contains a backslash: 'a\\b.png'"),  # a folder separator on Windows
    ("x//a.png", "file name is not in normal form: 'x//a.png' (write it 'x/a.png')"),  # one mask for two images
    ("./x/a.png", "file name is not in normal form: './x/a.png' (write it 'x/a.png')"),
    ("x/./a.png", "file name is not in normal form"),
])
def test_an_entry_file_not_a_normalised_posix_path_is_refused(tmp_path: Path, model: Path, file: str,
                                                             says: str) -> None:
    _refused_on_line_2(tmp_path, model, {"id": 1, "file": "x/a.png"}, {"id": 2, "file": file}, "file", says)


def test_two_file_names_differing_only_in_case_are_refused_naming_both_lines(tmp_path: Path, model: Path) -> None:
    paths = _images(tmp_path / "p", n=3)
    (tmp_path / "m.jsonl").write_text(
        "".join(json.dumps(d) + "\n\n" for d in [{"id": 1, "file": "A.png", "path": str(paths[0])},
                                                  {"id": 2, "file": "b.png", "path": str(paths[1])},
                                                  {"id": 3, "file": "a.png", "path": str(paths[2])}]))
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, outputs=[out],
                    names=("m.jsonl", "line 5, entry 3, field file",
                           "file 'a.png' differs only in case from file 'A.png' of entry 1 (line 1)"))
    assert not out.exists()


def test_a_manifest_not_utf8_is_named_with_its_line(tmp_path: Path, model: Path) -> None:
    paths = _images(tmp_path / "p", n=1)
    (tmp_path / "m.jsonl").write_bytes(json.dumps({"id": 1, "file": "0.png", "path": str(paths[0])}).encode()
                                       + b'\n{"id": 2, "file": "\xe9.png", "path": "x"}\n')
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, outputs=[out], names=("m.jsonl: line 2: not UTF-8 text (byte b'\\xe9'",))
    assert not out.exists()


def test_a_manifest_in_a_bucket_not_utf8_is_named_with_its_line(bucket: str, model: Path, tmp_path: Path) -> None:
    # its bytes were replaced by U+FFFD: "\xe9.png" became another name, silently
    Location(f"s3://{bucket}").write_bytes("lists/m.jsonl", b'{"id": 1, "file": "\xe9.png", "path": "imgs/0.png"}\n')
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", f"s3://{bucket}/lists/m.jsonl", "--model", str(model), "--out", out.name, "-w", "0",
                    root=tmp_path, code=2, outputs=[out],
                    names=(f"s3://{bucket}/lists/m.jsonl: line 1: not UTF-8 text",))
    assert not out.exists()


def test_a_manifest_with_no_entries_is_refused_as_an_empty_folder_is(tmp_path: Path, model: Path) -> None:
    (tmp_path / "m.jsonl").write_text("\n  \n\n")
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                    code=2, outputs=[out], names=("m.jsonl: no images in the manifest",))
    assert not out.exists()


def test_a_stated_sha256_in_upper_case_matches_and_is_stored_lower(tmp_path: Path, model: Path) -> None:
    # it was "contradicted": the manifest says 5EC39E3F883D…, the file has 5ec39e3f883d…
    paths = _images(tmp_path / "p", n=2)
    digest = hashlib.sha256(paths[1].read_bytes()).hexdigest()
    _write(tmp_path / "m.jsonl", [{"id": 1, "file": "0.png", "path": str(paths[0])},
                                  {"id": 2, "file": "1.png", "path": str(paths[1]), "sha256": digest.upper()}])
    r = run_cli("prelabel", "m.jsonl", "--model", str(model), "--out", "s.zarr", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0 and "2 done" in r.stdout and "0 failed" in r.stdout, r.stderr
    stored = {e.file: e.sha256 for e in read_manifest(tmp_path / "s.zarr" / ".segpipe" / "manifest.jsonl")}
    assert stored["1.png"] == digest
