"""Training on the synth layout (images/ + masks/ + annotations.json + labelmap.txt).

Semantic models learn from ``masks/`` (label-map PNGs paired with the photos by stem; 255 is ignored),
instance models from the COCO ``annotations.json`` (decoded with pycocotools), the stacked hourglass
from COCO keypoints (Gaussian heatmaps, sigma 2 output pixels). Every epoch writes
``OUT/epoch_NNN.ckpt`` (with optimizer state, for ``--resume``), appends a line to
``OUT/metrics.jsonl`` (``mean_iou`` for semantic, COCO mask ``ap`` for instance, ``pck`` for landmarks)
and refreshes ``OUT/best.ckpt`` when the validation metric improves or ties (the later epoch wins a
tie). ``max_minutes`` stops training at the budget (mid-epoch if need be: that epoch is still
validated and saved).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

import numpy as np

from segpipe.errors import ConfigError, InputError, UnsupportedError

IGNORE = 255


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    best_path: Path | None
    best_metric: float
    metric_name: str
    epochs_run: int
    stopped_by_budget: bool
    history: list[dict[str, Any]]


#: What ``train`` writes into its output folder (the marker's entries: anything else is not replaced).
TRAIN_ENTRIES = ("epoch_*.ckpt", "best.ckpt", "metrics.jsonl")

P = ParamSpec("P")


# -- dataset reading ----------------------------------------------------------------------------------


@dataclass
class DatasetInfo:
    """A dataset folder in the synth layout."""

    root: Path
    images: list[Path]
    masks: list[Path | None]
    categories: list[dict[str, Any]]  # per model index, background first
    coco: dict[str, Any] | None


def read_labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Parses VOC-style ``name:r,g,b::`` lines (comments and blanks skipped)."""
    out = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        name, _, rest = ln.partition(":")
        rgb = rest.split(":")[0]
        try:
            r, g, b = (int(v) for v in rgb.split(","))
        except ValueError:
            raise InputError(f"malformed labelmap line {ln!r}", path=path) from None
        out.append((name, (r, g, b)))
    return out


def read_dataset(root: str | Path) -> DatasetInfo:
    """Reads a dataset folder (see module docstring).

    Raises:
        InputError: no images, or neither masks nor annotations.
    """
    root = Path(root)
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise InputError("dataset has no images/ folder", path=root)
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not images:
        raise InputError("images/ is empty", path=img_dir)
    masks = [(root / "masks" / f"{p.stem}.png") for p in images]
    masks_or_none: list[Path | None] = [m if m.is_file() else None for m in masks]
    coco = None
    if (root / "annotations.json").is_file():
        coco = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
    cats: list[dict[str, Any]] = []
    if (root / "labelmap.txt").is_file():
        coco_cats = {c["name"]: c for c in (coco or {}).get("categories", [])}
        for i, (name, rgb) in enumerate(read_labelmap(root / "labelmap.txt")):
            cc = coco_cats.get(name, {})
            cats.append(
                {
                    "index": i,
                    "id": int(cc.get("id", i)),
                    "name": name,
                    "color": list(rgb),
                    "isthing": bool(cc.get("isthing", i > 0)),
                }
            )
    elif coco is not None:
        cats.append({"index": 0, "id": 0, "name": "background", "color": [0, 0, 0], "isthing": False})
        for i, c in enumerate(sorted(coco.get("categories", []), key=lambda c: c["id"])):
            cats.append(
                {
                    "index": i + 1,
                    "id": int(c["id"]),
                    "name": c["name"],
                    "color": c.get("color"),
                    "isthing": bool(c.get("isthing", True)),
                    "keypoints": c.get("keypoints", []),
                }
            )
    if not cats:
        raise InputError("dataset has neither labelmap.txt nor annotations.json", path=root)
    return DatasetInfo(root, images, masks_or_none, cats, coco)


