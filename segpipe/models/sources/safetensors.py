"""``.safetensors`` files: a segpipe checkpoint (meta in the header) or a plain state dict (``--arch``).

Detected by the header (a little-endian length, then a JSON object), whatever the file's name. No
pickle is involved: the format holds tensors and string metadata only.
"""

from __future__ import annotations

from segpipe.models.sources.base import (
    ModelSource,
    Probe,
    register_source,
    safetensors_header,
)
from segpipe.models.sources.torchfile import load_checkpoint_model, read_checkpoint_meta


def detect(pr: Probe) -> bool:
    """A safetensors header."""
    return not pr.is_dir and pr.zip_names is None and safetensors_header(pr.head, pr.size)


SOURCE = register_source(ModelSource(
    "safetensors", "state dicts and segpipe checkpoints in .safetensors files",
    detect, read_checkpoint_meta, load_checkpoint_model,
))
