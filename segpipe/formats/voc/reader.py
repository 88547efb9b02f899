"""Reading Pascal VOC folders (driver: index files) and materialising samples (worker: PNGs).

Layout read::

    root/
      Annotations/<stem>.xml            boxes and object attributes
      SegmentationClass/<stem>.png      class labels (palette indices; 255 = void / boundary)
      SegmentationObject/<stem>.png     object indices (i = i-th <object> of the XML; 255 = void)
      ImageSets/<task>/<split>.txt      splits; ImageSets/Main/<class>_<split>.txt image-level labels
      JPEGImages/<stem>.jpg
      labelmap.txt                      optional class set (index = label value; colours)
      segpipe_meta.json                 optional sidecar written by segpipe (ids, original categories)

Ids: images are numbered 1..N in sorted stem order; object ``i`` (1-based) of image ``n`` gets
annotation id ``n * stride + i`` with ``stride = 1000`` (raised to a power of ten above the largest
object count), recorded as ``meta.extra["voc_instance_id_stride"]``. A segpipe sidecar overrides
both, and the original categories, so that COCO → VOC → COCO restores ids exactly.

Categories: without a sidecar, the label map's entries (VOC's 21 classes by default) with
``id = label index``, background included (id 0, ``isthing=False``). ``meta.extra`` holds
``voc_labels`` (category id per label index, None for a background that has no category),
``voc_colors`` (colour per label index) and ``background_id``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.labelmap import (
    VOC_VOID,
    LabelEntry,
    parse_labelmap_txt,
    voc_colormap,
    voc_labelmap,
)
from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import (
    RLE,
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    InstanceMask,
    Materialized,
    Sample,
    Segmentation,
)
from segpipe.core.render import instances_from_maps_detailed
from segpipe.errors import FormatError, InputError
from segpipe.formats.labelme.layout import is_labelme_xml
from segpipe.formats.voc.masks import read_indexed_mask
from segpipe.formats.voc.xml import VocAnnotation, parse_voc_xml, voc_box_to_coco
from segpipe.storage.images import image_size
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import check_relative_name, safe_join

SIDECAR = "segpipe_meta.json"
LABELMAP = "labelmap.txt"
MARKER_DIRS = ("Annotations", "SegmentationClass", "SegmentationObject")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: ``trainval`` is the union of ``train`` and ``val``: an image's own split is the more specific one.
_UNION_SPLITS = ("trainval",)
_KNOWN_SPLITS = ("train", "val", "trainval", "test", "default")
#: Loss notes of what the reader does not consume.
LOSS_NOTES = {
    "xml_content_not_read": "Annotations XML content the VOC reader does not keep: XML attributes (id=\"3\"), "
    "children of <size>/<bndbox> beyond width/height/depth and xmin..ymax, text beside child elements "
    "(each file is named in a warning)",
}


def find_voc_root(path: str | Path) -> Path | None:
    """The VOC root at ``path`` or one/two levels below it (``VOCdevkit/VOC2012``), or None."""
    p = Path(path)
    if not p.is_dir():
        return None
    if any((p / d).is_dir() for d in MARKER_DIRS):
        return p
    for depth in (1, 2):
        # the trailing "/" lists folders only, from the listings' entry types: a folder of 100k images is
        # not stat-ed file by file
        pattern = "/".join(["*"] * depth) + "/"
        hits = sorted(c for c in p.glob(pattern) if c.is_dir() and any((c / d).is_dir() for d in MARKER_DIRS))
        if len(hits) == 1:
            return hits[0]
    return None


def detect_voc(path: str | Path) -> bool:
    """True for a folder with ``Annotations/``, ``SegmentationClass/`` or ``SegmentationObject/``.

    A LabelMe XML folder also has ``Annotations/`` (of ``<imagesize>`` / ``<polygon><pt>`` XML): not VOC.
    """
    root = find_voc_root(path)
    return root is not None and not is_labelme_xml(root)


def _listdir(d: Path) -> list[str]:
    try:
        return sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_labelmap_file(path: Path) -> list[LabelEntry]:
    """Parses ``labelmap.txt`` (UTF-8)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text at byte {e.start}", path=path) from None
    entries = parse_labelmap_txt(text, source=path)
    if not entries:
        raise FormatError("label map is empty", path=path)
    return entries


