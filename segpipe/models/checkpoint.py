"""Self-describing, safe checkpoints.

A checkpoint is a plain dict saved with ``torch.save``::

    {"format": "segpipe.checkpoint", "version": 1,
     "meta": {...CheckpointMeta...},            # str / numbers / lists / dicts only
     "state_dict": {name: tensor},
     "optimizer": {...} | None,                 # torch optimizer state (tensors, numbers)
     "train_state": {...} | None}               # epoch, best metric, RNG state for --resume

and read back with ``torch.load(weights_only=True)``: a pickle that references anything other than
tensors and builtin containers is refused with :class:`~segpipe.errors.CheckpointError` before any of
its code can run. ``.safetensors`` files (told apart by their header, whatever their name) hold the
meta as JSON in the header's ``__metadata__["segpipe"]``.

A plain ``state_dict`` (from torchvision, smp, another trainer) is accepted together with an
architecture name (``--arch``): its keys are matched to the architecture's whatever wrapper prefixes
either side has (``module.`` from DDP, ``model.`` from Lightning, ``_orig_mod.`` from torch.compile,
``net.`` from segpipe's own wrappers; see :func:`align_state`), trainer containers
(``{"state_dict": ...}``) are unwrapped, and ``num_classes`` is inferred from the class-dependent
tensors' shapes (:func:`infer_num_classes`) unless given.
"""

from __future__ import annotations

import errno
import json
import math
import pickle
import shutil
import struct
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe import __version__
from segpipe.errors import CheckpointError, UnknownNameError
from segpipe.models.registry import BUILTIN_DIMS, TASKS, build_model, get_model_spec
from segpipe.storage.atomic import atomic_open, write_bytes_atomic

