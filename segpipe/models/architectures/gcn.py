"""GCN (Peng et al. 2017, "Large Kernel Matters"): global convolution + boundary refinement on ResNet."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures._common import (
    SemanticWrapper,
    resnet_backbone,
    resnet_channels,
    resnet_features,
)
from segpipe.models.registry import ModelSpec, register_model


class GlobalConv(nn.Module):
    """A ``k×k`` receptive field at ``O(k)`` cost: (k×1 → 1×k) + (1×k → k×1), no non-linearity."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        p = k // 2
        self.left = nn.Sequential(
            nn.Conv2d(cin, cout, (k, 1), padding=(p, 0)), nn.Conv2d(cout, cout, (1, k), padding=(0, p))
        )
        self.right = nn.Sequential(
            nn.Conv2d(cin, cout, (1, k), padding=(0, p)), nn.Conv2d(cout, cout, (k, 1), padding=(p, 0))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, Cin, h, w)``. Returns: ``(N, Cout, h, w)``."""
        return self.left(x) + self.right(x)


class BoundaryRefine(nn.Module):
    """Residual refinement ``x + conv(relu(conv(x)))`` that sharpens object boundaries."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, h, w)``. Returns: same shape."""
        return x + self.body(x)


class GCN(nn.Module):
    """GCN segmentation network: per-stage GCN + BR score maps fused top-down, refined to full size.

    Args:
        num_classes: Classes including background.
        backbone: torchvision ResNet name.
        k: Global convolution kernel size (15 in the paper).
        pretrained_backbone: Load the backbone's ImageNet weights from the local cache.
    """

    def __init__(
        self, num_classes: int, backbone: str = "resnet50", k: int = 15, pretrained_backbone: bool = False
    ) -> None:
        super().__init__()
        self.backbone = resnet_backbone(backbone, pretrained_backbone)
        chans = resnet_channels(backbone)
        self.gcn = nn.ModuleList(GlobalConv(c, num_classes, k) for c in chans)
        self.br = nn.ModuleList(BoundaryRefine(num_classes) for _ in chans)
        self.br_fuse = nn.ModuleList(BoundaryRefine(num_classes) for _ in range(len(chans) - 1))
        self.br_out = nn.ModuleList([BoundaryRefine(num_classes), BoundaryRefine(num_classes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: ``(N, C, H, W)`` logits."""
        size = x.shape[-2:]
        feats = resnet_features(self.backbone, x)
        scores = [br(g(f)) for f, g, br in zip(feats, self.gcn, self.br, strict=True)]
        out = scores[3]
        for i in (2, 1, 0):
            out = F.interpolate(out, size=scores[i].shape[-2:], mode="bilinear", align_corners=False)
            out = self.br_fuse[i](out + scores[i])
        out = self.br_out[0](F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.br_out[1](F.interpolate(out, size=size, mode="bilinear", align_corners=False))


def build_gcn(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds GCN (``backbone=`` resnet18..101, ``k=`` kernel size)."""
    return SemanticWrapper(GCN(num_classes, pretrained_backbone=pretrained_backbone, **kw), stride=32)


register_model(
    ModelSpec("gcn", "semantic", build_gcn, (512, 512), "GCN: large-kernel global convolution + boundary refinement")
)
