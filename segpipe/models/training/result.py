"""What a training run returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What :func:`~segpipe.models.train.train` produced.

    Attributes:
        out_dir: The output folder.
        best_path: ``out_dir/best.ckpt``, None if no epoch was validated.
        best_metric: The best validation metric (``-1`` before any epoch).
        metric_name: ``mean_iou``, ``ap`` or ``pck``.
        epochs_run: Epochs in ``history`` (those of a resumed run included).
        stopped_by_budget: ``max_minutes`` ended the run.
        history: One record per epoch, as in ``metrics.jsonl``.
    """

    out_dir: Path
    best_path: Path | None
    best_metric: float
    metric_name: str
    epochs_run: int
    stopped_by_budget: bool
    history: list[dict[str, Any]]