FORMAT = "segpipe.checkpoint"
VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class CheckpointMeta:
    """Everything a predictor needs besides the weights.

    Attributes:
        arch: Registered architecture name.
        task: ``semantic`` / ``instance`` / ``panoptic`` / ``landmarks``.
        num_classes: As the builder takes it (see :mod:`segpipe.models.registry`).
        categories: One dict per model class index: ``{"index", "id", "name", "color": [r, g, b],
            "isthing"}`` (``id`` is the dataset's category id; ``index`` the model's channel / label).
        mean: Per-channel normalisation mean, on inputs scaled to [0, 1].
        std: Per-channel normalisation std.
        tile_size: Recommended ``[h, w]`` for tiled inference.
        tile_overlap: Recommended overlap as a fraction of the tile (0.25 = a quarter).
        model_kwargs: Extra builder options the weights were trained with.
        keypoints: Keypoint names (landmarks).
        provenance: How the weights were made: ``dataset``, ``epochs``, ``metrics``, ``segpipe_version``,
            ``created`` (ISO time), ``seed`` ...
    """

    arch: str
    task: str
    num_classes: int
    categories: list[dict[str, Any]] = field(default_factory=list)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    tile_size: list[int] = field(default_factory=lambda: [512, 512])
    tile_overlap: float = 0.25
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    keypoints: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-compatible dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, path: str | Path | None = None) -> CheckpointMeta:
        """Validates and builds the meta from a dict read from a checkpoint.

        Args:
            d: The checkpoint's ``meta`` dict.
            path: The checkpoint file, named in every error.

        Raises:
            CheckpointError: a required field is missing or has the wrong type; the categories are
                none, repeat an id or hold an id that no label map can store; the normalisation is not
                three finite values with ``std > 0`` (see :func:`_check_categories` and :func:`_check_normalisation`);
                the task is unknown, names or model indices repeat, an index is outside ``0..num_classes-1``
                (:func:`_check_task_and_indices`); ``tile_overlap`` is not a fraction in [0, 1).
        """
        if not isinstance(d, dict):
            raise CheckpointError("checkpoint meta is not a dict", path=path, where="meta")
        _check_categories(d.get("categories"), path)
        try:
            meta = cls(
                arch=str(d["arch"]),
                task=str(d["task"]),
                num_classes=int(d["num_classes"]),
                categories=[dict(c) for c in d.get("categories", [])],
                mean=[float(v) for v in d.get("mean", IMAGENET_MEAN)],
                std=[float(v) for v in d.get("std", IMAGENET_STD)],
                tile_size=[int(v) for v in d.get("tile_size", [512, 512])],
                tile_overlap=float(d.get("tile_overlap", 0.25)),
                model_kwargs=dict(d.get("model_kwargs", {})),
                keypoints=[str(k) for k in d.get("keypoints", [])],
                provenance=dict(d.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint meta is invalid: {type(e).__name__}: {e}", path=path) from None
        _check_normalisation(meta, path)
        _check_task_and_indices(meta, path)
        _check_arch(meta.arch, path, "meta.arch")
        if len(meta.tile_size) not in (2, 3):
            raise CheckpointError("needs 2 values (3 for 3-D models)", path=path, where="meta.tile_size")
        if not (math.isfinite(meta.tile_overlap) and 0.0 <= meta.tile_overlap < 1.0):
            # A fraction of the tile; 1.5 once meant "1 pixel" silently (recorded as overlap 1.5).
            raise CheckpointError(f"{meta.tile_overlap} is not a fraction of the tile in [0, 1), e.g. 0.25",
                                  path=path, where="meta.tile_overlap")
        return meta

    @classmethod
    def for_arch(cls, arch: str, num_classes: int, **kw: Any) -> CheckpointMeta:
        """Defaults for ``arch`` (task and tile size from the registry; generic category names)."""
        spec = get_model_spec(arch)
        kw.setdefault(
            "categories",
            [{"index": i, "id": i, "name": f"class_{i}", "color": None, "isthing": True} for i in range(num_classes)],
        )
        kw.setdefault("tile_size", ([spec.default_depth] if spec.dims == 3 else []) + list(spec.default_input))
        return cls(arch=arch, task=spec.task, num_classes=num_classes, **kw)


#: Largest category id a label map can store: the store's labels are uint8 up to id 254 and uint16
#: above, and the dtype's maximum (255 / 65535) is void (nodata).
MAX_CATEGORY_ID = 65534
#: Input channels of every architecture (RGB); ``mean`` and ``std`` hold one value per channel.
INPUT_CHANNELS = 3


def _check_categories(cats: Any, path: str | Path | None) -> None:
    """Refuses categories that would store wrong labels (a cast wraps -7 to 249, 70000 to 4464).

    Each category's id (its ``index`` or position when it has no ``id``) must be an integer in
    ``0..MAX_CATEGORY_ID``, unique, and there must be at least one category.

    Raises:
        CheckpointError: naming the file and the field, e.g. ``meta.categories[2].id``.
    """
    if cats is None or (isinstance(cats, list) and not cats):
        raise CheckpointError("the checkpoint has no categories; a model needs at least one",
                              path=path, where="meta.categories")
    if not isinstance(cats, list):
        raise CheckpointError(f"must be a list of categories, got {type(cats).__name__}",
                              path=path, where="meta.categories")
    seen: dict[int, int] = {}
    for i, c in enumerate(cats):
        where = f"meta.categories[{i}]"
        if not isinstance(c, dict):
            raise CheckpointError(f"must be a mapping with an id, got {type(c).__name__}", path=path, where=where)
        key = "id" if "id" in c else "index"
        value = c.get(key, i)
        where = f"{where}.{key}" if key in c else where
        if type(value) is not int:  # bool is an int subclass, 3.0 and "3" are no ids
            raise CheckpointError(f"{value!r} is not an integer id", path=path, where=where)
        if not 0 <= value <= MAX_CATEGORY_ID:
            raise CheckpointError(
                f"{value} does not fit the uint8/uint16 label dtype (ids 0..{MAX_CATEGORY_ID}; 65535 is void)",
                path=path, where=where,
            )
        if value in seen:
            raise CheckpointError(f"{value} repeats the id of meta.categories[{seen[value]}]", path=path, where=where)
        seen[value] = i


def _check_arch(arch: str, path: str | Path | None, where: str) -> None:
    """Refuses an architecture no builder is registered for, naming where it comes from.

    Args:
        arch: The name.
        path: The checkpoint file (None when the name comes from an option).
        where: ``meta.arch`` of the file, or the option (``--arch``).

    Raises:
        CheckpointError: An unknown name, with the known ones.
    """
    if arch in BUILTIN_DIMS or "/" in arch:
        return  # a built-in, known without torch (the driver reads meta torch-free); or a model of its own file
    try:
        get_model_spec(arch)
    except UnknownNameError as e:
        raise CheckpointError(e.message, path=path, where=where) from None


def _check_task_and_indices(meta: CheckpointMeta, path: str | Path | None) -> None:
    """Refuses a task no predictor knows, repeated category names, and bad model indices.

    Each category's ``index`` (its model channel / label; its position when absent) must be an integer,
    unique, and, for semantic, instance and panoptic models, below ``num_classes`` (a landmark model's
    ``num_classes`` counts keypoints, not categories). An unknown task once failed every image at
    predict time (exit 1) instead of the load (exit 2).

    Raises:
        CheckpointError: naming the file and the field, e.g. ``meta.task`` or ``meta.categories[3].index``.
    """
    if meta.task not in TASKS:
        raise CheckpointError(f"unknown task {meta.task!r}; known: {', '.join(TASKS)}", path=path, where="meta.task")
    if meta.num_classes < 1:
        raise CheckpointError(f"{meta.num_classes} is not a class count >= 1", path=path, where="meta.num_classes")
    names: dict[str, int] = {}
    indices: dict[int, int] = {}
    for i, c in enumerate(meta.categories):
        where = f"meta.categories[{i}]"
        if "name" in c:
            name = c["name"]
            if not isinstance(name, str) or not name.strip():
                raise CheckpointError(f"{name!r} is not a category name", path=path, where=f"{where}.name")
            if name in names:
                raise CheckpointError(f"{name!r} repeats the name of meta.categories[{names[name]}]",
                                      path=path, where=f"{where}.name")
            names[name] = i
        index = c.get("index", i)
        if type(index) is not int:
            raise CheckpointError(f"{index!r} is not an integer index", path=path, where=f"{where}.index")
        if meta.task != "landmarks" and not 0 <= index < meta.num_classes:
            raise CheckpointError(f"{index} is outside the model's classes 0..{meta.num_classes - 1} (num_classes "
                                  f"{meta.num_classes})", path=path, where=f"{where}.index")
        if index in indices:
            raise CheckpointError(f"{index} repeats the index of meta.categories[{indices[index]}]",
                                  path=path, where=f"{where}.index")
        indices[index] = i


def _check_normalisation(meta: CheckpointMeta, path: str | Path | None) -> None:
    """Refuses a normalisation that divides by zero or yields NaN (all-0 / all-1 label maps).

    Raises:
        CheckpointError: ``mean`` or ``std`` is not one finite value per input channel, or a ``std``
            is not > 0.
    """
    for name in ("mean", "std"):
        values = getattr(meta, name)
        if len(values) != INPUT_CHANNELS:
            raise CheckpointError(f"needs {INPUT_CHANNELS} values (one per input channel), got {len(values)}",
                                  path=path, where=f"meta.{name}")
        for i, v in enumerate(values):
            if not math.isfinite(v) or (name == "std" and v <= 0):
                need = "a finite number > 0" if name == "std" else "a finite number"
                raise CheckpointError(f"{v} is not {need}", path=path, where=f"meta.{name}[{i}]")


@dataclass
class Checkpoint:
    """A loaded checkpoint: meta, weights and (for resuming) optimizer and training state."""

    meta: CheckpointMeta
    state_dict: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    train_state: dict[str, Any] | None = None


def provenance(**kw: Any) -> dict[str, Any]:
    """A provenance dict with the segpipe version and the current UTC time filled in."""
    out: dict[str, Any] = {
        "segpipe_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.update(kw)
    return out


def save_checkpoint(
    path: str | Path,
    model: Any,
    meta: CheckpointMeta,
    *,
    optimizer: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Writes a checkpoint atomically.

    Args:
        path: ``*.ckpt`` / ``*.pt`` (torch) or ``*.safetensors`` (no optimizer state).
        model: An ``nn.Module`` or a state dict.
        meta: Its metadata.
        optimizer: ``optimizer.state_dict()``, for resuming.
        train_state: Epoch, best metric, RNG states ... (tensors, numbers, str, lists, dicts).
    """
    import torch  # lazy: torch takes seconds to import; reading a checkpoint's meta must not


    path = Path(path)
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta_d = _plain(meta.to_dict(), "meta")
    if path.suffix == ".safetensors":
        from safetensors.torch import save  # lazy: only .safetensors outputs need it

        write_bytes_atomic(path, save(state, metadata={"segpipe": json.dumps(meta_d)}))
        return path
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta_d,
        "state_dict": state,
        "optimizer": optimizer,
        "train_state": train_state,
    }
    with atomic_open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            raise _write_failure(e, path) from None
    return path


def _write_failure(exc: RuntimeError, path: Path) -> BaseException:
    """The error to raise for a RuntimeError of ``torch.save``: ``OSError(ENOSPC)`` naming ``path`` on a full disk.

    torch's zip writer reports a failed write as RuntimeError (``[enforce fail at inline_container.cc]
    ... unexpected pos``, ``PytorchStreamWriter failed writing file``), not OSError; on a full disk it is
    the machine's failure (the CLI's one line then says what was kept). Called while the partial file
    still fills the disk; any other RuntimeError is returned as is.
    """
    text = str(exc)
    if "inline_container" not in text and "PytorchStreamWriter" not in text:
        return exc
    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    return OSError(errno.ENOSPC, "No space left on device", str(path)) if full else exc


def load_checkpoint(path: str | Path, *, arch: str | None = None, num_classes: int | None = None) -> Checkpoint:
    """Reads a checkpoint without executing anything from it.

    Args:
        path: A segpipe checkpoint, a ``.safetensors`` file, or a plain state dict.
        arch: Architecture of a plain state dict (ignored for segpipe checkpoints).
        num_classes: Classes of a plain state dict; inferred from the tensor shapes when omitted.

    Raises:
        CheckpointError: the file is missing, corrupt, unsafe (its pickle references other objects),
            or a plain state dict comes without ``arch``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path=path)
    if is_safetensors(path):
        return _load_safetensors(path, arch, num_classes)
    import torch  # lazy: torch takes seconds to import; reading a checkpoint's meta must not

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(
            "refused: a pickle of Python objects (e.g. a whole model saved with torch.save(model)), not tensors "
            "and plain containers" + (f" ({first})" if first else "") + "; nothing from it was executed",
            path=path,
            hint="save model.state_dict() and pass --arch, or export it with torch.jit.save, torch.export.save "
                 "or torch.onnx.export",
        ) from None
    except Exception as e:  # corrupt zip, truncated file, wrong format
        raise CheckpointError(
            f"cannot read checkpoint: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", path=path
        ) from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("version", 0)) > VERSION:
            raise CheckpointError(f"checkpoint version {obj.get('version')} is newer than this segpipe", path=path)
        _check_nesting(obj.get("meta"), path)
        meta = CheckpointMeta.from_dict(obj.get("meta", {}), path=path)
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError("checkpoint has no state_dict", path=path)
        return Checkpoint(meta, state, obj.get("optimizer"), obj.get("train_state"))
    return _plain_state(obj, path, arch, num_classes)


