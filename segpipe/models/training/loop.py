"""The training loop: set a run up, train epoch by epoch, validate, checkpoint.

Every epoch writes ``OUT/epoch_NNN.ckpt`` (with optimizer state, for ``resume``), appends a line to
``OUT/metrics.jsonl`` (``mean_iou`` for semantic, COCO mask ``ap`` for instance, ``pck`` for
landmarks) and refreshes ``OUT/best.ckpt`` when the validation metric improves or ties (the later epoch
wins a tie). ``max_minutes`` stops training at the budget (mid-epoch if need be: that epoch is still
validated and saved). The same seed gives the same checkpoints: the split, the batches, the
augmentation and the model's initialisation all draw from it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from segpipe.errors import ConfigError, UnsupportedError
from segpipe.models.checkpoint import CheckpointMeta, load_checkpoint, provenance, save_checkpoint
from segpipe.models.predict import select_device
from segpipe.models.registry import ModelSpec, build_model, get_model_spec
from segpipe.models.training.batches import DetectionData, SemanticData, StepDevice, input_normalizer
from segpipe.models.training.data import DatasetInfo, first_size, label_space, read_dataset, split_for_validation
from segpipe.models.training.metrics import METRIC_NAMES, eval_instance, eval_landmarks, eval_semantic
from segpipe.models.training.out_dir import checked_output
from segpipe.models.training.result import TrainResult


@dataclass
class _Settings:
    """The run's options that the epochs use (as given to :func:`train`)."""

    dataset_dir: str | Path
    val_dir: str | Path | None
    arch: str
    epochs: int
    seed: int
    batch_size: int
    lr: float
    log: Callable[[str], None] | None
    t_start: float
    budget: float | None  # seconds

    def over_budget(self) -> bool:
        """Whether the wall-clock budget is spent."""
        return self.budget is not None and time.monotonic() - self.t_start > self.budget


@dataclass
class _Run:
    """The state of a run between steps."""

    task: str
    out: Path
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sd: StepDevice
    meta: CheckpointMeta
    data: SemanticData | DetectionData
    num_classes: int
    warmup_iters: int
    clip_grad: float | None
    start_epoch: int
    best: float
    history: list[dict[str, Any]]
    step_no: int = 0
    stopped: bool = False

    @property
    def metric_name(self) -> str:
        """The metric ``best.ckpt`` is chosen by."""
        return METRIC_NAMES[self.task]


