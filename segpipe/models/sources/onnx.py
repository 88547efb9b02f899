"""ONNX models, run by ONNX Runtime (the CPU provider; the CUDA provider on a GPU when installed).

Detected by content: a protobuf ``ModelProto`` (its first field the IR version, then the fields an ONNX
writer puts next), or the ``.onnx`` extension. The graph is run by onnxruntime, never as Python.

A model is run as a semantic model: its first input takes ``(N, 3, H, W)`` normalised float images,
its first output is ``(N, C, H', W')`` logits (resized to the input when ``H', W'`` differ; one channel
is a binary model). Static input sizes are padded to (and are the tile size); a static batch is filled.

**Metadata** (the model's ``metadata_props``, keys read; all optional):

* ``segpipe``: a JSON object with any field of :class:`~segpipe.models.checkpoint.CheckpointMeta`
  (``categories``, ``mean``, ``std``, ``tile_size``, ``tile_overlap`` ...) and ``classes``.
* ``classes`` or ``names``: class names in class order: a JSON list, a JSON object ``{"0": "road"}``,
  or the Python literal Ultralytics writes (``{0: 'person', 1: 'bicycle'}``, read with
  ``ast.literal_eval``, which evaluates literals only).
* ``mean``, ``std``: three numbers (JSON list or comma-separated), on inputs scaled to [0, 1]; values
  above 1 are taken as 0..255 and divided by 255. Without them, ImageNet's.
* ``task``: ``semantic`` (any other is refused).

The class count is the output's channel count when the graph states it, else the metadata's, the
options' (``--num-classes``, ``--classes``), or the channels of one pass of a blank image.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import CheckpointError
from segpipe.models.sources.base import (
    LoadedModel,
    ModelSource,
    Probe,
    SourceOptions,
    build_meta,
    register_source,
)
from segpipe.models.sources.torchscript import class_count, probe_classes, semantic_only

#: Protobuf tags of the ``ModelProto`` fields an ONNX writer puts after ``ir_version`` (fields 2..8, 14).
_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(buf) and shift < 64:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
    raise ValueError("truncated varint")


def looks_like_onnx(head: bytes) -> bool:
    """Whether ``head`` opens an ONNX ``ModelProto``: field 1 (``ir_version``, 1..50), then a known field."""
    if len(head) < 4 or head[0] != 0x08:
        return False
    try:
        version, i = _varint(head, 1)
    except ValueError:
        return False
    return 1 <= version <= 50 and i < len(head) and head[i] in _NEXT_TAGS


def detect(pr: Probe) -> bool:
    """A protobuf ModelProto, or a ``.onnx`` file that is no zip."""
    if pr.is_dir or pr.zip_names is not None:
        return False
    return looks_like_onnx(pr.head) or (pr.path.suffix.lower() == ".onnx" and pr.size > 0)


def make_session(path: str, *, cuda: bool = False, threads: int = 1) -> Any:
    """An ONNX Runtime inference session of ``path`` (the CUDA provider first when asked and available).

    Args:
        path: The ``.onnx`` file.
        cuda: Put the CUDA execution provider first (when onnxruntime offers it).
        threads: Intra-op threads (1: a worker runs several tasks at once, each on one thread).
    """
    import onnxruntime as ort  # lazy: onnxruntime costs 0.4 s to import; only ONNX models need it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # its warnings (unused initialisers ...) are no business of the user's
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


class OnnxRunner:
    """Runs an ONNX graph's first input → first output on torch tensors (a callable, not a module).

    The session for a GPU input is made at its first call (the CUDA provider when onnxruntime offers
    it); a CPU input uses the session given.

    Args:
        path: The ``.onnx`` file.
        cpu_session: The CPU session, when already made.
    """

    def __init__(self, path: str, cpu_session: Any = None) -> None:
        self.path = path
        self.sessions: dict[str, Any] = {"cpu": cpu_session} if cpu_session is not None else {}

    def session(self, device_type: str) -> Any:
        """The session for ``cuda`` or ``cpu`` inputs (made once)."""
        key = "cuda" if device_type == "cuda" else "cpu"
        if key not in self.sessions:
            self.sessions[key] = make_session(self.path, cuda=key == "cuda")
        return self.sessions[key]

    def providers(self, device_type: str = "cpu") -> list[str]:
        """The execution providers of the session for ``device_type`` inputs."""
        return list(self.session(device_type).get_providers())

    def __call__(self, x: Any) -> Any:
        """Args: x: ``(N, 3, H, W)`` float tensor. Returns: the first output, float32, on ``x``'s device."""
        import torch  # lazy: the driver reads ONNX metadata without torch

        sess = self.session(x.device.type)
        name = sess.get_inputs()[0].name
        out = sess.run(None, {name: np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "sessions": {}}  # sessions are made again where the runner is used


def _session(path: Path) -> Any:
    try:
        return make_session(str(path))
    except Exception as e:  # onnxruntime's own message: not ONNX, an unknown op, a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"onnxruntime cannot load it as an ONNX model: {first[:300]}", path=path,
                              hint="export it with torch.onnx.export (opset 17 or newer)") from None


