"""SegNet (Badrinarayanan et al. 2017): the decoder upsamples with the encoder's max-pool indices."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segpipe.models.architectures._common import SemanticWrapper, conv_bn_relu
from segpipe.models.registry import ModelSpec, register_model

#: VGG16 block layout: (convs per block, channels).
_VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


class SegNet(nn.Module):
    """SegNet with a VGG16-BN encoder; ``MaxUnpool2d`` reuses the pooling indices (no learnt upsampling).

    Args:
        num_classes: Classes including background.
        width: Channel multiplier (1.0 is the paper's VGG16 widths).
    """

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        cfg = [(n, max(8, int(c * width))) for n, c in _VGG16]
        self.enc = nn.ModuleList()
        cin = 3
        for n, c in cfg:
            self.enc.append(nn.Sequential(*[conv_bn_relu(cin if i == 0 else c, c) for i in range(n)]))
            cin = c
        self.dec = nn.ModuleList()
        for bi in reversed(range(len(cfg))):
            n, c = cfg[bi]
            cout = cfg[bi - 1][1] if bi > 0 else cfg[0][1]
            layers = [conv_bn_relu(c, c) for _ in range(n - 1)] + [conv_bn_relu(c, cout)]
            self.dec.append(nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.head = nn.Conv2d(cfg[0][1], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: ``(N, C, H, W)`` logits."""
        stack = []
        for block in self.enc:
            x = block(x)
            size = x.shape
            x, idx = self.pool(x)
            stack.append((idx, size))
        for block in self.dec:
            idx, size = stack.pop()
            x = block(self.unpool(x, idx, output_size=size))
        return self.head(x)


def build_segnet(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds SegNet (random init; ``pretrained_backbone`` is ignored: VGG16-BN weights differ in layout)."""
    return SemanticWrapper(SegNet(num_classes, **kw), stride=32)


register_model(
    ModelSpec("segnet", "semantic", build_segnet, (256, 256), "SegNet: VGG16-BN encoder, index unpooling", stride=32)
)
