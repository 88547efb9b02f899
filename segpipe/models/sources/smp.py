"""segmentation_models_pytorch models from a folder (``model.save_pretrained(folder)``).

Detected by content: a folder whose ``config.json`` names a ``_model_class`` (``Unet``, ``FPN``,
``DeepLabV3Plus`` ...). The model is built from smp's own class of that name with the config's
arguments, the encoder never downloading (``encoder_weights`` is set to None: the folder's weights
replace them), and the folder's ``model.safetensors`` (or ``pytorch_model.bin``, read with
``weights_only``) loaded strictly. The head's ``activation`` is dropped (segpipe applies the softmax;
a one-class model is binary: background and foreground, by the sigmoid), and a classification head's
output is ignored.

smp saves no class names: they are ``class_0 ..`` unless ``--classes`` names them. Inputs are
normalised with ImageNet's mean and std, which smp's pretrained encoders use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segpipe.errors import CheckpointError
from segpipe.models.sources.base import (
    LoadedModel,
    ModelSource,
    Probe,
    SourceOptions,
    build_meta,
    register_source,
)

#: Weight files of a saved smp model, in the order they are tried.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def detect(pr: Probe) -> bool:
    """A folder whose config.json names an smp ``_model_class``."""
    return pr.is_dir and pr.config is not None and isinstance(pr.config.get("_model_class"), str)


def _config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read config.json: {e}", path=path / "config.json") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("_model_class"), str):
        raise CheckpointError("config.json names no _model_class", path=path / "config.json")
    return cfg


def _classes(path: Path, cfg: dict[str, Any]) -> int:
    n = cfg.get("classes", 1)
    if type(n) is not int or n < 1:
        raise CheckpointError(f"{n!r} is not a class count", path=path / "config.json", where="classes")
    return max(2, n)  # one output channel: a binary model (background, foreground)


def _read_meta(path: Path, opts: SourceOptions) -> Any:
    cfg = _config(path)
    if opts.task not in (None, "semantic"):
        raise CheckpointError(f"smp models are semantic; --task {opts.task} does not apply", path=path)
    n = _classes(path, cfg)
    if opts.num_classes is not None and opts.num_classes != n:
        raise CheckpointError(f"--num-classes {opts.num_classes}, but its config.json has {n} classes",
                              path=path / "config.json")
    return build_meta(f"smp/{cfg['_model_class']}", "semantic", n, path=path)


def _weights(path: Path) -> dict[str, Any]:
    for name in WEIGHT_FILES:
        f = path / name
        if f.is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file  # lazy: only weight files need it

                return dict(load_file(str(f)))
            import torch  # lazy: torch costs seconds to import

            return dict(torch.load(f, map_location="cpu", weights_only=True))
    raise CheckpointError(f"has no weights ({' or '.join(WEIGHT_FILES)})", path=path)


def _load(path: Path, opts: SourceOptions) -> LoadedModel:
    from segpipe.models.adapters import SemanticAdapter  # lazy: torch costs seconds to import

    meta = _read_meta(path, opts)
    cfg = _config(path)
    import segmentation_models_pytorch as smp  # lazy: smp and timm cost seconds to import

    cls = getattr(smp, cfg["_model_class"], None)
    if not isinstance(cls, type):
        raise CheckpointError(f"segmentation_models_pytorch {smp.__version__} has no model class "
                              f"{cfg['_model_class']!r}", path=path / "config.json", where="_model_class")
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    kwargs["encoder_weights"] = None  # never download: the folder's weights replace the encoder's
    kwargs["activation"] = None  # segpipe applies the softmax (or, for one class, the sigmoid) itself
    try:
        net = cls(**kwargs)
        net.load_state_dict(_weights(path), strict=True)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot build {cfg['_model_class']} from it: {first[:300]}", path=path) from None
    stride = int(getattr(getattr(net, "encoder", None), "output_stride", 32) or 32)
    return LoadedModel(SemanticAdapter(net, stride=stride).eval(), meta)


SOURCE = register_source(ModelSource(
    "smp", "segmentation_models_pytorch folders (config.json with _model_class + model.safetensors)", detect,
    _read_meta, _load,
))
