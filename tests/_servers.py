"""Real servers for the URL-backend tests (issue 16, point 2): HTTPS, Azure Blob (Azurite), GCS (fake-gcs-server).

segpipe reaches each of them as it reaches the real service, through the standard configuration only:

* ``https_server``: a threaded HTTPS server on 127.0.0.1 that serves a folder with Range requests, ETag
  and Last-Modified (what obstore's HTTP store and GDAL's ``/vsicurl/`` use), and records every request.
  Its certificate is signed by a CA made for the module with ``openssl``; trust comes from
  ``SSL_CERT_FILE`` (read by obstore's TLS stack and Python's ``ssl``) and ``CURL_CA_BUNDLE`` (GDAL's
  curl), never from switching verification off.
* ``azurite``: Microsoft's Azure Storage emulator (blob service), from ``.venv-azurite`` (``make
  peers-azurite``), with a fresh temporary folder. segpipe uses it through ``AZURE_STORAGE_USE_EMULATOR``
  and ``AZURITE_BLOB_STORAGE_URL`` (obstore's names; GDAL gets the same as a connection string).
* ``gcs_server``: fake-gcs-server, from ``.venv-gcs`` (``make peers-gcs``), with a fresh temporary
  folder, reached through ``GOOGLE_SERVICE_ACCOUNT`` (a service-account file naming the emulator's
  ``gcs_base_url``: obstore's documented way to an emulator). It serves every read obstore makes but
  not its uploads (see :class:`GcsServer`), so only the read side of ``gs://`` runs against it.

Each fixture skips, naming the make target, when its server is not installed; each runs for one test
module and sets its variables for that module only (Dask workers started meanwhile inherit them), so no
other test sees a test CA or an emulator's settings.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

# Azurite's one account and its key: public values Microsoft documents for the emulator.
from segpipe.storage.raster import AZURITE_ACCOUNT, AZURITE_KEY

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Sets ``values`` in ``os.environ`` for the block, then restores what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait(ready: Any, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ HTTPS with Range requests

_CA_CONFIG = """[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = segpipe test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""
# A leaf signed by the CA (rustls refuses a self-signed CA certificate used as the server's own).
_LEAF_EXTENSIONS = """subjectAltName = IP:127.0.0.1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
"""


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it, made with ``openssl``.

    Returns:
        ``(ca.pem, server.pem, server.key)``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: it makes the HTTPS test server's certificate")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.cnf").write_text(_CA_CONFIG)
    (folder / "leaf.cnf").write_text(_LEAF_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["req", "-x509", "-config", "ca.cnf", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        ["req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
         "-days", "2", "-extfile", "leaf.cnf", "-out", "server.pem"],
    ):
        subprocess.run([openssl, *cmd], cwd=folder, check=True, capture_output=True)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


@dataclass(frozen=True)
class Request:
    """One request the HTTPS server answered: its method, path, ``Range`` header, status and body bytes."""

    method: str
    path: str
    range: str | None
    status: int
    sent: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root
        self.context = context
        self.requests: list[Request] = []

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's own thread: a client that stalls it blocks no other.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that refused the certificate (as it should without the CA) or hung up
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-response (GDAL does, having read enough) is no server error


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a single ``bytes=`` range, or None when it cannot be satisfied (RFC 9110)."""
    spec = header.removeprefix("bytes=").strip()
    first, _, last = spec.partition("-")
    if not first:
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size else None
    start = int(first)
    stop = min(size, int(last) + 1) if last else size
    return (start, stop) if start < size and start < stop else None


class _RangeHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the files below the server's root, with single byte ranges; nothing else."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _refuse(self) -> None:
        self._send(405, b"", {"Allow": "GET, HEAD"}, body=True)

    do_PUT = do_POST = do_DELETE = do_PATCH = do_PROPFIND = _refuse  # noqa: N815

    def _send(self, status: int, data: bytes, headers: dict[str, str], *, body: bool) -> None:
        self.server.requests.append(Request(self.command, urlsplit(self.path).path, self.headers.get("Range"),
                                            status, len(data) if body else 0))
        self.send_response(status)
        for k, v in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _answer(self, *, body: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        file = self.server.root.joinpath(*rel.split("/"))
        if not rel or ".." in rel.split("/") or not file.is_file():
            self._send(404, b"not found", {"Content-Type": "text/plain"}, body=body)
            return
        data = file.read_bytes()
        st = file.stat()
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "ETag": f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
                   "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
        want = self.headers.get("Range")
        if want is None or "," in want or not want.startswith("bytes="):
            self._send(200, data, headers, body=body)  # no range, or several: the whole file (allowed)
            return
        span = _byte_range(want, len(data))
        if span is None:
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, body=body)
            return
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        self._send(206, data[start:stop], headers, body=body)


@dataclass
class HttpsServer:
    """A running HTTPS server: ``url`` serves the files below ``root``; ``requests`` lists what it answered."""

    url: str
    root: Path
    ca: Path
    server: _Server = field(repr=False)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def put(self, rel: str, data: bytes) -> str:
        """Places ``data`` at ``rel`` below the root; returns its URL."""
        target = self.root.joinpath(*rel.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{self.url}/{rel}"


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    """An HTTPS server on 127.0.0.1 whose CA is trusted through ``SSL_CERT_FILE`` for the module."""
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    root = tmp_path_factory.mktemp("www")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _Server(root, context)
    thread = threading.Thread(target=server.serve_forever, name="https-test-server", daemon=True)
    thread.start()
    try:
        # SSL_CERT_FILE: obstore's TLS and Python's; CURL_CA_BUNDLE: GDAL's curl (which reads it before
        # SSL_CERT_FILE), set too because machines often set it to the system's bundle.
        with environment({"SSL_CERT_FILE": str(ca), "CURL_CA_BUNDLE": str(ca)}):
            yield HttpsServer(f"https://127.0.0.1:{server.server_address[1]}", root, ca, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ------------------------------------------------------------------ Azure Blob Storage: Azurite

AZURITE = REPO / ".venv-azurite" / "node_modules" / ".bin" / "azurite-blob"


@dataclass(frozen=True)
class AzureServer:
    """A running Azurite blob service: its endpoint (``http://127.0.0.1:PORT``) and its log file."""

    endpoint: str
    log: Path

    def make_container(self) -> str:
        """Creates a container with a unique name (``PUT ?restype=container``, signed with the account key)."""
        name = f"segpipe-{uuid.uuid4().hex[:12]}"
        date, version = email.utils.formatdate(usegmt=True), "2021-08-06"
        # Shared Key: the verb, 11 empty standard headers, the x-ms- headers, the resource (path style:
        # the emulator's account appears in the path too).
        to_sign = "\n".join(["PUT", *[""] * 11, f"x-ms-date:{date}", f"x-ms-version:{version}",
                             f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}", "restype:container"])
        mac = hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()
        # No body (urllib would add a Content-Type to one, which the signature then lacks).
        req = urllib.request.Request(f"{self.endpoint}/{AZURITE_ACCOUNT}/{name}?restype=container", method="PUT",
                                     headers={
                                         "x-ms-date": date, "x-ms-version": version,
                                         "Authorization": f"SharedKey {AZURITE_ACCOUNT}:"
                                                          f"{base64.b64encode(mac).decode()}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201, r.status
        return name


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answered (an unsigned request is refused): it is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """Starts ``azurite-blob`` on 127.0.0.1 in a fresh folder and points obstore's Azure variables at it."""
    if not AZURITE.exists():
        pytest.skip(f"Azurite is not installed: {AZURITE.relative_to(REPO)} is absent (run `make peers-azurite`)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("azurite")
    log = folder / "azurite.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                 "--location", str(folder / "data"), "--silent", "--skipApiVersionCheck"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _answers(f"{endpoint}/{AZURITE_ACCOUNT}?comp=list"), proc, log, "Azurite")
        with environment({"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": endpoint}):
            yield AzureServer(endpoint, log)
    finally:
        # Azurite waits for idle keep-alive connections (this process's obstore pool holds some) to close
        # before it exits: its data is a temporary folder, so it is not waited for long.
        _stop(proc, grace=2)


@pytest.fixture()
def container(azurite: AzureServer) -> str:
    """A new empty Azurite container's name."""
    return azurite.make_container()


# ------------------------------------------------------------------ Google Cloud Storage: fake-gcs-server

GCS_SERVER = REPO / ".venv-gcs" / "bin" / "fake-gcs-server"


@dataclass(frozen=True)
class GcsServer:
    """A running fake-gcs-server: its endpoint (``http://127.0.0.1:PORT``) and its log file.

    It serves the reads obstore's GCS store makes (XML API GET with ranges, HEAD, list, DELETE) but not its
    XML API ``PUT`` (upstream fake-gcs-server answers it 400 "invalid uploadType"): objects are placed
    with :meth:`upload`, through the JSON API's media upload.
    """

    endpoint: str
    log: Path

    def make_bucket(self) -> str:
        """Creates a bucket with a unique name (the JSON API's ``POST /storage/v1/b``)."""
        name = f"segpipe-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=segpipe", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status
        return name

    def upload(self, bucket: str, key: str, data: bytes) -> None:
        """Places ``data`` at ``gs://bucket/key`` (``POST /upload/storage/v1/b/BUCKET/o?uploadType=media``)."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        req = urllib.request.Request(f"{self.endpoint}/upload/storage/v1/b/{bucket}/o?{query}", method="POST",
                                     data=data, headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200, r.status

    def upload_tree(self, url: str, folder: Path) -> list[str]:
        """Copies every file below ``folder`` to ``url/…`` (``gs://bucket/prefix``); returns the keys written."""
        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        keys = []
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                key = "/".join(filter(None, [prefix, p.relative_to(folder).as_posix()]))
                self.upload(bucket, key, p.read_bytes())
                keys.append(key)
        return keys


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """Starts fake-gcs-server on 127.0.0.1 in a fresh folder and points obstore's GCS variables at it.

    obstore takes an emulator from a service-account file naming ``gcs_base_url`` with ``disable_oauth``
    (``GOOGLE_SERVICE_ACCOUNT``, as obstore's own docs show); its ``GOOGLE_BASE_URL`` with
    ``GOOGLE_SKIP_SIGNATURE`` still asks the metadata server for a token (obstore 0.12.1).
    """
    if not GCS_SERVER.exists():
        pytest.skip(f"fake-gcs-server is not installed: {GCS_SERVER.relative_to(REPO)} is absent "
                    "(run `make peers-gcs`)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("gcs")
    account = folder / "service-account.json"
    account.write_text(json.dumps({"gcs_base_url": endpoint, "disable_oauth": True, "client_email": "",
                                   "private_key": "", "private_key_id": ""}))
    log = folder / "gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(GCS_SERVER), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                                 "-public-host", f"127.0.0.1:{port}", "-backend", "filesystem",
                                 "-filesystem-root", str(folder / "data"), "-log-level", "warn"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _answers(f"{endpoint}/storage/v1/b"), proc, log, "fake-gcs-server")
        with environment({"GOOGLE_SERVICE_ACCOUNT": str(account)}):
            yield GcsServer(endpoint, log)
    finally:
        _stop(proc)


@pytest.fixture()
def gcs_bucket(gcs_server: GcsServer) -> str:
    """A new empty fake-gcs-server bucket's name."""
    return gcs_server.make_bucket()
