"""Reading LabelMe JSON datasets (driver side), materialising their objects (worker side), validating them.

Per JSON file (see :mod:`~segpipe.formats.labelme.layout` for the folder and
:mod:`~segpipe.formats.labelme.shapes` for the geometry):

* The image is ``imagePath`` (relative to the JSON's folder). When that file is absent, the embedded
  ``imageData`` (base64) is the image: its size is checked, and ``--to labelme`` keeps it embedded; for
  other targets the image file is missing (counted as such). ``imageHeight``/``imageWidth`` must equal the
  image's (upright) size: a mismatch is an error naming the JSON and the field.
* Objects: shapes with an area (polygon, rectangle, circle, mask) sharing a ``label`` and a non-null
  ``group_id`` are one object (LabelMe's own ``shapes_to_label`` rule); every other area shape is an object
  of its own. Objects keep the order of their first shape (z-order: later on top). An object of polygons
  and rectangles only keeps them as polygons (exact vertices); with a circle or a mask it is a mask (RLE).
* Kept as attributes (not lost): image ``flags`` and top-level keys LabelMe does not define (LabelMe keeps
  them as ``otherData``); a shape's ``flags``, ``description``, ``group_id`` and unknown keys.
* Counted as not read (``reader.losses``, added to the conversion report; ``--strict`` fails on them):
  ``shapes_without_area`` (line, linestrip, point), ``unknown_shape_types``, ``images_without_json``
  (image files no JSON names), ``files_not_read`` (anything else, JSON files that are no LabelMe file
  included). Each also gives a warning naming the file.

Classes: ``labels.txt`` order when present, then every other label in sorted order; ids 1, 2, ... (0 stays
"no object" in label maps; conversions match classes by name).
"""

from __future__ import annotations

import json
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
from segpipe.errors import FormatError, ImageDecodeError, InputError, PixelLimitError, SegpipeError
from segpipe.formats.labelme import layout as lay
from segpipe.formats.labelme.shapes import (
    NO_AREA_TYPES,
    Shape,
    ShapeError,
    decode_base64,
    open_image_bytes,
    parse_shape,
    shape_polygon,
    shape_raster,
)
from segpipe.formats.perimage import materialize_shapes
from segpipe.storage.images import check_pixel_count, exif_orientation, image_size

#: Top-level keys LabelMe defines; any other is kept as an image attribute.
TOP_KEYS = ("version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth")
#: Largest embedded ``imageData`` accepted, in base64 characters.
MAX_IMAGE_DATA_CHARS = 200 << 20
#: Warnings named one by one before the rest are summarised.
MAX_LISTED = 20
LOSS_NOTES = {
    "shapes_without_area": "LabelMe lines, line strips and points cover no pixels: not read (counted per label)",
    "unknown_shape_types": "shapes of a type LabelMe does not define: not read (counted per label)",
    "images_without_json": "image files that no LabelMe JSON names: not read (LabelMe writes a JSON only once "
    "an image is annotated, so they are not taken as images without objects)",
    "files_not_read": "files in the dataset folder that are no LabelMe JSON, image of one, or labels.txt",
}
#: ``meta.extra`` key: ``{image id: JSON path}`` of images that exist only as embedded ``imageData``.
EMBEDDED_KEY = "labelme_embedded"


@dataclass
class _Object:
    label: str
    segmentation: Segmentation
    bbox: tuple[float, float, float, float]
    area: float | None
    attributes: dict[str, Any]


@dataclass
class _File:
    json_rel: str
    image_rel: str
    split: str | None
    file_name: str
    image: Path | None
    embedded: bool
    width: int
    height: int
    attributes: dict[str, Any]
    objects: list[_Object]


@dataclass
class Index:
    """A LabelMe dataset's parsed files.

    Attributes:
        root: The dataset folder (resolved).
        files: One per LabelMe JSON, sorted by split then file name.
        names: Class names in id order (id = position + 1).
        problems: Warnings (and, when collecting, errors) naming the file and the field.
        losses: What was not read (see the module docstring).
    """

    root: Path
    files: list[_File] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    losses: LossCounter = field(default_factory=LossCounter)