def read_meta(path: str | Path, *, arch: str | None = None, num_classes: int | None = None) -> CheckpointMeta:
    """The meta of a checkpoint, read without importing torch when the file allows it.

    The driver of a run needs only the meta, and importing torch to read it cost 2 s of a 16 s
    pre-labeling run on 2 cores (bench/RESULTS.md). A segpipe checkpoint in torch's zip format is
    read as torch reads it (the archive named by its first record, its ``version`` record, its
    ``data.pkl``) with an unpickler that knows dicts and torch's tensor records only: nothing from
    the file runs, no tensor is built, and every tensor record the pickle names must be in the zip
    with at least its bytes. A ``.safetensors`` file's segpipe meta is read from its JSON header. Anything
    else takes :func:`load_checkpoint`'s path, which gives the same result or the same one-line error: a
    plain state dict, a legacy torch file, a pickle that references other objects, a meta that holds
    tensors, a damaged file.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        meta = _safetensors_meta(path)
        if meta is not None:
            return meta
    elif path.is_file():
        obj = _read_pickle_skeleton(path)
        if isinstance(obj, dict):
            _check_nesting(obj.get("meta"), path)
        if (isinstance(obj, dict) and obj.get("format") == FORMAT and type(obj.get("version", 0)) is int
                and obj.get("version", 0) <= VERSION and isinstance(obj.get("state_dict"), dict)
                and isinstance(obj.get("meta"), dict) and not _holds_tensor(obj["meta"])):
            return CheckpointMeta.from_dict(obj["meta"], path=path)
    return load_checkpoint(path, arch=arch, num_classes=num_classes).meta


#: Deepest nesting of dicts and lists accepted in a checkpoint's meta (a real one nests 3 levels). The
#: meta is hashed, pickled to workers and written as JSON, all recursively: 20000 levels crashed them.
MAX_META_DEPTH = 32


def _check_nesting(meta: Any, path: str | Path) -> None:
    """Refuses a meta nested deeper than :data:`MAX_META_DEPTH`, without recursing.

    Raises:
        CheckpointError: naming the file and the field where the limit is passed.
    """
    stack: list[tuple[Any, str, int]] = [(meta, "meta", 1)]
    while stack:
        obj, where, depth = stack.pop()
        if isinstance(obj, dict):
            items: list[tuple[str, Any]] = [(f"{where}.{k}", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
        else:
            continue
        if depth > MAX_META_DEPTH:
            shown = where if len(where) <= 80 else where[:60] + "..." + where[-16:]
            raise CheckpointError(f"nested deeper than {MAX_META_DEPTH} levels (refused)", path=path, where=shown)
        stack.extend((v, w, depth + 1) for w, v in items)


class _NotSkeleton(Exception):
    """The file needs more than :class:`_SkeletonUnpickler` knows: torch reads it instead."""


class _TensorRecord:
    """Stands for a tensor of the checkpoint: the meta needs none, and must hold none."""


_TENSOR = _TensorRecord()

#: torch's storage classes as its zip format pickles them, with their element sizes in bytes.
_STORAGES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}
#: A ``data.pkl`` larger than this is left to torch (a state dict's skeleton takes kilobytes).
_MAX_PICKLE_BYTES = 64 << 20


class _StorageType:
    """Stands for one of torch's storage classes in a pickle (see :data:`_STORAGES`)."""

    def __init__(self, name: str) -> None:
        self.itemsize = _STORAGES[name]

    def __call__(self, *args: Any, **kwargs: Any) -> _TensorRecord:
        return _TENSOR


