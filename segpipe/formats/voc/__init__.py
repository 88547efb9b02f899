"""Pascal VOC: ``SegmentationClass``/``SegmentationObject`` PNGs, ``Annotations`` XML, ``ImageSets``."""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.formats.registry import register_format
from segpipe.formats.voc.reader import VocReader, detect_voc, materialize_voc

__all__ = ["VocReader", "detect_voc", "materialize_voc"]

try:
    from segpipe.formats.voc.writer import VocWriter
except ImportError:  # pragma: no cover - during development only
    VocWriter = None  # type: ignore[assignment,misc]
try:
    from segpipe.formats.voc.validate import validate_voc
except ImportError:  # pragma: no cover
    validate_voc = None  # type: ignore[assignment]

SPEC = register_format(
    FormatSpec(
        name="voc",
        description="Pascal VOC: SegmentationClass/Object palette PNGs, Annotations XML, ImageSets",
        detect=detect_voc,
        reader=VocReader,
        materialize=materialize_voc,
        writer=VocWriter,
        validate=validate_voc,
        holds=frozenset({"instances", "boxes", "semantic"}),
    )
)
