"""Pascal VOC: ``SegmentationClass``/``SegmentationObject`` PNGs, ``Annotations`` XML, ``ImageSets``."""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.formats.registry import register_format
from segpipe.formats.voc.reader import VocReader, detect_voc, materialize_voc
from segpipe.formats.voc.validate import validate_voc
from segpipe.formats.voc.writer import VocWriter

__all__ = ["SPEC", "VocReader", "VocWriter", "detect_voc", "materialize_voc", "validate_voc"]

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
