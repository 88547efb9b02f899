"""CVAT for images 1.1 XML: ``cvat`` (read and write).

Reading: CVAT's export_task and export_project layouts and Datumaro's ``cvat`` export (one XML per subset),
images beside in ``images/``; see :mod:`~segpipe.formats.cvat.layout` and :mod:`~segpipe.formats.cvat.reader`.
Writing: ``annotations.xml`` + ``images/``, masks as CVAT's RLE (exact) or polygons with ``--polygons``; see
:mod:`~segpipe.formats.cvat.writer`. The mask RLE is described in :mod:`~segpipe.formats.cvat.shapes`.
"""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.formats.cvat.layout import detect_cvat
from segpipe.formats.cvat.reader import CvatReader, materialize_cvat, validate_cvat
from segpipe.formats.cvat.writer import CvatWriter
from segpipe.formats.registry import FORMATS, register_format

__all__ = ["CVAT", "CvatReader", "CvatWriter", "detect_cvat", "materialize_cvat", "validate_cvat"]

CVAT = FormatSpec(
    name="cvat",
    description="CVAT for images 1.1 XML: annotations.xml (task or project) + images/ (polygons, masks, boxes, "
    "points, skeletons, attributes, z_order)",
    detect=detect_cvat,
    reader=CvatReader,
    materialize=materialize_cvat,
    writer=CvatWriter,
    validate=validate_cvat,
    holds=frozenset({"instances", "boxes", "keypoints", "semantic", "overlaps"}),
)

if CVAT.name not in FORMATS:  # a re-import (importlib.reload in tests) must not raise
    register_format(CVAT)