def _scale_crop(
    img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: tuple[int, int], scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, horizontal flip and crop (padding with IGNORE where the image is smaller)."""
    from PIL import Image

    s = rng.uniform(*scale)
    h, w = mask.shape
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    ch, cw = crop
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
    y = int(rng.integers(0, img.shape[0] - ch + 1))
    x = int(rng.integers(0, img.shape[1] - cw + 1))
    return np.ascontiguousarray(img[y : y + ch, x : x + cw]), np.ascontiguousarray(mask[y : y + ch, x : x + cw])


class _SemanticSet:
    def __init__(self, ds: DatasetInfo, crop: tuple[int, int] | None, augment: bool) -> None:
        from segpipe.storage.images import read_image, read_label_map

        pairs = [(i, m) for i, m in zip(ds.images, ds.masks, strict=True) if m is not None]
        if not pairs:
            raise InputError("no image has a mask in masks/ (paired by stem)", path=ds.root)
        # Decoded once: synth datasets are small, and decoding dominates CPU training otherwise.
        self.items = [(read_image(i), read_label_map(m).astype(np.uint8)) for i, m in pairs]
        self.crop = crop
        self.augment = augment
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img, mask = self.items[i]
        if self.augment and self.crop is not None:
            return _scale_crop(img, mask, self.rng, self.crop, (0.75, 1.25))
        return img, mask


def _coco_targets(ds: DatasetInfo) -> list[dict[str, Any]]:
    """Per image (in ``ds.images`` order): boxes xyxy, model labels, masks, keypoints."""
    from pycocotools import mask as mask_utils

    coco = ds.coco or {}
    id_to_index = {c["id"]: c["index"] for c in ds.categories if c["index"] > 0}
    by_name = {Path(im["file_name"]).name: im for im in coco.get("images", [])}
    anns: dict[int, list[dict[str, Any]]] = {}
    for a in coco.get("annotations", []):
        anns.setdefault(a["image_id"], []).append(a)
    out = []
    for p in ds.images:
        im = by_name.get(p.name)
        if im is None:
            out.append(
                {
                    "boxes": np.zeros((0, 4), np.float32),
                    "labels": np.zeros(0, np.int64),
                    "masks": None,
                    "kps": None,
                    "hw": None,
                }
            )
            continue
        h, w = im["height"], im["width"]
        boxes, labels, masks, kps = [], [], [], []
        for a in anns.get(im["id"], []):
            if a.get("iscrowd") or a["category_id"] not in id_to_index:
                continue
            seg = a.get("segmentation")
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg, dict):
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
            else:
                continue
            m = mask_utils.decode(rle)
            if m.sum() == 0:
                continue
            x, y, bw, bh = a["bbox"]
            boxes.append([x, y, x + max(bw, 1), y + max(bh, 1)])
            labels.append(id_to_index[a["category_id"]])
            masks.append(m)
            if a.get("keypoints"):
                kps.append(np.asarray(a["keypoints"], np.float32).reshape(-1, 3))
        out.append(
            {
                "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, np.int64),
                "masks": np.stack(masks) if masks else np.zeros((0, h, w), np.uint8),
                "kps": np.stack(kps) if kps else None,
                "hw": (h, w),
            }
        )
    return out


# -- metrics ------------------------------------------------------------------------------------------


class _Confusion:
    """Minimal confusion matrix (used when segpipe.core.metrics is not available)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.m = np.zeros((n, n), np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        k = gt != IGNORE
        self.m += np.bincount(self.n * gt[k].astype(np.int64) + pred[k], minlength=self.n**2).reshape(self.n, self.n)

    def compute(self) -> dict[str, float]:
        tp = np.diag(self.m).astype(np.float64)
        denom = self.m.sum(0) + self.m.sum(1) - tp
        present = denom > 0
        iou = np.where(present, tp / np.maximum(denom, 1), np.nan)
        return {
            "mean_iou": float(np.nanmean(iou)) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / max(self.m.sum(), 1)),
        }


def _confusion(n: int) -> Any:
    try:  # the shared, mergeable accumulator when the evaluation layer provides it
        from segpipe.core.metrics import ConfusionMatrix  # type: ignore[attr-defined]

        cm = ConfusionMatrix(n)
        cm.update(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64))
        cm = ConfusionMatrix(n)
        return cm
    except Exception:  # not written yet, or a different signature: fall back to the local one
        return _Confusion(n)


# -- the loop -----------------------------------------------------------------------------------------