def _split_lists(root: Path) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """Reads ImageSets.

    Returns:
        ``(splits per stem in priority order, image-level labels per stem)``.
    """
    sets = root / "ImageSets"
    tasks = [t for t in ("Segmentation", "Main") if (sets / t).is_dir()]
    tasks += [t for t in _listdir(sets) if t not in tasks and (sets / t).is_dir()]
    lm = root / LABELMAP
    label_names = (
        {e.name for e in read_labelmap_file(lm)} if lm.is_file() else {e.name for e in voc_labelmap()}
    )
    splits: dict[str, list[str]] = {}
    image_labels: dict[str, dict[str, int]] = {}
    for task in tasks:
        listing = [n for n in _listdir(sets / task) if n.endswith(".txt")]
        plain = {n[:-4] for n in listing} | set(_KNOWN_SPLITS)
        for fname in listing:
            f = safe_join(root, f"ImageSets/{task}/{fname}")
            name = fname[:-4]
            cls, _, split = name.rpartition("_")
            # "<class>_<split>.txt" holds image-level labels: the class is known, or the split is.
            is_class_file = bool(cls) and task != "Segmentation" and (cls in label_names or split in plain)
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise FormatError(f"not UTF-8 text at byte {e.start}", path=f) from None
            for lineno, raw in enumerate(text.splitlines(), start=1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.split()
                stem = check_relative_name(fields[0], source=f, where=f"line {lineno}")
                if is_class_file:
                    if len(fields) < 2:
                        raise FormatError(
                            f"expected '<image> <1|0|-1>', got {line!r}", path=f, where=f"line {lineno}"
                        )
                    try:
                        flag = int(fields[1])
                    except ValueError:
                        raise FormatError(
                            f"image-level label must be 1, 0 or -1, got {fields[1]!r}",
                            path=f,
                            where=f"line {lineno}",
                        ) from None
                    image_labels.setdefault(stem, {})[cls] = flag
                    the_split = split
                else:
                    the_split = name
                lst = splits.setdefault(stem, [])
                if the_split not in lst:
                    lst.append(the_split)
    return splits, image_labels


def _pick_split(splits: list[str]) -> str | None:
    specific = [s for s in splits if s not in _UNION_SPLITS]
    pool = specific or splits
    return pool[0] if pool else None


class VocReader:
    """Indexes a VOC folder and streams its samples (driver side).

    Args:
        path: The VOC root (or a folder holding one, such as ``VOCdevkit``).
        image_root: Folder of the images (default ``<root>/JPEGImages``).

    Attributes:
        meta: Categories and label mapping (see the module doc).
        problems: Unknown class names, images without size, missing images.
    """

    format_name: ClassVar[str] = "voc"

    def __init__(self, path: str | Path, *, image_root: str | Path | None = None) -> None:
        root = find_voc_root(path)
        if root is None:
            raise InputError(
                "not a Pascal VOC folder (no Annotations/, SegmentationClass/ or SegmentationObject/)",
                path=path,
            )
        self.root = root
        self.image_root = Path(image_root) if image_root is not None else root / "JPEGImages"
        self.problems: list[Problem] = []
        #: What the XML held that is not read (for the conversion report; ``--strict`` fails on it).
        self.losses = LossCounter()
        self.meta: DatasetMeta
        sidecar = self._read_sidecar()
        lm_file = root / LABELMAP
        entries = read_labelmap_file(lm_file) if lm_file.is_file() else voc_labelmap()

        splits, image_labels = _split_lists(root)
        xml_stems = {n[:-4] for n in _listdir(root / "Annotations") if n.endswith(".xml")}
        cls_stems = {n[:-4] for n in _listdir(root / "SegmentationClass") if n.endswith(".png")}
        obj_stems = {n[:-4] for n in _listdir(root / "SegmentationObject") if n.endswith(".png")}
        images: dict[str, str] = {}
        for n in _listdir(self.image_root):
            stem, ext = os.path.splitext(n)
            if ext.lower() in IMAGE_EXTS and stem not in images:
                images[stem] = n
        stems = sorted(xml_stems | cls_stems | obj_stems | set(splits) | set(images))

        # Parse every XML once: class names may extend the label map (never dropped silently).
        anns: dict[str, VocAnnotation] = {}
        names = [e.name for e in entries]
        for stem in stems:
            if stem in xml_stems:
                f = safe_join(root, f"Annotations/{stem}.xml")
                anns[stem] = parse_voc_xml(f.read_bytes(), source=f)
                unread = anns[stem].unread
                if unread:
                    more = f" and {len(unread) - 5} more" if len(unread) > 5 else ""
                    self.problems.append(Problem("warning", str(f), unread[0], f"not read: {', '.join(unread[:5])}"
                                                 f"{more}", "voc.xml_not_read"))
                    self.losses.lose("xml_content_not_read", len(unread), note=LOSS_NOTES["xml_content_not_read"])
                for i, obj in enumerate(anns[stem].objects):
                    if obj.name not in names:
                        names.append(obj.name)
                        entries.append(LabelEntry(obj.name))
                        self.problems.append(
                            Problem(
                                "warning",
                                str(f),
                                f"object[{i}].name",
                                f"class {obj.name!r} is not in the label map; "
                                f"added as label {len(names) - 1}",
                                "voc.unknown_class",
                            )
                        )
        self._build_meta(entries, sidecar)
        label_index = {n: i for i, n in enumerate(names)}
        max_objects = max((len(a.objects) for a in anns.values()), default=0)
        stride = 1000
        while stride <= max_objects + 255:
            stride *= 10
        self.meta = replace(self.meta, extra={**self.meta.extra, "voc_instance_id_stride": stride})

        side_images: dict[str, Any] = sidecar.get("images", {}) if sidecar else {}
        used_ids = {int(v["id"]) for v in side_images.values() if isinstance(v, dict) and "id" in v}
        next_id = max(used_ids, default=0) + 1
        labels_to_cat: list[int | None] = self.meta.extra["voc_labels"]
        samples: list[Sample] = []
        for pos, stem in enumerate(stems, start=1):
            side = side_images.get(stem) if isinstance(side_images.get(stem), dict) else None
            if side is not None and "id" in side:
                image_id = int(side["id"])
            elif sidecar:
                image_id, next_id = next_id, next_id + 1
            else:
                image_id = pos
            samples.append(
                self._sample(
                    stem,
                    image_id,
                    anns.get(stem),
                    images,
                    splits,
                    image_labels,
                    cls_stems,
                    obj_stems,
                    label_index,
                    labels_to_cat,
                    stride,
                    side,
                )
            )
        samples.sort(key=lambda s: s.image.id)
        self._samples = samples

    # -- indexing helpers -------------------------------------------------------------------------

    def _read_sidecar(self) -> dict[str, Any] | None:
        f = self.root / SIDECAR
        if not f.is_file():
            return None
        data = read_json(f)
        if not isinstance(data, dict) or data.get("format") != "segpipe-voc-sidecar":
            raise FormatError("not a segpipe VOC sidecar (missing 'format': 'segpipe-voc-sidecar')", path=f)
        return data

    def _build_meta(self, entries: list[LabelEntry], sidecar: dict[str, Any] | None) -> None:
        colors = voc_colormap(max(256, len(entries)))
        voc_colors = [
            list(e.color) if e.color is not None else colors[i].tolist() for i, e in enumerate(entries)
        ]
        extra: dict[str, Any] = {"voc_colors": voc_colors, "background_id": 0}
        if sidecar is not None:
            cats = tuple(
                Category(
                    id=int(c["id"]),
                    name=str(c["name"]),
                    supercategory=str(c.get("supercategory", "")),
                    isthing=bool(c.get("isthing", True)),
                    color=tuple(c["color"]) if c.get("color") is not None else None,  # type: ignore[arg-type]
                    keypoints=tuple(c.get("keypoints", ())),
                    skeleton=tuple(tuple(p) for p in c.get("skeleton", ())),  # type: ignore[misc]
                )
                for c in sidecar.get("categories", [])
            )
            by_name = {c.name: c.id for c in cats}
            labels = list(sidecar.get("labels", []))
            # Labels added after the sidecar was written (hand edits) get their label index as id.
            for i in range(len(labels), len(entries)):
                labels.append(by_name.get(entries[i].name, i))
            extra["voc_labels"] = labels
            extra["background_id"] = sidecar.get("background_id")
            # segpipe's writer numbers class regions after the XML objects (Datumaro reads masks from them).
            extra["voc_region_objects"] = bool(sidecar.get("region_objects", False))
            self.meta = DatasetMeta(
                format="voc",
                categories=cats,
                info=dict(sidecar.get("info", {})),
                licenses=tuple(sidecar.get("licenses", ())),
                void_value=VOC_VOID,
                extra={**dict(sidecar.get("extra", {})), **extra},
            )
            return
        cats = tuple(
            Category(id=i, name=e.name, isthing=i != 0, color=e.color) for i, e in enumerate(entries)
        )
        extra["voc_labels"] = list(range(len(entries)))
        self.meta = DatasetMeta(format="voc", categories=cats, void_value=VOC_VOID, extra=extra)

    def _sample(
        self,
        stem: str,
        image_id: int,
        ann: VocAnnotation | None,
        images: dict[str, str],
        splits: dict[str, list[str]],
        image_labels: dict[str, dict[str, int]],
        cls_stems: set[str],
        obj_stems: set[str],
        label_index: dict[str, int],
        labels_to_cat: list[int | None],
        stride: int,
        side: dict[str, Any] | None,
    ) -> Sample:
        root = self.root
        xml_file = root / "Annotations" / f"{stem}.xml"
        sem = str(safe_join(root, f"SegmentationClass/{stem}.png")) if stem in cls_stems else None
        obj = str(safe_join(root, f"SegmentationObject/{stem}.png")) if stem in obj_stems else None
        fname = images.get(stem)
        if ann is not None and ann.filename and (self.image_root / ann.filename).is_file():
            fname = check_relative_name(ann.filename, source=xml_file, where="filename")
        image_path = str(safe_join(self.image_root, fname)) if fname else None
        file_name = fname or (ann.filename if ann is not None and ann.filename else f"{stem}.jpg")
        width = ann.width if ann is not None else None
        height = ann.height if ann is not None else None
        if not width or not height:
            for src in (image_path, sem, obj):
                if src:
                    width, height = image_size(src, exif=src == image_path)
                    break
        if not width or not height:
            width = height = 0
            self.problems.append(
                Problem(
                    "warning",
                    str(xml_file),
                    "size",
                    "image size unknown (no <size>, image or mask)",
                    "voc.no_size",
                )
            )
        if image_path is None:
            self.problems.append(
                Problem(
                    "warning",
                    str(self.image_root / file_name),
                    "",
                    "image file not found",
                    "voc.missing_image",
                )
            )
        attrs: dict[str, Any] = dict(ann.attributes) if ann is not None else {}
        if ann is not None and ann.depth is not None:
            attrs["depth"] = ann.depth
        my_splits = splits.get(stem, [])
        if len(my_splits) > 1:
            attrs["voc_splits"] = list(my_splits)
        if stem in image_labels:
            attrs["voc_image_labels"] = dict(image_labels[stem])
        split = _pick_split(my_splits)
        if side is not None:
            attrs = dict(side.get("attributes", attrs))
            file_name = str(side.get("file_name", file_name))
            split = side.get("split", split)
        info = ImageInfo(image_id, file_name, int(width), int(height), split, attrs)

        side_objs = side.get("objects") if side is not None else None
        objs = ann.objects if ann is not None else []
        if not isinstance(side_objs, list) or len(side_objs) != len(objs):
            side_objs = None
        instances: list[Instance] = []
        for k, o in enumerate(objs):
            label = label_index[o.name]
            cat = labels_to_cat[label] if label < len(labels_to_cat) else label
            bbox = voc_box_to_coco(o.box) if o.box is not None else None
            # <polygon> outlines (CVAT / Roboflow / LabelMe-style VOC) are the object's mask; a box-less
            # object gets the polygons' box.
            seg = Segmentation.from_polygons(o.polygons) if o.polygons else None
            if bbox is None and o.polygons:
                bbox = rle_ops.polygons_bbox(o.polygons)
            inst = Instance(
                id=image_id * stride + k + 1,
                image_id=image_id,
                category_id=int(cat) if cat is not None else label,
                segmentation=seg,
                bbox=bbox,
                attributes=dict(o.attributes),
            )
            if side_objs is not None:
                so = side_objs[k]
                inst = replace(
                    inst,
                    id=int(so.get("id", inst.id)),
                    category_id=int(so.get("category_id", inst.category_id)),
                    bbox=tuple(so["bbox"]) if so.get("bbox") is not None else inst.bbox,  # type: ignore[arg-type]
                    area=so.get("area"),
                    iscrowd=bool(so.get("iscrowd", False)),
                    attributes=dict(so.get("attributes", inst.attributes)),
                )
            instances.append(inst)
        return Sample(
            image=info,
            image_path=image_path,
            instances=tuple(instances),
            semantic_file=sem,
            object_file=obj,
        )

    # -- protocol ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id."""
        yield from self._samples


def _label_lut(meta: DatasetMeta, top: int) -> np.ndarray | None:
    """LUT label index → category id, or None when it is the identity."""
    labels: list[int | None] = list(meta.extra.get("voc_labels", []))
    bg = meta.extra.get("background_id", 0)
    if all(c == i for i, c in enumerate(labels)):
        return None
    size = max(top + 1, 256)
    lut = np.arange(size, dtype=np.int64)
    for i, c in enumerate(labels):
        if i < size:
            lut[i] = 0 if c is None else (int(c) if c != bg else 0)
    return lut


def _polygon_rle(inst: Instance, height: int, width: int) -> RLE | None:
    """The mask of an object's XML polygons at the image size, or None without polygons.

    Raises:
        FormatError: polygons but no image size, or a malformed polygon.
    """
    seg = inst.segmentation
    if seg is None or seg.kind != "polygons" or not seg.polygons:
        return None
    if height <= 0 or width <= 0:
        raise FormatError("a polygon needs the image size to be rasterised", where=f"annotation {inst.id}")
    for j, poly in enumerate(seg.polygons):
        why = rle_ops.check_polygon(list(poly))
        if why:
            raise FormatError(why, where=f"annotation {inst.id} polygon {j}")
    return rle_ops.polygons_to_rle(seg.polygons, height, width)


def materialize_voc(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Decodes one sample's PNGs (worker side).

    ``class_map`` holds category ids (label indices mapped through ``meta.extra["voc_labels"]``; the
    background stays 0, void 255). Object ``i`` of ``SegmentationObject`` is matched with the ``i``-th
    XML object and gives it its mask (all pixels of that object index); the instance keeps the XML's
    class, box and attributes. Object indices beyond the XML's objects become new instances whose class
    is the majority class of their pixels, except in segpipe's own output (sidecar ``region_objects``),
    where they are class regions the class map holds. XML objects without pixels stay box-only.
    """
    colors = meta.extra.get("voc_colors")
    cols = np.asarray(colors, dtype=np.uint8) if colors else None
    labels = read_indexed_mask(sample.semantic_file, cols) if sample.semantic_file else None
    objects = read_indexed_mask(sample.object_file, voc_colormap(256)) if sample.object_file else None
    img = sample.image
    class_map = None
    if labels is not None:
        lut = _label_lut(meta, int(labels.max()) if labels.size else 0)
        if lut is None:
            class_map = labels
        else:
            mapped = lut[labels]
            mapped[labels == VOC_VOID] = VOC_VOID
            top = int(mapped.max()) if mapped.size else 0
            class_map = mapped.astype(np.uint8 if top <= 255 else np.uint16)
    # XML polygons give a mask (rasterised as pycocotools does COCO polygons); a SegmentationObject
    # region of the same object replaces it below (the PNG is the pixel truth).
    instances: list[InstanceMask] = [InstanceMask(inst, _polygon_rle(inst, img.height, img.width))
                                     for inst in sample.instances]
    if objects is not None:
        base = labels if labels is not None else np.zeros_like(objects)
        if base.shape != objects.shape:
            raise FormatError(
                f"SegmentationObject is {objects.shape[1]}x{objects.shape[0]} but SegmentationClass is "
                f"{base.shape[1]}x{base.shape[0]}",
                path=sample.object_file,
            )
        regions = {
            r.object_index: r for r in instances_from_maps_detailed(base, objects, void_value=VOC_VOID)
        }
        labels_to_cat: list[int | None] = list(meta.extra.get("voc_labels", []))
        stride = int(meta.extra.get("voc_instance_id_stride", 1000))
        for k, inst in enumerate(sample.instances):
            r = regions.pop(k + 1, None)
            if r is None:
                continue
            instances[k] = InstanceMask(
                replace(
                    inst,
                    segmentation=Segmentation.from_rle(r.rle),
                    bbox=inst.bbox if inst.bbox is not None else rle_ops.to_bbox(r.rle),
                    area=inst.area if inst.area is not None else float(r.pixels),
                ),
                r.rle,
            )
        if meta.extra.get("voc_region_objects"):
            regions.clear()  # class regions that segpipe's writer added: the class map already holds them
        for idx in sorted(regions):
            r = regions[idx]
            cat = labels_to_cat[r.category] if r.category < len(labels_to_cat) else r.category
            inst = Instance(
                id=img.id * stride + idx,
                image_id=img.id,
                category_id=int(cat) if cat is not None else r.category,
                segmentation=Segmentation.from_rle(r.rle),
                bbox=rle_ops.to_bbox(r.rle),
                area=float(r.pixels),
            )
            instances.append(InstanceMask(inst, r.rle))
    return Materialized(sample=sample, instances=tuple(instances), class_map=class_map, void_value=VOC_VOID)
