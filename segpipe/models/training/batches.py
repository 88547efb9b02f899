"""The tensors and the loss of one training step, per task.

:class:`SemanticData` feeds semantic models random crops of the label-mapped images;
:class:`DetectionData` feeds instance models (boxes, masks; random horizontal flips) and landmark
models (Gaussian heatmaps for the stacked hourglass, keypoints for Keypoint R-CNN) from the COCO
annotations. Both keep the validation images for :mod:`segpipe.models.training.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segpipe.errors import InputError
from segpipe.models.training.augment import flip_boxes_and_masks
from segpipe.models.training.data import IGNORE, DatasetInfo, SemanticSet, Target, coco_targets, heatmaps
from segpipe.storage.images import read_image

#: ``(N, H, W, 3) uint8`` images → the model's normalised ``(N, 3, H, W) float32`` input.
ToInput = Callable[[Sequence[np.ndarray]], torch.Tensor]


@dataclass
class StepDevice:
    """Where steps run and in which precision.

    Attributes:
        device: The torch device.
        amp: Mixed precision (CUDA only).
        amp_dtype: bfloat16 where the GPU supports it, else float16 (with a gradient scaler).
        to_input: Stacks and normalises images on ``device``.
    """

    device: torch.device
    amp: bool
    amp_dtype: torch.dtype
    to_input: ToInput

    def autocast(self) -> AbstractContextManager[Any]:
        """The autocast context of a forward pass (a no-op without ``amp``)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)


def input_normalizer(mean: Sequence[float], std: Sequence[float], dev: torch.device) -> ToInput:
    """A :data:`ToInput` that scales 0..255 RGB by the checkpoint's ``mean`` and ``std`` (0..1 units).

    On CUDA the input is channels-last, as the model is.
    """
    mean_t = torch.tensor(mean, device=dev).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=dev).view(1, 3, 1, 1) * 255

    def to_input(imgs: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(imgs)).to(dev).permute(0, 3, 1, 2).float()
        x = (x - mean_t) / std_t
        return x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x

    return to_input


class SemanticData:
    """Training crops and whole validation images with their label maps.

    Args:
        train: Training set.
        val: Validation set.
        crop: Training crop ``(h, w)``.
        num_classes: Classes of the model (labels beyond are refused, see :class:`SemanticSet`).
    """

    def __init__(self, train: DatasetInfo, val: DatasetInfo, crop: tuple[int, int], num_classes: int) -> None:
        self.train = SemanticSet(train, crop, augment=True, num_classes=num_classes)
        self.val = SemanticSet(val, None, augment=False, num_classes=num_classes)

    def __len__(self) -> int:
        return len(self.train)

    def loss(self, model: nn.Module, idx: Sequence[int], rng: np.random.Generator, sd: StepDevice) -> torch.Tensor:
        """Pixel-wise cross-entropy (ignoring :data:`IGNORE`) of one batch of augmented crops."""
        pairs = [self.train.sample(i, rng) for i in idx]
        x = sd.to_input([p[0] for p in pairs])
        y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64)).to(sd.device)
        with sd.autocast():
            logits = model(x)
        return F.cross_entropy(logits.float(), y, ignore_index=IGNORE)


class DetectionData:
    """Whole images with their COCO targets, for instance and landmark models.

    Args:
        train: Training set.
        val: Validation set.
        task: ``instance`` or ``landmarks``.
        arch: The architecture; ``keypointrcnn*`` learns keypoints, other landmark models heatmaps.
        num_classes: Classes (instance) or keypoints (landmarks) of the model.
    """

    def __init__(self, train: DatasetInfo, val: DatasetInfo, task: str, arch: str, num_classes: int) -> None:
        self.task = task
        self.arch = arch
        self.num_classes = num_classes
        self.train_targets = coco_targets(train)
        self.val_targets = coco_targets(val)
        self.train_imgs = [read_image(p) for p in train.images]
        self.val_imgs = [read_image(p) for p in val.images]
        _check_sizes(train, self.train_imgs, self.train_targets)
        _check_sizes(val, self.val_imgs, self.val_targets)

    def __len__(self) -> int:
        return len(self.train_imgs)

    @property
    def learns_heatmaps(self) -> bool:
        """Whether the model is a heatmap model (its loss is computed here, not by the model)."""
        return self.task == "landmarks" and not self.arch.startswith("keypointrcnn")

    def loss(self, model: nn.Module, idx: Sequence[int], rng: np.random.Generator, sd: StepDevice) -> torch.Tensor:
        """The model's summed losses (torchvision detection models), or the heatmap MSE × 1000."""
        imgs, targets = [], []
        for i in idx:
            im, t = self.train_imgs[i], self.train_targets[i]
            flip = self.task == "instance" and rng.random() < 0.5
            if flip:
                im = im[:, ::-1]
            imgs.append(np.ascontiguousarray(im))
            targets.append(target_tensors(t, flip, im.shape[:2], sd.device, self.task, self.arch, self.num_classes))
        x = sd.to_input(imgs)
        with sd.autocast():
            if self.learns_heatmaps:
                outs = model(x)
                tgt = torch.stack([t["heatmap"] for t in targets])
                return sum(F.mse_loss(o.float(), tgt) for o in outs) * 1000.0  # type: ignore[return-value]
            losses = model(list(x), targets)
        return sum(losses.values())  # type: ignore[no-any-return]


def _check_sizes(ds: DatasetInfo, imgs: Sequence[np.ndarray], targets: Sequence[Target]) -> None:
    """Refuses an image whose COCO ``height``/``width`` differ from its pixels (its masks would not fit).

    Raises:
        InputError: naming the image's entry in ``annotations.json``.
    """
    for p, im, t in zip(ds.images, imgs, targets, strict=True):
        if t["hw"] is not None and tuple(t["hw"]) != im.shape[:2]:
            (h, w), (ih, iw) = t["hw"], im.shape[:2]
            raise InputError(
                f"height x width {h}x{w} differ from the image {p.name} ({ih}x{iw} pixels)",
                path=ds.root / "annotations.json",
                where=t["where"],
            )


def target_tensors(
    t: Target, flip: bool, size: tuple[int, int], dev: torch.device, task: str, arch: str, k: int
) -> dict[str, torch.Tensor]:
    """One image's targets as the model takes them.

    Args:
        t: The image's target from :func:`~segpipe.models.training.data.coco_targets`.
        flip: Mirror the boxes and masks (the image was flipped).
        size: Image ``(H, W)``.
        dev: Device of the tensors.
        task: ``instance`` or ``landmarks``.
        arch: The architecture (``keypointrcnn*`` gets ``keypoints``, other landmark models ``heatmap``).
        k: Number of keypoints (landmarks).

    Returns:
        ``boxes (N, 4)``, ``labels (N,)``, ``masks (N, H, W)``, and for landmarks ``keypoints
        (N, K, 3)`` (labels all 1: one object class) or ``heatmap (K, ⌈H/4⌉, ⌈W/4⌉)``.
    """
    boxes = t["boxes"].copy()
    masks = t["masks"] if t["masks"] is not None else np.zeros((0, 1, 1), np.uint8)
    if flip:
        boxes, masks = flip_boxes_and_masks(boxes, masks, size[1])
    out: dict[str, torch.Tensor] = {
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
            h, w = size
            out["heatmap"] = torch.from_numpy(heatmaps(kps, -(-h // 4), -(-w // 4), k)).to(dev)
    return out
