"""Hugging Face ``transformers`` checkpoints from a local folder (``save_pretrained``).

Detected by content: a folder whose ``config.json`` names a ``model_type``. Two kinds are run:

* **semantic**: ``*ForSemanticSegmentation`` (SegFormer, UperNet, DPT, BEiT, MobileViT ...), loaded
  with ``AutoModelForSemanticSegmentation``; its ``logits`` are resized to the input (bilinear, as the
  image processors' ``post_process_semantic_segmentation`` does) and blended tile by tile.
* **universal**: ``Mask2FormerForUniversalSegmentation`` and ``MaskFormerForInstanceSegmentation``
  (OneFormer is refused: it needs the task as text tokens, and its processor downloads class-info
  files from the Hub). Such a model
  does semantic, instance and panoptic segmentation; ``--task`` picks which, and the folder's image
  processor's own ``post_process_semantic_segmentation`` / ``_instance_`` / ``_panoptic_`` turns its
  queries into the result (semantic: its per-class scores; instance: binary masks, scores and labels;
  panoptic: segment ids, fusing the classes ``--classes`` marks as stuff).

Class names come from ``config.json``'s ``id2label`` (``--classes`` overrides them); the
normalisation (``image_mean``, ``image_std``, ``rescale_factor``) and the tile size (``size``) from
``preprocessor_config.json`` when the folder has one (ImageNet's and 512 otherwise). The driver reads
both as JSON, without importing transformers.

Nothing from the folder runs as Python: the model class must be one of transformers' own (a config
with ``auto_map``, which needs ``trust_remote_code``, is refused), and weights are read by transformers
(safetensors, or ``torch.load(weights_only=True)``).
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

#: ``model_type`` values of configs without ``architectures``, by kind.
SEMANTIC_TYPES = {"segformer", "upernet", "dpt", "beit", "data2vec-vision", "mobilevit", "mobilevitv2"}
UNIVERSAL_TYPES = {"mask2former", "maskformer"}
UNIVERSAL_TASKS = ("semantic", "instance", "panoptic")


def detect(pr: Probe) -> bool:
    """A folder whose config.json has a ``model_type`` (and is not smp's)."""
    return pr.is_dir and pr.config is not None and "model_type" in pr.config and "_model_class" not in pr.config


def _config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read config.json: {e}", path=path / "config.json") from None
    if not isinstance(cfg, dict):
        raise CheckpointError("config.json is not a JSON object", path=path / "config.json")
    return cfg


def kind(path: Path, cfg: dict[str, Any]) -> tuple[str, str]:
    """``(kind, class name)``: ``semantic`` or ``universal``, and the transformers class to load.

    Raises:
        CheckpointError: custom code (``auto_map``), or no segmentation model segpipe runs.
    """
    if cfg.get("auto_map"):
        raise CheckpointError("its config.json maps to custom code (auto_map) that needs trust_remote_code; segpipe "
                              "never runs code from a model folder", path=path / "config.json",
                              hint="use a model class that transformers itself provides")
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    model_type = str(cfg.get("model_type"))
    if model_type == "oneformer" or any(a.startswith("OneFormer") for a in archs):
        # Its forward pass needs the task as text tokens, and its image processor reads a class-info file
        # from the Hub: neither works offline from a plain folder.
        raise CheckpointError("a OneFormer model: segpipe does not run OneFormer (its processor needs a text "
                              "tokenizer and downloads class-info files)", path=path / "config.json",
                              hint="universal models segpipe runs: Mask2Former, MaskFormer")
    for a in archs:
        if a.endswith("ForSemanticSegmentation"):
            return "semantic", a
        if a.endswith("ForUniversalSegmentation") or a == "MaskFormerForInstanceSegmentation":
            return "universal", a
    if not archs and model_type in SEMANTIC_TYPES:
        return "semantic", "AutoModelForSemanticSegmentation"
    if not archs and model_type in UNIVERSAL_TYPES:
        return "universal", "AutoModelForUniversalSegmentation"
    named = f" ({', '.join(archs)})" if archs else ""
    if model_type.startswith("sam"):  # a promptable model: it makes masks of boxes (--prompts), not of images
        raise CheckpointError(f"a Hugging Face {model_type} model: SAM turns boxes into masks",
                              path=path / "config.json", hint="pass the boxes with --prompts BOXES")
    raise CheckpointError(f"a Hugging Face {model_type} model{named}, not a segmentation model segpipe runs",
                          path=path / "config.json",
                          hint="segpipe runs *ForSemanticSegmentation and Mask2Former / MaskFormer models")


def _labels(path: Path, cfg: dict[str, Any]) -> list[str]:
    id2label = cfg.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            by_index = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError):
            raise CheckpointError("id2label keys are not class indices", path=path / "config.json",
                                  where="id2label") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise CheckpointError(f"id2label indices are not 0..{len(by_index) - 1}", path=path / "config.json",
                                  where="id2label")
        return [by_index[i] for i in range(len(by_index))]
    n = cfg.get("num_labels")
    if isinstance(n, int) and n > 0:
        return [f"LABEL_{i}" for i in range(n)]
    raise CheckpointError("names no classes (no id2label nor num_labels)", path=path / "config.json")


