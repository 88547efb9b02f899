"""Writing LabelMe JSON: ``labelme`` (images beside their JSON) and ``labelme_embedded`` (``imageData`` embedded).

Layout written (what LabelMe opens as a folder, ``labelme DST``, and what the ``labelme`` reader reads back)::

    out/
      [<split>/]<file_name>        the image (copied or linked; ``--images none`` leaves it out)
      [<split>/]<stem>.json        LabelMe 5.5 JSON: imagePath = the image's name (same folder),
                                   imageData null (``labelme``) or the image file's bytes in base64
                                   (``labelme_embedded``; ``WriteOptions.extra["embed_images"]`` does the same)
      labels.txt                   __ignore__, _background_, then the classes (LabelMe's --labels file)

An image without split (or Datumaro's ``default``) is written at the top; others under their split's folder.

Objects (each keeps its ``flags``, ``description``, ``group_id`` and other attributes as shape keys):

* COCO polygons are written as they are, one ``polygon`` shape each (vertex-exact).
* Any other mask is traced along pixel edges (exact, see :mod:`segpipe.core.contours`): an object without
  holes becomes one ``polygon`` per part, its parts sharing a ``group_id``; an object with holes becomes
  one ``mask`` shape (a 1-bit PNG of its box; LabelMe 5.3 and later open it). Both read back
  pixel-identical.
* A box-only object becomes a ``rectangle`` (counted ``boxes_as_rectangles``: it reads back as a
  filled rectangle mask).
* Label-map (semantic) sources: each connected component of each class is one shape (polygon, or mask when
  it has holes); background stays implicit.

What LabelMe cannot hold is counted (``--strict`` fails on it): ``crowd_dropped``, ``keypoints_dropped``,
``scores_dropped``, ``boxes_as_rectangles``, ``void_pixels_dropped`` (void / ignore pixels of label maps),
``semantic_pixels_dropped`` (label-map pixels of an image that also has objects, not covered by any),
``unknown_category_dropped``, ``empty_objects_dropped``, ``attributes_dropped`` (attributes whose name is a
LabelMe key or whose value LabelMe cannot hold there), ``image_not_embedded`` (over the embedding ceiling),
``image_name_collision`` (two images of one folder with one stem: one JSON each is impossible; the later
is not written).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.core.contours import polygonize, rasterize
from segpipe.core.losses import LossCounter
from segpipe.core.records import DatasetMeta, Instance, Materialized
from segpipe.core.render import regions_from_class_map
from segpipe.formats import perimage
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.labelme.layout import LABELS_TXT, NOT_CLASSES, read_json_bytes
from segpipe.formats.labelme.reader import EMBEDDED_KEY, MAX_IMAGE_DATA_CHARS, TOP_KEYS
from segpipe.formats.labelme.shapes import SHAPE_KEYS, mask_shape, polygon_shape, rectangle_shape
from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.images import exif_orientation, read_image
from segpipe.storage.jsonio import jsonable
from segpipe.storage.paths import check_relative_name, ensure_inside

#: The LabelMe version written (``mask`` shapes need 5.3 or later).
LABELME_VERSION = "5.5.0"
#: Largest image embedded, in bytes (its base64 stays under the reader's ceiling).
MAX_EMBED_BYTES = MAX_IMAGE_DATA_CHARS // 4 * 3
NOTES = {
    "crowd_dropped": "crowd regions have no LabelMe form and are not written",
    "keypoints_dropped": "LabelMe shapes hold no keypoints of an object",
    "scores_dropped": "LabelMe files hold no confidence scores",
    "boxes_as_rectangles": "box-only objects are written as rectangles, which read back as filled rectangle masks",
    "void_pixels_dropped": "void / ignore pixels of label maps are not written (they read back as unlabelled)",
    "semantic_pixels_dropped": "label-map pixels of images that also have objects, not covered by any object",
    "unknown_category_dropped": "objects whose category is not in the dataset's categories are not written",
    "empty_objects_dropped": "objects with an empty mask and no box hold nothing to write",
    "attributes_dropped": "attributes named like a LabelMe key (or flags / description / group_id of a type "
    "LabelMe cannot hold there) are not written",
    "image_not_embedded": "images over the embedding ceiling are written as files, not embedded",
    "image_name_collision": "two images of one folder share a stem (one JSON each is impossible): the later one "
    "is not written",
}


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, NOTES[kind])


def _is_flags(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, bool) for a, b in v.items())


def _jsonable(v: Any) -> Any:
    return jsonable(v)


def shape_extras(attributes: dict[str, Any], losses: LossCounter, name: str) -> tuple[dict[str, Any], int | None]:
    """Shape keys from an object's attributes: ``(flags / description / other keys, group_id)``."""
    extra: dict[str, Any] = {}
    gid: int | None = None
    dropped = 0
    for k, v in attributes.items():
        if k == "flags" and _is_flags(v):
            extra["flags"] = dict(v)
        elif k == "description" and isinstance(v, str):
            extra["description"] = v
        elif k == "group_id" and isinstance(v, int) and not isinstance(v, bool):
            gid = v
        elif k in SHAPE_KEYS:
            dropped += 1
        else:
            extra[k] = _jsonable(v)
    if dropped:
        _lose(losses, "attributes_dropped", dropped, name)
    return extra, gid