class _Collector:
    """Raises the first error (reading) or lists every error (validating)."""

    def __init__(self, root: Path, raise_errors: bool, problems: list[Problem]) -> None:
        self.root = root
        self.raise_errors = raise_errors
        self.problems = problems
        self.warnings: dict[str, int] = {}

    def error(self, rel: str, where: str, message: str, code: str) -> None:
        if self.raise_errors:
            raise FormatError(message, path=self.root / rel, where=where or None)
        self.problems.append(Problem("error", rel, where, message, code))

    def failed(self, rel: str, err: SegpipeError, code: str) -> None:
        if self.raise_errors:
            raise err
        self.problems.append(Problem("error", rel, err.where or "", err.message, code))

    def warn(self, rel: str, where: str, message: str, code: str) -> None:
        # The first few of each kind one by one, the rest summarised (``summarise``): a dataset of 100k files with
        # points must not give a report of 100k lines; the losses count every one.
        n = self.warnings[code] = self.warnings.get(code, 0) + 1
        if n <= MAX_LISTED:
            self.problems.append(Problem("warning", rel, where, message, code))

    def summarise(self) -> None:
        for code, n in sorted(self.warnings.items()):
            if n > MAX_LISTED:
                self.problems.append(Problem("warning", str(self.root), "", f"{n - MAX_LISTED} more warnings of this "
                                             "kind", code))


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, LOSS_NOTES[kind])


def _image_size(f: dict[str, Any], rel: str, root: Path, image_rel: str, col: _Collector) -> tuple[
        tuple[int, int] | None, Path | None, bool, bool]:
    """``(size of the image or None, image file or None, embedded, ok)``."""
    path = root / image_rel
    if path.is_file():
        try:
            return image_size(path), path, False, True
        except PixelLimitError as e:
            col.failed(rel, FormatError(e.message, path=root / rel, where="imagePath"), "labelme.image")
            return None, path, False, False
        except (ImageDecodeError, InputError):
            return None, path, False, True  # unreadable: the image checks name it; its size cannot be compared
    data = f.get("imageData")
    if data is None:
        return None, None, False, True
    try:
        im = open_image_bytes(decode_base64(data, MAX_IMAGE_DATA_CHARS, "imageData"), "imageData")
        w, h = im.size
        if exif_orientation(im) in (5, 6, 7, 8):  # upright, as segpipe records every size
            w, h = h, w
        return (int(w), int(h)), None, True, True
    except ShapeError as e:
        col.error(rel, "imageData", e.message, "labelme.image")
        return None, None, True, False


def _recorded(f: dict[str, Any], key: str, rel: str, col: _Collector) -> tuple[int | None, bool]:
    v = f.get(key)
    if v is None:
        return None, True
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        col.error(rel, key, f"{key} must be a positive integer, got {str(v)[:40]}", "labelme.size")
        return None, False
    return v, True


def _objects(shapes: list[Shape], rel: str, w: int, h: int, col: _Collector) -> list[_Object] | None:
    """Area shapes joined into objects by (label, group_id); None after an error."""
    groups: dict[tuple[str, Any], list[Shape]] = {}
    for s in shapes:
        key: tuple[str, Any] = (s.label, s.group_id) if s.group_id is not None else (s.label, ("solo", s.index))
        groups.setdefault(key, []).append(s)
    out: list[_Object] = []
    for members in groups.values():
        first = members[0]
        attrs = dict(first.attributes)
        if first.group_id is not None:
            attrs["group_id"] = first.group_id
        polys = [shape_polygon(s) for s in members]
        if all(p is not None for p in polys):
            plist = [p for p in polys if p is not None]
            # COCO's area of a polygon object is its mask's (pycocotools); coordinates are bounded by parse_shape.
            area = float(rle_ops.area(rle_ops.polygons_to_rle(plist, h, w)))
            out.append(_Object(first.label, Segmentation.from_polygons(plist), rle_ops.polygons_bbox(plist), area,
                               attrs))
            continue
        mask = np.zeros((h, w), dtype=bool)
        for s in members:
            try:
                mask |= shape_raster(s, h, w)
            except ShapeError as e:
                col.error(rel, f"shapes[{s.index}]" + (f".{e.where}" if e.where else ""), e.message, "labelme.shape")
                return None
        r = rle_ops.encode(mask)
        out.append(_Object(first.label, Segmentation.from_rle(r), rle_ops.to_bbox(r), float(rle_ops.area(r)), attrs))
    return out


