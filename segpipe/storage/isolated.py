"""Decode untrusted images in a child process, so a decoder that crashes fails one image, not a worker.

Dask counts a dying worker against ``allowed-failures`` and suspects every task that was on it: one
segfaulting input could take the whole cluster down. Each worker therefore keeps one long-lived decoder
process (a plain subprocess, which daemonic Dask workers may start, unlike multiprocessing children);
a crash (any signal) turns into an :class:`~segpipe.errors.ImageDecodeError` for that image, and a fresh
decoder is started for the next one. The cost is one copy of the decoded array through a pipe (about
1 ms per MB).

Fault injection for tests: ``SEGPIPE_FAULT_DECODE=<substring>`` makes the decoder process kill itself
with SIGSEGV when the file name contains the substring (only when that variable is set).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import ImageDecodeError


class IsolatedDecoder:
    """A child process that decodes images and is restarted after it crashes."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _get(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "segpipe.storage._decoder_child"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            )
        return self._proc

    def read_image(self, path: str | Path, *, exif: bool = True, max_pixels: int | None = None) -> np.ndarray:
        """Decodes ``path`` to ``(H, W, 3) uint8`` in the child process.

        Raises:
            ImageDecodeError: the file is corrupt, or the decoder crashed on it.
        """
        with self._lock:
            proc = self._get()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write((json.dumps({"path": str(path), "exif": exif, "max_pixels": max_pixels}) + "\n")
                                 .encode())
                proc.stdin.flush()
                line = proc.stdout.readline()
                if not line:
                    raise BrokenPipeError
                head = json.loads(line)
                if not head["ok"]:
                    raise ImageDecodeError(head["error"], path=path)
                data = _read_exact(proc.stdout, int(head["nbytes"]))
            except (BrokenPipeError, ConnectionResetError, EOFError, json.JSONDecodeError):
                code = proc.wait()
                self._proc = None
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                raise ImageDecodeError(f"the image decoder crashed on this file ({how})", path=path) from None
            return np.frombuffer(data, dtype=np.dtype(head["dtype"])).reshape(head["shape"])

    def close(self) -> None:
        """Stops the child process."""
        if self._proc is not None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                self._proc.kill()
            finally:
                if self._proc.stdout:
                    self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> IsolatedDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean
            pass


def _read_exact(f: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf.extend(chunk)
    return bytes(buf)
