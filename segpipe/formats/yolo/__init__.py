"""YOLO (Ultralytics) datasets: ``yolo`` (segment polygons; reads every YOLO layout) and ``yolo_detect`` (boxes).

Reading (``yolo``): Ultralytics ``data.yaml`` datasets (split folders or ``.txt`` image lists, Datumaro's
``yolo_ultralytics`` and CVAT exports included), darknet ``obj.data`` (Datumaro's strict ``yolo``) and
``obj.names`` + ``labels/`` or ``Annotations/`` (Datumaro's loose ``yolo``); detect and segment lines,
mixed freely. See :mod:`~segpipe.formats.yolo.layout` and :mod:`~segpipe.formats.yolo.reader`.

Writing: the Ultralytics layout, ``--to yolo`` with one polygon per object, ``--to yolo_detect`` with
boxes; what YOLO cannot hold is counted (see :mod:`~segpipe.formats.yolo.writer`).
"""

from __future__ import annotations

from pathlib import Path

from segpipe.formats.base import FormatSpec
from segpipe.formats.registry import FORMATS, register_format
from segpipe.formats.yolo.layout import detect_yolo
from segpipe.formats.yolo.reader import YoloReader, materialize_yolo, validate_yolo
from segpipe.formats.yolo.writer import YoloDetectWriter, YoloWriter

__all__ = [
    "YOLO",
    "YOLO_DETECT",
    "YoloDetectWriter",
    "YoloReader",
    "YoloWriter",
    "detect_yolo",
    "materialize_yolo",
    "validate_yolo",
]


def _never(path: Path) -> bool:
    """``yolo_detect`` is only a target: every YOLO dataset is read (and detected) as ``yolo``."""
    return False


YOLO = FormatSpec(
    name="yolo",
    description="Ultralytics YOLO segment: data.yaml + images/<split>/ + labels/<split>/*.txt polygons "
    "(reads detect, segment, darknet and Datumaro layouts)",
    detect=detect_yolo,
    reader=YoloReader,
    materialize=materialize_yolo,
    writer=YoloWriter,
    validate=validate_yolo,
    holds=frozenset({"instances", "boxes"}),
)
YOLO_DETECT = FormatSpec(
    name="yolo_detect",
    description="Ultralytics YOLO detect: data.yaml + images/<split>/ + labels/<split>/*.txt boxes (cx cy w h)",
    detect=_never,
    writer=YoloDetectWriter,
    holds=frozenset({"boxes"}),
)

for _spec in (YOLO, YOLO_DETECT):
    if _spec.name not in FORMATS:  # a re-import (importlib.reload in tests) must not raise
        register_format(_spec)
