"""What every model source shares: the options, the probe of a path, the registry and detection.

A *model source* is one form a model comes in (a segpipe checkpoint or a plain state dict saved by
``torch.save``, ``.safetensors``, TorchScript, a ``torch.export`` program, ONNX, a Hugging Face or a
segmentation_models_pytorch folder). Each is a :class:`ModelSource` in :data:`SOURCES`:

* ``detect(probe)``: whether a path is in this form, from its content (magic bytes, zip entries,
  ``config.json``), never only from its extension; cheap and torch-free (the driver runs it).
* ``read_meta(path, options)``: the :class:`~segpipe.models.checkpoint.CheckpointMeta` (task, classes,
  normalisation, tile), on the driver: torch-free where the form allows it.
* ``load(path, options)``: a :class:`LoadedModel`, on a worker: a model that follows the predictor's
  forward convention for the meta's task (see :mod:`segpipe.models.registry`), so every predictor
  runs it unchanged.

Nothing from a model file runs as Python unless the form *is* code that torch or onnxruntime runs
(TorchScript, an exported graph, an ONNX graph): pickles are read with ``weights_only`` or the
skeleton unpickler of :mod:`segpipe.models.checkpoint`, and Hugging Face folders are never loaded
with ``trust_remote_code``.
"""

from __future__ import annotations

import importlib
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segpipe.errors import CheckpointError
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.registry import Registry


@dataclass(frozen=True)
class SourceOptions:
    """What the user said about a model besides its path.

    Attributes:
        arch: ``--arch``: the architecture of a plain state dict (a registered name or
            ``package.module:function``).
        num_classes: ``--num-classes``: the class count where the weights cannot tell it.
        task: ``--task``: which post-processing a universal model (Mask2Former) runs; checked
            against the task of any other model.
        class_hint: How many classes ``--classes`` lists: the count of a model whose graph and
            metadata do not say it (instead of a probe pass); never used where the weights tell.
    """

    arch: str | None = None
    num_classes: int | None = None
    task: str | None = None
    class_hint: int | None = None


@dataclass
class LoadedModel:
    """A model ready for a predictor.

    Attributes:
        model: An ``nn.Module`` following the forward convention of ``meta.task``.
        meta: Its metadata (the same as ``read_meta`` gives on the driver).
    """

    model: Any
    meta: Any


@dataclass
class Probe:
    """What detection looks at, read once per path.

    Attributes:
        path: The file or folder.
        is_dir: Whether it is a folder.
        head: The first 64 bytes of a file (empty for a folder).
        size: The file's size in bytes (0 for a folder).
        zip_names: The entries of a zip file, or None when it is no zip.
        config: A folder's ``config.json`` as a dict, or None.
        files: The names in a folder (not recursive).
    """

    path: Path
    is_dir: bool
    head: bytes = b""
    size: int = 0
    zip_names: tuple[str, ...] | None = None
    config: dict[str, Any] | None = None
    files: tuple[str, ...] = field(default_factory=tuple)

    def zip_has(self, suffix: str) -> bool:
        """Whether a zip entry below the archive folder is ``suffix`` (or starts with it when it ends in ``/``)."""
        if not self.zip_names:
            return False
        for name in self.zip_names:
            rest = name.split("/", 1)[1] if "/" in name else name
            if rest == suffix or (suffix.endswith("/") and rest.startswith(suffix)):
                return True
        return False


