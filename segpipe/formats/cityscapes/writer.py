"""Writing Cityscapes-style folders.

Layout written::

    out/
      gtFine/<split>/<city>/<stem>_gtFine_labelIds.png        label ids (8-bit; 16-bit beyond 255)
      gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png     16-bit: label id × 1000 + k for objects
      gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png   8-bit train ids (255 = ignore), when known
      leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png       the images, unless copy_images == "none"
      segpipe_cityscapes.json                                 the label table, the original categories
                                                              and per image its id, file name and split

Names: ``<split>`` is the image's split as torchvision's ``Cityscapes`` and Datumaro take it
(:func:`~segpipe.formats.splits.loader_split`: ``train`` when it has none or Datumaro's ``default``,
``valid``/``validation`` → ``val``; the sidecar keeps the original); ``<city>`` the folders of its file name
joined with ``__`` (``aachen/aachen_000000_000019.png`` → ``aachen``: one folder level, as those loaders list
cities), else the prefix of a Cityscapes-like stem (``aachen_000000_000019`` → ``aachen``), else ``default``;
``<stem>`` the file name without extension.

Label ids follow :func:`~segpipe.formats.cityscapes.labels.plan_labels` (official ids when every class
is a Cityscapes class, else the category ids). Void pixels of the source become ``unlabeled`` (0) in
labelIds and 255 in labelTrainIds; when a category is written as label 0 too (``background`` →
``unlabeled``), the two merge and the void pixels are counted (``void_merged_with_label0``).

Images: the labels are in upright pixel coordinates (segpipe's EXIF policy), and Cityscapes images are
PNGs read without any orientation: a PNG without EXIF orientation is copied (or hard-linked) as is; any
other image (a JPEG, an EXIF-rotated PNG) is decoded upright to 8-bit RGB and written as PNG (a note,
``images_reencoded_upright``), so images and labels line up in every tool.

Losses (per category name, with a note): those of :func:`~segpipe.formats.cityscapes.convert.encode_maps`
(``overlap_flattened_pixels``, ``instance_fully_occluded``, ``box_only_no_mask``, ``crowd_to_group``,
``instance_index_overflow``, ``instance_id_out_of_range``, ``instance_identity_dropped``), plus
``keypoints_dropped``, ``scores_dropped``, ``unknown_category_dropped``,
``unknown_class_pixels_to_unlabeled`` and ``void_merged_with_label0``. ``category_ids_reindexed`` is a
note only (the sidecar keeps the ids).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from segpipe.core.losses import LossCounter
from segpipe.core.records import DatasetMeta, InstanceMask, Materialized
from segpipe.errors import FormatError
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.cityscapes.convert import encode_maps
from segpipe.formats.cityscapes.labels import IGNORE_TRAIN_ID, plan_labels
from segpipe.formats.coco.writer import copy_image
from segpipe.formats.derive import derive_class_map, derive_instances
from segpipe.formats.splits import loader_split
from segpipe.storage.atomic import is_slice_ref, source_exists, write_json_atomic
from segpipe.storage.images import exif_orientation, read_image, write_label_png, write_rgb_png
from segpipe.storage.jsonio import jsonable
from segpipe.storage.paths import check_relative_name, ensure_inside

SIDECAR = "segpipe_cityscapes.json"
DEFAULT_CITY = "default"
SUFFIX_LABEL = "_gtFine_labelIds.png"
SUFFIX_INSTANCE = "_gtFine_instanceIds.png"
SUFFIX_TRAIN = "_gtFine_labelTrainIds.png"
SUFFIX_IMAGE = "_leftImg8bit"
_CITY_STEM = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)_\d+_\d+$")

NOTES = {
    "keypoints_dropped": "Cityscapes has no keypoints; instances with keypoints lose them",
    "scores_dropped": "Cityscapes has no confidence scores; instances with a score lose it",
    "unknown_category_dropped": "instances whose category is not in the dataset's categories are not written",
    "unknown_class_pixels_to_unlabeled": "class-map pixels whose value is no known category are written as "
    "unlabeled (0)",
    "void_merged_with_label0": "void pixels are written as unlabeled (0), which a category also uses: the two "
    "merge (counted in void pixels)",
    "category_ids_reindexed": "category ids were written as official Cityscapes label ids; the original ids are "
    "kept in segpipe_cityscapes.json and restored on reading",
    "images_reencoded_upright": "images that are not plain PNGs were decoded with their EXIF orientation applied "
    "and written as 8-bit RGB PNGs, so that they line up with the labels",
}


def cityscapes_place(file_name: str, split: str | None) -> tuple[str, str, str]:
    """``(split, city, stem)`` of an image (rules in the module docstring)."""
    rel = PurePosixPath(check_relative_name(file_name, where="file_name"))
    stem = rel.stem
    if stem.endswith(SUFFIX_IMAGE):
        stem = stem[: -len(SUFFIX_IMAGE)]
    if rel.parent.parts:
        # One folder level: torchvision's Cityscapes lists <split>/<city>/ and opens every entry as a file.
        city = "__".join(rel.parent.parts)
    else:
        m = _CITY_STEM.match(stem)
        city = m.group(1) if m else DEFAULT_CITY
    return loader_split(split), city, stem


_jsonable = jsonable  # one implementation: segpipe.storage.jsonio


class CityscapesWriter:
    """Writes a Cityscapes-style folder (picklable; ``write_shard`` runs on workers).

    Args:
        out: Output folder.
        meta: The source dataset's meta.
        options: Shared write options (``copy_images``: ``copy``, ``link`` or ``none``).

    Raises:
        FormatError: custom label ids outside 0..65534.
    """

    format_name: ClassVar[str] = "cityscapes"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.plan = plan_labels(meta.categories)
        self.names = {c.id: c.name for c in meta.categories}
        self.things = self.plan.things
        top = max(self.plan.train_of, default=0)
        self.train_lut = np.full(max(top + 1, 1), IGNORE_TRAIN_ID, dtype=np.uint8)
        for lab, t in self.plan.train_of.items():
            self.train_lut[lab] = t if 0 <= t <= 255 else IGNORE_TRAIN_ID
        # Whether label 0 is also a category: void pixels then merge with it.
        self.zero_taken = any(v == 0 for v in self.plan.label_of.values())

    # -- driver ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Creates ``gtFine/`` (and ``leftImg8bit/`` when images are copied)."""
        (self.out / "gtFine").mkdir(parents=True, exist_ok=True)
        if self.options.copy_images != "none":
            (self.out / "leftImg8bit").mkdir(parents=True, exist_ok=True)

    # -- worker ------------------------------------------------------------------------------------

    def _label_ids(self, cm: np.ndarray, void: int, losses: LossCounter) -> np.ndarray:
        """Category-id class map → label ids in one LUT pass; void and unknown values become 0.

        Returns:
            ``(H, W) int64`` label ids.
        """
        cm = np.asarray(cm)
        n = int(cm.max()) + 1 if cm.size else 1
        lut = np.zeros(max(n, 1), dtype=np.int64)
        known = np.zeros(len(lut), dtype=bool)
        for cid, lab in self.plan.label_of.items():
            if 0 <= cid < len(lut):
                lut[cid], known[cid] = lab, True
        counts = np.bincount(cm.ravel().astype(np.int64), minlength=len(lut)) if cm.size else np.zeros(len(lut))
        if 0 <= void < len(lut) and void not in self.plan.label_of:
            known[void] = True
            if self.zero_taken:
                losses.lose("void_merged_with_label0", int(counts[void]), "", NOTES["void_merged_with_label0"])
        if 0 not in self.plan.label_of and len(known):
            known[0] = True  # an undeclared background 0 is unlabeled
        for v in np.flatnonzero((counts > 0) & ~known):
            losses.lose("unknown_class_pixels_to_unlabeled", int(counts[v]), str(int(v)),
                        NOTES["unknown_class_pixels_to_unlabeled"])
        return lut[cm]

    def _instances(self, m: Materialized, losses: LossCounter) -> list[InstanceMask]:
        instances = list(m.instances)
        if not instances and m.panoptic is not None:
            instances, dl = derive_instances(m, self.meta)
            losses.merge(dl)
        kept = []
        for im in instances:
            inst = im.instance
            name = self.names.get(inst.category_id, str(inst.category_id))
            if inst.category_id not in self.plan.label_of:
                losses.lose("unknown_category_dropped", 1, name, NOTES["unknown_category_dropped"])
                continue
            if inst.keypoints and any(v > 0 for v in inst.keypoints[2::3]):
                losses.lose("keypoints_dropped", 1, name, NOTES["keypoints_dropped"])
            if inst.score is not None:
                losses.lose("scores_dropped", 1, name, NOTES["scores_dropped"])
            kept.append(im)
        return kept

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes the gtFine PNGs (and images) of one shard; returns per-image fragments."""
        res = ShardResult(index)
        losses = res.losses
        if self.plan.official and any(c != lab for c, lab in self.plan.label_of.items()):
            losses.notes.setdefault("category_ids_reindexed", NOTES["category_ids_reindexed"])
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            split, city, stem = cityscapes_place(img.file_name, img.split)
            instances = self._instances(m, losses)
            labels: np.ndarray | None = None
            cm = m.class_map
            if cm is None and m.panoptic is not None:
                cm, dl = derive_class_map(m, self.meta)
                losses.merge(dl)
            if cm is not None:
                labels = self._label_ids(cm, int(m.void_value), losses)
            label_ids, instance_ids, el = encode_maps(
                labels, instances, img.height, img.width, label_of=self.plan.label_of, things=self.things,
                names=self.names,
            )
            losses.merge(el)
            folder = self.out / "gtFine" / split / city
            if label_ids is not None and instance_ids is not None:
                folder.mkdir(parents=True, exist_ok=True)
                write_label_png(ensure_inside(self.out, folder / f"{stem}{SUFFIX_LABEL}"), label_ids)
                write_label_png(ensure_inside(self.out, folder / f"{stem}{SUFFIX_INSTANCE}"), instance_ids)
                if self.plan.has_train_ids:
                    train = self.train_lut[np.minimum(label_ids, len(self.train_lut) - 1)]
                    train[label_ids >= len(self.train_lut)] = IGNORE_TRAIN_ID
                    write_label_png(ensure_inside(self.out, folder / f"{stem}{SUFFIX_TRAIN}"), train)
            self._copy_image(m.sample.image_path, split, city, stem, img.file_name, losses)
            res.fragments.append({
                "key": f"{split}/{city}/{stem}", "labels": label_ids is not None,
                "side": {"id": img.id, "file_name": img.file_name, "split": img.split, "width": img.width,
                         "height": img.height, "attributes": _jsonable(img.attributes)},
            })
        return res

    def _copy_image(self, src: str | None, split: str, city: str, stem: str, file_name: str,
                    losses: LossCounter) -> None:
        mode = self.options.copy_images
        if mode == "none":
            return

        if not source_exists(src):
            losses.missing_images.append(file_name)
            return
        assert src is not None
        folder = self.out / "leftImg8bit" / split / city
        folder.mkdir(parents=True, exist_ok=True)
        dst = ensure_inside(self.out, folder / f"{stem}{SUFFIX_IMAGE}.png")

        if not os.path.isfile(src) and is_slice_ref(src):
            copy_image(src, dst, "copy")  # a volume slice, rendered as a PNG
            return

        with Image.open(src) as im:  # header only: the format and the orientation tag
            plain_png = im.format == "PNG" and exif_orientation(im) == 1
        if plain_png:
            copy_image(src, dst, mode)
            return
        # Not a PNG, or rotated by EXIF: Cityscapes readers apply no orientation, so write upright pixels.
        write_rgb_png(dst, read_image(src, exif=True))
        losses.notes.setdefault("images_reencoded_upright", NOTES["images_reencoded_upright"])

    # -- driver ------------------------------------------------------------------------------------

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ``segpipe_cityscapes.json`` from the shards' fragments, in shard order.

        Raises:
            FormatError: two images map to the same ``<split>/<city>/<stem>``.
        """
        images: dict[str, Any] = {}
        for r in sorted(results, key=lambda r: r.index):
            for f in r.fragments:
                if f["key"] in images:
                    raise FormatError(
                        f"images {images[f['key']]['file_name']!r} and {f['side']['file_name']!r} both map to "
                        f"gtFine/{f['key']}", path=self.out, hint="rename one of the images",
                    )
                images[f["key"]] = f["side"]
        side = {
            "format": "segpipe-cityscapes-sidecar",
            "version": 1,
            "official_ids": self.plan.official,
            "labels": list(self.plan.rows),
            "categories": [
                {"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": c.isthing,
                 "color": list(c.color) if c.color is not None else None}
                for c in self.meta.categories
            ],
            "info": _jsonable(self.meta.info),
            "images": images,
        }
        sp = ensure_inside(self.out, self.out / SIDECAR)
        write_json_atomic(sp, side, indent=None)
        return [sp]
