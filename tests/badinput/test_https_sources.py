"""Bad ``https://`` sources, against a real HTTPS server (tests/_servers.py): one line naming the URL.

An HTTP server has no listing, so a folder, a glob or a dataset (whose images are found by listing) is
refused; a URL the server answers 404 for is "not found"; a server whose certificate is not trusted is
refused, never read unverified; a server nobody runs is "connection refused"; credentials written into
the URL are refused and never echoed. All exit 2 before anything is written. A manifest naming one
missing image among good ones: that image fails alone (exit 1), its line naming its URL. Writing to
``https://`` is refused in tests/badinput/test_object_storage.py (``test_outputs_at_a_read_only_scheme_are_refused``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests._servers import HttpsServer, https_server
from tests.badinput._corpus import check_bad_input, synth_with_unet

__all__ = ["https_server"]  # the fixture, for pytest


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net checkpoint (its images are not used)."""
    root = tmp_path_factory.mktemp("httpsbad")
    synth_with_unet(root / "data", root / "unet.ckpt", n=1, seed=0, size=(32, 32))
    return root / "unet.ckpt"


@pytest.fixture()
def site(https_server: HttpsServer, tmp_path: Path) -> str:
    """A new prefix on the server holding ``imgs/0.png``, ``imgs/1.png`` and a COCO file naming them."""
    prefix = uuid.uuid4().hex[:10]
    images = []
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        https_server.put(f"{prefix}/imgs/{i}.png", (tmp_path / f"{i}.png").read_bytes())
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 32, "height": 32})
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    https_server.put(f"{prefix}/imgs/annotations.json", json.dumps(coco).encode())
    return f"{https_server.url}/{prefix}"


@pytest.mark.parametrize(("rel", "says"), [
    ("imgs", "cannot be listed"),
    ("imgs/", "cannot be listed"),
    ("imgs/*.png", "cannot be listed"),
    ("imgs/annotations.json", "cannot be listed"),
    ("imgs/missing.png", "not found"),
    ("lists/none.jsonl", "not found"),
])
def test_bad_https_source_is_one_line(site: str, model: Path, tmp_path: Path, rel: str, says: str) -> None:
    url = f"{site}/{rel}"
    shown = url.rstrip("/").removesuffix("/*.png").removesuffix("/annotations.json")
    out = tmp_path / "out.zarr"
    check_bad_input("prelabel", url, "--model", str(model), "--out", out.name, "-w", "0", root=tmp_path, code=2,
                    names=(shown, says), outputs=[out])
    assert not out.exists()


def test_credentials_in_an_https_url_are_refused_and_never_echoed(site: str, model: Path, tmp_path: Path) -> None:
    url = site.replace("https://", "https://user:hunter2@") + "/imgs/0.png"
    r = check_bad_input("prelabel", url, "--model", str(model), "--out", "out.zarr", "-w", "0", root=tmp_path,
                        code=2, names=(f"{site}/imgs/0.png", "carries credentials"))
    assert "hunter2" not in r.stderr + r.stdout


def test_an_untrusted_certificate_is_refused(site: str, model: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the test CA in ``SSL_CERT_FILE`` the server's certificate is unknown: refused, never read."""
    monkeypatch.delenv("SSL_CERT_FILE")
    url = f"{site}/imgs/0.png"
    check_bad_input("prelabel", url, "--model", str(model), "--out", "out.zarr", "-w", "0", root=tmp_path,
                    code=2, names=(url, "certificate"))


def test_a_server_nobody_runs_is_one_line(model: Path, tmp_path: Path) -> None:
    from tests._servers import free_port

    url = f"https://127.0.0.1:{free_port()}/lists/m.jsonl"
    check_bad_input("prelabel", url, "--model", str(model), "--out", "out.zarr", "-w", "0", root=tmp_path,
                    code=2, names=(url, "connection refused"))


def test_a_missing_image_in_a_manifest_fails_alone(site: str, model: Path, https_server: HttpsServer,
                                                   tmp_path: Path) -> None:
    lines = [{"id": i + 1, "file": f"{i}.png", "path": f"{site}/imgs/{i}.png"} for i in range(2)]
    lines.append({"id": 3, "file": "gone.png", "path": f"{site}/imgs/gone.png"})
    prefix = site.rsplit("/", 1)[1]
    https_server.put(f"{prefix}/m.jsonl", "".join(json.dumps(d) + "\n" for d in lines).encode())
    out = tmp_path / "out.zarr"
    r = check_bad_input("prelabel", f"{site}/m.jsonl", "--model", str(model), "--out", out.name, "-w", "0",
                        root=tmp_path, code=1, names=(f"{site}/imgs/gone.png", "not found"), outputs=[out])
    assert "2 done" in r.stdout and "1 failed" in r.stdout
