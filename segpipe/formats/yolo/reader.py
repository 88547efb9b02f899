"""Reading YOLO datasets (driver side), materialising their polygons (worker side), validating them.

Classes: YOLO class ``k`` (0-based position in ``names``) becomes category id ``k + 1`` with the same name:
segpipe's class maps keep 0 for unlabelled pixels, and conversions match categories by name.

Objects: a detect line is a box-only instance (``bbox`` in pixels, no mask); a segment line is a
polygon instance rasterised exactly as COCO polygons are (pycocotools, vertices at pixel corners). Line
order is kept (z-order: later on top). An image without a label file has no objects (the YOLO
convention). A malformed line, a class outside ``names`` or a coordinate outside [0, 1] stops reading
with one error naming the label file and the line; ``segpipe validate`` lists every such line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    InstanceMask,
    Materialized,
    Sample,
    Segmentation,
)
from segpipe.errors import FormatError, SegpipeError
from segpipe.formats.perimage import polygon_rle
from segpipe.formats.yolo import layout as lay_mod
from segpipe.formats.yolo.lines import YoloLine, box_to_pixels, parse_text, to_pixels
from segpipe.storage.images import image_size

#: Largest label file read (a label file is a few lines per object).
MAX_LABEL_BYTES = 64 << 20


def read_label_file(path: Path, rel: str, nc: int) -> tuple[list[YoloLine], list[tuple[int, str]]]:
    """Reads and parses one label file.

    Returns:
        ``(lines, errors)`` as :func:`~segpipe.formats.yolo.lines.parse_text`.

    Raises:
        FormatError: the file is too large or not UTF-8 text (naming ``rel``).
    """
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_BYTES:
            raise FormatError(f"label file is {size} bytes, more than the {MAX_LABEL_BYTES} accepted", path=rel)
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text at byte {e.start}", path=rel) from None
    except OSError as e:
        raise FormatError(f"cannot read: {e.strerror}", path=rel) from None
    return parse_text(text, nc)


def _instances(lines: list[YoloLine], image_id: int, first_id: int, width: int, height: int) -> list[Instance]:
    out = []
    for k, ln in enumerate(lines):
        if ln.is_box:
            box = box_to_pixels(ln.coords, width, height)
            out.append(Instance(id=first_id + k, image_id=image_id, category_id=ln.cls + 1, bbox=box,
                                area=box[2] * box[3]))
        else:
            poly = to_pixels(ln.coords, width, height)
            out.append(Instance(id=first_id + k, image_id=image_id, category_id=ln.cls + 1,
                                segmentation=Segmentation.from_polygons([poly]),
                                bbox=rle_ops.polygons_bbox([poly])))
    return out


class YoloReader:
    """Indexes a YOLO dataset and parses its label files (driver side; label files are small text).

    Args:
        path: The dataset folder, or its ``data.yaml`` / ``obj.data``.

    Attributes:
        meta: Categories (id = class index + 1), ``extra["yolo_layout"]``.
        problems: Warnings: files and keys not read, label files without an image, an ignored ``path``.
        losses: What was not read, counted (``files_not_read``, ``keys_not_read``, ``labels_without_image``);
            the conversion report adds it to the writer's losses, so ``--strict`` fails on it.

    Raises:
        InputError, FormatError, UnsafePathError: naming the file and the key or line.
    """

    format_name: ClassVar[str] = "yolo"

    def __init__(self, path: str | Path) -> None:
        lay = lay_mod.index(path)
        self.root = lay.root
        self.problems: list[Problem] = list(lay.problems)
        self.losses: LossCounter = lay.losses
        names = lay.names
        nc = len(names)
        self.meta = DatasetMeta(
            format="yolo",
            categories=tuple(Category(id=k + 1, name=n) for k, n in enumerate(names)),
            extra={"yolo_layout": lay.kind},
        )
        for rel in lay.orphans:
            lines, errors = read_label_file(lay.root / rel, str(lay.root / rel), nc)
            n = len(lines) + len(errors)
            self.problems.append(Problem("warning", rel, "", f"label file has no image; its {n} objects are not "
                                         "read", "yolo.label_without_image"))
            for ln in lines:
                self.losses.lose("labels_without_image", 1, names[ln.cls], lay_mod.LOSS_NOTES["labels_without_image"])
            self.losses.lose("labels_without_image", len(errors), note=lay_mod.LOSS_NOTES["labels_without_image"])
        self._samples: list[Sample] = []
        next_ann = 1
        for image_id, e in enumerate(lay.entries, start=1):
            w, h = image_size(e.image)
            instances: list[Instance] = []
            if e.label is not None:
                assert e.label_rel is not None
                lines, errors = read_label_file(e.label, str(e.label), nc)
                if errors:
                    line, why = errors[0]
                    more = f" ({len(errors) - 1} more bad lines: see segpipe validate)" if len(errors) > 1 else ""
                    raise FormatError(why + more, path=e.label, where=f"line {line}")
                instances = _instances(lines, image_id, next_ann, w, h)
                next_ann += len(instances)
            self._samples.append(
                Sample(ImageInfo(image_id, e.file_name, w, h, split=e.split), image_path=str(e.image),
                       instances=tuple(instances))
            )

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id (split order train, val, test, then file name)."""
        yield from self._samples


def materialize_yolo(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Rasterises the polygon instances (pycocotools, as COCO polygons); boxes stay box-only."""
    img = sample.image
    out = []
    for inst in sample.instances:
        r = None
        if inst.segmentation is not None and inst.segmentation.polygons:
            r = polygon_rle(inst, inst.segmentation.polygons, img)
        out.append(InstanceMask(inst, r))
    return Materialized(sample=sample, instances=tuple(out))


def validate_yolo(path: str | Path) -> Iterator[Problem]:
    """Checks a YOLO dataset; one problem per issue, naming the file and the key or line.

    Errors: unreadable metadata (``yolo.meta``), unsafe or missing split entries, every malformed line,
    class index outside ``names`` and coordinate outside [0, 1] (``yolo.line``), unreadable images
    (``yolo.image``). Warnings: label files without an image, files and keys not read, ignored ``path``.
    """
    try:
        lay = lay_mod.index(path)
    except SegpipeError as err:
        yield Problem("error", err.path or str(path), err.where or "", err.message, "yolo.meta")
        return
    yield from lay.problems
    nc = len(lay.names)
    for rel in lay.orphans:
        yield Problem("error", rel, "", "label file has no image (its objects cannot be placed)",
                      "yolo.label_without_image")
    for e in lay.entries:
        try:
            image_size(e.image)
        except SegpipeError as err:
            yield Problem("error", e.rel, "", err.message, "yolo.image")
        if e.label is None or e.label_rel is None:
            continue
        try:
            _, errors = read_label_file(e.label, e.label_rel, nc)
        except SegpipeError as err:
            yield Problem("error", e.label_rel, "", err.message, "yolo.line")
            continue
        for line, why in errors:
            yield Problem("error", e.label_rel, f"line {line}", why, "yolo.line")
