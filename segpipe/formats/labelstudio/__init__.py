"""Label Studio pre-annotation tasks (``labelstudio``, writer only).

``tasks.json`` with brush (Label Studio RLE), polygon and rectangle regions, plus a matching
``label_config.xml``; see :mod:`segpipe.formats.labelstudio.writer` for the layout and
:mod:`segpipe.formats.labelstudio.brush` for the brush RLE. Importing this package registers the format.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.formats.base import FormatSpec
from segpipe.formats.labelstudio.brush import decode_rle, encode_rle, mask_to_rle, rle_to_mask
from segpipe.formats.labelstudio.writer import LabelStudioWriter, label_config_xml
from segpipe.formats.registry import FORMATS, register_format

__all__ = [
    "LABELSTUDIO",
    "LabelStudioWriter",
    "decode_rle",
    "encode_rle",
    "label_config_xml",
    "mask_to_rle",
    "rle_to_mask",
]


def detect_labelstudio(path: Path) -> bool:
    """Never matches: the format is written, not read."""
    return False


LABELSTUDIO = FormatSpec(
    name="labelstudio",
    description="Label Studio tasks.json (brush RLE / polygon / rectangle predictions) + label_config.xml",
    detect=detect_labelstudio,
    writer=LabelStudioWriter,
    holds=frozenset({"instances", "boxes", "semantic", "scores", "overlaps"}),
)

if LABELSTUDIO.name not in FORMATS:  # re-import (e.g. importlib.reload in tests) must not raise
    register_format(LABELSTUDIO)