def _rebuild_stand_in(*args: Any, **kwargs: Any) -> _TensorRecord:
    """Takes the place of torch's ``_rebuild_tensor_v2`` and ``_rebuild_parameter``."""
    return _TENSOR


class _SkeletonUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint's containers; every tensor becomes :data:`_TENSOR`.

    Args:
        file: The ``data.pkl`` record.
        records: ``{name: size}`` of the zip's records, for the tensor records the pickle names.
        prefix: The archive's name (the folder of its records).
    """

    def __init__(self, file: Any, records: dict[str, int], prefix: str) -> None:
        super().__init__(file)
        self.records, self.prefix = records, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return _rebuild_stand_in
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise _NotSkeleton(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _TensorRecord:
        # torch's zip format: ("storage", storage class, record key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and type(pid[4]) is int):
            raise _NotSkeleton("persistent id")
        size = self.records.get(f"{self.prefix}/data/{pid[2]}")
        if size is None or size < pid[4] * pid[1].itemsize:
            raise _NotSkeleton(f"tensor record {pid[2]}")
        return _TENSOR


def _holds_tensor(obj: Any) -> bool:
    """Whether a tensor stands anywhere in ``obj`` (dicts and lists, recursively)."""
    if obj is _TENSOR:
        return True
    if isinstance(obj, dict):
        return any(_holds_tensor(k) or _holds_tensor(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return any(_holds_tensor(v) for v in obj)
    return False


def _read_pickle_skeleton(path: Path) -> Any:
    """The object of a torch zip checkpoint with its tensors as :data:`_TENSOR`; None when torch must read it."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":  # torch takes anything else for its legacy format
                return None
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            records = {i.filename: i.file_size for i in infos}
            if not infos or len(records) != len(infos):  # duplicate names: which one would torch read?
                return None
            prefix = infos[0].filename.split("/", 1)[0]  # torch names the archive after its first record
            if f"{prefix}/version" not in records and f"{prefix}/.data/version" not in records:
                return None
            pkl = zf.getinfo(f"{prefix}/data.pkl")
            if pkl.compress_type != zipfile.ZIP_STORED or pkl.file_size > _MAX_PICKLE_BYTES:
                return None  # torch writes records stored; anything else is for torch to judge
            with zf.open(pkl) as f:  # zipfile checks this record's CRC as it reads
                return _SkeletonUnpickler(f, records, prefix).load()
    except Exception:  # any doubt (damage, odd records, references): torch's path decides, with its message
        return None