def _last_epoch(out: Path) -> Path | None:
    ckpts = sorted(out.glob("epoch_*.ckpt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return ckpts[-1] if ckpts else None


def _checked_output(run: Callable[P, TrainResult]) -> Callable[P, TrainResult]:
    """``run`` (a training run that writes into ``out_dir`` as it is) behind the output checks of :func:`train`.

    ``out_dir`` may not overlap the inputs (``dataset_dir``, ``val_dir``); unless ``resume``, it must be a new
    or empty folder or (with ``overwrite``) an earlier ``train`` output, which is replaced whole when the new
    run completes.
    """
    sig = inspect.signature(run)
    call: Callable[..., TrainResult] = run  # called with the bound arguments, by name

    @functools.wraps(run)
    def checked(*a: P.args, **kw: P.kwargs) -> TrainResult:
        from segpipe.storage import outputs

        bound = sig.bind(*a, **kw)
        bound.apply_defaults()
        args = dict(bound.arguments)  # every argument as given, forwarded to run
        out_dir = args["out_dir"]
        inputs = [args["dataset_dir"], args["val_dir"]]
        if args["resume"]:  # continues the checkpoints already there: nothing is replaced, so only overlaps are refused
            outputs.check_not_input(out_dir, inputs, option="--out")
            return call(**args)
        plan = outputs.check_output(out_dir, inputs, option="--out", command="train", replace=args["overwrite"],
                                    flag="--overwrite")
        if plan.replaces:  # a new run over an earlier one: built beside it, swapped in when complete
            with outputs.staged(plan, entries=TRAIN_ENTRIES) as tmp:
                res = call(**{**args, "out_dir": tmp})
            best = plan.given / res.best_path.name if res.best_path is not None else None
            return dataclasses.replace(res, out_dir=plan.given, best_path=best)
        # A new folder is trained in place, marked first: a killed run leaves epochs that --resume continues.
        existed = plan.final.exists()
        outputs.start_in_place(plan, entries=TRAIN_ENTRIES)
        try:
            return call(**args)
        except BaseException:
            if [p.name for p in plan.final.iterdir()] == [outputs.MARKER]:  # nothing trained: leave no trace
                (plan.final / outputs.MARKER).unlink()
                if not existed:
                    plan.final.rmdir()
            raise

    return checked


@_checked_output
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
        dataset_dir: Training set (synth layout).
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
        overwrite: Replace an earlier ``train`` output at ``out_dir`` (checked by the output checks above).

    Returns:
        A :class:`TrainResult`.

    Raises:
        OutputError: ``out_dir`` overlaps the dataset, or is a non-empty folder ``train`` did not make.
    """
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, load_checkpoint, provenance, save_checkpoint
    from segpipe.models.predict import select_device
    from segpipe.models.registry import build_model, get_model_spec

    t_start = time.monotonic()
    budget = max_minutes * 60.0 if max_minutes else None
    spec = get_model_spec(arch)
    if spec.dims != 2:
        raise UnsupportedError(
            f"{arch} is a {spec.dims}-D model; segpipe train trains 2-D models only",
            hint="pre-label volumes with your own 3-D checkpoint (a state dict plus --arch, or CheckpointMeta)",
        )
    if spec.task == "panoptic":
        raise UnsupportedError("panoptic_fpn is trained as its two parts: train a semantic and an instance model")
    ds = read_dataset(dataset_dir)
    if val_dir is not None:
        val = read_dataset(val_dir)
        train_idx = list(range(len(ds.images)))
    else:
        n_val = max(1, len(ds.images) // 10) if len(ds.images) > 1 else 0
        perm = np.random.default_rng(seed).permutation(len(ds.images))
        val_idx, train_idx = sorted(perm[:n_val].tolist()), sorted(perm[n_val:].tolist())
        val = DatasetInfo(
            ds.root,
            [ds.images[i] for i in val_idx] or ds.images,
            [ds.masks[i] for i in val_idx] or ds.masks,
            ds.categories,
            ds.coco,
        )
        ds = DatasetInfo(
            ds.root, [ds.images[i] for i in train_idx], [ds.masks[i] for i in train_idx], ds.categories, ds.coco
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    torch.manual_seed(seed)
    kw = dict(model_kwargs or {})

    task = spec.task
    keypoint_names: list[str] = []
    if task == "semantic":
        num_classes = len(ds.categories)
        categories = ds.categories
    elif task == "instance":
        num_classes = len(ds.categories)
        categories = ds.categories
    else:
        kcats = [c for c in (ds.coco or {}).get("categories", []) if c.get("keypoints")]
        if not kcats:
            raise InputError("landmark training needs COCO keypoint categories", path=ds.root / "annotations.json")
        keypoint_names = list(kcats[0]["keypoints"])
        num_classes = len(keypoint_names)
        categories = ds.categories
    model = build_model(arch, num_classes, **kw).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    use_amp = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    h0, w0 = _first_size(ds)
    if crop is None:
        crop = (min(spec.default_input[0], h0), min(spec.default_input[1], w0))
    meta = CheckpointMeta(
        arch=arch,
        task=task,
        num_classes=num_classes,
        categories=categories,
        tile_size=[max(crop[0], spec.default_input[0]), max(crop[1], spec.default_input[1])],
        tile_overlap=0.25,
        model_kwargs=kw,
        keypoints=keypoint_names,
    )
    start_epoch, best, history = 0, -1.0, []
    if resume:
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
        start_epoch = int(ts.get("epoch", 0))
        best = float(ts.get("best", -1.0))
        history = list(ts.get("history", []))

    mean = torch.tensor(meta.mean, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(meta.std, device=dev).view(1, 3, 1, 1) * 255

    def to_input(imgs: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(imgs)).to(dev).permute(0, 3, 1, 2).float()
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x

    if task == "semantic":
        train_set = _SemanticSet(ds, crop, augment=True)
        val_set = _SemanticSet(val, None, augment=False)
        n_items = len(train_set)
    else:
        train_t = _coco_targets(ds)
        val_t = _coco_targets(val)
        from segpipe.storage.images import read_image

        train_imgs = [read_image(p) for p in ds.images]
        val_imgs = [read_image(p) for p in val.images]
        n_items = len(train_imgs)
    metric_name = {"semantic": "mean_iou", "instance": "ap", "landmarks": "pck"}[task]

    def step_loss(idx: list[int], rng: np.random.Generator) -> torch.Tensor:
        if task == "semantic":
            if rng is not None:
                train_set.rng = rng
            pairs = [train_set.get(i) for i in idx]
            x = to_input([p[0] for p in pairs])
            y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64)).to(dev)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(x)
            return torch.nn.functional.cross_entropy(logits.float(), y, ignore_index=IGNORE)
        imgs, targets = [], []
        for i in idx:
            im, t = train_imgs[i], train_t[i]
            flip = task == "instance" and rng.random() < 0.5
            if flip:
                im = im[:, ::-1]
            imgs.append(np.ascontiguousarray(im))
            targets.append(_target_tensors(t, flip, im.shape[1], dev, task, arch, num_classes))
        x = to_input(imgs)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
            if task == "landmarks" and not arch.startswith("keypointrcnn"):
                outs = model(x)
                tgt = torch.stack([t["heatmap"] for t in targets])
                return sum(torch.nn.functional.mse_loss(o.float(), tgt) for o in outs) * 1000.0  # type: ignore[return-value]
            losses = model(list(x), targets)
        return sum(losses.values())  # type: ignore[return-value]

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if warmup_iters is None:
        warmup_iters = 0 if task == "semantic" else 50
    if start_epoch > 0:
        warmup_iters = 0
    if clip_grad is None and task == "instance":
        clip_grad = 10.0
    step_no = 0
    stopped = False
    epoch = start_epoch
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        for epoch in range(start_epoch, epochs):
            rng = np.random.default_rng([seed, epoch])
            torch.manual_seed(seed * 1000 + epoch)
            order = rng.permutation(n_items).tolist()
            nb = max(1, len(order) // batch_size) if len(order) >= batch_size else 1
            tid = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=nb, info="")
            model.train()
            losses = []
            for b in range(nb):
                idx = order[b * batch_size : (b + 1) * batch_size]
                if step_no < warmup_iters:
                    for g, base_lr in zip(opt.param_groups, sched.get_last_lr(), strict=True):
                        g["lr"] = base_lr * (step_no + 1) / warmup_iters
                elif step_no == warmup_iters and warmup_iters:
                    for g, base_lr in zip(opt.param_groups, sched.get_last_lr(), strict=True):
                        g["lr"] = base_lr
                step_no += 1
                opt.zero_grad(set_to_none=True)
                loss = step_loss(idx, rng)
                scaler.scale(loss).backward()
                if clip_grad:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                scaler.step(opt)
                scaler.update()
                losses.append(float(loss.detach()))
                bar.update(tid, advance=1, info=f"loss {np.mean(losses):.4f}")
                if budget is not None and time.monotonic() - t_start > budget:
                    stopped = True
                    break
            for g, base_lr in zip(opt.param_groups, sched.get_last_lr(), strict=True):
                g["lr"] = base_lr  # undo a warm-up factor: the cosine schedule chains on the current lr
            sched.step()
            bar.remove_task(tid)
            model.eval()
            if task == "semantic":
                metrics = _eval_semantic(model, val_set, to_input, num_classes)
            elif task == "instance":
                metrics = _eval_instance(model, val_imgs, val_t, to_input)
            else:
                metrics = _eval_landmarks(model, val_imgs, val_t, to_input, arch)
            rec = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)) if losses else None,
                **metrics,
                "lr": opt.param_groups[0]["lr"],
                "elapsed_s": round(time.monotonic() - t_start, 1),
                "partial": stopped,
            }
            history.append(rec)
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            meta.provenance = provenance(
                dataset=str(Path(dataset_dir).resolve()),
                epochs=epoch + 1,
                metrics=metrics,
                seed=seed,
                val_dataset=str(Path(val_dir).resolve()) if val_dir else None,
                arch=arch,
                lr=lr,
                batch_size=batch_size,
            )
            # ">=": of equally good epochs (a saturated validation metric) the later, longer-trained one wins.
            improved = metrics[metric_name] >= best
            if improved:
                best = metrics[metric_name]
            train_state = {"epoch": epoch + 1, "best": best, "history": history, "scheduler": sched.state_dict()}
            save_checkpoint(
                out / f"epoch_{epoch + 1:03d}.ckpt", model, meta, optimizer=opt.state_dict(), train_state=train_state
            )
            if improved:
                save_checkpoint(out / "best.ckpt", model, meta)
            if log:
                log(
                    f"epoch {epoch + 1}: loss {rec['loss']:.4f}, {metric_name} {metrics[metric_name]:.4f}"
                    + (" (budget reached)" if stopped else "")
                )
            if stopped:
                break
    best_path = out / "best.ckpt" if (out / "best.ckpt").is_file() else None
    return TrainResult(out, best_path, best, metric_name, len(history), stopped, history)


def _first_size(ds: DatasetInfo) -> tuple[int, int]:
    from segpipe.storage.images import image_size

    w, h = image_size(ds.images[0])
    return h, w


def _target_tensors(
    t: dict[str, Any], flip: bool, width: int, dev: Any, task: str, arch: str, k: int
) -> dict[str, Any]:
    import torch

    boxes = t["boxes"].copy()
    masks = t["masks"] if t["masks"] is not None else np.zeros((0, 1, 1), np.uint8)
    if flip:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        masks = masks[:, :, ::-1]
    out: dict[str, Any] = {
        "boxes": torch.from_numpy(boxes).to(dev),
        "labels": torch.from_numpy(t["labels"]).to(dev),
        "masks": torch.from_numpy(np.ascontiguousarray(masks)).to(dev),
    }
    if task == "landmarks":
        kps = t["kps"] if t["kps"] is not None else np.zeros((0, k, 3), np.float32)
        if arch.startswith("keypointrcnn"):
            out["labels"] = torch.ones(len(boxes), dtype=torch.int64, device=dev)
            out["keypoints"] = torch.from_numpy(kps).to(dev)
        else:
            h, w = t["hw"]
            out["heatmap"] = torch.from_numpy(_heatmaps(kps, -(-h // 4), -(-w // 4), k)).to(dev)
    return out


def _heatmaps(kps: np.ndarray, h: int, w: int, k: int, sigma: float = 2.0) -> np.ndarray:
    """``(K, h, w) float32`` Gaussian targets at stride 4 (max over instances)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((k, h, w), np.float32)
    for inst in kps:
        for j, (x, y, v) in enumerate(inst[:k]):
            if v > 0:
                g = np.exp(-((xx - (x / 4 - 0.5)) ** 2 + (yy - (y / 4 - 0.5)) ** 2) / (2 * sigma**2))
                out[j] = np.maximum(out[j], g)
    return out


def _eval_semantic(model: Any, val_set: _SemanticSet, to_input: Callable[..., Any], n: int) -> dict[str, float]:
    import torch

    cm = _confusion(n)
    with torch.inference_mode():
        for i in range(len(val_set)):
            img, mask = val_set.get(i)
            pred = model(to_input([img])).argmax(1)[0].cpu().numpy()
            cm.update(mask.astype(np.int64), pred.astype(np.int64))
    res = cm.compute()
    return {
        "mean_iou": float(res["mean_iou"]),
        **({"pixel_accuracy": float(res["pixel_accuracy"])} if "pixel_accuracy" in res else {}),
    }


def _eval_instance(
    model: Any, imgs: list[np.ndarray], targets: list[dict[str, Any]], to_input: Callable[..., Any]
) -> dict[str, float]:
    import contextlib
    import io

    import torch
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    dets = []
    labels_seen: set[int] = set()
    with torch.inference_mode():
        for i, (im, t) in enumerate(zip(imgs, targets, strict=True)):
            h, w = im.shape[:2]
            gt["images"].append({"id": i + 1, "width": w, "height": h})
            for m, lab in zip(t["masks"], t["labels"], strict=True):
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                gt["annotations"].append(
                    {
                        "id": len(gt["annotations"]) + 1,
                        "image_id": i + 1,
                        "category_id": int(lab),
                        "segmentation": rle,
                        "area": float(m.sum()),
                        "bbox": list(mask_utils.toBbox(rle)),
                        "iscrowd": 0,
                    }
                )
                labels_seen.add(int(lab))
            o = model(list(to_input([im])))[0]
            for m, lab, sc in zip(
                o["masks"][:, 0].float().cpu().numpy() > 0.5,
                o["labels"].cpu().numpy(),
                o["scores"].float().cpu().numpy(),
                strict=True,
            ):
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                dets.append({"image_id": i + 1, "category_id": int(lab), "segmentation": rle, "score": float(sc)})
    if not gt["annotations"]:
        return {"ap": 0.0, "ap50": 0.0}
    gt["categories"] = [{"id": c} for c in sorted(labels_seen | {d["category_id"] for d in dets})]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        if not dets:
            return {"ap": 0.0, "ap50": 0.0}
        cd = cg.loadRes(dets)
        ev = COCOeval(cg, cd, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap": max(float(ev.stats[0]), 0.0), "ap50": max(float(ev.stats[1]), 0.0)}


def _eval_landmarks(
    model: Any, imgs: list[np.ndarray], targets: list[dict[str, Any]], to_input: Callable[..., Any], arch: str
) -> dict[str, float]:
    """PCK: a labelled keypoint is found when its heatmap exceeds 0.5 within 1 output pixel of it."""
    import torch

    hit = total = 0
    with torch.inference_mode():
        for im, t in zip(imgs, targets, strict=True):
            if t["kps"] is None:
                continue
            if arch.startswith("keypointrcnn"):
                o = model(list(to_input([im])))[0]
                pred = o["keypoints"].cpu().numpy()
                for inst in t["kps"]:
                    for j, (x, y, v) in enumerate(inst):
                        if v > 0:
                            total += 1
                            d = np.hypot(pred[:, j, 0] - x, pred[:, j, 1] - y) if len(pred) else np.array([np.inf])
                            hit += int(d.min() <= 0.05 * max(im.shape[:2]))
                continue
            hm = model(to_input([im]))[0].float().cpu().numpy()
            for inst in t["kps"]:
                for j, (x, y, v) in enumerate(inst):
                    if v > 0:
                        total += 1
                        cx, cy = int(x // 4), int(y // 4)
                        win = hm[j, max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2]
                        hit += int(win.size > 0 and win.max() > 0.5)
    return {"pck": hit / total if total else 0.0}
