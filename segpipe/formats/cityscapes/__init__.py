"""Cityscapes-style ``gtFine`` folders: label ids, instance ids and train ids (read and write).

See :mod:`segpipe.formats.cityscapes.writer` for the layout and the losses,
:mod:`segpipe.formats.cityscapes.reader` for what is read, and
:mod:`segpipe.formats.cityscapes.labels` for the official label table and how categories map onto it.
"""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.formats.cityscapes.labels import LABELS, CityscapesLabel, plan_labels
from segpipe.formats.cityscapes.reader import CityscapesReader, detect_cityscapes, materialize_cityscapes
from segpipe.formats.cityscapes.validate import validate_cityscapes
from segpipe.formats.cityscapes.writer import CityscapesWriter
from segpipe.formats.registry import register_format

SPEC = register_format(
    FormatSpec(
        name="cityscapes",
        description="Cityscapes gtFine/<split>/<city>/*_gtFine_{labelIds,instanceIds,labelTrainIds}.png "
        "(+ leftImg8bit/)",
        detect=detect_cityscapes,
        reader=CityscapesReader,
        materialize=materialize_cityscapes,
        writer=CityscapesWriter,
        validate=validate_cityscapes,
        holds=frozenset({"instances", "semantic", "crowd"}),
    )
)

__all__ = [
    "LABELS",
    "CityscapesLabel",
    "CityscapesReader",
    "CityscapesWriter",
    "detect_cityscapes",
    "materialize_cityscapes",
    "plan_labels",
    "validate_cityscapes",
]
