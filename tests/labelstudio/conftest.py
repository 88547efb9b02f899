"""A real Label Studio server for the round-trip tests, started from ``.venv-labelstudio``.

``make peers-labelstudio`` creates that virtualenv; without it the tests skip. The server listens on
127.0.0.1 on a free port, keeps its data (SQLite database, media) in ``SEGPIPE_LABELSTUDIO_DATA`` or
``.cache/labelstudio`` (the first start runs the migrations, minutes; later starts reuse them), and is
stopped at the end of the session. Its user and legacy token are fixed; each test makes its own
projects with unique titles, so a reused data folder never confuses them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LS_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
USERNAME = "segpipe@example.com"
PASSWORD = "segpipe-test-pw"
#: The legacy token of the test user (set on its creation by LABEL_STUDIO_USER_TOKEN).
LEGACY_TOKEN = "segpipe0test0legacy0token0123456789"
START_TIMEOUT = float(os.environ.get("SEGPIPE_LABELSTUDIO_START_TIMEOUT", "900"))


@dataclass(frozen=True)
class Server:
    """A running Label Studio: its URL, the test user's legacy token and the server's log file."""

    url: str
    token: str
    log: Path


def data_folder() -> Path:
    """The server's data folder: ``$SEGPIPE_LABELSTUDIO_DATA``, else ``.cache/labelstudio`` in the repo."""
    return Path(os.environ.get("SEGPIPE_LABELSTUDIO_DATA") or REPO / ".cache" / "labelstudio").resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return r.status == 200
    except Exception:
        return False


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Starts ``label-studio start`` on 127.0.0.1 and waits for ``/health``; stops it afterwards."""
    if not LS_BIN.exists():
        pytest.skip(f"Label Studio is not installed: {LS_BIN.relative_to(REPO)} is absent "
                    "(run `make peers-labelstudio`)")
    data = data_folder()
    data.mkdir(parents=True, exist_ok=True)
    files = tmp_path_factory.mktemp("ls-files")
    log = tmp_path_factory.mktemp("ls-log") / "label-studio.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))},
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": USERNAME,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": LEGACY_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LOG_LEVEL": "WARNING",
        "PYTHONWARNINGS": "ignore",
    }
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--enable-legacy-api-token"],
            cwd=data, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode} before it was healthy:\n{_tail(log)}")
            if time.monotonic() - t0 > START_TIMEOUT:
                pytest.fail(f"label-studio not healthy at {url} after {START_TIMEOUT:.0f} s:\n{_tail(log)}")
            time.sleep(1.0)
        print(f"\nlabel-studio healthy at {url} after {time.monotonic() - t0:.1f} s (data: {data})")
        yield Server(url, LEGACY_TOKEN, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
