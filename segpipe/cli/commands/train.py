"""``segpipe train``: train a registered architecture on a dataset folder."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("train")
    def train_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder: images/, masks/, annotations.json, labelmap.txt."),
        arch: str = typer.Option(..., "--arch", help="Architecture (see `segpipe models`)."),
        out: Path = typer.Option(..., "--out", help="Folder for epoch_NNN.ckpt, best.ckpt, metrics.jsonl."),
        epochs: int = typer.Option(10, "--epochs", help="Maximum epochs."),
        max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop at this wall-clock budget."),
        val: Path | None = typer.Option(None, "--val", help="Validation dataset (default: hold out 10%)."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the last epoch checkpoint in --out."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        batch: int = typer.Option(4, "--batch", help="Batch size."),
        lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    ) -> None:
        """Train a model; writes checkpoints and per-epoch validation metrics."""
        from segpipe.cli import state
        from segpipe.models.train import train

        res = train(
            dataset,
            arch,
            out,
            epochs=epochs,
            max_minutes=max_minutes,
            val_dir=val,
            resume=resume,
            seed=seed,
            batch_size=batch,
            lr=lr,
            device=device,
            progress=state.show_progress(),
            log=None if state.QUIET else (lambda line: state.err_console.print(line, markup=False)),
        )
        note = " (stopped at the time budget)" if res.stopped_by_budget else ""
        state.console.print(
            f"trained {res.epochs_run} epoch(s){note}; best {res.metric_name} {res.best_metric:.4f}: "
            f"{res.best_path}; metrics: {res.out_dir / 'metrics.jsonl'}",
            markup=False,
        )
