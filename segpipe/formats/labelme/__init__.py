"""LabelMe JSON: ``labelme`` (read and write; images beside their JSON) and ``labelme_embedded`` (write only:
images embedded as base64 ``imageData``).

Reading: a folder (any depth) of LabelMe per-image JSON files or one such file, images named by ``imagePath``
or embedded; see :mod:`~segpipe.formats.labelme.reader`. A LabelMe *XML* folder is refused with one line
(:func:`~segpipe.formats.labelme.layout.detect_labelme`). Writing: see :mod:`~segpipe.formats.labelme.writer`.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.formats.base import FormatSpec
from segpipe.formats.labelme.layout import detect_labelme, is_labelme_xml
from segpipe.formats.labelme.reader import LabelmeReader, materialize_labelme, validate_labelme
from segpipe.formats.labelme.writer import LabelmeEmbeddedWriter, LabelmeWriter
from segpipe.formats.registry import FORMATS, register_format

__all__ = [
    "LABELME",
    "LABELME_EMBEDDED",
    "LabelmeEmbeddedWriter",
    "LabelmeReader",
    "LabelmeWriter",
    "detect_labelme",
    "is_labelme_xml",
    "materialize_labelme",
    "validate_labelme",
]


def _never(path: Path) -> bool:
    """``labelme_embedded`` is only a target: every LabelMe folder is read (and detected) as ``labelme``."""
    return False


LABELME = FormatSpec(
    name="labelme",
    description="LabelMe JSON: one <stem>.json per image beside it (polygons, rectangles, circles, masks; "
    "imageData read when the image file is absent)",
    detect=detect_labelme,
    reader=LabelmeReader,
    materialize=materialize_labelme,
    writer=LabelmeWriter,
    validate=validate_labelme,
    holds=frozenset({"instances", "boxes", "semantic", "overlaps"}),
)
LABELME_EMBEDDED = FormatSpec(
    name="labelme_embedded",
    description="LabelMe JSON with each image embedded as base64 imageData (read back as labelme)",
    detect=_never,
    writer=LabelmeEmbeddedWriter,
    holds=frozenset({"instances", "boxes", "semantic", "overlaps"}),
)

for _spec in (LABELME, LABELME_EMBEDDED):
    if _spec.name not in FORMATS:  # a re-import (importlib.reload in tests) must not raise
        register_format(_spec)
