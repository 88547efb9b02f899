"""Architectures; each module registers its models in :data:`segpipe.models.registry.MODELS` on import."""

from segpipe.models.architectures import (  # noqa: F401
    deeplabv3plus,
    fcn_vgg,
    gcn,
    hourglass,
    instance,
    panoptic,
    pspnet,
    segnet,
    torchvision_semantic,
    unet,
    unet3d,
    yolact,
)