def image_extras(attributes: dict[str, Any], losses: LossCounter) -> dict[str, Any]:
    """Top-level keys from an image's attributes (``flags`` and keys LabelMe keeps as ``otherData``)."""
    out: dict[str, Any] = {}
    dropped = 0
    for k, v in attributes.items():
        if k == "flags" and _is_flags(v):
            out["flags"] = dict(v)
        elif k in TOP_KEYS:
            dropped += 1
        else:
            out[k] = _jsonable(v)
    if dropped:
        _lose(losses, "attributes_dropped", dropped)
    return out


def mask_shapes(label: str, mask: np.ndarray, group_id: int | None, extra: dict[str, Any],
                next_group: Any) -> list[dict[str, Any]]:
    """Exact LabelMe shapes of one mask: polygons (one per part, grouped) without holes, else one mask shape.

    Args:
        label: Class name.
        mask: ``(H, W) bool`` (not empty).
        group_id: The object's own group id, or None.
        extra: Shape keys (flags, description, others).
        next_group: Callable giving a fresh group id of the image, for objects of several parts.
    """
    res = polygonize(mask, holes="drop")
    if res.holes == 0 and res.exact and res.polygons:
        gid = group_id if group_id is not None or len(res.polygons) == 1 else next_group()
        return [polygon_shape(label, p, gid, extra) for p in res.polygons]
    return [mask_shape(label, mask, group_id, extra)]


