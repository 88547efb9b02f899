"""FCN-32s / 16s / 8s (Long, Shelhamer & Darrell 2015) on torchvision's VGG16 features.

The fully connected layers become convolutions (fc6: 7×7, fc7: 1×1); class scores at stride 32 are
upsampled (learnable transposed convs initialised bilinear) and, for 16s / 8s, summed with 1×1 score
layers on pool4 / pool3 (the skip architecture).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures._common import SemanticWrapper, bilinear_kernel
from segpipe.models.registry import ModelSpec, register_model
from segpipe.models.weights import load_cached_state_dict


class FCNVGG(nn.Module):
    """FCN on VGG16.

    Args:
        num_classes: Classes including background.
        skips: 0 (FCN-32s), 1 (FCN-16s, + pool4) or 2 (FCN-8s, + pool4 + pool3).
        pretrained_backbone: Load ``vgg16:DEFAULT`` features from the local cache.
        fc_channels: Width of fc6/fc7 (4096 in the paper).
    """

    def __init__(
        self, num_classes: int, skips: int, pretrained_backbone: bool = False, fc_channels: int = 4096
    ) -> None:
        super().__init__()
        # lazy: torchvision costs seconds to import; only models built on it need it
        import torchvision

        vgg = torchvision.models.vgg16(weights=None)
        if pretrained_backbone:
            vgg.load_state_dict(load_cached_state_dict("vgg16:DEFAULT"))
        feats = vgg.features
        # torchvision vgg16.features indices: pool3 ends at 16, pool4 at 23, pool5 at 30.
        self.to_pool3 = feats[:17]
        self.to_pool4 = feats[17:24]
        self.to_pool5 = feats[24:]
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc_channels, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(fc_channels, fc_channels, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.skips = skips
        if skips >= 1:
            self.score_pool4 = nn.Conv2d(512, num_classes, 1)
            self.up2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
            # The paper zero-initialises skip scores so training starts from the coarser net.
            nn.init.zeros_(self.score_pool4.weight)
            nn.init.zeros_(self.score_pool4.bias)  # type: ignore[arg-type]
        if skips >= 2:
            self.score_pool3 = nn.Conv2d(256, num_classes, 1)
            self.up2b = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
            nn.init.zeros_(self.score_pool3.weight)
            nn.init.zeros_(self.score_pool3.bias)  # type: ignore[arg-type]
        with torch.no_grad():
            for m in (getattr(self, "up2", None), getattr(self, "up2b", None)):
                if m is not None:
                    m.weight.copy_(bilinear_kernel(num_classes, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``, H and W multiples of 32. Returns: logits at stride 8/16/32."""
        p3 = self.to_pool3(x)
        p4 = self.to_pool4(p3)
        score = self.score_fr(self.fc(self.to_pool5(p4)))
        if self.skips >= 1:
            score = _match(self.up2(score), p4) + self.score_pool4(p4)
        if self.skips >= 2:
            score = _match(self.up2b(score), p3) + self.score_pool3(p3)
        return score  # the wrapper upsamples to input resolution (bilinear, as the final deconv)


def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] != ref.shape[-2:]:
        x = F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
    return x


def _builder(skips: int) -> Any:
    def build(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
        return SemanticWrapper(FCNVGG(num_classes, skips, pretrained_backbone, **kw), stride=32)

    return build


for _name, _skips, _desc in (
    ("fcn32s", 0, "FCN-32s on VGG16 (stride-32 scores, bilinear-initialised upsampling)"),
    ("fcn16s", 1, "FCN-16s on VGG16 (+ pool4 skip)"),
    ("fcn8s", 2, "FCN-8s on VGG16 (+ pool4 and pool3 skips)"),
):
    register_model(ModelSpec(_name, "semantic", _builder(_skips), (512, 512), _desc, stride=32))
