"""Accuracy bars, briefly: short CPU trainings must clear lower bars than bench/accuracy_bars.py's.

Slow (minutes each on 2 cores): run with ``pytest -m slow tests/models/test_accuracy_bars.py``.
They run the benchmark script itself, so the same synth → train → predict → evaluate path is tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "accuracy_bars.py"


def _run(tmp_path: Path, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--work", str(tmp_path), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    return json.loads(out.stdout.strip().splitlines()[-2])


@pytest.mark.slow
def test_instance_model_learns_synth_objects(tmp_path: Path) -> None:
    # ~384 steps (2-3 minutes on a quiet 2-core machine); the same recipe for 4 epochs of 192 images
    # reached test AP50 0.25, 14 epochs 0.60 (bench/RESULTS_models.md).
    r = _run(tmp_path, "--bar", "instance", "--minutes", "5", "--n-train", "96", "--n-val", "16", "--epochs", "8")
    assert r["evaluate_rc"] == 0
    assert r["ap50"] is not None and r["ap50"] >= 0.1, r


@pytest.mark.slow
def test_hourglass_learns_landmarks(tmp_path: Path) -> None:
    # 72 steps of 8 images (under a minute on a quiet 2-core machine); 96 steps reached 0.97.
    r = _run(tmp_path, "--bar", "landmarks", "--minutes", "3", "--n-train", "96", "--n-val", "16", "--epochs", "6")
    assert r["pck_image@0.05"] >= 0.5, r