class LabelmeWriter:
    """Writes LabelMe JSON files beside the images (see the module docstring)."""

    format_name: ClassVar[str] = "labelme"
    embed_default: ClassVar[bool] = False

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.embed = self.embed_default or bool(self.options.extra.get("embed_images"))
        self.background = perimage.background_id(meta)
        self.classes = [c for c in meta.categories if c.id != self.background]
        perimage.check_unique_names(self.classes, "LabelMe")
        self.known = {c.id for c in self.classes}
        self.names = {c.id: c.name for c in meta.categories}
        raw = meta.extra.get(EMBEDDED_KEY)
        self.embedded_src: dict[int, str] = dict(raw) if isinstance(raw, dict) else {}

    def prepare(self) -> None:
        """Creates the output folder."""
        self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ objects

    def _instance_shapes(self, inst: Instance, r: Any, losses: LossCounter, used: set[tuple[str, int]],
                         next_group: Any) -> list[dict[str, Any]]:
        name = self.names.get(inst.category_id, str(inst.category_id))
        extra, gid = shape_extras(dict(inst.attributes), losses, name)
        if gid is not None:
            if (name, gid) in used:  # two objects of one class cannot share a group: the later gets a new one
                gid = next_group()
            used.add((name, gid))
        seg = inst.segmentation
        if seg is not None and seg.kind == "polygons" and seg.polygons and \
                all(rle_ops.check_polygon(list(p)) is None for p in seg.polygons):
            polys = list(seg.polygons)
            if gid is None and len(polys) > 1:
                gid = next_group()
            return [polygon_shape(name, p, gid, extra) for p in polys]
        if r is not None and rle_ops.area(r) > 0:
            return mask_shapes(name, rle_ops.decode(r).astype(bool), gid, extra, next_group)
        if inst.bbox is not None and inst.bbox[2] > 0 and inst.bbox[3] > 0:
            _lose(losses, "boxes_as_rectangles", 1, name)
            return [rectangle_shape(name, inst.bbox, gid, extra)]
        _lose(losses, "empty_objects_dropped", 1, name)
        return []

    def _shapes(self, m: Materialized, losses: LossCounter) -> list[dict[str, Any]]:
        """The shapes of one image, in z-order; counts what is left out and the objects written."""
        shapes: list[dict[str, Any]] = []
        used: set[tuple[str, int]] = set()
        for im in m.instances:
            gid = im.instance.attributes.get("group_id")
            if isinstance(gid, int) and not isinstance(gid, bool):
                used.add((self.names.get(im.instance.category_id, ""), gid))
        counter = [max((g for _, g in used), default=0)]

        def next_group() -> int:
            counter[0] += 1
            return counter[0]

        lose = partial(_lose, losses)
        if m.instances:
            cover = np.zeros((m.sample.image.height, m.sample.image.width), dtype=bool) \
                if m.class_map is not None else None
            used_now: set[tuple[str, int]] = set()
            for im in m.instances:
                inst = im.instance
                if not perimage.keep_instance(inst, self.known, self.names, lose):
                    continue
                got = self._instance_shapes(inst, im.rle, losses, used_now, next_group)
                if got:
                    shapes.extend(got)
                    losses.counts_out[self.names.get(inst.category_id, str(inst.category_id))] += 1
                if cover is not None and im.rle is not None:
                    cover |= rle_ops.decode(im.rle).astype(bool)
            if cover is not None:
                cm = np.asarray(m.class_map)
                bg = self.background if self.background is not None else 0
                _lose(losses, "semantic_pixels_dropped",
                      int(np.count_nonzero((cm != m.void_value) & (cm != bg) & ~cover)))
            return shapes
        if m.panoptic is not None:
            for _, r, name in perimage.kept_segments(m, self.known, self.names, lose):
                if rle_ops.area(r) > 0:
                    shapes.extend(mask_shapes(name, rle_ops.decode(r).astype(bool), None, {}, next_group))
                    losses.counts_out[name] += 1
            return shapes
        if m.class_map is not None:
            shapes.extend(self._region_shapes(m, losses))
        return shapes

    def _region_shapes(self, m: Materialized, losses: LossCounter) -> list[dict[str, Any]]:
        """One shape per connected component of each class of a label map."""
        cm = np.asarray(m.class_map)
        bg = self.background if self.background is not None else 0
        _lose(losses, "void_pixels_dropped", int(np.count_nonzero(cm == m.void_value)))
        h, w = cm.shape
        out: list[dict[str, Any]] = []
        for cat, r in regions_from_class_map(cm, void_value=m.void_value, background=bg):
            name = self.names.get(int(cat), str(cat))
            if int(cat) not in self.known:
                _lose(losses, "unknown_category_dropped", 1, name)
                continue
            # Keyhole tracing gives one polygon per 8-connected component, its holes included by zero-width
            # cuts; re-rasterising one gives that component alone.
            for poly in polygonize(rle_ops.decode(r).astype(bool), holes="keyhole").polygons:
                comp = rasterize([poly], h, w)
                out.extend(mask_shapes(name, comp, None, {}, lambda: None))
                losses.counts_out[name] += 1
        losses.notes.setdefault("semantic_components_as_objects", "label maps were written as one shape per "
                                "connected component of each class")
        return out

    # ------------------------------------------------------------------ files

    def _image_data(self, m: Materialized, losses: LossCounter) -> str | None:
        """The base64 ``imageData`` of an image: its file's bytes (upright PNG when EXIF rotates it), or the
        source's embedded data for an image that exists only embedded.
        """
        src = m.sample.image_path
        if src is None or not os.path.isfile(src):
            json_src = self.embedded_src.get(m.sample.image.id)
            if json_src is None:
                return None

            data = json.loads(read_json_bytes(Path(json_src))).get("imageData")
            return data if isinstance(data, str) else None
        if os.path.getsize(src) > MAX_EMBED_BYTES:
            _lose(losses, "image_not_embedded")
            return None

        with Image.open(src) as im:
            rotated = exif_orientation(im) != 1
        if rotated:
            # LabelMe decodes imageData without EXIF: embed the upright pixels, as LabelMe itself re-encodes them.
            buf = io.BytesIO()
            Image.fromarray(read_image(src)).save(buf, format="PNG")
            raw = buf.getvalue()
        else:
            with open(src, "rb") as f:
                raw = f.read()
        return base64.b64encode(raw).decode("ascii")

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes one shard's JSON files and images; fragments name each image's JSON."""
        res = ShardResult(index)
        losses = res.losses
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            rel = check_relative_name(img.file_name or f"{img.id}.png", where="file_name")
            split = img.split if img.split and img.split != "default" else None
            sub = f"{check_relative_name(split, where='split')}/{rel}" if split else rel
            json_rel = str(PurePosixPath(sub).with_suffix(".json"))
            json_path = ensure_inside(self.out, self.out / json_rel)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            counted = LossCounter()  # merged once the JSON file is known to be this image's
            shapes = self._shapes(m, counted)
            doc: dict[str, Any] = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes,
                                   "imagePath": PurePosixPath(rel).name, "imageData": None,
                                   "imageHeight": int(img.height), "imageWidth": int(img.width)}
            for k, v in image_extras(dict(img.attributes), counted).items():
                doc[k] = v
            only_embedded = m.sample.image.id in self.embedded_src and m.sample.image_path is None
            if self.embed or only_embedded:
                doc["imageData"] = self._image_data(m, counted)
            # As LabelMe writes its files: UTF-8, not ASCII-escaped, indented by 2.
            text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
            # A second image with the same stem in this folder must not replace the first (a re-run shard
            # rewrites its own files: see segpipe.formats.perimage).
            if not perimage.write_claimed(self.out, json_rel, json_path, text.encode("utf-8"), perimage.owner(m)):
                _lose(losses, "image_name_collision")
                continue
            losses.merge(counted)
            if not only_embedded:
                perimage.copy_image(self.out, self.options.copy_images, m.sample.image_path, sub, rel, losses)
            res.fragments.append({"json": json_rel})
        return res

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ``labels.txt`` (LabelMe's ``--labels`` file: ``__ignore__``, ``_background_``, the classes)."""
        for _ in results:  # the JSON files are per image; nothing to gather
            pass
        perimage.release_claims(self.out)
        names = [c.name for c in self.classes if c.name not in NOT_CLASSES]
        path = ensure_inside(self.out, self.out / LABELS_TXT)
        write_bytes_atomic(path, ("\n".join([*NOT_CLASSES, *names]) + "\n").encode("utf-8"))
        return [path]


class LabelmeEmbeddedWriter(LabelmeWriter):
    """Writes LabelMe JSON files with each image embedded as base64 ``imageData``."""

    format_name: ClassVar[str] = "labelme_embedded"
    embed_default: ClassVar[bool] = True
