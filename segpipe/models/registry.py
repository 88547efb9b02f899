"""The model registry: every architecture segpipe can build, with its task and default tile size.

All builders take ``num_classes`` and ``pretrained_backbone`` (default False) and never download
anything: torchvision models are built with ``weights=None, weights_backbone=None``; a pretrained
backbone is read from the local torch cache by :mod:`segpipe.models.weights` or refused.

Conventions shared by every task:

* Inputs are float tensors ``(N, 3, H, W)`` already normalised with the checkpoint's mean/std
  (torchvision detection models are built with an identity internal normalisation so the same
  convention holds for them).
* ``semantic``: ``num_classes`` counts background as class 0; ``forward`` returns logits
  ``(N, C, H, W)`` at input resolution.
* ``instance``: ``num_classes`` counts background as label 0 (torchvision's convention); in eval mode
  ``forward(list[(3, H, W)])`` returns one dict per image with ``boxes (K, 4) xyxy``, ``labels (K,)``,
  ``scores (K,)``, ``masks (K, 1, H, W)`` probabilities; in train mode ``forward(images, targets)``
  returns a dict of losses.
* ``panoptic``: a semantic model and an instance model fused by the parameter-free
  :func:`segpipe.models.architectures.panoptic.panoptic_fusion`.
* ``landmarks``: ``num_classes`` is the number of keypoints K; the stacked hourglass returns
  heatmaps ``(N, K, H/4, W/4)`` in eval mode (a list, one per stack, in train mode).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from segpipe.errors import SegpipeError
from segpipe.registry import Registry

Task = Literal["semantic", "instance", "panoptic", "landmarks"]
TASKS: tuple[Task, ...] = ("semantic", "instance", "panoptic", "landmarks")


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture.

    Attributes:
        name: Registry name (``unet``, ``deeplabv3_resnet50`` ...).
        task: ``semantic``, ``instance``, ``panoptic`` or ``landmarks``.
        builder: ``builder(num_classes, pretrained_backbone=False, **kw) -> nn.Module``.
        default_input: Recommended tile / input size ``(H, W)`` for tiled inference and training crops.
        description: One line for ``segpipe models``.
        stride: The input side must be a multiple of this (the predictor pads tiles to it).
        default_kwargs: Builder keyword arguments recorded in checkpoints when not overridden.
        dims: Spatial dimensions of the input: 2 (images, ``(N, 3, H, W)``) or 3 (volumes,
            ``(N, 1, D, H, W)``, tiled in 3-D over a volume's slices).
        default_depth: For 3-D models, the recommended tile depth in slices.
    """

    name: str
    task: Task
    builder: Callable[..., Any]
    default_input: tuple[int, int]
    description: str
    stride: int = 32
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    dims: int = 2
    default_depth: int = 0


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Adds ``spec`` to :data:`MODELS`; raises ``ValueError`` on a duplicate name."""
    MODELS.add(spec.name, spec)
    return spec


def get_model_spec(name: str) -> ModelSpec:
    """Returns the spec registered as ``name``.

    Raises:
        UnknownNameError: naming the known architectures.
    """
    _load_architectures()
    return MODELS.get(name)


def model_names(task: Task | None = None) -> list[str]:
    """Registered architecture names, sorted, optionally only those of ``task``."""
    _load_architectures()
    return [n for n in MODELS.names() if task is None or MODELS.get(n).task == task]


def build_model(name: str, num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> Any:
    """Builds architecture ``name`` with random initialisation (never downloads).

    Args:
        name: A registered architecture.
        num_classes: See the module docstring for the per-task meaning.
        pretrained_backbone: Load ImageNet backbone weights from the local torch cache; raises
            :class:`~segpipe.errors.WeightsUnavailableError` when the file is absent.
        **kw: Architecture-specific options.

    Returns:
        ``torch.nn.Module``.
    """
    spec = get_model_spec(name)
    return spec.builder(num_classes, pretrained_backbone=pretrained_backbone, **kw)


_PARAM_CACHE: dict[tuple[str, int], int] = {}


def count_parameters(name: str, num_classes: int = 21) -> int:
    """Number of parameters of ``name`` built on the meta device (no memory, no init cost)."""
    key = (name, num_classes)
    if key not in _PARAM_CACHE:
        import torch  # lazy: torch costs seconds to import; the registry answers names without it

        with torch.device("meta"):
            model = build_model(name, num_classes)
        _PARAM_CACHE[key] = sum(p.numel() for p in model.parameters())
    return _PARAM_CACHE[key]


#: The built-in architectures and the spatial dimensions of their input, known without importing
#: them: their modules import torch, and the driver of a run does not (see :func:`arch_dims`).
#: ``tests/models/test_architectures.py`` checks it against the registered specs.
BUILTIN_DIMS: dict[str, int] = {
    "deeplabv3_mobilenet_v3_large": 2, "deeplabv3_resnet50": 2, "deeplabv3plus": 2, "fcn16s": 2, "fcn32s": 2,
    "fcn8s": 2, "fcn_resnet101": 2, "fcn_resnet50": 2, "gcn": 2, "hourglass": 2, "keypointrcnn_resnet50_fpn": 2,
    "lraspp_mobilenet_v3_large": 2, "maskrcnn_mobilenet_v3": 2, "maskrcnn_resnet50_fpn": 2, "panoptic_fpn": 2,
    "pspnet": 2, "segnet": 2, "unet": 2, "unet3d": 3, "yolact": 2,
}


def arch_dims(name: str) -> int:
    """Spatial dimensions of architecture ``name``'s input: 2 (images) or 3 (volumes).

    Built-in names are answered from :data:`BUILTIN_DIMS` without importing torch; any other name
    from its registered spec (which loads the architectures), and 2 for a name nobody registered.
    """
    if name in BUILTIN_DIMS:
        return BUILTIN_DIMS[name]
    try:
        return get_model_spec(name).dims
    except SegpipeError:  # a stub or a model built outside the registry
        return 2


#: The package whose modules register the built-in architectures. It is imported by name on the first
#: lookup, as entry-point plugins are: the registry depends on no architecture (the architectures
#: import it), and ``import segpipe.models.registry`` stays free of torch for callers that need names.
BUILTIN_ARCHITECTURES = "segpipe.models.architectures"

_LOADED = False


def _load_architectures() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        importlib.import_module(BUILTIN_ARCHITECTURES)
