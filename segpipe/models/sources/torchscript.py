"""TorchScript models (``torch.jit.save``): the graph and its code run by torch's interpreter.

Detected by content: a torch zip archive with TorchScript code (``*/code/``) or ``constants.pkl``.
TorchScript is code by design (torch runs the archive's graph, never a pickle of Python objects), so it
is the one torch form besides exported programs that runs as written.

A TorchScript model is run as a semantic model: ``forward((N, 3, H, W) normalised) ->`` logits (a
tensor, a dict with ``"out"``, or a tuple whose first item they are; a lower output resolution is
resized, and the input is padded to a multiple of 32). What the model does not say comes from an
extra file ``segpipe.json`` saved with it (``torch.jit.save(m, f, _extra_files={"segpipe.json":
json.dumps({...})})``): any field of :class:`~segpipe.models.checkpoint.CheckpointMeta` (``mean``,
``std``, ``tile_size``, ``categories``, ``num_classes``) and ``classes`` (names in class order). The
class count is otherwise the options' (``--num-classes``, ``--classes``), or the channels of one
forward pass of a small blank image on the driver.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segpipe.errors import CheckpointError
from segpipe.models.sources.base import (
    LoadedModel,
    ModelSource,
    Probe,
    SourceOptions,
    build_meta,
    class_names,
    register_source,
)

#: The extra file whose JSON object says what the model's graph does not.
EXTRA_FILE = "segpipe.json"
#: Side of the blank image run once on the driver to count a model's classes.
PROBE_SIDE = 128
#: Input sides are padded to a multiple of this (most encoders downsample 32 times).
STRIDE = 32


def detect(pr: Probe) -> bool:
    """A torch zip archive with TorchScript code."""
    return not pr.is_dir and pr.zip_names is not None and (pr.zip_has("code/") or pr.zip_has("constants.pkl"))


def read_extra(path: Path) -> dict[str, Any]:
    """The ``segpipe.json`` extra file of a torch archive (TorchScript or ``.pt2``) as a dict; {} without one.

    Raises:
        CheckpointError: the extra file is not a JSON object.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith(f"extra/{EXTRA_FILE}")), None)
            if name is None:
                return {}
            raw = zf.read(name)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"cannot read the archive: {e}", path=path) from None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"the extra file {EXTRA_FILE} is not valid JSON", path=path) from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"the extra file {EXTRA_FILE} is not a JSON object", path=path)
    return doc


def semantic_only(kind: str, path: Path, task: str | None) -> None:
    """Refuses a task other than semantic for a model segpipe runs as a semantic one.

    Raises:
        CheckpointError: naming the task and where it came from.
    """
    if task not in (None, "semantic"):
        raise CheckpointError(f"segpipe runs {kind} models as semantic models (logits per pixel), not {task}",
                              path=path, hint="export the instance / panoptic model as a Hugging Face folder or "
                                              "save its state dict for a registered architecture")


def class_count(path: Path, opts: SourceOptions, extra: dict[str, Any], count: Callable[[], int | None]) -> int:
    """The class count: ``--num-classes``, the metadata's, ``--classes``' count, or ``count()`` (a probe pass).

    Raises:
        CheckpointError: none of them tells it.
    """
    if opts.num_classes is not None:
        return opts.num_classes
    if isinstance(extra.get("num_classes"), int):
        return int(extra["num_classes"])
    names = class_names(extra.get("classes"))
    if names:
        return len(names)
    cats = extra.get("categories")
    if isinstance(cats, list) and cats:
        return len(cats)
    if opts.class_hint is not None:
        return opts.class_hint
    n = count()
    if n is None:
        raise CheckpointError("cannot tell how many classes the model has", path=path,
                              hint="pass --num-classes N or --classes FILE")
    return n


def probe_classes(model: Any, path: Path, side: int = PROBE_SIDE) -> int:
    """The channels a semantic model outputs for one blank ``side × side`` image (driver, CPU).

    Raises:
        CheckpointError: the forward pass failed (one line, the error's first line).
    """
    import torch  # lazy: only models whose metadata gives no class count need a probe pass

    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, side, side))
    except Exception as e:  # the model's own failure, whatever it is: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"a {side}x{side} test pass to count the classes failed: {first}", path=path,
                              hint="pass --num-classes N or --classes FILE") from None
    return int(out.shape[1])


def _script(path: Path) -> Any:
    import torch  # lazy: torch costs seconds to import; the driver needs it only to count classes

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ calls TorchScript deprecated
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # damaged archive, an op this torch lacks: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load the TorchScript model: {first}", path=path) from None


def _adapted(path: Path) -> Any:
    from segpipe.models.adapters import SemanticAdapter  # lazy: torch costs seconds to import

    return SemanticAdapter(_script(path), stride=STRIDE).eval()


def _meta(path: Path, opts: SourceOptions, model: Callable[[], Any]) -> Any:
    extra = read_extra(path)
    semantic_only("TorchScript", path, opts.task if opts.task is not None else extra.get("task"))
    n = class_count(path, opts, extra, lambda: probe_classes(model(), path))
    return build_meta(f"torchscript/{path.stem}", "semantic", n, path=path, extra=extra)


def _read_meta(path: Path, opts: SourceOptions) -> Any:
    return _meta(path, opts, lambda: _adapted(path))


def _load(path: Path, opts: SourceOptions) -> LoadedModel:
    model = _adapted(path)
    return LoadedModel(model, _meta(path, opts, lambda: model))


SOURCE = register_source(ModelSource(
    "torchscript", "TorchScript models saved with torch.jit.save (.pt, .ts)", detect, _read_meta, _load,
))
