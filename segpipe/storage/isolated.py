"""Decode untrusted images in a child process, so a decoder that crashes fails one image, not a worker.

Dask counts a dying worker against ``allowed-failures`` and suspects every task that was on it: one
segfaulting input could take the whole cluster down. Each worker therefore keeps one long-lived decoder
process; a crash (any signal) turns into an :class:`~segpipe.errors.ImageDecodeError` for that image,
and a fresh decoder is started for the next one. The cost is one copy of the decoded array through a
pipe (about 1 ms per MB).

Fault injection for tests: ``SEGPIPE_FAULT_DECODE=<substring>`` makes the decoder process kill itself
with SIGSEGV when the file path contains the substring (only when that variable is set).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import ImageDecodeError


def _decode(path: str, exif: bool, max_pixels: int | None) -> np.ndarray:
    fault = os.environ.get("SEGPIPE_FAULT_DECODE")
    if fault and fault in path:
        os.kill(os.getpid(), signal.SIGSEGV)
    from segpipe.storage.images import read_image

    return read_image(path, exif=exif, max_pixels=max_pixels)


class IsolatedDecoder:
    """A one-process pool that decodes images and survives its child's crashes."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver/spawn: never fork a process that holds torch threads or CUDA state
            ctx = mp.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        return self._pool

    def read_image(self, path: str | Path, *, exif: bool = True, max_pixels: int | None = None) -> np.ndarray:
        """Decodes ``path`` to ``(H, W, 3) uint8`` in the child process.

        Raises:
            ImageDecodeError: the file is corrupt, or the decoder crashed on it.
        """
        with self._lock:
            pool = self._get()
            try:
                return pool.submit(_decode, str(path), exif, max_pixels).result()
            except BrokenProcessPool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                raise ImageDecodeError("the image decoder crashed on this file (killed by a signal)",
                                       path=path) from None

    def close(self) -> None:
        """Stops the child process."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> IsolatedDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