def probe(path: Path) -> Probe:
    """Reads what detection needs of ``path``.

    Raises:
        CheckpointError: the path does not exist or cannot be read.
    """
    if path.is_dir():
        cfg: dict[str, Any] | None = None
        files = tuple(sorted(p.name for p in path.iterdir()))
        if "config.json" in files:
            try:
                loaded = json.loads((path / "config.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"config.json is not valid JSON: {e}", path=path / "config.json") from None
            cfg = loaded if isinstance(loaded, dict) else None
        return Probe(path, True, config=cfg, files=files)
    if not path.is_file():
        raise CheckpointError("no such model file or folder", path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"cannot read the model: {e.strerror or e}", path=path) from None
    names: tuple[str, ...] | None = None
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = tuple(zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            names = None
    return Probe(path, False, head=head, size=size, zip_names=names)


@dataclass(frozen=True)
class ModelSource:
    """One form a model comes in.

    Attributes:
        name: Registry name (``torch``, ``onnx`` ...), also the prefix of the ``arch`` its models get.
        description: One line: the files it reads.
        detect: ``detect(probe) -> bool``: from the content, cheap, without torch.
        read_meta: ``read_meta(path, options) -> CheckpointMeta`` (driver).
        load: ``load(path, options) -> LoadedModel`` (worker).
    """

    name: str
    description: str
    detect: Callable[[Probe], bool]
    read_meta: Callable[[Path, SourceOptions], Any]
    load: Callable[[Path, SourceOptions], LoadedModel]


#: Every model source. Plugins come in through the ``segpipe.model_sources`` entry-point group (each
#: entry point a :class:`ModelSource`); they are tried after the built-in ones.
SOURCES: Registry[ModelSource] = Registry("model_source")

#: The built-in sources, in the order detection tries them (folders first, then the zip forms whose
#: entries tell them apart, then the rest). Each module registers its source on import; they are
#: imported by name, as entry points are, so this module depends on none of them.
BUILTIN_SOURCES: tuple[str, ...] = (
    "segpipe.models.sources.huggingface",
    "segpipe.models.sources.smp",
    "segpipe.models.sources.torchscript",
    "segpipe.models.sources.exported",
    "segpipe.models.sources.torchfile",
    "segpipe.models.sources.safetensors",
    "segpipe.models.sources.onnx",
)

_ORDER: list[str] = []
_LOADED = False


def register_source(source: ModelSource) -> ModelSource:
    """Adds ``source`` to :data:`SOURCES` (a duplicate name raises ``ValueError``)."""
    SOURCES.add(source.name, source)
    _ORDER.append(source.name)
    return source


def _load_sources() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in BUILTIN_SOURCES:
            importlib.import_module(module)


def source_names() -> list[str]:
    """Every source's name, in detection order (built-in ones first)."""
    _load_sources()
    return [*_ORDER, *(n for n in SOURCES.names() if n not in _ORDER)]


def get_source(name: str) -> ModelSource:
    """The source registered as ``name`` (``UnknownNameError`` lists the known ones)."""
    _load_sources()
    return SOURCES.get(name)


def detect_source(path: str | Path) -> ModelSource:
    """The source that reads ``path``, from its content.

    Raises:
        CheckpointError: one line saying what the path is (when it is a form segpipe recognises but
            does not read: Keras, TensorFlow, TFLite, a pickle of objects ...) and which forms segpipe
            reads.
    """
    p = Path(path)
    pr = probe(p)
    for name in source_names():
        src = SOURCES.get(name)
        if src.detect(pr):
            return src
    raise refusal(pr)


#: One line naming the forms segpipe reads, for every refusal.
WANTED = ("segpipe reads a segpipe checkpoint, a state dict (torch.save or .safetensors, with --arch), "
          "TorchScript, a torch.export .pt2, ONNX, or a Hugging Face / segmentation_models_pytorch folder")


def refusal(pr: Probe) -> CheckpointError:
    """The one-line error for a path no source reads, naming what it is where that can be told."""
    what = foreign_form(pr)
    if pr.is_dir:
        msg = what or ("a folder without a model segpipe knows (a Hugging Face or segmentation_models_pytorch "
                       "folder has a config.json)")
    else:
        msg = what or "not a model file segpipe knows"
    return CheckpointError(msg, path=pr.path, hint=WANTED)


def foreign_form(pr: Probe) -> str | None:
    """What a path is when it is a model form segpipe recognises but does not read, else None."""
    if pr.is_dir:
        if "saved_model.pb" in pr.files or "saved_model.pbtxt" in pr.files:
            return "a TensorFlow SavedModel folder; convert it to ONNX (e.g. python -m tf2onnx.convert)"
        onnx = [f.lower() for f in pr.files if f.lower().endswith(".onnx")]
        if "sam_onnx.json" in pr.files or (any("encoder" in f for f in onnx) and any("decoder" in f for f in onnx)):
            return ("an ONNX encoder/decoder pair (SAM): it turns boxes into masks; pass the boxes with "
                    "--prompts BOXES")
        cfg = pr.config
        if cfg is not None and "model_type" not in cfg and "_model_class" not in cfg:
            return "a folder whose config.json names no model_type (Hugging Face) or _model_class (smp)"
        return None
    head = pr.head
    if pr.path.name == "config.json" and head.lstrip().startswith(b"{"):
        return "a config.json; pass the folder that holds it and the weights (Hugging Face, smp)"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras / TensorFlow .h5 model); convert it to ONNX (e.g. python -m tf2onnx.convert)"
    if head[4:8] == b"TFL3":
        return "a TensorFlow Lite model; convert the original model to ONNX"
    if head.startswith(b"GGUF"):
        return "a GGUF file (a llama.cpp language model), not a segmentation model"
    if pr.zip_names is not None:
        if any(n.endswith("saved_model.pb") for n in pr.zip_names):
            return "a zip of a TensorFlow SavedModel; convert it to ONNX (e.g. python -m tf2onnx.convert)"
        if "config.json" in pr.zip_names and any(n.endswith(".weights.h5") for n in pr.zip_names):
            return "a Keras 3 .keras model; convert it to ONNX (e.g. python -m tf2onnx.convert)"
        if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in pr.zip_names):
            return "a zip archive without torch records (neither torch.save nor TorchScript)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return None  # a pickle: the torch source reads it (weights only) and says what it holds
    if pr.size == 0:
        return "an empty file"
    return None


def safetensors_header(head: bytes, size: int) -> bool:
    """Whether ``head`` opens a safetensors file: a little-endian u64 header length, then ``{``."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def generic_categories(n: int) -> list[dict[str, Any]]:
    """``class_0 .. class_{n-1}``: the categories of a model that names none (``--classes`` names them)."""
    return [{"index": i, "id": i, "name": f"class_{i}", "color": None, "isthing": True} for i in range(n)]


def names_categories(names: list[str]) -> list[dict[str, Any]]:
    """Categories from class names in class order."""
    return [{"index": i, "id": i, "name": str(n), "color": None, "isthing": True} for i, n in enumerate(names)]


def class_names(value: Any) -> list[str] | None:
    """Class names from metadata: a list, or a mapping ``{index: name}`` with indices 0..n-1; else None."""
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return [v.strip() for v in value]
    if isinstance(value, dict) and value:
        try:
            by_index = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        if sorted(by_index) == list(range(len(by_index))) and all(isinstance(v, str) for v in by_index.values()):
            return [by_index[i] for i in range(len(by_index))]
    return None


def build_meta(arch: str, task: str, num_classes: int, *, path: Path, extra: dict[str, Any] | None = None,
               tile: list[int] | None = None) -> Any:
    """A validated :class:`~segpipe.models.checkpoint.CheckpointMeta` for a model of another form.

    Args:
        arch: ``<source>/<name>`` (the ``/`` says no builder exists: see
            :func:`segpipe.models.registry.arch_dims`).
        task: Its task.
        num_classes: Its class count.
        path: The model, named in errors.
        extra: Fields the model's own metadata gives (any of ``CheckpointMeta``'s, and ``classes``: names
            in class order); they win over the defaults.
        tile: The tile size when the model says none (``[512, 512]`` otherwise).

    Raises:
        CheckpointError: a field of ``extra`` is invalid (one line naming it).
    """
    extra = dict(extra or {})
    names = class_names(extra.pop("classes", None))
    d: dict[str, Any] = {"arch": arch, "task": task, "num_classes": num_classes,
                         "categories": names_categories(names) if names else generic_categories(num_classes),
                         "tile_size": tile or [512, 512]}
    known = set(CheckpointMeta.__dataclass_fields__) - {"arch"}
    d.update({k: v for k, v in extra.items() if k in known})
    meta = CheckpointMeta.from_dict(d, path=path)
    if meta.task != "landmarks" and len(meta.categories) != meta.num_classes:
        raise CheckpointError(f"its metadata names {len(meta.categories)} classes but the model has "
                              f"{meta.num_classes}", path=path, hint="pass --classes with one name per class")
    return meta
