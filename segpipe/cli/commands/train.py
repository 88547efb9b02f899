"""``segpipe train DATASET --arch NAME --out DIR``: request :class:`~segpipe.pipeline.requests.TrainRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import (
    build_request,
    device_option,
    overwrite_option,
    positive_float_option,
    required_arch_option,
    resume_option,
    seed_option,
)
from segpipe.errors import ConfigError, UnknownNameError


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("train")
    def train_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder: images/, masks/, annotations.json, labelmap.txt."),
        arch: str = required_arch_option("Architecture (see `segpipe models`)."),
        out: Path = typer.Option(..., "--out", help="Folder for epoch_NNN.ckpt, best.ckpt, metrics.jsonl."),
        epochs: int = typer.Option(10, "--epochs", min=1, help="Maximum epochs."),
        max_minutes: float | None = positive_float_option(None, "--max-minutes",
                                                          help="Stop at this wall-clock budget."),
        val: Path | None = typer.Option(None, "--val", help="Validation dataset (default: hold out 10%)."),
        resume: bool = resume_option("Continue from the last epoch checkpoint in --out."),
        overwrite: bool = overwrite_option("Replace an earlier `segpipe train` output."),
        seed: int = seed_option(),
        batch: int = typer.Option(4, "--batch", min=1, help="Batch size."),
        lr: float = positive_float_option(1e-3, "--lr", help="AdamW learning rate (finite, > 0)."),
        device: str = device_option(),
        model_arg: list[str] = typer.Option(
            [], "--model-arg", help="Architecture option KEY=VALUE, repeatable (e.g. base=16, num_stacks=2)."
        ),
        crop: str | None = typer.Option(None, "--crop", help="Training crop HxW (default: the model's input)."),
    ) -> None:
        """Train a model; writes checkpoints and per-epoch validation metrics."""
        # lazy: pydantic and training (torch) load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import TrainRequest

        req = build_request(TrainRequest, locals())
        state.OUTPUT = req.out
        check_arch(req.arch)
        if req.model_arg:
            # lazy: torch (~2 s) only when --model-arg is given
            from segpipe.models.registry import check_model_args

            check_model_args(req.arch, req.model_arg, option="--model-arg")
        res = api.train(req, progress=state.show_progress(),
                        log=None if state.QUIET else (lambda line: state.err_console.print(line, markup=False)))
        note = " (stopped at the time budget)" if res.stopped_by_budget else ""
        state.console.print(
            f"trained {res.epochs_run} epoch(s){note}; best {res.metric_name} {res.best_metric:.4f}: "
            f"{res.best_path}; metrics: {res.out_dir / 'metrics.jsonl'}",
            markup=False,
        )


def check_arch(arch: str) -> None:
    """Refuses an ``--arch`` no builder is registered for (one line naming the option and the known names)."""
    # lazy: the model registry (light, but only train needs it)
    from segpipe.models.registry import get_model_spec

    try:
        get_model_spec(arch)
    except UnknownNameError as e:
        raise ConfigError(f"--arch: {e.message}") from None
