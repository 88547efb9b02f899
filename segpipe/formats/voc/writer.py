"""Writing Pascal VOC folders.

Layout written (``WriteOptions.extra["layout"]``): ``devkit`` (the default) puts the VOC root at
``out/VOCdevkit/VOC2012/``, where torchvision's ``VOCSegmentation(root=out)`` looks for it, and writes every
image as ``JPEGImages/<stem>.jpg`` (torchvision opens ``<stem>.jpg`` and nothing else); an output folder that
is itself ``.../VOCdevkit/VOC2012`` is the root. ``flat`` puts the root at ``out/`` and copies the images
with their own extension (the layout segpipe wrote before ``devkit``). Datumaro's ``voc`` importer reads either::

    <root>/
      Annotations/<stem>.xml            every image (size, objects with boxes and attributes)
      SegmentationClass/<stem>.png      palette PNG of label indices (255 = void), if the image has pixels
      SegmentationObject/<stem>.png     palette PNG of object indices (i = i-th XML object), if it has masks
      ImageSets/Segmentation/<split>.txt   images with a SegmentationClass PNG
      ImageSets/Main/<split>.txt           every image
      ImageSets/Main/<class>_<split>.txt   image-level labels (1 present, 0 only difficult, -1 absent)
      JPEGImages/<stem>.jpg             copied or hard-linked (``WriteOptions.copy_images``) when the source
                                        is an upright JPEG, else decoded upright and written as JPEG
                                        (quality 95, no chroma subsampling; note ``images_reencoded_jpeg``);
                                        ``flat``: ``<stem><ext>``, copied as is
      labelmap.txt                      always: the class set (label index = line position; colours)
      segpipe_meta.json                 sidecar: what VOC cannot hold (see below)

Labels: label 0 is the background (the category named ``background`` or ``meta.extra["background_id"]``,
else a synthesised one); the other categories follow in meta order, so the label value is the
position in the written ``labelmap.txt``. More than 255 labels cannot be written (255 is void):
:class:`~segpipe.errors.FormatError`.

Splits: :func:`~segpipe.formats.splits.loader_split` (an image without split, or with Datumaro's
``default``, goes to ``train``; ``valid``/``validation`` → ``val``); the sidecar remembers the original.

Objects: object ``i`` of ``SegmentationObject`` is the ``i``-th XML object. Class pixels that no object
covers (stuff classes such as road or sky, and thing pixels outside any instance) get one more object
index per class after the XML objects, with no XML object: Datumaro's VOC importer builds every mask from
``SegmentationObject`` when it exists, and would otherwise drop those pixels (object index 0 is
background). The sidecar says so (``region_objects``), and segpipe's reader leaves these regions to the
class map instead of making instances of them. When the 254 object indices run out, the remaining classes
stay at index 0 (note ``region_objects_overflow``: only readers that ignore ``SegmentationClass`` miss them).

Stems: the image's ``file_name`` without extension, folders joined with ``__`` (VOC stems are flat).

Sidecar (``segpipe_meta.json``): the original categories (ids, supercategory, isthing, colour,
keypoint names, skeleton), the label → category id table, info/licenses/extra, and per stem the image
id, original file name, split, attributes, and per object index the annotation id, category id, crowd
flag, exact box, area and attributes. The reader uses it, so COCO → VOC → COCO restores ids exactly.

Losses (per category name, with a note): ``overlap_flattened_pixels``, ``crowd_to_void``,
``instance_fully_occluded``, ``object_index_overflow``, ``keypoints_dropped`` (instances with
keypoints), ``scores_dropped`` (instances with a score), ``unknown_category_dropped``,
``unknown_class_pixels_to_void``. ``category_ids_reindexed`` is a note only (the sidecar keeps the ids).
Shapes of any kind (holes, several parts) are no loss: PNGs hold any mask.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from segpipe.core.labelmap import VOC_VOID, LabelEntry, format_labelmap_txt, palette_for, voc_colormap
from segpipe.core.losses import LossCounter
from segpipe.core.records import READING_EXTRA, DatasetMeta, InstanceMask, Materialized
from segpipe.core.render import render_maps
from segpipe.core.rle import to_bbox
from segpipe.errors import ConfigError, FormatError
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.derive import derive_class_map, derive_instances
from segpipe.formats.splits import loader_split
from segpipe.formats.voc.reader import LABELMAP, SIDECAR
from segpipe.formats.voc.xml import VocAnnotation, VocObject, coco_box_to_voc, format_voc_xml
from segpipe.storage.atomic import copy_or_link, source_exists, source_suffix, write_bytes_atomic, write_json_atomic
from segpipe.storage.images import exif_orientation, read_image, write_label_png
from segpipe.storage.jsonio import jsonable
from segpipe.storage.paths import check_relative_name, ensure_inside
from segpipe.storage.volume import write_slice_png

LAYOUTS = ("devkit", "flat")
#: Where ``devkit`` puts the VOC root, below the output folder (torchvision's ``base_dir`` for 2012).
DEVKIT = ("VOCdevkit", "VOC2012")
#: JPEG settings of re-encoded images: near-lossless, full-resolution chroma (the labels are per pixel).
JPEG_QUALITY = 95
NOTES = {
    "keypoints_dropped": "VOC has no keypoints; instances with keypoints lose them (counted per instance)",
    "scores_dropped": "VOC has no confidence scores; instances with a score lose it",
    "unknown_category_dropped": "instances whose category is not in the dataset's categories are not written",
    "unknown_class_pixels_to_void": "class-map pixels whose value is no known category are written "
    "as void (255)",
    "category_ids_reindexed": "VOC labels are positions in labelmap.txt; the original category ids are kept "
    "in segpipe_meta.json and restored on reading",
    "images_reencoded_jpeg": "images that are not upright JPEGs were decoded (EXIF orientation applied) and "
    "written as JPEG (quality 95): VOC loaders such as torchvision's open JPEGImages/<id>.jpg only "
    "(--layout flat keeps the images as they are)",
    "region_objects_overflow": "SegmentationObject has no object index left for some classes' uncovered pixels; "
    "they are in SegmentationClass only (readers that build masks from SegmentationObject miss them)",
}


def voc_stem(file_name: str) -> str:
    """The VOC stem of an image file name: no extension, folders joined with ``__``."""
    rel = check_relative_name(file_name, where="file_name")
    p = PurePosixPath(rel)
    return "__".join([*p.parent.parts, p.stem]) if p.parent.parts else p.stem


_jsonable = jsonable  # one implementation: segpipe.storage.jsonio


def class_map_to_labels(
    cm: np.ndarray,
    label_of: Mapping[int, int],
    background_category: int | None,
    void_in: int,
    void_out: int,
    losses: LossCounter,
) -> np.ndarray:
    """Maps a class map of category ids to label indices in one LUT pass.

    Background (0, when the background is not itself a category with another id) stays 0, ``void_in``
    becomes ``void_out``; values of no category become ``void_out`` and are counted as
    ``unknown_class_pixels_to_void`` (pixels, per value).

    Returns:
        ``(H, W)`` uint8 (uint16 when ``void_out`` > 255).
    """
    present = np.bincount(cm.ravel(), minlength=1) if cm.size else np.zeros(1, np.int64)
    dtype = np.uint8 if void_out <= 255 else np.uint16
    lut = np.full(max(len(present), 256), void_out, dtype=dtype)
    known = np.zeros(len(lut), dtype=bool)
    for cid, lab in label_of.items():
        if 0 <= cid < len(lut):
            lut[cid], known[cid] = lab, True
    if background_category is None or background_category == 0:
        lut[0], known[0] = 0, True  # background stays background
    if 0 <= void_in < len(lut):
        lut[void_in], known[void_in] = void_out, True
    for v in np.flatnonzero(present[: len(known)] * ~known[: len(present)]):
        losses.lose(
            "unknown_class_pixels_to_void",
            int(present[v]),
            str(int(v)),
            NOTES["unknown_class_pixels_to_void"],
        )
    return lut[cm]


def add_region_objects(object_map: np.ndarray, class_map: np.ndarray, n_objects: int, losses: LossCounter) -> int:
    """Gives the class pixels that no object covers one object index per class, after the XML objects.

    Datumaro's VOC importer makes its masks from ``SegmentationObject`` alone when the file exists, so a
    class pixel at object index 0 (stuff such as road, or thing pixels outside any instance) would be lost
    to it. Classes are numbered in label order; background (0) and void stay as they are.

    Args:
        object_map: ``(H, W)`` object indices (0 none, ``VOC_VOID`` void), updated in place.
        class_map: ``(H, W) uint8`` label indices of the same image.
        n_objects: Object indices already taken (the XML objects are ``1..n_objects``).
        losses: Where ``region_objects_overflow`` is noted when indices run out.

    Returns:
        The number of region objects added.
    """
    free = (object_map == 0) & (class_map != 0) & (class_map != VOC_VOID)
    if not free.any():
        return 0
    labels = np.flatnonzero(np.bincount(class_map[free].ravel(), minlength=1))
    top = max(int(object_map[object_map != VOC_VOID].max(initial=0)), n_objects)
    added = 0
    for label in labels:
        if top + 1 >= VOC_VOID:
            losses.notes.setdefault("region_objects_overflow", NOTES["region_objects_overflow"])
            break
        top += 1
        object_map[free & (class_map == label)] = top
        added += 1
    return added


def _copy_as_jpeg(src: str) -> bool:
    """Whether ``src`` is copied as ``<stem>.jpg`` rather than re-encoded.

    True for a JPEG file without EXIF rotation, and for a file Pillow cannot identify: there are no pixels
    to re-encode, and copying it keeps what the writer did before (a writer never judges image files).
    """
    if not os.path.isfile(src):
        return False  # a volume slice: rendered, never a JPEG
    try:
        with Image.open(src) as im:  # header only
            return im.format == "JPEG" and exif_orientation(im) == 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return True


def _write_jpeg(src: str, dst: Path) -> None:
    """Decodes ``src`` upright to 8-bit RGB and writes it to ``dst`` as a JPEG, atomically.

    Labels are in upright pixel coordinates (segpipe's EXIF policy) and VOC loaders apply no orientation,
    so the pixels are written upright.
    """
    if os.path.isfile(src):
        rgb = read_image(src, exif=True)
    else:  # a slice of a volume (``<volume>#z<z>``): rendered as it is everywhere else
        tmp = dst.with_name(f"{dst.name}.slice.{os.getpid()}.png")
        try:
            write_slice_png(src, tmp)
            rgb = read_image(tmp, exif=False)
        finally:
            tmp.unlink(missing_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(
        buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0
    )
    write_bytes_atomic(dst, buf.getvalue())


class VocWriter:
    """Writes a VOC folder (picklable; ``write_shard`` runs on workers).

    Args:
        out: Output folder.
        meta: The source dataset's meta.
        options: Shared write options (``copy_images``: ``copy``, ``link`` or ``none``; ``extra["layout"]``:
            ``devkit``, the default, or ``flat``).

    Raises:
        ConfigError: an unknown layout.
        FormatError: more than 255 labels (background included).
    """

    format_name: ClassVar[str] = "voc"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.layout = str(self.options.extra.get("layout") or "devkit")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"VOC layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        #: The VOC root (Annotations/, JPEGImages/ ...): ``out`` itself, or ``out/VOCdevkit/VOC2012``.
        self.root = self.out
        if self.layout == "devkit" and (self.out.parent.name, self.out.name) != DEVKIT:
            self.root = self.out.joinpath(*DEVKIT)
        self.entries, self.label_of, self.labels = self._labels(meta)
        if len(self.entries) > 255:
            raise FormatError(
                f"VOC palette PNGs hold labels 0..254 (255 is void); this dataset needs {len(self.entries)} "
                "labels including background",
                hint="merge categories with a category map, or write maskdir (16-bit masks)",
            )
        self.palette = palette_for([e.color for e in self.entries])
        self.names = {c.id: c.name for c in meta.categories}
        self.reindexed = any(cid != self.label_of[cid] for cid in self.label_of)

    @staticmethod
    def _labels(meta: DatasetMeta) -> tuple[list[LabelEntry], dict[int, int], list[int | None]]:
        by_id = meta.category_by_id()
        cmap = voc_colormap(256)
        voc_labels = meta.extra.get("voc_labels")
        order: list[int | None]
        if isinstance(voc_labels, list) and all(c is None or c in by_id for c in voc_labels):
            order = list(voc_labels)
            order += [c.id for c in meta.categories if c.id not in set(order)]
        else:
            bg_id = meta.extra.get("background_id")
            bg = by_id.get(bg_id) if isinstance(bg_id, int) else None
            if bg is None:
                bg = next((c for c in meta.categories if c.name.lower() == "background"), None)
            order = [bg.id if bg is not None else None]
            order += [c.id for c in meta.categories if bg is None or c.id != bg.id]
        entries: list[LabelEntry] = []
        label_of: dict[int, int] = {}
        for i, cid in enumerate(order):
            if cid is None:
                entries.append(LabelEntry("background", (0, 0, 0)))
                continue
            c = by_id[cid]
            color = c.color if c.color is not None else tuple(int(v) for v in cmap[i % 256])
            entries.append(LabelEntry(c.name, color))  # type: ignore[arg-type]
            label_of[cid] = i
        return entries, label_of, order

    # -- driver ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Creates the output folders."""
        for d in (
            "Annotations",
            "SegmentationClass",
            "SegmentationObject",
            "ImageSets/Segmentation",
            "ImageSets/Main",
            "JPEGImages",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    # -- worker ------------------------------------------------------------------------------------

    def _class_map_labels(self, m: Materialized, losses: LossCounter) -> np.ndarray:
        """The source class map (category ids) as label indices; unknown values become void."""
        return class_map_to_labels(
            np.asarray(m.class_map), self.label_of, self.labels[0], int(m.void_value), VOC_VOID, losses
        )

    def _kept_instances(self, instances: list[InstanceMask], losses: LossCounter) -> list[InstanceMask]:
        """The instances of known classes; what VOC cannot hold (unknown classes, keypoints, scores) is counted."""
        kept: list[InstanceMask] = []
        for im in instances:
            inst = im.instance
            name = self.names.get(inst.category_id, str(inst.category_id))
            if inst.category_id not in self.label_of:
                losses.lose("unknown_category_dropped", 1, name, NOTES["unknown_category_dropped"])
                continue
            if inst.keypoints and any(v > 0 for v in inst.keypoints[2::3]):
                losses.lose("keypoints_dropped", 1, name, NOTES["keypoints_dropped"])
            if inst.score is not None:
                losses.lose("scores_dropped", 1, name, NOTES["scores_dropped"])
            kept.append(im)
        return kept

    def _maps(
        self, m: Materialized, losses: LossCounter
    ) -> tuple[list[InstanceMask], np.ndarray | None, np.ndarray | None]:
        img = m.sample.image
        instances = list(m.instances)
        if not instances and m.class_map is None and m.panoptic is not None:
            instances, dl = derive_instances(m, self.meta)
            losses.merge(dl)
        kept = self._kept_instances(instances, losses)
        h, w = img.height, img.width
        if m.class_map is not None:
            h, w = np.asarray(m.class_map).shape
        has_masks = any(im.rle is not None for im in kept)
        class_map = object_map = None
        if has_masks:
            cm, object_map, rl = render_maps(
                kept, h, w, label_of=self.label_of, void_value=VOC_VOID, names=self.names
            )
            # VOC XML holds boxes: box-only instances are not lost here.
            for key in [k for k in rl.losses if k[0] == "box_only_no_mask"]:
                del rl.losses[key]
            rl.notes.pop("box_only_no_mask", None)
            losses.merge(rl)
            class_map = cm
        if m.class_map is not None:
            # The source's own class map is exact (void, stuff, classes of unannotated regions).
            class_map = self._class_map_labels(m, losses)
        elif m.panoptic is not None:
            # Stuff classes live only in the panoptic map: the class map comes from it (things and stuff),
            # with crowd regions void as VOC has them (the object map rendered from the things says where).
            dcm, dl = derive_class_map(m, self.meta)
            losses.merge(dl)
            if dcm is not None:
                class_map = self._class_map_labels(
                    Materialized(m.sample, (), dcm, None, m.void_value), losses
                )
                if object_map is not None:
                    class_map = np.where(object_map == VOC_VOID, VOC_VOID, class_map)
                thing = {c.id: c.isthing for c in self.meta.categories}
                for seg in m.panoptic[1]:  # stuff segments are written as class-map regions
                    if not thing.get(seg.category_id, True):
                        losses.counts_out[self.names.get(seg.category_id, str(seg.category_id))] += 1
        if class_map is not None and class_map.dtype != np.uint8:
            class_map = class_map.astype(np.uint8)
        return kept, class_map, object_map

    def _copy_image(self, src: str | None, stem: str, file_name: str, losses: LossCounter) -> str:
        if self.layout == "devkit":
            name = f"{stem}.jpg"
        else:
            name = f"{stem}{source_suffix(src, os.path.splitext(file_name)[1]) or '.jpg'}"
        mode = self.options.copy_images
        if mode == "none":
            return name
        if src is None or not source_exists(src):
            losses.missing_images.append(file_name)
            return name
        dst = ensure_inside(self.out, self.root / "JPEGImages" / name)

        if self.layout == "flat" or _copy_as_jpeg(src):
            copy_or_link(src, dst, mode)
        else:
            _write_jpeg(src, dst)
            losses.notes.setdefault("images_reencoded_jpeg", NOTES["images_reencoded_jpeg"])
        return name

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes XML, PNGs and images of one shard; returns per-image fragments for :meth:`finalize`."""
        res = ShardResult(index)
        losses = res.losses
        if self.reindexed:
            losses.notes.setdefault("category_ids_reindexed", NOTES["category_ids_reindexed"])
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            stem = voc_stem(img.file_name)
            kept, class_map, object_map = self._maps(m, losses)
            h, w = class_map.shape if class_map is not None else (img.height, img.width)
            if class_map is not None:
                write_label_png(
                    ensure_inside(self.out, self.root / "SegmentationClass" / f"{stem}.png"),
                    class_map,
                    self.palette,
                )
            if object_map is None and m.sample.object_file is not None and class_map is not None:
                object_map = np.zeros(class_map.shape, dtype=np.uint8)  # the source had one: keep it
            if object_map is not None:
                if class_map is not None and object_map.shape == class_map.shape:
                    # VOC convention: void (boundaries, crowds) is void in both maps.
                    object_map[(class_map == VOC_VOID) & (object_map == 0)] = VOC_VOID
                    add_region_objects(object_map, class_map, len(kept), losses)
                write_label_png(
                    ensure_inside(self.out, self.root / "SegmentationObject" / f"{stem}.png"),
                    object_map.astype(np.uint8),
                    voc_colormap(256),
                )
            image_name = self._copy_image(m.sample.image_path, stem, img.file_name, losses)
            objects: list[VocObject] = []
            side_objects: list[dict[str, Any]] = []
            for im in kept:
                inst = im.instance
                bbox = inst.bbox
                if bbox is None and im.rle is not None and any(im.rle["size"]):
                    b = to_bbox(im.rle)
                    bbox = b if b[2] > 0 and b[3] > 0 else None
                label = self.label_of[inst.category_id]
                objects.append(
                    VocObject(
                        self.entries[label].name,
                        coco_box_to_voc(bbox) if bbox else None,
                        dict(inst.attributes),
                    )
                )
                side_objects.append(
                    {
                        "id": inst.id,
                        "category_id": inst.category_id,
                        "iscrowd": inst.iscrowd,
                        "bbox": list(bbox) if inst.bbox is not None and bbox is not None else None,
                        "area": inst.area,
                        "attributes": _jsonable(inst.attributes),
                    }
                )
                losses.counts_out[self.names.get(inst.category_id, str(inst.category_id))] += 1
            attrs = dict(img.attributes)
            depth = attrs.pop("depth", 3)
            attrs["segmented"] = "1" if class_map is not None else "0"
            ann = VocAnnotation(
                image_name, int(w), int(h), int(depth) if isinstance(depth, int) else 3, attrs, objects
            )
            write_bytes_atomic(
                ensure_inside(self.out, self.root / "Annotations" / f"{stem}.xml"), format_voc_xml(ann)
            )
            splits = list(dict.fromkeys(loader_split(s) for s in img.attributes.get("voc_splits") or [img.split]))
            labels = img.attributes.get("voc_image_labels")
            if not isinstance(labels, Mapping):
                present: dict[str, int] = {}
                for o in objects:
                    difficult = str(o.attributes.get("difficult", 0)) not in ("0", "False", "")
                    present[o.name] = max(present.get(o.name, -1), 0 if difficult else 1)
                labels = present
            res.fragments.append(
                {
                    "stem": stem,
                    "splits": splits,
                    "segmented": class_map is not None,
                    "labels": dict(labels),
                    "explicit_labels": isinstance(img.attributes.get("voc_image_labels"), Mapping),
                    "side": {
                        "id": img.id,
                        "file_name": img.file_name,
                        "split": img.split,
                        "attributes": _jsonable(img.attributes),
                        "objects": side_objects,
                    },
                }
            )
        return res

    # -- driver ------------------------------------------------------------------------------------

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ImageSets, ``labelmap.txt`` and the sidecar from the shards' fragments, in shard order.

        Raises:
            FormatError: two images map to the same VOC stem.
        """
        frags: list[dict[str, Any]] = []
        for r in sorted(results, key=lambda r: r.index):
            frags.extend(r.fragments)
        seen: dict[str, str] = {}
        for f in frags:
            if f["stem"] in seen:
                raise FormatError(
                    f"images {seen[f['stem']]!r} and {f['side']['file_name']!r} both map to "
                    f"VOC stem {f['stem']!r}",
                    path=self.out,
                    hint="rename one of the images",
                )
            seen[f["stem"]] = f["side"]["file_name"]
        written: list[Path] = []
        seg: dict[str, list[str]] = {}
        main: dict[str, list[str]] = {}
        for f in frags:
            for s in f["splits"]:
                main.setdefault(s, []).append(f["stem"])
                if f["segmented"]:
                    seg.setdefault(s, []).append(f["stem"])

        def put(rel: str, lines: list[str]) -> None:
            p = ensure_inside(self.out, self.root / rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(p, ("".join(line + "\n" for line in lines)).encode("utf-8"))
            written.append(p)

        for s, stems in seg.items():
            put(f"ImageSets/Segmentation/{check_relative_name(s)}.txt", stems)
        for s, stems in main.items():
            put(f"ImageSets/Main/{check_relative_name(s)}.txt", stems)
            class_names = [e.name for e in self.entries]
            extra = sorted({k for f in frags if s in f["splits"] for k in f["labels"]} - set(class_names))
            for cname in class_names + extra:
                lines = []
                for f in frags:
                    if s in f["splits"]:
                        flag = f["labels"].get(cname, None if f["explicit_labels"] else -1)
                        if flag is not None:
                            lines.append(f"{f['stem']} {int(flag):2d}")
                if lines or cname in class_names:
                    put(f"ImageSets/Main/{check_relative_name(cname)}_{s}.txt", lines)
        lm = ensure_inside(self.out, self.root / LABELMAP)
        write_bytes_atomic(lm, format_labelmap_txt(self.entries).encode("utf-8"))
        written.append(lm)
        side = {
            "format": "segpipe-voc-sidecar",
            "version": 1,
            "categories": [
                {
                    "id": c.id,
                    "name": c.name,
                    "supercategory": c.supercategory,
                    "isthing": c.isthing,
                    "color": list(c.color) if c.color is not None else None,
                    "keypoints": list(c.keypoints),
                    "skeleton": [list(p) for p in c.skeleton],
                }
                for c in self.meta.categories
            ],
            "labels": self.labels,
            "background_id": self.labels[0],
            # Object indices after the XML objects are class regions, not instances (module docstring).
            "region_objects": True,
            "info": _jsonable(self.meta.info),
            "licenses": _jsonable(self.meta.licenses),
            "extra": _jsonable({k: v for k, v in self.meta.extra.items()
                                if not k.startswith("voc_") and k not in READING_EXTRA}),
            "images": {f["stem"]: f["side"] for f in frags},
        }
        sp = ensure_inside(self.out, self.root / SIDECAR)
        write_json_atomic(sp, side, indent=None)
        written.append(sp)
        return written
