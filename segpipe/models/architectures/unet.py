"""U-Net (Ronneberger et al. 2015): a symmetric encoder-decoder with concatenated skips."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures._common import SemanticWrapper
from segpipe.models.registry import ModelSpec, register_model

#: The layers of a U-Net by number of spatial dimensions (images: 2, volumes: 3).
_LAYERS: dict[int, tuple[Any, Any, Any, Any]] = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d, F.max_pool2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d, F.max_pool3d),
}


def _double(cin: int, cout: int, dims: int = 2) -> nn.Sequential:
    conv, norm = _LAYERS[dims][:2]
    return nn.Sequential(
        conv(cin, cout, 3, padding=1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with BatchNorm and same-padding convs (so the output matches the input size).

    Args:
        num_classes: Classes including background.
        base: Channels of the first level (64 in the paper; 32 by default here for CPU speed).
        depth: Number of down-sampling steps.
        in_channels: Input channels.
        dims: Spatial dimensions: 2 (``(N, C, H, W)``) or 3 (``(N, C, D, H, W)``, the 3-D U-Net of
            Çiçek et al. 2016).
    """

    def __init__(self, num_classes: int, base: int = 32, depth: int = 4, in_channels: int = 3, dims: int = 2) -> None:
        super().__init__()
        conv, _, up, self._pool = _LAYERS[dims]
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double(in_channels, chans[0], dims)])
        self.down.extend(_double(chans[i], chans[i + 1], dims) for i in range(depth))
        self.up = nn.ModuleList(up(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_double(chans[i] * 2, chans[i], dims) for i in reversed(range(depth)))
        self.head = conv(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C_in, *spatial)``, sides multiples of ``2**depth``. Returns: ``(N, C, *spatial)``."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self._pool(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = up(x)
            x = dec(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)


def build_unet(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds a U-Net (no pretrained backbone exists; ``pretrained_backbone`` is ignored)."""
    depth = int(kw.get("depth", 4))
    return SemanticWrapper(UNet(num_classes, **kw), stride=2**depth)


register_model(
    ModelSpec("unet", "semantic", build_unet, (256, 256), "U-Net (base 32, depth 4), trains fast on CPU", stride=16)
)
