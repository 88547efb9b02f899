"""Shared fixtures: the peers' test assets and a CLI runner that drives the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``../shared/testdata`` beside the repo; tests needing it skip cleanly when it is absent."""
    if not (TESTDATA / "expected.json").exists():
        pytest.skip(f"peer test assets not found at {TESTDATA} (see shared/README.md)")
    return TESTDATA


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m segpipe ARGS`` in a subprocess (the real CLI), quiet, capturing output."""
    env = dict(os.environ, CI="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "segpipe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture()
def cli():
    """The real CLI as a function."""
    return run_cli
