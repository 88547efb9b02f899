"""The COCO family of formats.

``coco`` (instances, keypoints, stuff), ``coco_results`` (prediction lists as ``COCO.loadRes`` takes
them) and ``coco_panoptic`` (JSON + PNG folder).

Pure converters live in :mod:`segpipe.formats.coco.convert`, file reading in ``reader``, writing in
``writer``, validation in ``validate``. Importing this package registers the three formats.
"""

from __future__ import annotations

from functools import partial

from segpipe.formats.base import FormatSpec
from segpipe.formats.coco.convert import (
    coco_dict_to_records,
    instance_to_coco,
    records_to_coco_dict,
)
from segpipe.formats.coco.reader import (
    CocoPanopticReader,
    CocoReader,
    CocoResultsReader,
    detect_coco,
    detect_coco_panoptic,
    detect_coco_results,
    materialize_coco,
    materialize_panoptic,
)
from segpipe.formats.coco.validate import validate_coco
from segpipe.formats.coco.writer import CocoPanopticWriter, CocoResultsWriter, CocoWriter
from segpipe.formats.registry import FORMATS, register_format

__all__ = [
    "COCO",
    "COCO_PANOPTIC",
    "COCO_RESULTS",
    "CocoPanopticReader",
    "CocoPanopticWriter",
    "CocoReader",
    "CocoResultsReader",
    "CocoResultsWriter",
    "CocoWriter",
    "coco_dict_to_records",
    "instance_to_coco",
    "materialize_coco",
    "materialize_panoptic",
    "records_to_coco_dict",
    "validate_coco",
]

COCO = FormatSpec(
    name="coco",
    description="COCO instances / keypoints / stuff JSON (+ images/, optional semantic/ label maps)",
    detect=detect_coco,
    reader=CocoReader,
    materialize=materialize_coco,
    writer=CocoWriter,
    validate=partial(validate_coco, kind="dataset"),
    holds=frozenset({"instances", "boxes", "keypoints", "scores", "crowd", "overlaps", "semantic"}),
)
COCO_RESULTS = FormatSpec(
    name="coco_results",
    description="COCO results list (loadRes input): image_id, category_id, score, segmentation/bbox/kpts",
    detect=detect_coco_results,
    reader=CocoResultsReader,
    materialize=materialize_coco,
    writer=CocoResultsWriter,
    validate=partial(validate_coco, kind="results"),
    holds=frozenset({"instances", "boxes", "keypoints", "scores", "crowd", "overlaps"}),
)
COCO_PANOPTIC = FormatSpec(
    name="coco_panoptic",
    description="COCO panoptic JSON (segments_info) + PNG folder (id = R + 256 G + 256² B)",
    detect=detect_coco_panoptic,
    reader=CocoPanopticReader,
    materialize=materialize_panoptic,
    writer=CocoPanopticWriter,
    validate=partial(validate_coco, kind="panoptic"),
    holds=frozenset({"instances", "semantic", "panoptic", "crowd"}),
)

for _spec in (COCO, COCO_RESULTS, COCO_PANOPTIC):
    if _spec.name not in FORMATS:  # re-import (e.g. importlib.reload in tests) must not raise
        register_format(_spec)
