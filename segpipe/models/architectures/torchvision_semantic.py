"""torchvision's semantic segmentation models, built without weights and wrapped to return a tensor."""

from __future__ import annotations

from typing import Any

from torch import nn

from segpipe.models.architectures._common import SemanticWrapper
from segpipe.models.registry import ModelSpec, register_model
from segpipe.models.weights import load_backbone_into

_BACKBONES = {
    "fcn_resnet50": "resnet50",
    "fcn_resnet101": "resnet101",
    "deeplabv3_resnet50": "resnet50",
    "deeplabv3_mobilenet_v3_large": "mobilenet_v3_large",
    "lraspp_mobilenet_v3_large": "mobilenet_v3_large",
}


def _builder(name: str) -> Any:
    def build(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
        # lazy: torchvision costs seconds to import; only models built on it need it
        import torchvision.models.segmentation as seg

        if name != "lraspp_mobilenet_v3_large":  # LR-ASPP has no auxiliary head
            kw.setdefault("aux_loss", False)
        net = getattr(seg, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kw)
        if pretrained_backbone:
            load_backbone_into(net.backbone, f"{_BACKBONES[name]}:DEFAULT")
        return SemanticWrapper(net, stride=16 if "mobilenet" in name else 8)

    return build


for _name, _size, _desc in (
    ("fcn_resnet50", 512, "torchvision FCN, ResNet-50 backbone (dilated, stride 8)"),
    ("fcn_resnet101", 512, "torchvision FCN, ResNet-101 backbone (dilated, stride 8)"),
    ("deeplabv3_resnet50", 512, "torchvision DeepLabV3 (ASPP), ResNet-50 backbone"),
    ("deeplabv3_mobilenet_v3_large", 512, "torchvision DeepLabV3, MobileNetV3-Large backbone"),
    ("lraspp_mobilenet_v3_large", 512, "torchvision LR-ASPP, MobileNetV3-Large: the fast default"),
):
    register_model(
        ModelSpec(_name, "semantic", _builder(_name), (_size, _size), _desc, stride=16 if "mobile" in _name else 8)
    )