def _preprocessing(path: Path) -> dict[str, Any]:
    """``mean``, ``std`` and ``tile_size`` from preprocessor_config.json, as segpipe's meta takes them.

    The processor feeds ``(x · r − m) / s`` (``r`` the rescale factor, ``m``/``s`` its mean and std);
    segpipe feeds ``(x − M · 255) / (S · 255)``, so ``M = m / (255 r)`` and ``S = s / (255 r)``.
    """
    f = path / "preprocessor_config.json"
    if not f.is_file():
        return {}
    try:
        pp = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read preprocessor_config.json: {e}", path=f) from None
    if not isinstance(pp, dict):
        raise CheckpointError("preprocessor_config.json is not a JSON object", path=f)
    out: dict[str, Any] = {}
    r = float(pp.get("rescale_factor", 1 / 255)) if pp.get("do_rescale", True) else 1.0
    try:
        mean = [float(v) for v in pp.get("image_mean", [0.485, 0.456, 0.406])]
        std = [float(v) for v in pp.get("image_std", [0.229, 0.224, 0.225])]
    except (TypeError, ValueError):
        raise CheckpointError("image_mean / image_std are not numbers", path=f) from None
    if not pp.get("do_normalize", True):
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if len(mean) == 1:
        mean = mean * 3
    if len(std) == 1:
        std = std * 3
    out["mean"] = [m / (255.0 * r) for m in mean]
    out["std"] = [s / (255.0 * r) for s in std]
    size = pp.get("size")
    if isinstance(size, dict) and isinstance(size.get("height"), int) and isinstance(size.get("width"), int):
        out["tile_size"] = [size["height"], size["width"]]
    return out


def _task(path: Path, k: str, cls: str, opts: SourceOptions) -> str:
    if k == "semantic":
        if opts.task not in (None, "semantic"):
            raise CheckpointError(f"{cls} is a semantic model; --task {opts.task} does not apply", path=path)
        return "semantic"
    if opts.task is None:
        raise CheckpointError(f"{cls} is a universal segmentation model; say which output to store",
                              path=path, hint="pass --task semantic, instance or panoptic")
    if opts.task not in UNIVERSAL_TASKS:
        raise CheckpointError(f"{cls} does semantic, instance and panoptic segmentation, not {opts.task}", path=path)
    return opts.task


def _read_meta(path: Path, opts: SourceOptions) -> Any:
    cfg = _config(path)
    k, cls = kind(path, cfg)
    task = _task(path, k, cls, opts)
    names = _labels(path, cfg)
    if opts.num_classes is not None and opts.num_classes != len(names):
        raise CheckpointError(f"--num-classes {opts.num_classes}, but its config.json has {len(names)} classes",
                              path=path / "config.json")
    extra = {"classes": names, **_preprocessing(path)}
    if k == "universal":
        extra.pop("tile_size", None)  # sizes of a resize (shortest edge): the tile stays segpipe's
    return build_meta(f"hf/{cfg.get('model_type')}", task, len(names), path=path, extra=extra)


def _processor(path: Path, cls: str) -> Any:
    import transformers  # lazy: transformers costs seconds to import; only its models need it

    if (path / "preprocessor_config.json").is_file():
        return transformers.AutoImageProcessor.from_pretrained(str(path), local_files_only=True,
                                                               trust_remote_code=False)
    prefix = cls.split("For")[0]
    proc = getattr(transformers, f"{prefix}ImageProcessor", None)
    if proc is None:
        raise CheckpointError("has no preprocessor_config.json, and transformers has no image processor for "
                              f"{prefix}", path=path, hint="save the image processor into the folder too")
    return proc()


def quiet() -> None:
    """Silences transformers' progress bars and advice on workers (a run's stderr carries errors only)."""
    import transformers  # lazy: transformers costs seconds to import; only its models need it

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars  # lazy: installed with transformers
    except ImportError:  # pragma: no cover - an old huggingface_hub
        return
    disable_progress_bars()


def _model(path: Path, cls: str) -> Any:
    import transformers  # lazy: transformers costs seconds to import; only its models need it

    quiet()
    model_cls = getattr(transformers, cls, None)
    if model_cls is None:
        raise CheckpointError(f"transformers {transformers.__version__} has no {cls}", path=path / "config.json",
                              hint="install a transformers version that has it")
    try:
        return model_cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=False).eval()
    except Exception as e:  # missing or mismatched weights, a config this version cannot read: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"transformers cannot load it: {first[:300]}", path=path) from None


def _load(path: Path, opts: SourceOptions) -> LoadedModel:
    from segpipe.models.adapters import (  # lazy: torch costs seconds to import
        SemanticAdapter,
        UniversalInstance,
        UniversalPanoptic,
        UniversalSemantic,
    )

    meta = _read_meta(path, opts)
    cfg = _config(path)
    k, cls = kind(path, cfg)
    net = _model(path, cls)
    if k == "semantic":
        return LoadedModel(SemanticAdapter(net, stride=32, call="pixel_values").eval(), meta)
    proc = _processor(path, cls)
    wrapper = {"semantic": UniversalSemantic, "instance": UniversalInstance, "panoptic": UniversalPanoptic}[meta.task]
    return LoadedModel(wrapper(net, proc).eval(), meta)


SOURCE = register_source(ModelSource(
    "huggingface", "Hugging Face transformers folders (config.json + weights, save_pretrained)", detect,
    _read_meta, _load,
))
