"""Reading CVAT for images 1.1 XML (driver side), materialising its objects (worker side), validating it.

Per image (see :mod:`~segpipe.formats.cvat.layout` for the files and the XML):

* Shapes are taken in CVAT's drawing order: by ``z_order``, then document order, so that later objects
  cover earlier ones in label maps exactly as CVAT renders them (objects keep this order: segpipe's z-order).
* ``polygon`` → a polygon object (rasterised as COCO polygons are); ``mask`` → a mask object (CVAT's RLE, see
  :mod:`~segpipe.formats.cvat.shapes`); ``box`` → a box-only object; ``skeleton`` → keypoints of its label
  (the label's skeleton points, in meta order, are the category's keypoint names and its SVG's edges the
  skeleton); an outside point has visibility 0, an occluded one 1, others 2; ``points`` → keypoints
  (visibility 2) of an object without mask.
* Polygons, masks, a skeleton and a box sharing a label and a non-zero ``group_id`` are one object (CVAT
  exports a group as one instance): polygons only stay polygons; with a mask the object is the union mask;
  the box is the object's box when it has no polygon or mask.
* Kept as object attributes: every ``<attribute>`` (its text), ``occluded`` (when set), ``z_order`` and
  ``group_id`` (when not 0), ``source`` (when not ``manual``).
* Counted as not read (``reader.losses``, added to the conversion report; ``--strict`` fails on them), with a
  warning each: ``polylines_not_read``, ``shapes_not_read`` (ellipses, cuboids), ``unlabelled_shapes_not_read``,
  ``tags_not_read`` (image-level ``<tag>``), ``tracks_not_read`` (CVAT for video), ``elements_not_read``,
  ``attributes_not_read`` (attributes of skeleton points, of later members of a group when they differ, and
  those named like a kept field), ``rotated_boxes_as_polygons``, ``files_not_read``.

Classes: the meta's labels that are no skeleton point, in meta order, ids 1, 2, ... with their colours.
A shape whose label the meta does not list is an error naming the file and the element.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    Sample,
    Segmentation,
)
from segpipe.errors import FormatError, InputError, SegpipeError
from segpipe.formats.cvat import layout as lay
from segpipe.formats.cvat.shapes import ShapeError, decode_mask, skeleton_edges
from segpipe.formats.perimage import materialize_shapes
from segpipe.storage.images import check_pixel_count

#: ``meta.extra`` key: ``{label: {"type", "attributes": [specs]}}`` of the source's labels (written back).
LABELS_KEY = "cvat_labels"
#: Object attributes with a meaning of their own in CVAT XML (shape attributes, not ``<attribute>``).
BUILTIN_ATTRS = ("occluded", "z_order", "group_id", "source")
#: Shapes that join an object of their label and group (CVAT exports a group as one instance).
GROUPED = ("polygon", "mask", "skeleton", "box")
#: Warnings named one by one before the rest are summarised.
MAX_LISTED = 20
LOSS_NOTES = {
    "polylines_not_read": "CVAT polylines cover no pixels: not read (counted per label)",
    "shapes_not_read": "CVAT ellipses and cuboids are not read (counted per label)",
    "unlabelled_shapes_not_read": "shapes with an empty label (no class) are not read",
    "tags_not_read": "image-level <tag> labels: segpipe's dataset model holds no image labels (counted per label)",
    "tracks_not_read": "shapes of <track> elements (CVAT for video) are not read; export the task as CVAT for "
    "images",
    "elements_not_read": "XML elements that CVAT for images does not define are not read",
    "attributes_not_read": "attributes of skeleton points, of later members of a group where they differ, and "
    "attributes named like a kept field (occluded, z_order, group_id, source) are not read",
    "rotated_boxes_as_polygons": "rotated boxes are read as the polygon of their corners",
    "files_not_read": "files in the dataset folder that no CVAT XML names (neither an XML read nor an image)",
}


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, LOSS_NOTES[kind])


@dataclass
class _Object:
    label: str
    attributes: dict[str, Any]
    polygons: list[list[float]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    keypoints: list[float] | None = None


def _rotated_box(pts: list[float], degrees: float) -> list[float]:
    """The corners of a box rotated clockwise (on screen, y down) about its centre, as CVAT rotates it."""
    x0, y0, x1, y1 = pts
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    out: list[float] = []
    for dx, dy in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)):
        out += [cx + dx * c - dy * s, cy + dx * s + dy * c]
    return out


class _Builder:
    """Turns the shapes of one image into objects, counting what is not read."""

    def __init__(self, names: set[str], points_of: dict[str, list[str]], losses: LossCounter,
                 source: Path) -> None:
        self.names = names
        self.points_of = points_of
        self.losses = losses
        self.source = source

    def _fail(self, where: str, message: str) -> FormatError:
        return FormatError(message, path=self.source, where=where)

    def _attrs(self, s: lay.Shape) -> dict[str, Any]:
        out: dict[str, Any] = {}
        clash = 0
        for k, v in s.attributes.items():
            if k in BUILTIN_ATTRS:
                clash += 1  # the shape's own field of that name wins: it is what CVAT renders
            else:
                out[k] = lay.attribute_value(v)
        _lose(self.losses, "attributes_not_read", clash, s.label)
        if s.occluded:
            out["occluded"] = True
        if s.z_order:
            out["z_order"] = s.z_order
        if s.group:
            out["group_id"] = s.group
        if s.source and s.source != "manual":
            out["source"] = s.source
        return out

    def _keypoints(self, s: lay.Shape) -> list[float]:
        names = self.points_of.get(s.label, [])
        kp = [0.0] * (3 * len(names))
        seen: set[str] = set()
        for e in s.elements:
            if e.label not in names:
                raise self._fail(f"{e.where} > label", f"skeleton point label {e.label!r} is not a point of the "
                                 f"skeleton label {s.label!r} in the meta")
            if e.label in seen:
                raise self._fail(f"{e.where} > label", f"skeleton point {e.label!r} given twice")
            seen.add(e.label)
            k = names.index(e.label)
            kp[3 * k : 3 * k + 3] = [e.points[0], e.points[1], 0.0 if e.outside else (1.0 if e.occluded else 2.0)]
            _lose(self.losses, "attributes_not_read", len(e.attributes), s.label)
        return kp

    def objects(self, img: lay.Image) -> list[_Object]:
        out: list[_Object] = []
        groups: dict[tuple[str, int], _Object] = {}
        for s in sorted(img.shapes, key=lambda s: (s.z_order, s.index)):
            if not s.label:
                _lose(self.losses, "unlabelled_shapes_not_read")
                continue
            if s.label not in self.names:
                raise self._fail(f"{s.where} > label", f"label {s.label!r} is not in the meta's labels")
            if s.kind == "polyline":
                _lose(self.losses, "polylines_not_read", 1, s.label)
                continue
            if s.kind in ("ellipse", "cuboid"):
                _lose(self.losses, "shapes_not_read", 1, s.label)
                continue
            self._add_shape(self._object_of(s, groups, out), s, img)
        return out

    def _object_of(self, s: lay.Shape, groups: dict[tuple[str, int], _Object], out: list[_Object]) -> _Object:
        """The object shape ``s`` belongs to: its group's (shapes of one ``group_id`` and label make one
        object), or a new one appended to ``out``. Attributes a grouped shape adds or changes are lost.
        """
        attrs = self._attrs(s)
        key = (s.label, s.group)
        obj = groups.get(key) if s.group and s.kind in GROUPED else None
        if obj is not None and ((s.kind == "skeleton" and obj.keypoints is not None)
                                or (s.kind == "box" and obj.box is not None)):
            obj = None  # a second skeleton (box) in one group is an object of its own
        if obj is None:
            obj = _Object(s.label, attrs)
            out.append(obj)
            if s.group and s.kind in GROUPED:
                groups[key] = obj
        else:
            missing = object()
            differ = sum(1 for k, v in attrs.items() if obj.attributes.get(k, missing) != v)
            _lose(self.losses, "attributes_not_read", differ, s.label)
        return obj

    def _add_shape(self, obj: _Object, s: lay.Shape, img: lay.Image) -> None:
        """Adds the geometry of shape ``s`` to ``obj``: a polygon, box, mask or keypoints."""
        if s.kind == "polygon":
            obj.polygons.append(s.points)
        elif s.kind == "box" and s.rotation % 360:
            _lose(self.losses, "rotated_boxes_as_polygons", 1, s.label)
            obj.polygons.append(_rotated_box(s.points, s.rotation))
        elif s.kind == "box":
            x0, y0, x1, y1 = s.points
            obj.box = (x0, y0, x1 - x0, y1 - y0)
        elif s.kind == "mask":
            assert s.mask is not None
            rle, left, top, w, h = s.mask
            try:
                obj.masks.append(decode_mask(rle, left, top, w, h, img.width, img.height))
            except ShapeError as e:
                raise self._fail(f"{s.where} > {e.where}", e.message) from None
        elif s.kind == "skeleton":
            obj.keypoints = self._keypoints(s)
        elif s.kind == "points":
            obj.keypoints = [v for k in range(0, len(s.points), 2) for v in (s.points[k], s.points[k + 1], 2.0)]


def _instance(o: _Object, ann_id: int, image_id: int, cat: int, w: int, h: int) -> Instance:
    seg = None
    bbox = o.box
    area = None if o.box is None else o.box[2] * o.box[3]
    if o.masks:
        m = np.zeros((h, w), dtype=bool)
        for mk in o.masks:
            m |= mk
        if o.polygons:
            m |= rle_ops.decode(rle_ops.polygons_to_rle(o.polygons, h, w)).astype(bool)
        r = rle_ops.encode(m)
        seg, bbox, area = Segmentation.from_rle(r), rle_ops.to_bbox(r), float(rle_ops.area(r))
    elif o.polygons:
        seg = Segmentation.from_polygons(o.polygons)
        bbox = rle_ops.polygons_bbox(o.polygons)
        area = float(rle_ops.area(rle_ops.polygons_to_rle(o.polygons, h, w)))
    kp = tuple(o.keypoints) if o.keypoints is not None else None
    nkp = sum(1 for v in kp[2::3] if v > 0) if kp is not None else None
    return Instance(id=ann_id, image_id=image_id, category_id=cat, segmentation=seg, bbox=bbox, area=area,
                    keypoints=kp, num_keypoints=nkp, attributes=o.attributes)


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).as_posix()
        out += [f if rel == "." else f"{rel}/{f}" for f in sorted(filenames)]
    return out


def _labels(docs: list[lay.Document]) -> tuple[dict[str, lay.Label], dict[str, list[str]]]:
    """``({name: label}, {skeleton label: its point labels})`` over every document, first ones first."""
    labels: dict[str, lay.Label] = {}
    points_of: dict[str, list[str]] = {}
    for d in docs:
        for lb in d.labels:
            if lb.parent is None:
                labels.setdefault(lb.name, lb)
            elif lb.name not in points_of.setdefault(lb.parent, []):
                points_of[lb.parent].append(lb.name)
    return labels, points_of


class CvatReader:
    """Reads a CVAT for images XML dataset (driver side: the XML is parsed and masks are encoded here).

    Args:
        path: The dataset folder, or one CVAT XML file.

    Attributes:
        meta: Categories (see the module docstring); ``extra["cvat_labels"]`` keeps label types and attribute
            specs for ``--to cvat``.
        problems: Warnings naming the file: what was not read.
        losses: What was not read, counted; the conversion report adds it, so ``--strict`` fails on it.

    Raises:
        InputError, FormatError, UnsafePathError: naming the file and the element.
    """

    format_name: ClassVar[str] = "cvat"

    def __init__(self, path: str | Path) -> None:
        root, files = lay.dataset_root(path)
        self.root = root
        self.problems: list[Problem] = []
        self.losses = LossCounter()
        docs = [lay.parse_document(root, rel) for rel in files]
        if not any(d.images for d in docs) and any(d.tracks for d in docs):
            raise InputError("CVAT for video (<track> elements, no <image>): segpipe reads CVAT for images",
                             path=root / files[0], hint="export the task from CVAT as 'CVAT for images 1.1'")
        labels, points_of = _labels(docs)
        names = list(labels)
        ids = {n: k + 1 for k, n in enumerate(names)}
        cats = []
        for n in names:
            lb = labels[n]
            kps = tuple(points_of.get(n, ()))
            edges = skeleton_edges(lb.svg, kps) if lb.svg and kps else ()
            cats.append(Category(id=ids[n], name=n, color=lb.color, keypoints=kps, skeleton=edges))
        self.meta = DatasetMeta(format="cvat", categories=tuple(cats), extra={
            LABELS_KEY: {n: {"type": labels[n].type, "attributes": labels[n].attributes} for n in names}})
        self._samples: list[Sample] = []
        self._next_ann = 1  # annotation ids run across images
        seen: dict[tuple[str | None, str], str] = {}
        referenced = {lay.OWN_FILES[0], lay.OWN_FILES[1], *files}
        warned: Counter[str] = Counter()
        for d in docs:
            builder = _Builder(set(names), points_of, self.losses, root / d.rel)
            for img in d.images:
                file = self._add_image(d, img, builder, ids, seen)
                if file is not None:
                    referenced.add(file.relative_to(root).as_posix())
            self._document_not_read(d, warned)
        for kind, label in sorted(self.losses.losses):
            if kind in ("polylines_not_read", "shapes_not_read", "unlabelled_shapes_not_read", "tags_not_read"):
                count = self.losses.losses[(kind, label)]
                self._warn(warned, files[0] if len(files) == 1 else "", "",
                           f"{count} not read ({kind}{', label ' + repr(label) if label else ''})", "cvat.not_read")
        others = [f for f in _walk(root) if f not in referenced]
        for f in others:
            self._warn(warned, f, "", "file not read: no CVAT XML, and no image that one names", "cvat.file_not_read")
        _lose(self.losses, "files_not_read", len(others))
        for code, count in sorted(warned.items()):
            if count > MAX_LISTED:
                self.problems.append(Problem("warning", str(root), "", f"{count - MAX_LISTED} more warnings of this "
                                             "kind", code))

    def _add_image(self, d: lay.Document, img: lay.Image, builder: _Builder, ids: dict[str, int],
                   seen: dict[tuple[str | None, str], str]) -> Path | None:
        """Adds the sample of one ``<image>``; returns its image file (None when absent).

        Raises:
            FormatError: the image is annotated twice (``seen``: (subset, name) → XML file), or its recorded
                size is over the pixel limit.
        """
        source = self.root / d.rel
        key = (img.subset, img.name)
        if key in seen:
            raise FormatError(f"image {img.name!r} of subset {img.subset!r} is already annotated in "
                              f"{seen[key]}", path=source, where=f"{img.where} > name")
        seen[key] = d.rel
        check_pixel_count(img.width, img.height, path=source, where=f"{img.where} > width, height",
                          what="recorded size")
        image_id = len(self._samples) + 1
        insts = []
        for o in builder.objects(img):
            insts.append(_instance(o, self._next_ann, image_id, ids[o.label], img.width, img.height))
            self._next_ann += 1
        for t in img.tags:
            _lose(self.losses, "tags_not_read", 1, t)
        file = lay.image_file(self.root, d.rel, img)
        info = ImageInfo(image_id, img.name, img.width, img.height, split=img.subset)
        self._samples.append(Sample(info, image_path=str(file) if file is not None else None, instances=tuple(insts)))
        return file

    def _document_not_read(self, d: lay.Document, warned: Counter[str]) -> None:
        """Counts and warns about a document's ``<track>`` shapes and the elements it does not read."""
        for lbl, count in sorted(d.tracks.items()):
            _lose(self.losses, "tracks_not_read", count, lbl)
        if d.tracks:
            self._warn(warned, d.rel, "track", f"{sum(d.tracks.values())} shapes of <track> elements (CVAT for "
                       "video) not read", "cvat.track_not_read")
        for what, count in sorted(d.unknown.items()):
            _lose(self.losses, "elements_not_read", count)
            self._warn(warned, d.rel, "", f"{count} {what} not read", "cvat.element_not_read")

    def _warn(self, warned: Counter[str], rel: str, where: str, message: str, code: str) -> None:
        # A dataset of 100k images with polylines must not give 100k lines; the losses count every one.
        warned[code] += 1
        if warned[code] <= MAX_LISTED:
            self.problems.append(Problem("warning", rel, where, message, code))

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples in XML file order, then document order (CVAT's frame order)."""
        yield from self._samples


#: Polygons rasterised as COCO polygons, masks already RLE (shared with the other shape-based readers).
materialize_cvat = materialize_shapes


def validate_cvat(path: str | Path) -> Iterator[Problem]:
    """Checks a CVAT XML dataset: the first error naming the file and the element, or the warnings of a read.

    Errors: unreadable, unsafe or malformed XML, missing or wrong fields (``width``, ``rle``, ``points`` ...),
    labels the meta does not list, duplicate images, unsafe image names (``cvat.xml``). Warnings: what is not
    read (see the module docstring).
    """
    try:
        reader = CvatReader(path)
    except SegpipeError as err:
        yield Problem("error", err.path or str(path), err.where or "", err.message, "cvat.xml")
        return
    yield from reader.problems