def parse_file(root: Path, rel: str, f: dict[str, Any], col: _Collector, losses: LossCounter,
               referenced: set[str]) -> _File | None:
    """Checks one LabelMe JSON (already parsed) and builds its objects; None after an error (collecting).

    The image it names is added to ``referenced`` even when the file has errors (it is not unannotated).
    """
    try:
        image_rel = lay.resolve_image_path(root, rel, f.get("imagePath"), root / rel)
    except SegpipeError as e:
        col.failed(rel, e, "labelme.path")
        return None
    referenced.add(image_rel)
    dims = _dimensions(f, rel, root, image_rel, col)
    if dims is None:
        return None
    w, h, image, embedded, ok = dims  # after an error the shapes are still checked, for validate to list them
    attrs = _file_attributes(f, rel, col)
    if attrs is None:
        return None
    raw_shapes = f.get("shapes")
    if not isinstance(raw_shapes, list):
        col.error(rel, "shapes", "shapes must be a list", "labelme.shape")
        return None
    shapes, no_area, unknown, shapes_ok = _area_shapes(raw_shapes, rel, col, losses)
    if not (ok and shapes_ok):
        return None
    if no_area:
        what = ", ".join(f"{n} {t}" for t, n in sorted(no_area.items()))
        col.warn(rel, "shapes", f"shapes without area not read: {what}", "labelme.shape_not_read")
    if unknown:
        what = ", ".join(f"{n} {t[:40]!r}" for t, n in sorted(unknown.items()))
        col.warn(rel, "shapes", f"shapes of unknown type not read: {what}", "labelme.shape_not_read")
    objects = _objects(shapes, rel, w, h, col)
    if objects is None:
        return None
    if embedded:
        col.warn(rel, "imageData", f"image file {image_rel} is absent: the embedded imageData is the image (only "
                 "--to labelme keeps it; other targets count the image file as missing)", "labelme.embedded_only")
    split, file_name = lay.split_of(image_rel)
    return _File(rel, image_rel, split, file_name, image, embedded, w, h, attrs, objects)


def _dimensions(f: dict[str, Any], rel: str, root: Path, image_rel: str, col: _Collector) -> tuple[
        int, int, Path | None, bool, bool] | None:
    """``(width, height, image file or None, embedded, ok)`` of one file's image; None when the size cannot be
    known (an error is collected).

    The size is the image's (its file or embedded ``imageData``), which ``imageWidth``/``imageHeight`` must
    match, else the recorded one; ``ok`` is False after an error that leaves the size known.
    """
    rw, ok_w = _recorded(f, "imageWidth", rel, col)
    rh, ok_h = _recorded(f, "imageHeight", rel, col)
    size, image, embedded, ok_img = _image_size(f, rel, root, image_rel, col)
    ok = ok_w and ok_h and ok_img
    if size is not None:
        for key, rec, real, what in (("imageWidth", rw, size[0], "wide"), ("imageHeight", rh, size[1], "high")):
            if rec is not None and rec != real:
                src = "its embedded imageData" if embedded else f"the image {image_rel}"
                col.error(rel, key, f"{key} is {rec} but {src} is {real} pixels {what}", "labelme.size")
                ok = False
        w, h = size
    elif not ok:
        return None
    elif rw is None or rh is None:
        col.error(rel, "imageWidth" if rw is None else "imageHeight", "the image is absent (no file, no imageData) "
                  "and its size is not recorded", "labelme.size")
        return None
    else:
        w, h = rw, rh
    try:
        check_pixel_count(w, h, path=root / rel, where="imageWidth, imageHeight", what="recorded size")
    except PixelLimitError as e:
        col.failed(rel, e, "labelme.size")
        return None
    return w, h, image, embedded, ok


def _file_attributes(f: dict[str, Any], rel: str, col: _Collector) -> dict[str, Any] | None:
    """The file's ``flags`` and unknown top-level keys (LabelMe keeps them and writes them back: so do we);
    None after an error in ``flags``.
    """
    attrs: dict[str, Any] = {}
    flags = f.get("flags")
    if flags is not None:
        if not isinstance(flags, dict) or not all(isinstance(k, str) and isinstance(v, bool) for k, v in flags.items()):
            col.error(rel, "flags", "flags must map names to true/false", "labelme.flags")
            return None
        if flags:
            attrs["flags"] = dict(flags)
    for k, v in f.items():
        if k not in TOP_KEYS:
            attrs[str(k)] = v
    return attrs


