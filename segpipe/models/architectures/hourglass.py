"""Landmark models: a stacked hourglass (Newell et al. 2016) and torchvision's Keypoint R-CNN."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures.instance import _detection_kw
from segpipe.models.registry import ModelSpec, register_model
from segpipe.models.weights import load_backbone_into


class Residual(nn.Module):
    """Pre-activation bottleneck residual block (BN-ReLU-conv ×3) with a 1×1 skip when widths differ."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = max(cout // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1),
        )
        self.skip: nn.Module = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, Cin, h, w)``. Returns: ``(N, Cout, h, w)``."""
        return self.skip(x) + self.body(x)


class Hourglass(nn.Module):
    """One recursive hourglass of ``depth`` pooling levels."""

    def __init__(self, depth: int, c: int) -> None:
        super().__init__()
        self.up1 = Residual(c, c)
        self.low1 = Residual(c, c)
        self.low2: nn.Module = Hourglass(depth - 1, c) if depth > 1 else Residual(c, c)
        self.low3 = Residual(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, h, w)``, sides multiples of ``2**depth``. Returns: same shape."""
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return self.up1(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class StackedHourglass(nn.Module):
    """Stacked hourglass with intermediate supervision.

    Args:
        num_keypoints: K, one heatmap per keypoint.
        num_stacks: Hourglasses in sequence.
        channels: Feature width.
        depth: Pooling levels per hourglass (inputs must be multiples of ``4 * 2**depth``).
    """

    def __init__(self, num_keypoints: int, num_stacks: int = 2, channels: int = 128, depth: int = 4) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            Residual(64, c),
            nn.MaxPool2d(2),
            Residual(c, c),
            Residual(c, c),
        )
        self.hgs = nn.ModuleList(Hourglass(depth, c) for _ in range(num_stacks))
        self.feats = nn.ModuleList(
            nn.Sequential(Residual(c, c), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            for _ in range(num_stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, num_keypoints, 1) for _ in range(num_stacks))
        self.merge_feat = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(num_stacks - 1))
        self.merge_heat = nn.ModuleList(nn.Conv2d(num_keypoints, c, 1) for _ in range(num_stacks - 1))
        self.stride = 4
        self.multiple = 4 * 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Args: x: ``(N, 3, H, W)``.

        Returns:
            Eval: heatmaps ``(N, K, H/4, W/4)`` of the last stack. Train: a list, one per stack.
        """
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = self.stem(x)
        outs = []
        for i, hg in enumerate(self.hgs):
            f = self.feats[i](hg(y))
            heat = self.heads[i](f)
            outs.append(heat[..., : -(-h // 4), : -(-w // 4)])
            if i < len(self.hgs) - 1:
                y = y + self.merge_feat[i](f) + self.merge_heat[i](heat)
        return outs if self.training else outs[-1]


def build_hourglass(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds a stacked hourglass with ``num_classes`` = K keypoint heatmaps."""
    return StackedHourglass(num_classes, **kw)


def build_keypointrcnn(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Torchvision Keypoint R-CNN with ``num_classes`` = K keypoints on one object class (+ background)."""
    # lazy: torchvision costs seconds to import; only models built on it need it
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    det_classes = int(kw.pop("detection_classes", 2))
    net = keypointrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=det_classes,
        num_keypoints=num_classes,
        **_detection_kw(kw, 512),
    )
    if pretrained_backbone:
        load_backbone_into(net.backbone.body, "resnet50:DEFAULT")
    return net


register_model(
    ModelSpec(
        "hourglass",
        "landmarks",
        build_hourglass,
        (256, 256),
        "Stacked hourglass (2 stacks): K Gaussian heatmaps",
        stride=64,
    )
)
register_model(
    ModelSpec(
        "keypointrcnn_resnet50_fpn",
        "landmarks",
        build_keypointrcnn,
        (512, 512),
        "torchvision Keypoint R-CNN, ResNet-50-FPN",
        stride=32,
    )
)