#: Prefixes trainers and wrappers put before every key of a state dict: DDP / DataParallel (``module.``),
#: Lightning and many trainers (``model.``), segpipe's wrappers (``net.``), torch.compile
#: (``_orig_mod.``), EMA copies (``ema.``, ``model_ema.``), others (``network.``).
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "model.", "net.", "_orig_mod.", "network.", "ema.", "model_ema.")
#: Keys under which trainers store the state dict in a bigger dict, tried in this order.
STATE_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module", "net", "weights")


def canonical_key(key: str) -> str:
    """``key`` without any leading :data:`WRAPPER_PREFIXES` (``module.net.backbone.x`` → ``backbone.x``)."""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if key.startswith(p) and len(key) > len(p):
                key, changed = key[len(p):], True
    return key


def align_state(state: dict[str, Any], own_keys: Any) -> dict[str, Any]:
    """``state`` with its keys renamed to the architecture's own where they differ by wrapper prefixes.

    A key matches the architecture's key that is the same without :data:`WRAPPER_PREFIXES` on either
    side (a torchvision ``backbone.x`` is segpipe's ``net.backbone.x``; DDP's ``module.conv.weight`` is
    ``conv.weight``). Exact matches win; keys that match nothing, or whose match another key took,
    stay as they are (loading then names them).

    Args:
        state: The file's ``{key: tensor}``.
        own_keys: The architecture's state-dict keys.
    """
    own = list(own_keys)
    own_set = set(own)
    if all(k in own_set for k in state):
        return state
    by_canon: dict[str, str | None] = {}
    for k in own:
        c = canonical_key(k)
        by_canon[c] = None if c in by_canon else k  # two own keys alike: no rename to either
    out: dict[str, Any] = {k: v for k, v in state.items() if k in own_set}
    for k, v in state.items():
        if k in own_set:
            continue
        target = by_canon.get(canonical_key(k))
        out[target if target is not None and target not in out else k] = v
    return out


