"""Offline pretrained weights: ``ARCH:WEIGHTS`` from the local torch cache, or a one-line refusal.

torchvision downloads weights into ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``).
segpipe never calls the downloader: it computes the file name from the weights enum's URL, checks that
the file is there and reads it with ``torch.load(weights_only=True)``. When it is absent the error names
the exact file and folder, so the user can copy it from a machine that has network access.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from segpipe.errors import CheckpointError, UnknownNameError, WeightsUnavailableError
from segpipe.models.registry import MODELS, get_model_spec, model_names


def cache_dir() -> Path:
    """The folder torchvision downloads into: ``torch.hub.get_dir()/checkpoints``."""
    import torch  # lazy: torch costs seconds to import

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve(spec: str) -> Any:
    """Returns the torchvision ``WeightsEnum`` member named by ``ARCH:WEIGHTS``.

    Args:
        spec: e.g. ``deeplabv3_resnet50:DEFAULT`` or ``resnet50:IMAGENET1K_V2``.

    Raises:
        UnknownNameError: unknown architecture or weights name.
    """
    import torchvision  # lazy: torchvision costs seconds to import

    arch, sep, name = spec.partition(":")
    if not sep or not arch or not name:
        raise UnknownNameError(f"weights must be written ARCH:WEIGHTS (e.g. resnet50:DEFAULT), got {spec!r}")
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise UnknownNameError(f"torchvision has no pretrained weights for architecture {arch!r}") from None
    if name == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[name]
    except KeyError:
        known = ", ".join(["DEFAULT", *(m.name for m in enum)])
        raise UnknownNameError(f"unknown weights {name!r} for {arch}; known: {known}") from None


def weights_path(spec: str) -> Path:
    """The cache file that must hold ``spec`` (it may not exist)."""
    w = resolve(spec)
    return cache_dir() / os.path.basename(w.url)


def load_cached_state_dict(spec: str) -> dict[str, Any]:
    """Loads the state dict of ``ARCH:WEIGHTS`` from the local cache; never touches the network.

    Raises:
        WeightsUnavailableError: the file is not in the cache (one line: file name and folder).
        CheckpointError: the file exists but is not a plain tensor state dict.
    """
    import torch  # lazy: torch costs seconds to import

    path = weights_path(spec)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"pretrained weights {spec} are not in the local cache and segpipe never downloads: "
            f"place {path.name} in {path.parent}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read cached weights: {str(e).splitlines()[0]}", path=path) from None
    if not isinstance(state, dict):
        raise CheckpointError("cached weights are not a state dict", path=path)
    return state


def load_backbone_into(module: Any, spec: str, min_fraction: float = 0.9) -> None:
    """Loads a classification network's cached weights into a backbone that reuses its layers.

    Keys are matched as is or under ``features.`` (torchvision wraps MobileNet features in an
    ``IntermediateLayerGetter``, which drops that prefix); the classifier is ignored.

    Raises:
        CheckpointError: fewer than ``min_fraction`` of the backbone's tensors were found.
    """
    state = load_cached_state_dict(spec)
    own = module.state_dict()
    mapped = {}
    for k, v in own.items():
        for cand in (k, f"features.{k}"):
            if cand in state and tuple(state[cand].shape) == tuple(v.shape):
                mapped[k] = state[cand]
                break
    if len(mapped) < min_fraction * len(own):
        raise CheckpointError(f"weights {spec} match only {len(mapped)} of {len(own)} backbone tensors")
    module.load_state_dict(mapped, strict=False)


def build_with_weights(spec: str, **kw: Any) -> Any:
    """Builds the torchvision model ``ARCH`` with the cached weights ``WEIGHTS`` (offline).

    The model is built with ``weights=None`` and the categories of the weights, then the cached state
    dict is loaded: torchvision's downloader is never reached.

    Returns:
        The torchvision ``nn.Module`` (semantic models are wrapped to return a tensor if registered).
    """
    import torchvision  # lazy: torchvision costs seconds to import

    arch = spec.partition(":")[0]
    w = resolve(spec)
    state = load_cached_state_dict(spec)
    num_classes = len(w.meta.get("categories") or []) or None
    if arch in MODELS or _registered(arch):
        ms = get_model_spec(arch)
        if num_classes is None:
            raise UnknownNameError(f"weights {spec} state no categories")
        extra = {"aux_loss": True} if any(k.startswith("aux_classifier") for k in state) else {}
        model = ms.builder(num_classes, **extra, **kw)
        target = getattr(model, "net", model)  # semantic models sit inside SemanticWrapper
        target.load_state_dict(state)
        return model
    model = torchvision.models.get_model(arch, weights=None, **kw)
    model.load_state_dict(state)
    return model


def _registered(arch: str) -> bool:
    return arch in model_names()
