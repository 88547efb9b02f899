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

**Your own architecture**, without a wrapper script, in one of two ways:

* ``--arch package.module:function`` (any name with a ``:``): ``function(num_classes, **model_args)``
  returns an ``nn.Module`` following the semantic convention (a dict with ``"out"``, a tuple or a
  lower-resolution output are adapted, and the input is padded to a multiple of 32); or the name
  points at a :class:`ModelSpec` object, which says everything (task, tile, stride, dims). The module
  is imported on the driver and on every Dask worker, so it must be importable there (installed, or on
  ``PYTHONPATH`` in the environment the workers start in).
* An installed package declares an entry point in the ``segpipe.models`` group whose object is a
  :class:`ModelSpec` (``[project.entry-points."segpipe.models"] mynet = "mypkg.nets:MYNET"``); its name
  is then an architecture like the built-in ones (``--arch mynet``, ``segpipe models``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from segpipe.errors import ConfigError, SegpipeError, UnknownNameError
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
    """Returns the spec registered as ``name``, or the one ``package.module:attr`` names.

    Raises:
        UnknownNameError: naming the known architectures; or, for ``package.module:attr``, saying
            what could not be imported or found.
    """
    if is_external_arch(name):
        return external_spec(name)
    if "/" in name:  # a model of another form (``onnx/model``): no builder exists for it
        raise UnknownNameError(f"{name!r} is a model read from its own file, not an architecture segpipe builds")
    _load_architectures()
    return MODELS.get(name)


def is_external_arch(name: str) -> bool:
    """Whether ``name`` is ``package.module:attr`` (a builder or a :class:`ModelSpec` of the user's)."""
    module, sep, attr = name.partition(":")
    return bool(sep) and bool(attr) and all(part.isidentifier() for part in (*module.split("."), *attr.split(".")))


_EXTERNAL: dict[str, ModelSpec] = {}

#: The tile and padding stride given to a builder function's model (a ModelSpec says its own).
EXTERNAL_INPUT = (512, 512)
EXTERNAL_STRIDE = 32


def external_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``package.module:attr``: the object itself, or a semantic spec whose
    builder calls the function and adapts its model (:class:`~segpipe.models.adapters.SemanticAdapter`).

    Raises:
        UnknownNameError: the module cannot be imported, has no such attribute, or it is neither a
            ModelSpec nor callable; one line naming ``--arch``.
    """
    if name in _EXTERNAL:
        return _EXTERNAL[name]
    module_name, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownNameError(
            f"--arch {name}: cannot import {module_name!r} ({e}); the module must be importable on the driver "
            "and on every worker (install it, or put its folder on PYTHONPATH)"
        ) from None
    except Exception as e:  # the user's module failed while importing: say so in one line
        raise UnknownNameError(f"--arch {name}: importing {module_name!r} failed: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UnknownNameError(f"--arch {name}: module {module_name!r} has no {attr!r}")
    if isinstance(obj, ModelSpec):
        spec = obj if obj.name == name else replace(obj, name=name)
    elif callable(obj):
        spec = ModelSpec(name, "semantic", _adapted(obj), EXTERNAL_INPUT, f"{attr} from {module_name}",
                         stride=EXTERNAL_STRIDE)
    else:
        raise UnknownNameError(f"--arch {name}: {attr!r} is a {type(obj).__name__}, not a builder function or "
                               "a segpipe ModelSpec")
    _EXTERNAL[name] = spec
    return spec


def _adapted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A builder calling ``fn(num_classes, **kw)`` and giving its model the semantic convention."""

    def build(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> Any:
        from segpipe.models.adapters import SemanticAdapter  # lazy: torch costs seconds to import

        return SemanticAdapter(fn(num_classes, **kw), stride=EXTERNAL_STRIDE)

    return build


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
    if "/" in name:  # a model read from its own file (``onnx/model``, ``hf/segformer``): images
        return 2
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


def check_model_args(arch: str, kwargs: dict[str, Any], *, option: str = "model_arg") -> None:
    """Builds ``arch`` with ``kwargs`` on torch's meta device: a key or value it refuses is one line.

    Nothing is allocated or initialised, so only the options are checked (before a cluster starts).

    Args:
        arch: A registered architecture.
        kwargs: Its builder's extra options.
        option: How the caller names the options in its messages (``--model-arg`` on the command line).

    Raises:
        ConfigError: a key the architecture's builder does not take, or a value it cannot be built with.
    """
    if not kwargs:
        return
    import torch  # lazy: torch takes seconds to import; the registry itself stays light

    try:
        with torch.device("meta"):
            build_model(arch, 2, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{option}: {arch} does not accept {kwargs}: {e}") from None
    except RuntimeError as e:  # torch's own check of a layer's size (e.g. base=-3: a negative dimension)
        given = " ".join(f"{k}={json.dumps(v)}" for k, v in kwargs.items())
        raise ConfigError(f"{option} {given}: {arch} cannot be built with it "
                          f"({str(e).splitlines()[0][:120]})") from None
