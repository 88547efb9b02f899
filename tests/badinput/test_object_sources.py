"""Bad pre-label sources in object storage (a real S3 server, tests/_s3.py): one line naming the URL.

A missing bucket, a prefix or glob with no images, a missing manifest, a dataset format read from local
folders only, credentials written into a URL: exit 2 before anything is written. An unreadable object
among good ones fails alone: exit 1, its line naming its URL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from segpipe.storage.location import Location
from tests._s3 import bucket, s3_server
from tests.badinput._corpus import check_bad_input, unet_model_fixture

__all__ = ["bucket", "s3_server"]  # the fixtures, for pytest


model = unet_model_fixture("objbad")


def _good_images(bucket: str, tmp_path: Path) -> None:
    loc = Location(f"s3://{bucket}")
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        loc.write_bytes(f"imgs/{i}.png", (tmp_path / f"{i}.png").read_bytes())


@pytest.mark.parametrize(("source", "says"), [
    ("s3://{b}-gone/imgs", "no such bucket"),
    ("s3://{b}/empty", "no images found"),
    ("s3://{b}/notes", "no images found"),
    ("s3://{b}/imgs/*.jpg", "no images found"),
    ("s3://{b}/lists/none.jsonl", "no such object"),
    ("s3://{b}/labelme", "the labelme reader reads local datasets only"),
    ("s3://key:secret@{b}/imgs", "the URL carries credentials"),
])
def test_bad_object_source_is_one_line(bucket: str, model: Path, tmp_path: Path, source: str, says: str) -> None:
    _good_images(bucket, tmp_path)
    loc = Location(f"s3://{bucket}")
    loc.write_bytes("notes/readme.md", b"no images here")
    loc.write_bytes("labelme/a.json", b'{"version": "5.0.1", "flags": {}, "shapes": [], "imagePath": "a.png", '
                                      b'"imageData": null, "imageHeight": 32, "imageWidth": 32}')
    loc.write_bytes("labelme/a.png", (tmp_path / "0.png").read_bytes())
    url = source.format(b=bucket)
    shown = url.replace("key:secret@", "").rstrip("*.jpg").rstrip("/")
    out = tmp_path / "out.zarr"
    r = check_bad_input("prelabel", url, "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path,
                        code=2, names=(shown.split("/")[2], says), outputs=[out])
    assert "secret" not in r.stderr + r.stdout
    assert not out.exists()


def test_unreadable_object_fails_alone(bucket: str, model: Path, tmp_path: Path) -> None:
    _good_images(bucket, tmp_path)
    Location(f"s3://{bucket}").write_bytes("imgs/broken.png", b"\x89PNG\r\n\x1a\n but not a PNG")
    out = tmp_path / "out.zarr"
    r = check_bad_input("prelabel", f"s3://{bucket}/imgs", "--model", str(model), "--out", out.name, "-w", "0",
                        root=tmp_path, code=1, names=(f"s3://{bucket}/imgs/broken.png", "not a recognised image"),
                        outputs=[out])
    assert "2 done" in r.stdout and "1 failed" in r.stdout