@checked_output
def train(
    dataset_dir: str | Path,
    arch: str,
    out_dir: str | Path,
    epochs: int = 10,
    max_minutes: float | None = None,
    val_dir: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    batch_size: int = 4,
    lr: float = 1e-3,
    device: str = "auto",
    progress: bool = True,
    crop: tuple[int, int] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    warmup_iters: int | None = None,
    clip_grad: float | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Trains ``arch`` on a dataset folder.

    Args:
        dataset_dir: Training set (synth layout, see :mod:`segpipe.models.training.data`).
        arch: Registered architecture.
        out_dir: Where checkpoints and ``metrics.jsonl`` go: a new or empty folder, or an earlier
            ``train`` output (replaced whole when the new run completes; continued with ``resume``).
        epochs: Maximum number of epochs.
        max_minutes: Wall-clock budget; training stops there and keeps the best checkpoint.
        val_dir: Validation set; without it 10 % of the training images are held out (at least one).
        resume: Continue from the last ``epoch_NNN.ckpt`` in ``out_dir``.
        seed: Seeds torch and the augmentation.
        batch_size: Images per step.
        lr: AdamW learning rate (cosine-annealed over ``epochs``).
        device: ``auto`` / ``cpu`` / ``cuda``.
        progress: Show a rich progress bar on stderr.
        crop: Training crop ``(h, w)`` (semantic); the architecture's default input clipped to the
            image size when None.
        model_kwargs: Builder options (recorded in the checkpoint).
        log: Called with one line per epoch.
        warmup_iters: Linear learning-rate warm-up over the first steps of a fresh run (default: 50
            for instance and landmark models, whose losses spike from random initialisation; 0 for
            semantic).
        clip_grad: Gradient-norm clipping (default: 10 for instance models, none otherwise).
        overwrite: Replace an earlier ``train`` output at ``out_dir`` (checked before anything runs,
            see :func:`~segpipe.models.training.out_dir.checked_output`).

    Returns:
        A :class:`TrainResult`.

    Raises:
        OutputError: ``out_dir`` overlaps the dataset, or is a non-empty folder ``train`` did not make.
        UnsupportedError: a 3-D or panoptic architecture.
        InputError: the dataset is malformed (see :mod:`segpipe.models.training.data`).
        ConfigError: ``resume`` without a checkpoint of ``arch`` to resume from.
    """
    cfg = _Settings(dataset_dir, val_dir, arch, epochs, seed, batch_size, lr, log, time.monotonic(),
                    max_minutes * 60.0 if max_minutes else None)
    spec = _trainable_spec(arch)
    ds, val = split_for_validation(read_dataset(dataset_dir), val_dir, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    torch.manual_seed(seed)  # before the model is built: its initialisation draws from it
    kw = dict(model_kwargs or {})
    num_classes, keypoint_names = label_space(spec.task, ds)
    model, opt, sched = _model_and_optimizer(arch, num_classes, kw, dev, lr, epochs)
    amp, amp_dtype, scaler = _precision(dev)
    crop = _crop(spec, ds, crop)
    meta = CheckpointMeta(
        arch=arch,
        task=spec.task,
        num_classes=num_classes,
        categories=ds.categories,
        tile_size=[max(crop[0], spec.default_input[0]), max(crop[1], spec.default_input[1])],
        tile_overlap=0.25,
        model_kwargs=kw,
        keypoints=keypoint_names,
    )
    start_epoch, best, history = _resume(out, arch, model, opt, sched) if resume else (0, -1.0, [])
    sd = StepDevice(dev, amp, amp_dtype, input_normalizer(meta.mean, meta.std, dev))
    data = _task_data(spec.task, ds, val, crop, arch, num_classes)
    run = _Run(spec.task, out, model, opt, sched, scaler, sd, meta, data, num_classes,
               warmup_iters=_warmup_iters(warmup_iters, spec.task, start_epoch),
               clip_grad=10.0 if clip_grad is None and spec.task == "instance" else clip_grad,
               start_epoch=start_epoch, best=best, history=history)
    with _progress_bar(progress) as bar:
        for epoch in range(start_epoch, epochs):
            losses = _train_epoch(run, cfg, epoch, bar)
            _end_epoch(run, cfg, epoch, losses)
            if run.stopped:
                break
    best_path = out / "best.ckpt" if (out / "best.ckpt").is_file() else None
    return TrainResult(out, best_path, run.best, run.metric_name, len(run.history), run.stopped, run.history)


def _trainable_spec(arch: str) -> ModelSpec:
    """The registered spec of ``arch`` if ``train`` can train it.

    Raises:
        UnknownNameError: no such architecture.
        UnsupportedError: a 3-D model, or ``panoptic_fpn`` (trained as its two parts).
    """
    spec = get_model_spec(arch)
    if spec.dims != 2:
        raise UnsupportedError(
            f"{arch} is a {spec.dims}-D model; segpipe train trains 2-D models only",
            hint="pre-label volumes with your own 3-D checkpoint (a state dict plus --arch, or CheckpointMeta)",
        )
    if spec.task == "panoptic":
        raise UnsupportedError("panoptic_fpn is trained as its two parts: train a semantic and an instance model")
    return spec


def _model_and_optimizer(
    arch: str, num_classes: int, kw: dict[str, Any], dev: torch.device, lr: float, epochs: int
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The model on ``dev`` (channels-last on CUDA), AdamW and its cosine schedule over ``epochs``."""
    model = build_model(arch, num_classes, **kw).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    return model, opt, sched


def _precision(dev: torch.device) -> tuple[bool, torch.dtype, torch.amp.GradScaler]:
    """Mixed precision on CUDA (bfloat16 where supported, else float16 with a gradient scaler)."""
    use_amp = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return use_amp, amp_dtype, scaler


def _crop(spec: ModelSpec, ds: DatasetInfo, crop: tuple[int, int] | None) -> tuple[int, int]:
    """``crop``, or the architecture's default input clipped to the first image's size."""
    h0, w0 = first_size(ds)
    if crop is not None:
        return crop
    return min(spec.default_input[0], h0), min(spec.default_input[1], w0)


def _warmup_iters(given: int | None, task: str, start_epoch: int) -> int:
    """Warm-up steps: none when resuming; by default 50 for instance and landmark models, 0 for semantic."""
    if start_epoch > 0:
        return 0
    if given is None:
        return 0 if task == "semantic" else 50
    return given


def _resume(
    out: Path, arch: str, model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler
) -> tuple[int, float, list[dict[str, Any]]]:
    """Loads the last ``epoch_NNN.ckpt`` of ``out`` into the model, optimizer and schedule.

    Returns:
        The epochs done, the best metric so far and the history.

    Raises:
        ConfigError: no epoch checkpoint, or one of another architecture.
    """
    last = _last_epoch(out)
    if last is None:
        raise ConfigError("--resume: no epoch_NNN.ckpt to resume from", path=out)
    ck = load_checkpoint(last)
    if ck.meta.arch != arch:
        raise ConfigError(f"--resume: {last.name} is a {ck.meta.arch}, not a {arch}", path=last)
    model.load_state_dict(ck.state_dict)
    ts = ck.train_state or {}
    if ck.optimizer:
        opt.load_state_dict(ck.optimizer)
    if ts.get("scheduler"):
        sched.load_state_dict(ts["scheduler"])
    return int(ts.get("epoch", 0)), float(ts.get("best", -1.0)), list(ts.get("history", []))


def _last_epoch(out: Path) -> Path | None:
    ckpts = sorted(out.glob("epoch_*.ckpt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return ckpts[-1] if ckpts else None


def _task_data(
    task: str, ds: DatasetInfo, val: DatasetInfo, crop: tuple[int, int], arch: str, num_classes: int
) -> SemanticData | DetectionData:
    if task == "semantic":
        return SemanticData(ds, val, crop, num_classes)
    return DetectionData(ds, val, task, arch, num_classes)


# -- epochs -------------------------------------------------------------------------------------------


def _progress_bar(progress: bool) -> Progress:
    """The per-epoch bar on stderr (transient; disabled without ``progress``)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    )


def _train_epoch(run: _Run, cfg: _Settings, epoch: int, bar: Progress) -> list[float]:
    """One pass over the training set in a seeded order; sets ``run.stopped`` at the budget.

    Returns:
        The loss of every step.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed * 1000 + epoch)
    order = rng.permutation(len(run.data)).tolist()
    bs = cfg.batch_size
    nb = max(1, len(order) // bs) if len(order) >= bs else 1
    tid = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=nb, info="")
    run.model.train()
    losses: list[float] = []
    for b in range(nb):
        _warm_up(run)
        loss = _checked_step(run, cfg, order[b * bs : (b + 1) * bs], rng)
        losses.append(float(loss.detach()))
        bar.update(tid, advance=1, info=f"loss {np.mean(losses):.4f}")
        if cfg.over_budget():
            run.stopped = True
            break
    for g, base_lr in zip(run.opt.param_groups, run.sched.get_last_lr(), strict=True):
        g["lr"] = base_lr  # undo a warm-up factor: the cosine schedule chains on the current lr
    run.sched.step()
    bar.remove_task(tid)
    return losses


def _warm_up(run: _Run) -> None:
    """Scales the learning rate linearly over the first ``warmup_iters`` steps, then restores it."""
    n, step = run.warmup_iters, run.step_no
    if step < n:
        for g, base_lr in zip(run.opt.param_groups, run.sched.get_last_lr(), strict=True):
            g["lr"] = base_lr * (step + 1) / n
    elif step == n and n:
        for g, base_lr in zip(run.opt.param_groups, run.sched.get_last_lr(), strict=True):
            g["lr"] = base_lr
    run.step_no += 1


def _checked_step(run: _Run, cfg: _Settings, idx: list[int], rng: np.random.Generator) -> torch.Tensor:
    """:func:`_step`, with batch normalisation's refusal of a single value per channel as a ConfigError.

    A batch of one small image (a tiny dataset, or the last image left after the validation split)
    reaches a deep model's coarsest level as 1x1 pixels; torch's ValueError there names no option.

    Raises:
        ConfigError: naming ``--batch`` and what to change.
    """
    try:
        return _step(run, idx, rng)
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        raise ConfigError(
            f"--batch: a batch of {len(idx)} image(s) of {cfg.arch} reaches the model's coarsest level as a "
            "single pixel, and batch normalisation cannot train on one value per channel",
            hint="use larger images, more training images and a larger --batch, or a shallower model "
            "(--model-arg depth=N where the architecture has one)",
        ) from None


def _step(run: _Run, idx: list[int], rng: np.random.Generator) -> torch.Tensor:
    """One optimisation step on the items ``idx``; returns the loss."""
    run.opt.zero_grad(set_to_none=True)
    loss = run.data.loss(run.model, idx, rng, run.sd)
    run.scaler.scale(loss).backward()
    if run.clip_grad:
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.clip_grad)
    run.scaler.step(run.opt)
    run.scaler.update()
    return loss


def _validate(run: _Run) -> dict[str, float]:
    """The task's validation metrics (see :mod:`segpipe.models.training.metrics`)."""
    run.model.eval()
    data = run.data
    if isinstance(data, SemanticData):
        return eval_semantic(run.model, data.val, run.sd.to_input, run.num_classes)
    if run.task == "instance":
        return eval_instance(run.model, data.val_imgs, data.val_targets, run.sd.to_input)
    return eval_landmarks(run.model, data.val_imgs, data.val_targets, run.sd.to_input, data.arch)


def _end_epoch(run: _Run, cfg: _Settings, epoch: int, losses: list[float]) -> None:
    """Validates; appends to ``metrics.jsonl``; writes ``epoch_NNN.ckpt`` and, if as good as ever, ``best.ckpt``."""
    metrics = _validate(run)
    rec = {
        "epoch": epoch + 1,
        "loss": float(np.mean(losses)) if losses else None,
        **metrics,
        "lr": run.opt.param_groups[0]["lr"],
        "elapsed_s": round(time.monotonic() - cfg.t_start, 1),
        "partial": run.stopped,
    }
    run.history.append(rec)
    with open(run.out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    run.meta.provenance = provenance(
        dataset=str(Path(cfg.dataset_dir).resolve()),
        epochs=epoch + 1,
        metrics=metrics,
        seed=cfg.seed,
        val_dataset=str(Path(cfg.val_dir).resolve()) if cfg.val_dir else None,
        arch=cfg.arch,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
    )
    name = run.metric_name
    # ">=": of equally good epochs (a saturated validation metric) the later, longer-trained one wins.
    improved = metrics[name] >= run.best
    if improved:
        run.best = metrics[name]
    train_state = {"epoch": epoch + 1, "best": run.best, "history": run.history, "scheduler": run.sched.state_dict()}
    save_checkpoint(
        run.out / f"epoch_{epoch + 1:03d}.ckpt", run.model, run.meta, optimizer=run.opt.state_dict(),
        train_state=train_state,
    )
    if improved:
        save_checkpoint(run.out / "best.ckpt", run.model, run.meta)
    if cfg.log:
        cfg.log(
            f"epoch {epoch + 1}: loss {rec['loss']:.4f}, {name} {metrics[name]:.4f}"
            + (" (budget reached)" if run.stopped else "")
        )
