"""PSPNet (Zhao et al. 2017): a pyramid pooling module on a dilated ResNet (output stride 8)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures._common import (
    SemanticWrapper,
    conv_bn_relu,
    resnet_backbone,
    resnet_channels,
    resnet_features,
)
from segpipe.models.registry import ModelSpec, register_model


class PyramidPooling(nn.Module):
    """Average-pools the features to ``bins × bins`` grids, reduces, upsamples and concatenates.

    Args:
        cin: Input channels.
        bins: Pooled grid sizes (the paper uses 1, 2, 3, 6).
    """

    def __init__(self, cin: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        red = cin // len(bins)
        # No BatchNorm on the pooled branches: a 1×1 map with batch 1 has no batch statistics.
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, red, 1), nn.ReLU(inplace=True)) for b in bins
        )
        self.out_channels = cin + red * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, h, w)``. Returns: ``(N, C + C, h, w)``."""
        size = x.shape[-2:]
        pooled = [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """PSPNet.

    Args:
        num_classes: Classes including background.
        backbone: torchvision ResNet name (bottleneck ResNets are dilated to output stride 8).
        pretrained_backbone: Load the backbone's ImageNet weights from the local cache.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained_backbone: bool = False) -> None:
        super().__init__()
        dil = (False, True, True) if backbone in ("resnet50", "resnet101") else (False, False, False)
        self.backbone = resnet_backbone(backbone, pretrained_backbone, dil)
        c5 = resnet_channels(backbone)[3]
        self.ppm = PyramidPooling(c5)
        self.head = nn.Sequential(
            conv_bn_relu(self.ppm.out_channels, 512), nn.Dropout2d(0.1), nn.Conv2d(512, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: logits ``(N, C, H/8, W/8)`` (upsampled by the wrapper)."""
        return self.head(self.ppm(resnet_features(self.backbone, x)[3]))


def build_pspnet(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds PSPNet (``backbone=`` resnet18/34/50/101, default resnet50)."""
    return SemanticWrapper(PSPNet(num_classes, pretrained_backbone=pretrained_backbone, **kw), stride=8)


register_model(
    ModelSpec("pspnet", "semantic", build_pspnet, (512, 512), "PSPNet: pyramid pooling on dilated ResNet-50", stride=8)
)
