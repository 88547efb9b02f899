"""``segpipe view --serve``: the report folder over HTTP on this machine only (the standard library's server).

The page needs no server; this is for a browser that is not on the machine that holds the folder (an
SSH tunnel to 127.0.0.1) or that refuses ``file://`` pages. It binds the loopback address only.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from segpipe.errors import ConfigError, InputError

__all__ = ["check_port", "make_server", "serve"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves one folder; logs nothing per request (a page loads hundreds of thumbnails)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        return


def make_server(folder: str | Path, port: int = 8000, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """A threaded HTTP server of ``folder`` on ``host:port`` (port 0: any free port), not yet serving.

    Raises:
        InputError: ``folder`` holds no ``index.html``.
        ConfigError: the port is out of range or taken (``--port``).
    """
    root = Path(folder)
    if not (root / "index.html").is_file():
        raise InputError("holds no index.html: not a segpipe view report", path=root,
                         hint="write one first: segpipe view SOURCE --out FOLDER")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    handler = functools.partial(_Quiet, directory=str(root))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise _port_error(port, host, e) from None


def _port_error(port: int, host: str, e: OSError) -> ConfigError:
    return ConfigError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e})",
                       hint="pick another port, or 0 for any free one")


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Refuses a port that is out of range or taken, before a report is built only to fail to be served.

    Raises:
        ConfigError: naming ``--port``.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the server binds (it sets SO_REUSEADDR too), so a port in TIME_WAIT is not refused here.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise _port_error(port, host, e) from None


def serve(folder: str | Path, port: int = 8000, *, announce: Callable[[str], None] = print,
          ready: threading.Event | None = None) -> None:
    """Serves ``folder`` on 127.0.0.1 until interrupted; ``announce`` gets the URL first.

    Args:
        folder: The report folder.
        port: TCP port (0: any free port).
        announce: Called with ``http://127.0.0.1:PORT/`` once listening.
        ready: Set once listening (for callers that stop it from another thread).
    """
    server = make_server(folder, port)
    try:
        announce(f"http://127.0.0.1:{server.server_address[1]}/")
        if ready is not None:
            ready.set()
        server.serve_forever()
    finally:
        server.server_close()
