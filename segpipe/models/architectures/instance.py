"""torchvision Mask R-CNN models, built without weights and with segpipe's input convention.

The internal ``GeneralizedRCNNTransform`` is given an identity normalisation (mean 0, std 1): the
predictor normalises every model's input the same way, with the checkpoint's mean/std. ``min_size``
defaults to the tile size so tiles are not resized.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from segpipe.models.registry import ModelSpec, register_model
from segpipe.models.weights import load_backbone_into

_IDENTITY: dict[str, Any] = {"image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0]}


def _detection_kw(kw: dict[str, Any], size: int) -> dict[str, Any]:
    out = dict(_IDENTITY)
    out.update({"min_size": size, "max_size": 2 * size})
    out.update(kw)
    return out


def build_maskrcnn_resnet50_fpn(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Torchvision ``maskrcnn_resnet50_fpn`` (``num_classes`` includes background)."""
    # lazy: torchvision costs seconds to import; only models built on it need it
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **_detection_kw(kw, 512))
    if pretrained_backbone:
        load_backbone_into(net.backbone.body, "resnet50:DEFAULT")
    return net


def build_maskrcnn_mobilenet_v3(
    num_classes: int,
    pretrained_backbone: bool = False,
    anchor_sizes: list[int] | tuple[int, ...] | None = None,
    head_channels: int | None = None,
    **kw: Any,
) -> nn.Module:
    """Mask R-CNN on a MobileNetV3-Large FPN backbone (the layout of torchvision's Faster R-CNN one).

    Args:
        num_classes: Classes including background (label 0).
        pretrained_backbone: Load ImageNet backbone weights from the local cache.
        anchor_sizes: Anchor sides in input pixels, shared by every FPN level (default
            ``32 … 512``, torchvision's); match them to the object sizes, e.g. ``(16, 32, 64, 128)``
            for small images.
        head_channels: Light RoI heads: a box MLP of ``4 × head_channels`` and a two-conv mask head of
            ``head_channels`` (torchvision's are 1024 and four 256-wide convs, which dominate CPU
            training time). None keeps torchvision's heads.
        **kw: ``MaskRCNN`` options (``min_size``/``max_size`` default to 512/1024: inputs are resized
            to them, so set both to the tile side to run small tiles at their own resolution).
    """
    # lazy: torchvision costs seconds to import; only models built on it need it
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    # torchvision's default norm layer here is FrozenBatchNorm2d, right for a pretrained backbone but
    # an identity with random initialisation: a backbone trained from scratch needs real BatchNorm.
    norm = FrozenBatchNorm2d if pretrained_backbone else nn.BatchNorm2d
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=6, norm_layer=norm
    )
    if pretrained_backbone:
        load_backbone_into(backbone.body, "mobilenet_v3_large:DEFAULT")
    # Two FPN levels + pool, as in fasterrcnn_mobilenet_v3_large_fpn.
    sizes = (tuple(int(a) for a in (anchor_sizes or (32, 64, 128, 256, 512))),) * 3
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    det_kw = _detection_kw(kw, 512)
    n_cls: int | None = num_classes
    if head_channels:
        # lazy: torchvision costs seconds to import; only models built on it need it
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        oc, hc = backbone.out_channels, int(head_channels)
        det_kw["box_head"] = TwoMLPHead(oc * 7 * 7, 4 * hc)
        det_kw["box_predictor"] = FastRCNNPredictor(4 * hc, num_classes)
        det_kw["mask_head"] = MaskRCNNHeads(oc, [hc, hc], 1)
        det_kw["mask_predictor"] = MaskRCNNPredictor(hc, hc, num_classes)
        n_cls = None  # given by the predictors
    return MaskRCNN(backbone, num_classes=n_cls, rpn_anchor_generator=anchors, **det_kw)


register_model(
    ModelSpec(
        "maskrcnn_resnet50_fpn",
        "instance",
        build_maskrcnn_resnet50_fpn,
        (512, 512),
        "torchvision Mask R-CNN, ResNet-50-FPN",
        stride=32,
    )
)
register_model(
    ModelSpec(
        "maskrcnn_mobilenet_v3",
        "instance",
        build_maskrcnn_mobilenet_v3,
        (512, 512),
        "torchvision Mask R-CNN on a MobileNetV3-Large FPN backbone",
        stride=32,
    )
)