def unwrap_state(obj: Any) -> Any:
    """The state dict inside a trainer's container (``{"state_dict": {...}, "epoch": 3}``), else ``obj``."""
    for _ in range(3):  # Lightning in a dict in a dict: a few levels at most
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in STATE_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            break
        obj = inner
    return obj


def _plain_state(obj: Any, path: Path, arch: str | None, num_classes: int | None) -> Checkpoint:
    import torch  # lazy: torch costs seconds to import; the driver reads a checkpoint's meta without it

    obj = unwrap_state(obj)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = (f"a dict of {len(obj)} entries, not all tensors" if isinstance(obj, dict) and obj
                else "an empty dict" if isinstance(obj, dict) else f"a pickled {type(obj).__name__}")
        raise CheckpointError(f"holds {what}: neither a segpipe checkpoint nor a state dict of tensors", path=path,
                              hint="save model.state_dict() and pass --arch")
    if arch is None:
        some = ", ".join(list(obj)[:2])
        raise CheckpointError(f"a plain state dict of {len(obj)} tensors (keys like {some}) does not say its "
                              "architecture", path=path,
                              hint="pass --arch NAME (see `segpipe models`) or --arch package.module:function")
    _check_arch(arch, None, "--arch")
    kwargs = _state_kwargs(arch, obj)
    state = align_state(obj, _own_keys(arch, kwargs))
    n = num_classes if num_classes is not None else infer_num_classes(arch, state, path=path, **kwargs)
    return Checkpoint(CheckpointMeta.for_arch(arch, n, model_kwargs=kwargs), state)


