"""Process-wide CLI settings and console helpers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

VERBOSE = False
QUIET = False
#: The output the running command writes (``--out``, ``DST``, ``--json`` ...), named when a write fails
#: for the machine's reasons (disk full, read-only); set by each command that writes.
OUTPUT: Path | None = None

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def err(message: str) -> None:
    """Prints one error line on stderr (no markup interpretation)."""
    err_console.print(f"error: {message}", markup=False)


def warn(message: str) -> None:
    """Prints one warning line on stderr."""
    err_console.print(f"warning: {message}", markup=False)


def progress_log() -> Callable[[str], None]:
    """Where a command's progress lines go: stderr, or nowhere under ``--quiet``."""
    if QUIET:
        return lambda message: None
    return lambda message: err_console.print(message, markup=False)


def show_progress() -> bool:
    """Progress bars are shown unless --quiet, or stderr is not a terminal and CI is set."""
    return not QUIET and (sys.stderr.isatty() or not _ci())


def _ci() -> bool:
    return bool(os.environ.get("CI"))
