"""With progress bars on (stderr redirected, CI unset: what a user piping to a log file gets), an input
refused before any work is still exactly one ``error:`` line: no empty ``0/?`` bar drawn above it. A
run that does work still shows its bar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput._corpus import synth_with_unet


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bar")
    synth_with_unet(root / "data", root / "unet.ckpt", n=2, seed=3, size=(64, 64))
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "segpipe", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_refused_output_is_one_line_with_bars_on(data: Path) -> None:
    r = _cli("prelabel", "data/images", "-m", "unet.ckpt", "-o", "data/images", "-w", "0", cwd=data)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--out is the input" in lines[0], r.stderr


def test_a_run_that_works_still_draws_its_bar(data: Path) -> None:
    r = _cli("prelabel", "data/images", "-m", "unet.ckpt", "-o", "s.zarr", "-w", "0", cwd=data)
    assert r.returncode == 0, r.stderr
    assert "2/2 images" in r.stderr
