"""A real S3-compatible server for tests: moto in server mode, started from ``.venv-moto``.

moto pulls boto3/botocore, which pin ``python-dateutil<3`` against our 4.0, so it lives in its own
virtualenv (``make peers-moto``), as Label Studio does; without it the tests skip. The server listens on
127.0.0.1 on a free port and is stopped at the end of the session. segpipe talks to it as to any S3:
through the standard environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` …), which the
fixture sets for the session (Dask workers started afterwards inherit them).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOTO_PYTHON = REPO / ".venv-moto" / "bin" / "python"
#: moto accepts any credentials; these are fixed test values, never real ones.
ENV = {
    "AWS_ACCESS_KEY_ID": "segpipe-test-key",
    "AWS_SECRET_ACCESS_KEY": "segpipe-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint URL and its log file."""

    endpoint: str
    log: Path

    def make_bucket(self) -> str:
        """Creates a bucket with a unique name (an unsigned ``PUT /bucket``, which moto accepts)."""
        name = f"segpipe-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as r:
            return bool(r.status == 200)
    except Exception:
        return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Starts ``python -m moto.server`` on 127.0.0.1 and sets the AWS environment to point at it."""
    if not MOTO_PYTHON.exists():
        pytest.skip(f"moto is not installed: {MOTO_PYTHON.relative_to(REPO)} is absent (run `make peers-moto`)")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MOTO_PYTHON), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _up(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
        os.environ.update(ENV)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        try:
            yield S3Server(endpoint, log)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def bucket(s3_server: S3Server) -> str:
    """A new empty bucket's name."""
    return s3_server.make_bucket()