def _literal(text: str) -> Any:
    """JSON, else a Python literal (Ultralytics' ``names``), else the text itself."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text


def _triple(text: str, key: str, path: Path) -> list[float]:
    value = _literal(text)
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    try:
        vals = [float(v) for v in value]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 3:
        raise CheckpointError(f"{text!r} is not three numbers", path=path, where=f"metadata_props.{key}")
    return [v / 255.0 for v in vals] if max(vals) > 1.0 else vals


def metadata(props: dict[str, str], path: Path) -> dict[str, Any]:
    """What the metadata_props say, as ``build_meta`` extra fields (see the module docstring)."""
    extra: dict[str, Any] = {}
    if "segpipe" in props:
        doc = _literal(props["segpipe"])
        if not isinstance(doc, dict):
            raise CheckpointError("is not a JSON object", path=path, where="metadata_props.segpipe")
        extra.update(doc)
    for key in ("classes", "names"):
        if key in props and "classes" not in extra:
            extra["classes"] = _literal(props[key])
            if not isinstance(extra["classes"], (list, dict)):
                raise CheckpointError("is not a list of class names nor a mapping index: name", path=path,
                                      where=f"metadata_props.{key}")
    for key in ("mean", "std"):
        if key in props and key not in extra:
            extra[key] = _triple(props[key], key, path)
    if "task" in props and "task" not in extra:
        extra["task"] = props["task"].strip()
    return extra


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _meta(path: Path, opts: SourceOptions, sess: Any, model: Any) -> Any:
    extra = metadata(dict(sess.get_modelmeta().custom_metadata_map), path)
    semantic_only("ONNX", path, opts.task if opts.task is not None else extra.get("task"))
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if not inputs or not outputs:
        raise CheckpointError("the ONNX graph has no input or no output", path=path)
    ishape = [_static(d) for d in inputs[0].shape]
    oshape = [_static(d) for d in outputs[0].shape]
    if len(ishape) != 4 or (ishape[1] is not None and ishape[1] != 3):
        raise CheckpointError(f"its first input {inputs[0].name!r} has shape {inputs[0].shape}; segpipe feeds "
                              "(N, 3, H, W) images", path=path)
    fixed = [ishape[2], ishape[3]] if ishape[2] and ishape[3] else None

    if len(oshape) == 4 and oshape[1]:  # the graph says it: one channel is binary (background, foreground)
        n = max(2, int(oshape[1]))
    else:
        n = class_count(path, opts, extra, lambda: probe_classes(model(), path, side=fixed[0] if fixed else 128))
    return build_meta(f"onnx/{path.stem}", "semantic", n, path=path, extra=extra, tile=fixed)


def _adapted(path: Path, sess: Any) -> Any:
    from segpipe.models.adapters import SemanticAdapter  # lazy: torch costs seconds to import

    ishape = [_static(d) for d in sess.get_inputs()[0].shape]
    fixed = (ishape[2], ishape[3]) if len(ishape) == 4 and ishape[2] and ishape[3] else None
    batch = ishape[0] if ishape else None
    return SemanticAdapter(OnnxRunner(str(path), sess), fixed=fixed, fixed_batch=batch).eval()


def _read_meta(path: Path, opts: SourceOptions) -> Any:
    sess = _session(path)
    return _meta(path, opts, sess, lambda: _adapted(path, sess))


def _load(path: Path, opts: SourceOptions) -> LoadedModel:
    sess = _session(path)
    model = _adapted(path, sess)
    return LoadedModel(model, _meta(path, opts, sess, lambda: model))


SOURCE = register_source(ModelSource(
    "onnx", "ONNX models (.onnx), run by onnxruntime", detect, _read_meta, _load,
))