def _area_shapes(raw_shapes: list[Any], rel: str, col: _Collector, losses: LossCounter) -> tuple[
        list[Shape], dict[str, int], dict[str, int], bool]:
    """``(shapes with an area, {type without area: count}, {unknown type: count}, no error)``; the shapes
    not read are counted in ``losses``.
    """
    shapes: list[Shape] = []
    no_area: dict[str, int] = {}
    unknown: dict[str, int] = {}
    ok = True
    for i, obj in enumerate(raw_shapes):
        try:
            s = parse_shape(obj, i)
        except ShapeError as e:
            col.error(rel, f"shapes[{i}]" + (f".{e.where}" if e.where else ""), e.message, "labelme.shape")
            ok = False
            continue
        if s.has_area:
            shapes.append(s)
        elif s.shape_type in NO_AREA_TYPES:
            no_area[s.shape_type] = no_area.get(s.shape_type, 0) + 1
            _lose(losses, "shapes_without_area", 1, s.label)
        else:
            unknown[s.shape_type] = unknown.get(s.shape_type, 0) + 1
            _lose(losses, "unknown_shape_types", 1, s.label)
    return shapes, no_area, unknown, ok


def _load(root: Path, rel: str, col: _Collector, single: bool) -> tuple[dict[str, Any] | None, bool]:
    """``(JSON object, True)`` for a LabelMe file, ``(None, True)`` after an error, ``(None, False)`` for
    another JSON file.
    """
    try:
        raw = lay.read_json_bytes(root / rel)
        data = json.loads(raw)
    except SegpipeError as e:
        col.failed(rel, e, "labelme.json")
        return None, True
    except UnicodeDecodeError as e:
        col.error(rel, "", f"not UTF-8 text at byte {e.start}", "labelme.json")
        return None, True
    except json.JSONDecodeError as e:
        col.error(rel, "", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", "labelme.json")
        return None, True
    except RecursionError:
        col.error(rel, "", "JSON nested too deeply", "labelme.json")
        return None, True
    if isinstance(data, dict) and "shapes" in data:
        return data, True
    if single:
        col.error(rel, "shapes", "not a LabelMe JSON (no shapes list)", "labelme.json")
        return None, True
    return None, False


def _split_rank(split: str | None) -> int:
    return -1 if split is None else lay.SPLIT_DIRS.index(split)


def _read_files(root: Path, rels: list[str], single: bool, col: _Collector, losses: LossCounter,
                referenced: set[str]) -> tuple[list[_File], list[str], list[str], int]:
    """Parses the LabelMe JSON files among ``rels``: ``(parsed files, image files, other files, LabelMe JSON
    files met)``; the images the JSON files name are added to ``referenced``.
    """
    images: list[str] = []
    others: list[str] = []
    parsed: list[_File] = []
    n_json = 0
    for rel in rels:
        low = rel.lower()
        if rel in lay.OWN_FILES or (rel == lay.LABELS_TXT and not single):
            continue
        if low.endswith(".json"):
            data, labelme = _load(root, rel, col, single)
            if not labelme:
                others.append(rel)  # a JSON file of another kind: not read, counted
            if data is None:
                continue
            n_json += 1
            rec = parse_file(root, rel, data, col, losses, referenced)
            if rec is not None:
                parsed.append(rec)
        elif low.endswith(lay.IMAGE_EXTS):
            images.append(rel)
        else:
            others.append(rel)
    return parsed, images, others, n_json


def index(path: str | Path, *, raise_errors: bool = True) -> Index:
    """Indexes and parses the LabelMe dataset at ``path`` (a folder, or one LabelMe JSON file).

    Args:
        path: The dataset.
        raise_errors: Raise the first error (reading); False lists every error in ``problems`` (validating).

    Raises:
        InputError: no such path; a LabelMe XML folder; no LabelMe JSON in the folder.
        FormatError, UnsafePathError: (with ``raise_errors``) naming the JSON file and the field.
    """
    p = Path(path)
    if p.is_file():
        root, rels, single = p.parent.resolve(), [p.name], True
    elif p.is_dir():
        root, single = p.resolve(), False
        if lay.is_labelme_xml(root):
            lay.refuse_labelme_xml(p)
        rels = lay.walk(root)
    else:
        raise InputError("no such file or folder", path=p)
    idx = Index(root)
    col = _Collector(root, raise_errors, idx.problems)
    referenced: set[str] = set()
    parsed, images, others, n_json = _read_files(root, rels, single, col, idx.losses, referenced)
    if not single and n_json == 0 and not any(pr.severity == "error" for pr in idx.problems):
        raise InputError("no LabelMe JSON file in this folder (an object with shapes and imagePath)", path=p)
    seen: dict[str, str] = {}
    for rec in parsed:
        if rec.image_rel in seen:
            col.error(rec.json_rel, "imagePath", f"image {rec.image_rel} is already annotated by {seen[rec.image_rel]}",
                      "labelme.duplicate")
            continue
        seen[rec.image_rel] = rec.json_rel
        idx.files.append(rec)
    if not single:
        unread = [r for r in images if r not in referenced]
        for r in unread:
            col.warn(r, "", "image file that no LabelMe JSON names: not read", "labelme.image_without_json")
        _lose(idx.losses, "images_without_json", len(unread))
        for r in others:
            col.warn(r, "", "file not read: no LabelMe JSON, image of one, or labels.txt", "labelme.file_not_read")
        _lose(idx.losses, "files_not_read", len(others))
    labels_txt = root / lay.LABELS_TXT
    names: list[str] = []
    if labels_txt.is_file() and not single:
        try:
            names = lay.read_labels_txt(labels_txt)
        except SegpipeError as e:
            col.failed(lay.LABELS_TXT, e, "labelme.labels")
    used = sorted({o.label for rec in idx.files for o in rec.objects} | {k[1] for k in idx.losses.losses if k[1]})
    idx.names = names + [n for n in used if n not in names]
    idx.files.sort(key=lambda r: (_split_rank(r.split), r.split or "", r.file_name, r.image_rel))
    col.summarise()
    return idx


class LabelmeReader:
    """Reads a LabelMe JSON dataset (driver side: the JSON files are parsed here, masks and circles rasterised).

    Args:
        path: The dataset folder, or one LabelMe JSON file.

    Attributes:
        meta: Categories (ids 1..N, see the module docstring); ``extra["labelme_embedded"]`` maps the ids of
            images that exist only as embedded ``imageData`` to their JSON file.
        problems: Warnings naming the file: shapes and files not read, embedded-only images.
        losses: What was not read, counted; the conversion report adds it, so ``--strict`` fails on it.

    Raises:
        InputError, FormatError, UnsafePathError: naming the file and the field.
    """

    format_name: ClassVar[str] = "labelme"

    def __init__(self, path: str | Path) -> None:
        idx = index(path, raise_errors=True)
        self.root = idx.root
        self.problems: list[Problem] = idx.problems
        self.losses: LossCounter = idx.losses
        ids = {n: k + 1 for k, n in enumerate(idx.names)}
        embedded: dict[int, str] = {}
        self._samples: list[Sample] = []
        next_ann = 1
        for image_id, rec in enumerate(idx.files, start=1):
            insts = []
            for o in rec.objects:
                insts.append(Instance(id=next_ann, image_id=image_id, category_id=ids[o.label],
                                      segmentation=o.segmentation, bbox=o.bbox, area=o.area, attributes=o.attributes))
                next_ann += 1
            if rec.embedded:
                embedded[image_id] = str(self.root / rec.json_rel)
            info = ImageInfo(image_id, rec.file_name, rec.width, rec.height, split=rec.split, attributes=rec.attributes)
            self._samples.append(Sample(info, image_path=str(rec.image) if rec.image is not None else None,
                                        instances=tuple(insts)))
        extra: dict[str, Any] = {EMBEDDED_KEY: embedded} if embedded else {}
        self.meta = DatasetMeta(format="labelme", categories=tuple(Category(id=k + 1, name=n)
                                                                   for k, n in enumerate(idx.names)), extra=extra)

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id (split, then file name)."""
        yield from self._samples


#: Polygons rasterised as COCO polygons, masks already RLE (shared with the other shape-based readers).
materialize_labelme = materialize_shapes


def validate_labelme(path: str | Path) -> Iterator[Problem]:
    """Checks a LabelMe dataset; one problem per issue, naming the file and the field.

    Errors: unreadable or malformed JSON (``labelme.json``), bad shapes (``labelme.shape``: the JSON path of
    the shape and key), unsafe ``imagePath`` (``labelme.path``), recorded sizes that differ from the image
    (``labelme.size``), unreadable embedded images (``labelme.image``), two JSON files for one image.
    Warnings: shapes, images and files not read; images that exist only embedded.
    """
    try:
        idx = index(path, raise_errors=False)
    except SegpipeError as err:
        yield Problem("error", err.path or str(path), err.where or "", err.message, "labelme.meta")
        return
    yield from idx.problems
