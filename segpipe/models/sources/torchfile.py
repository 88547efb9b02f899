"""``torch.save`` files: a segpipe checkpoint, or a plain state dict (with ``--arch``).

Detected by content: a torch zip archive (``*/data.pkl`` and no TorchScript code or exported program
in it) or a legacy torch / pickle file. Read with ``torch.load(weights_only=True)`` (the meta of a
segpipe checkpoint without torch, by :func:`segpipe.models.checkpoint.read_meta`): a pickle of Python
objects is refused before anything in it runs. See :mod:`segpipe.models.checkpoint` for how a state
dict is matched to its architecture and its class count inferred.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segpipe.models.checkpoint import build_from_checkpoint, load_checkpoint, read_meta
from segpipe.models.sources.base import LoadedModel, ModelSource, Probe, SourceOptions, register_source

#: The first bytes of a pickle (protocols 2 to 5), torch's legacy format included.
_PICKLE = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def detect(pr: Probe) -> bool:
    """A torch zip archive with a ``data.pkl``, or a pickle."""
    if pr.is_dir:
        return False
    if pr.zip_names is not None:
        return pr.zip_has("data.pkl") and not pr.zip_has("code/") and not pr.zip_has("models/")
    return pr.head[:2] in _PICKLE


def read_checkpoint_meta(path: Path, opts: SourceOptions) -> Any:
    """The meta of a segpipe checkpoint or a plain state dict (with ``--arch``), read without building the model."""
    return read_meta(path, arch=opts.arch, num_classes=opts.num_classes)


def load_checkpoint_model(path: Path, opts: SourceOptions) -> LoadedModel:
    """Builds the model of a segpipe checkpoint or a plain state dict, weights loaded."""
    ck = load_checkpoint(path, arch=opts.arch, num_classes=opts.num_classes)
    return LoadedModel(build_from_checkpoint(ck, path=path), ck.meta)


SOURCE = register_source(ModelSource(
    "torch", "segpipe checkpoints and state dicts saved with torch.save (.ckpt, .pt, .pth)",
    detect, read_checkpoint_meta, load_checkpoint_model,
))
