"""Building blocks shared by the architectures."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.weights import load_cached_state_dict


class SemanticWrapper(nn.Module):
    """Gives every semantic model one output: logits ``(N, C, H, W)`` at input resolution.

    Pads the input to a multiple of ``stride`` (so pooling/unpooling architectures accept any size),
    unwraps torchvision's ``{"out": ...}`` dict and resizes the logits back to the input size.

    Args:
        net: The architecture.
        stride: Input sides are padded to a multiple of this.
    """

    def __init__(self, net: nn.Module, stride: int = 32) -> None:
        super().__init__()
        self.net = net
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)`` normalised. Returns: ``(N, C, H, W)`` logits."""
        h, w = x.shape[-2:]
        ph = (-h) % self.stride
        pw = (-w) % self.stride
        if ph or pw:
            # Replicate padding keeps border statistics close to the image (zeros would be a fake edge).
            mode = "replicate" if h > 1 and w > 1 else "constant"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """``k×k`` conv (same padding) → BatchNorm → ReLU."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def separable_conv(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise-separable 3×3 conv: depthwise (dilated) → BN → ReLU → pointwise → BN → ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def resnet_backbone(
    name: str, pretrained_backbone: bool, dilation: tuple[bool, bool, bool] = (False, False, False)
) -> nn.Module:
    """A torchvision ResNet without its classifier, optionally with cached ImageNet weights.

    Args:
        name: ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101``.
        pretrained_backbone: Load ``NAME:DEFAULT`` from the local cache (never downloads).
        dilation: torchvision's ``replace_stride_with_dilation`` (bottleneck ResNets only).
    """
    # lazy: torchvision costs seconds to import; only models built on it need it
    import torchvision

    kw: dict[str, Any] = {"weights": None}
    if any(dilation):
        kw["replace_stride_with_dilation"] = list(dilation)
    net = getattr(torchvision.models, name)(**kw)
    if pretrained_backbone:
        net.load_state_dict(load_cached_state_dict(f"{name}:DEFAULT"))
    return net


def resnet_channels(name: str) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4 of a torchvision ResNet."""
    if name in ("resnet18", "resnet34"):
        return (64, 128, 256, 512)
    return (256, 512, 1024, 2048)


def resnet_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Runs a torchvision ResNet and returns ``[c2, c3, c4, c5]`` (strides 4, 8, 16, 32 undilated)."""
    m: Any = net
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    c2 = m.layer1(x)
    c3 = m.layer2(c2)
    c4 = m.layer3(c3)
    c5 = m.layer4(c4)
    return [c2, c3, c4, c5]


def bilinear_kernel(channels: int, k: int) -> torch.Tensor:
    """Weights ``(C, C, k, k)`` that make a ConvTranspose2d a bilinear upsampler (FCN's init)."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt1 = 1 - (og - center).abs() / factor
    filt = filt1[:, None] * filt1[None, :]
    w = torch.zeros(channels, channels, k, k)
    idx = torch.arange(channels)
    w[idx, idx] = filt
    return w
