"""Bad model URLs (``-m s3://…``, ``--ensemble``) against a real S3 server (tests/_s3.py): one line naming the URL,
exit 2, before any cluster starts and before anything is written.

A missing bucket or object, a prefix with no model below it, an object that is no model (named by its
URL, not by the temporary copy it was read from), an ``https://`` folder (HTTP cannot list one),
credentials written into the URL, and ``--prompts`` with a model URL (its SAM folder is read locally only);
an ``https://`` URL a real HTTPS server answers 404 (tests/_servers.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from segpipe.storage.location import Location
from tests._s3 import bucket, s3_server
from tests._servers import HttpsServer, https_server
from tests.badinput._corpus import check_bad_input, synth_with_unet

__all__ = ["bucket", "https_server", "s3_server"]  # the fixtures, for pytest


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net checkpoint."""
    root = tmp_path_factory.mktemp("urlbad")
    synth_with_unet(root / "data", root / "unet.ckpt", n=1, seed=0, size=(32, 32))
    return root / "unet.ckpt"


@pytest.mark.parametrize(("model_url", "extra", "says"), [
    ("s3://{b}-gone/models/unet.ckpt", (), "the bucket does not exist"),
    ("s3://{b}/models/none.ckpt", (), "no such object, nor a folder prefix"),
    ("s3://{b}/notes", (), "no model below this prefix"),
    ("s3://{b}/notes/readme.md", (), "not a model file segpipe knows"),
    ("https://models.invalid/hf/segformer/", (), "a folder cannot be listed over HTTP"),
    ("s3://key:secret@{b}/models/unet.ckpt", (), "the URL carries credentials"),
    ("s3://{b}/models/unet.ckpt", ("--ensemble", "s3://{b}/models/gone.ckpt"), "no such object"),
    ("s3://{b}/models/unet.ckpt", ("--prompts", "boxes.json"), "--prompts reads its SAM model from a local"),
])
def test_bad_model_url_is_one_line(bucket: str, model: Path, tmp_path: Path, model_url: str,
                                   extra: tuple[str, ...], says: str) -> None:
    loc = Location(f"s3://{bucket}")
    loc.write_bytes("models/unet.ckpt", model.read_bytes())
    loc.write_bytes("notes/readme.md", b"no model here")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 32), (40, 90, 200)).save(tmp_path / "imgs" / "0.png")
    (tmp_path / "boxes.json").write_text("[]")
    url = model_url.format(b=bucket)
    args = [a.format(b=bucket) for a in extra]
    if "--prompts" in args:
        args[-1] = str(tmp_path / "boxes.json")
    shown = url.replace("key:secret@", "")
    named = args[1] if args and args[0] == "--ensemble" else shown
    out = tmp_path / "out.zarr"
    r = check_bad_input("prelabel", str(tmp_path / "imgs"), "--model", url, *args, "--out", str(out), "-w", "0",
                        root=tmp_path, code=2, names=(named.rstrip("/"), says), outputs=[out])
    assert "secret" not in r.stderr + r.stdout
    assert "segpipe-model-" not in r.stderr  # the temporary copy is never what a message names
    assert not out.exists()


def test_https_model_that_is_no_file_is_one_line(tmp_path: Path, https_server: HttpsServer) -> None:
    """A real HTTPS server answers 404 (a missing file, or a folder it cannot list)."""
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 32), (40, 90, 200)).save(tmp_path / "imgs" / "0.png")
    url = f"{https_server.url}/models/segformer"
    out = tmp_path / "out.zarr"
    check_bad_input("prelabel", str(tmp_path / "imgs"), "--model", url, "--out", str(out), "-w", "0",
                    root=tmp_path, code=2, names=(url, "no such object", "cannot be listed over HTTP"),
                    outputs=[out])
    assert not out.exists()
