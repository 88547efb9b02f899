"""DeepLabV3+ (Chen et al. 2018): ASPP with depthwise-separable convs and a low-level-feature decoder."""

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
    separable_conv,
)
from segpipe.models.registry import ModelSpec, register_model


class SeparableASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three dilated separable 3×3 branches and image pooling.

    Args:
        cin: Input channels.
        cout: Channels of each branch and of the projection.
        rates: Dilation rates (6, 12, 18 at output stride 16).
    """

    def __init__(self, cin: int, cout: int = 256, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)])
        self.branches.extend(separable_conv(cin, cout, r) for r in rates)
        # Image pooling without BatchNorm: a 1×1 map has no statistics at batch size 1.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn_relu(cout * (len(rates) + 2), cout, 1), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, Cin, h, w)``. Returns: ``(N, Cout, h, w)``."""
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a ResNet (output stride 16: layer4 dilated).

    Args:
        num_classes: Classes including background.
        backbone: torchvision ResNet name.
        pretrained_backbone: Load the backbone's ImageNet weights from the local cache.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained_backbone: bool = False) -> None:
        super().__init__()
        dil = (False, False, True) if backbone in ("resnet50", "resnet101") else (False, False, False)
        self.backbone = resnet_backbone(backbone, pretrained_backbone, dil)
        chans = resnet_channels(backbone)
        self.aspp = SeparableASPP(chans[3])
        self.low = conv_bn_relu(chans[0], 48, 1)
        self.decoder = nn.Sequential(separable_conv(256 + 48, 256), separable_conv(256, 256))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: logits ``(N, C, H/4, W/4)`` (upsampled by the wrapper)."""
        c2, _, _, c5 = resnet_features(self.backbone, x)
        y = F.interpolate(self.aspp(c5), size=c2.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.decoder(torch.cat([y, self.low(c2)], dim=1)))


def build_deeplabv3plus(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds DeepLabV3+ (``backbone=`` resnet18..101, default resnet50)."""
    return SemanticWrapper(DeepLabV3Plus(num_classes, pretrained_backbone=pretrained_backbone, **kw), stride=16)


register_model(
    ModelSpec(
        "deeplabv3plus",
        "semantic",
        build_deeplabv3plus,
        (512, 512),
        "DeepLabV3+: separable ASPP + low-level decoder, ResNet-50",
        stride=16,
    )
)
