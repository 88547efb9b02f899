"""3-D U-Net (Çiçek et al. 2016) for volumes: the U-Net of :mod:`unet` with 3-D convolutions.

Input ``(N, 1, D, H, W)``: one channel, the windowed intensity normalised like any segpipe input
(``(v / 255 − mean[0]) / std[0]``, v the 0–255 windowed value). Output ``(N, C, D, H, W)`` logits at input
resolution. Pre-labeling runs it over volumes with 3-D sliding windows
(:meth:`segpipe.models.predict.Predictor.predict_volume`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures.unet import UNet
from segpipe.models.registry import ModelSpec, register_model


class UNet3D(nn.Module):
    """:class:`~segpipe.models.architectures.unet.UNet` in 3-D; pads its input to a multiple of ``2**depth``.

    Args:
        num_classes: Classes including background.
        base: Channels of the first level.
        depth: Number of down-sampling steps (each halves D, H and W).
        in_channels: Input channels (1: one intensity).
    """

    def __init__(self, num_classes: int, base: int = 8, depth: int = 2, in_channels: int = 1) -> None:
        super().__init__()
        self.stride = 2**depth
        self.net = UNet(num_classes, base=base, depth=depth, in_channels=in_channels, dims=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 1, D, H, W)``. Returns: ``(N, C, D, H, W)`` logits."""
        d, h, w = x.shape[-3:]
        pads = [(-s) % self.stride for s in (d, h, w)]
        if any(pads):
            mode = "replicate" if min(d, h, w) > 1 else "constant"
            x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode=mode)
        out: torch.Tensor = self.net(x)
        return out[..., :d, :h, :w]


def build_unet3d(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds a 3-D U-Net (no pretrained backbone exists; ``pretrained_backbone`` is ignored)."""
    return UNet3D(num_classes, **kw)


register_model(
    ModelSpec(
        "unet3d", "semantic", build_unet3d, (64, 64), "3-D U-Net (base 8, depth 2) for volumes, 3-D tiles",
        stride=4, dims=3, default_depth=32,
    )
)