def _own_keys(arch: str, kwargs: dict[str, Any]) -> list[str]:
    """The state-dict keys of ``arch`` (built on the meta device for 2 classes)."""
    import torch  # lazy: torch costs seconds to import; the driver reads a checkpoint's meta without it

    from segpipe.models.registry import build_model  # lazy: with torch (the architectures import it)

    with torch.device("meta"):
        return list(build_model(arch, 2, **kwargs).state_dict())


def _state_kwargs(arch: str, state: dict[str, Any]) -> dict[str, Any]:
    """Builder options the weights show: torchvision's FCN / DeepLabV3 trained with an auxiliary head."""
    import torch  # lazy: torch costs seconds to import; the driver reads a checkpoint's meta without it

    from segpipe.models.registry import build_model  # lazy: with torch (the architectures import it)

    if not any(canonical_key(k).startswith("aux_classifier.") for k in state):
        return {}
    try:
        with torch.device("meta"):
            build_model(arch, 2, aux_loss=True)
    except TypeError:  # the architecture has no auxiliary head: the keys will be named as unexpected
        return {}
    return {"aux_loss": True}


#: Largest safetensors header read (the format's own limit is 100 MB).
_MAX_SAFETENSORS_HEADER = 100_000_000


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file: a little-endian u64 header length, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(size - 8, _MAX_SAFETENSORS_HEADER) and head[8:9] == b"{"


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes and ``__metadata__``).

    Raises:
        CheckpointError: the header is not a JSON object.
    """
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(min(n, _MAX_SAFETENSORS_HEADER))
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError("the safetensors header is not valid JSON", path=path) from None
    if not isinstance(header, dict):
        raise CheckpointError("the safetensors header is not a JSON object", path=path)
    return header


def _meta_from_json(text: Any, path: Path) -> CheckpointMeta:
    """A segpipe meta stored as JSON text (a safetensors header's ``__metadata__["segpipe"]``)."""
    if not isinstance(text, str):
        raise CheckpointError("segpipe metadata is not a JSON string", path=path, where="__metadata__.segpipe")
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        raise CheckpointError("safetensors metadata is not valid JSON", path=path) from None
    except RecursionError:  # json recurses per nesting level
        raise CheckpointError(f"nested deeper than {MAX_META_DEPTH} levels (refused)", path=path,
                              where="meta") from None
    _check_nesting(d, path)
    return CheckpointMeta.from_dict(d, path=path)


def _safetensors_meta(path: Path) -> CheckpointMeta | None:
    """The segpipe meta of a safetensors file, read from its header without torch; None for a plain one."""
    meta = _safetensors_header(path).get("__metadata__") or {}
    if isinstance(meta, dict) and "segpipe" in meta:
        return _meta_from_json(meta["segpipe"], path)
    return None


def _load_safetensors(path: Path, arch: str | None, num_classes: int | None) -> Checkpoint:
    from safetensors import safe_open  # lazy: only safetensors files need it

    meta = _safetensors_meta(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:
        raise CheckpointError(f"cannot read safetensors file: {str(e).splitlines()[0] if str(e) else e}",
                              path=path) from None
    if meta is not None:
        return Checkpoint(meta, state)
    return _plain_state(state, path, arch, num_classes)


def infer_num_classes(arch: str, state: dict[str, Any], *, path: str | Path | None = None, **kw: Any) -> int:
    """Infers ``num_classes`` from a state dict's shapes.

    Builds the architecture for 2 and 3 classes on the meta device; a tensor whose shape changes is a
    class-dependent layer, and its size in ``state`` (linear in the class count) gives the answer.
    Keys are matched whatever their wrapper prefixes (:func:`align_state`).

    Args:
        arch: The architecture.
        state: The weights.
        path: The file, named in the error.
        **kw: Builder options (``aux_loss``).

    Raises:
        CheckpointError: no class-dependent tensor matches.
    """
    import torch  # lazy: torch costs seconds to import; the driver reads a checkpoint's meta without it

    from segpipe.models.registry import build_model  # lazy: with torch (the architectures import it)

    with torch.device("meta"):
        s2 = build_model(arch, 2, **kw).state_dict()
        s3 = build_model(arch, 3, **kw).state_dict()
    state = align_state(state, s2)
    for k, v2 in s2.items():
        v3 = s3.get(k)
        if v3 is None or v2.shape == v3.shape or k not in state or state[k].dim() != v2.dim():
            continue
        for d, (a2, a3) in enumerate(zip(v2.shape, v3.shape, strict=True)):
            if a2 != a3:
                slope = a3 - a2
                n, rem = divmod(int(state[k].shape[d]) - (a2 - 2 * slope), slope)
                if rem == 0 and n >= 1:
                    return n
    raise CheckpointError(f"cannot infer the number of classes of this {arch} state dict: no class-dependent "
                          f"tensor of {arch} is in it", path=path, hint="pass --num-classes N")


def build_from_checkpoint(ckpt: Checkpoint | str | Path, *, strict: bool = True,
                          path: str | Path | None = None) -> Any:
    """Builds the checkpoint's architecture, loads its weights and returns it in eval mode.

    Raises:
        CheckpointError: the weights do not fit the architecture (one line: counts of bad keys).
    """
    if not isinstance(ckpt, Checkpoint):
        path = ckpt if path is None else path
        ckpt = load_checkpoint(ckpt)
    m = ckpt.meta
    model = build_model(m.arch, m.num_classes, **m.model_kwargs)
    own = model.state_dict()
    state = align_state(ckpt.state_dict, own)
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
             if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k, theirs, ours = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(f"weights do not fit {m.arch}: {k} has shape {list(theirs)}, the architecture "
                              f"{list(ours)}{more}", path=path, where="state_dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        raise CheckpointError(f"weights do not fit {m.arch}: {first}", path=path, where="state_dict") from None
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"weights do not fit {m.arch}: {len(missing)} missing (e.g. {', '.join(missing[:2])}), "
            f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})", path=path, where="state_dict"
        )
    return model.eval()


def _plain(obj: Any, where: str) -> Any:
    """Checks that ``obj`` holds only JSON-like values (what ``weights_only`` loading accepts)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in obj.items()}
    try:

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    raise CheckpointError(f"checkpoint meta holds a {type(obj).__name__} at {where}; only plain values are allowed")
