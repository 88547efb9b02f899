"""``segpipe train``: train a registered architecture on a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from segpipe.cli.common import (
    device_option,
    overwrite_option,
    positive_float_option,
    required_arch_option,
    resume_option,
    seed_option,
)


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
        from segpipe.cli import state
        from segpipe.models.train import train

        state.OUTPUT = out
        check_arch(arch)
        model_kwargs = parse_model_args(arch, model_arg)
        crop_hw = parse_size(crop, "--crop") if crop else None

        res = train(
            dataset,
            arch,
            out,
            epochs=epochs,
            max_minutes=max_minutes,
            val_dir=val,
            resume=resume,
            overwrite=overwrite,
            seed=seed,
            batch_size=batch,
            lr=lr,
            device=device,
            model_kwargs=model_kwargs or None,
            crop=crop_hw,
            progress=state.show_progress(),
            log=None if state.QUIET else (lambda line: state.err_console.print(line, markup=False)),
        )
        note = " (stopped at the time budget)" if res.stopped_by_budget else ""
        state.console.print(
            f"trained {res.epochs_run} epoch(s){note}; best {res.metric_name} {res.best_metric:.4f}: "
            f"{res.best_path}; metrics: {res.out_dir / 'metrics.jsonl'}",
            markup=False,
        )


def parse_model_args(arch: str, items: list[str]) -> dict[str, Any]:
    """``["base=16", "bilinear=true"]`` → ``{"base": 16, "bilinear": True}``, checked against ``arch``.

    Values are JSON literals where they parse as one (numbers, ``true``/``false``, lists), else strings.

    Raises:
        ConfigError: a malformed item, or a key the architecture's builder does not take.
    """
    import json

    from segpipe.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--model-arg {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    if out:
        import torch

        from segpipe.models.registry import build_model

        try:
            with torch.device("meta"):  # no memory, no initialisation: only the options are checked
                build_model(arch, 2, **out)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--model-arg: {arch} does not accept {out}: {e}") from None
        except RuntimeError as e:  # torch's own check of a layer's size (e.g. base=-3: a negative dimension)
            given = " ".join(f"{k}={json.dumps(v)}" for k, v in out.items())
            raise ConfigError(f"--model-arg {given}: {arch} cannot be built with it "
                              f"({str(e).splitlines()[0][:120]})") from None
    return out


def check_arch(arch: str) -> None:
    """Refuses an ``--arch`` no builder is registered for (one line naming the option and the known names)."""
    from segpipe.errors import ConfigError, UnknownNameError
    from segpipe.models.registry import get_model_spec

    try:
        get_model_spec(arch)
    except UnknownNameError as e:
        raise ConfigError(f"--arch: {e.message}") from None


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """``"256x512"`` (or ``"256"``) → ``(256, 512)``."""
    from segpipe.errors import ConfigError

    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h, w = 0, 0
    if h <= 0 or w <= 0:
        raise ConfigError(f"{flag} {text!r}: expected HxW with positive integers, e.g. 256x512")
    return h, w
