"""Label Studio: tasks written for import (``labelstudio``), and its exports read back.

Writing: ``tasks.json`` with brush (Label Studio RLE), polygon and rectangle regions, plus a matching
``label_config.xml``; see :mod:`segpipe.formats.labelstudio.writer` for the layout and
:mod:`segpipe.formats.labelstudio.brush` for the brush RLE.

Reading (:mod:`segpipe.formats.labelstudio.reader`): the JSON export (``labelstudio``; segpipe's own
``tasks.json`` too), JSON_MIN (``labelstudio_min``), the BRUSH_TO_PNG and BRUSH_TO_NUMPY folders
(``labelstudio_brush_png``, ``labelstudio_brush_numpy``). Label Studio's COCO exports are read as ``coco``.
Importing this package registers the formats.
"""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.formats.labelstudio.brush import decode_rle, encode_rle, mask_to_rle, rle_to_mask
from segpipe.formats.labelstudio.config import LabelConfig, parse_label_config, read_label_config
from segpipe.formats.labelstudio.reader import (
    LabelStudioBrushNumpyReader,
    LabelStudioBrushPngReader,
    LabelStudioMinReader,
    LabelStudioReader,
    detect_labelstudio,
    detect_labelstudio_brush_numpy,
    detect_labelstudio_brush_png,
    detect_labelstudio_min,
    materialize_labelstudio,
    validate_labelstudio,
    validate_labelstudio_brush_numpy,
    validate_labelstudio_brush_png,
    validate_labelstudio_min,
)
from segpipe.formats.labelstudio.writer import LabelStudioWriter, label_config_xml
from segpipe.formats.registry import FORMATS, register_format

__all__ = [
    "LABELSTUDIO",
    "LABELSTUDIO_BRUSH_NUMPY",
    "LABELSTUDIO_BRUSH_PNG",
    "LABELSTUDIO_MIN",
    "LabelConfig",
    "LabelStudioReader",
    "LabelStudioWriter",
    "decode_rle",
    "detect_labelstudio",
    "encode_rle",
    "label_config_xml",
    "mask_to_rle",
    "parse_label_config",
    "read_label_config",
    "rle_to_mask",
]

_READS = frozenset({"instances", "boxes", "keypoints", "scores", "overlaps"})

LABELSTUDIO = FormatSpec(
    name="labelstudio",
    description="Label Studio JSON: tasks with annotations/predictions (brush RLE, polygons, rectangles, "
    "keypoints) + label_config.xml; written as pre-annotations, read from exports",
    detect=detect_labelstudio,
    reader=LabelStudioReader,
    materialize=materialize_labelstudio,
    writer=LabelStudioWriter,
    validate=validate_labelstudio,
    holds=frozenset({"instances", "boxes", "semantic", "scores", "overlaps"}),
)
LABELSTUDIO_MIN = FormatSpec(
    name="labelstudio_min",
    description="Label Studio JSON_MIN export (read only; one record per annotation)",
    detect=detect_labelstudio_min,
    reader=LabelStudioMinReader,
    materialize=materialize_labelstudio,
    validate=validate_labelstudio_min,
    holds=_READS,
)
LABELSTUDIO_BRUSH_PNG = FormatSpec(
    name="labelstudio_brush_png",
    description="Label Studio BRUSH_TO_PNG export: task-<id>-annotation-<id>-by-<user>-<tag>-<label>-<n>.png "
    "(read only)",
    detect=detect_labelstudio_brush_png,
    reader=LabelStudioBrushPngReader,
    materialize=materialize_labelstudio,
    validate=validate_labelstudio_brush_png,
    holds=frozenset({"instances", "overlaps"}),
)
LABELSTUDIO_BRUSH_NUMPY = FormatSpec(
    name="labelstudio_brush_numpy",
    description="Label Studio BRUSH_TO_NUMPY export: task-<id>-annotation-<id>-by-<user>-<tag>-<label>-<n>.npy "
    "(read only)",
    detect=detect_labelstudio_brush_numpy,
    reader=LabelStudioBrushNumpyReader,
    materialize=materialize_labelstudio,
    validate=validate_labelstudio_brush_numpy,
    holds=frozenset({"instances", "overlaps"}),
)

for _spec in (LABELSTUDIO, LABELSTUDIO_MIN, LABELSTUDIO_BRUSH_PNG, LABELSTUDIO_BRUSH_NUMPY):
    if _spec.name not in FORMATS:  # re-import (e.g. importlib.reload in tests) must not raise
        register_format(_spec)
