"""Reading Cityscapes-style folders (the official layout, Datumaro's, and segpipe's own).

Read::

    root/gtFine/<split>/<city...>/<stem>_gtFine_instanceIds.png   and/or  <stem>_gtFine_labelIds.png
    root/leftImg8bit/<split>/<city...>/<stem>_leftImg8bit.<ext>   optional
    root/segpipe_cityscapes.json                                   optional (written by segpipe)

Categories: the official 34 labels (category id = label id, ``isthing`` = has instances), or the label table
and original categories of the sidecar, or Datumaro's ``label_colors.txt`` (custom classes, ids in Datumaro's
order: see :func:`~segpipe.formats.cityscapes.labels.rows_from_label_colors`). Pixels: ``labelIds`` gives the
class map when present, else ``instanceIds // 1000`` (values ≥ 1000) and the value itself (below). Instances:
every ``instanceIds`` value ≥ 1000 is one object (annotation id ``image id × 100000 + value``); a value below
1000 of a class with instances is a group region, read as a crowd instance; values of other classes are stuff
(class map only). Datumaro marks every value below 1000 as a crowd mask; segpipe keeps stuff out of the
instances.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segpipe.core import rle as rle_ops
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
from segpipe.errors import FormatError, InputError, SegpipeError
from segpipe.formats.cityscapes.convert import decode_instance_ids
from segpipe.formats.cityscapes.labels import LABEL_COLORS, official_rows, rows_from_json, rows_from_label_colors
from segpipe.formats.cityscapes.writer import (
    SIDECAR,
    SUFFIX_IMAGE,
    SUFFIX_INSTANCE,
    SUFFIX_LABEL,
)
from segpipe.storage.images import image_size, read_label_map
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import safe_join

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
#: Annotation id stride: ``image id × ANN_STRIDE + instanceIds value`` is unique in the dataset.
ANN_STRIDE = 100_000


def read_text_file(path: Path) -> str:
    """A small UTF-8 text file (a label table).

    Raises:
        FormatError: unreadable or not UTF-8 (naming the file).
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text at byte {e.start}", path=path) from None
    except OSError as e:
        raise FormatError(f"cannot read: {e.strerror}", path=path) from None


def detect_cityscapes(path: str | Path) -> bool:
    """True for a folder with ``gtFine/`` holding at least one ``*_gtFine_{instance,label}Ids.png``."""
    gt = Path(path) / "gtFine"
    if not gt.is_dir():
        return False
    for _, _, files in os.walk(gt):
        if any(f.endswith((SUFFIX_INSTANCE, SUFFIX_LABEL)) for f in files):
            return True
    return False


def _index(root: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """``{(split, city, stem): {"instance"|"label"|"image": relative path}}`` of the gtFine/leftImg8bit files."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for top, kinds in (("gtFine", ((SUFFIX_INSTANCE, "instance"), (SUFFIX_LABEL, "label"))),
                       ("leftImg8bit", tuple((SUFFIX_IMAGE + e, "image") for e in IMAGE_EXTS))):
        base = root / top
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
            parts = rel_dir.split("/") if rel_dir != "." else []
            if not parts:
                continue  # files directly in gtFine/ have no split
            split, city = parts[0], "/".join(parts[1:])
            for f in sorted(filenames):
                for suffix, kind in kinds:
                    if f.lower().endswith(suffix.lower()):
                        stem = f[: -len(suffix)]
                        out.setdefault((split, city, stem), {})[kind] = f"{top}/{rel_dir}/{f}"
    return out


class CityscapesReader:
    """Indexes a Cityscapes-style folder (driver side).

    Args:
        path: The folder holding ``gtFine/``.
    """

    format_name: ClassVar[str] = "cityscapes"

    def __init__(self, path: str | Path) -> None:
        root = Path(path)
        if not (root / "gtFine").is_dir():
            raise InputError("not a Cityscapes folder (no gtFine/ folder)", path=root)
        self.root = root
        self.problems: list[Problem] = []
        side: dict[str, Any] = {}
        if (root / SIDECAR).is_file():
            data = read_json(root / SIDECAR)
            if not isinstance(data, dict):
                raise FormatError("the sidecar must be a JSON object", path=root / SIDECAR)
            side = data
        # The label table: the sidecar's (segpipe wrote it), else Datumaro's label_colors.txt (custom
        # classes: read as official ids, sky would become "ego vehicle"), else the official table.
        colors_file = root / LABEL_COLORS
        custom = "labels" not in side and colors_file.is_file()
        try:
            if "labels" in side:
                rows = rows_from_json(side["labels"])
            elif custom:
                rows = rows_from_label_colors(read_text_file(colors_file))
            else:
                rows = official_rows()
        except FormatError as e:
            raise FormatError(e.message, path=e.path or (colors_file if custom else root / SIDECAR),
                              where=e.where) from None
        if "categories" in side:
            categories = tuple(
                Category(id=int(c["id"]), name=str(c["name"]), supercategory=str(c.get("supercategory") or ""),
                         isthing=bool(c.get("isthing", True)),
                         color=tuple(c["color"]) if c.get("color") else None)  # type: ignore[arg-type]
                for c in side["categories"]
            )
        else:
            categories = tuple(
                Category(id=int(r["id"]), name=str(r["name"]), isthing=bool(r["hasInstances"]),
                         color=tuple(r["color"]) if r.get("color") else None)  # type: ignore[arg-type]
                for r in rows
            )
        category_of = {int(r["id"]): int(r["category_id"]) for r in rows if r.get("category_id") is not None}
        void = 65535 if any(c.id == 255 for c in categories) else 255
        by_name = {c.name: c.id for c in categories}
        self.meta = DatasetMeta(
            format="cityscapes",
            categories=categories,
            info=dict(side.get("info") or {}),
            void_value=void,
            extra={
                "cityscapes_labels": [dict(r) for r in rows],
                "cityscapes_category_of": {str(k): v for k, v in category_of.items()},
                "cityscapes_things": sorted(int(r["id"]) for r in rows if r["hasInstances"]),
                # Label 0 (unlabeled) is the background of other formats (VOC label 0); in Datumaro's
                # label_colors.txt the black label is.
                "background_id": next((int(r["id"]) for r in rows if r.get("color") == [0, 0, 0]), None)
                if custom else category_of.get(0, by_name.get("unlabeled")),
                # label_colors.txt does not say which classes have instances (validate does not guess).
                "cityscapes_instances_known": not custom,
            },
        )
        side_images: dict[str, Any] = side.get("images") or {}
        self._samples: list[Sample] = []
        entries = _index(root)
        # Ids: the sidecar's (a round trip keeps them), else sequential after the largest known one.
        known = [v.get("id") for v in side_images.values() if isinstance(v, dict)]
        next_id = max([int(v) for v in known if isinstance(v, int)] + [0]) + 1
        used_ids: set[int] = set()
        for (split, city, stem), files in sorted(entries.items()):
            key = f"{split}/{city}/{stem}"
            info = side_images.get(key) or {}
            ipath = str(safe_join(root, files["image"])) if "image" in files else None
            ann = files.get("instance") or files.get("label")
            if ann is None:
                self.problems.append(Problem("warning", files["image"], "", "image has no gtFine label files",
                                             "cityscapes.no_labels"))
            src = ipath or str(safe_join(root, ann or ""))
            try:
                w, h = image_size(src, exif=src == ipath)
            except SegpipeError as e:
                raise FormatError(e.message, path=src) from None
            image_id = info.get("id")
            if not isinstance(image_id, int) or image_id in used_ids:
                image_id, next_id = next_id, next_id + 1
            used_ids.add(image_id)
            ext = os.path.splitext(files["image"])[1] if "image" in files else ".png"
            file_name = str(info.get("file_name") or (f"{city}/{stem}{ext}" if city else f"{stem}{ext}"))
            split_out = info["split"] if "split" in info else split
            attrs = dict(info.get("attributes") or {})
            self._samples.append(Sample(
                ImageInfo(image_id, file_name, w, h, split_out, attrs),
                image_path=ipath,
                semantic_file=str(safe_join(root, files["label"])) if "label" in files else None,
                # The instanceIds PNG rides in ``object_file``; only this format's materialize reads it.
                object_file=str(safe_join(root, files["instance"])) if "instance" in files else None,
            ))
        self._samples.sort(key=lambda s: s.image.id)

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id."""
        yield from self._samples


def _category_lut(meta: DatasetMeta, void: int) -> np.ndarray:
    """``label id → category id`` as a 65536-entry LUT; labels of no category become ``void``."""
    lut = np.full(65536, void, dtype=np.int64)
    for k, v in dict(meta.extra.get("cityscapes_category_of") or {}).items():
        lut[int(k)] = int(v)
    if lut[0] == void and all(c.id != 0 for c in meta.categories):
        lut[0] = 0  # unlabeled without a category: the background 0 of class maps
    return lut


def materialize_cityscapes(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Decodes the sample's gtFine maps: the class map (category ids) and the instances (RLE)."""
    void = meta.void_value if meta.void_value is not None else 255
    lut = _category_lut(meta, void)
    things = frozenset(int(v) for v in meta.extra.get("cityscapes_things") or ())
    labels: np.ndarray | None = None
    instances: list[InstanceMask] = []
    if sample.object_file is not None:
        ids = read_label_map(sample.object_file)
        labels, regions = decode_instance_ids(ids, things)
        img = sample.image
        for value, label, crowd, r in regions:
            cid = int(lut[label])
            if cid == void:
                continue  # a label without category: its pixels are void in the class map
            inst = Instance(
                id=img.id * ANN_STRIDE + value, image_id=img.id, category_id=cid,
                segmentation=Segmentation.from_rle(r), bbox=rle_ops.to_bbox(r), area=float(rle_ops.area(r)),
                iscrowd=crowd,
            )
            instances.append(InstanceMask(inst, r))
    if sample.semantic_file is not None:
        labels = read_label_map(sample.semantic_file)  # exact classes (groups included)
    class_map = None
    unknown: dict[int, int] = {}
    if labels is not None:
        dtype = np.uint8 if void <= 255 and all(c.id < 255 for c in meta.categories) else np.uint16
        class_map = lut[labels.astype(np.int64)].astype(dtype)
        # The LUT makes a label id outside the label table void: that is a loss to report (the
        # converter counts it), unlike the table's own labels without a category.
        declared = {int(r["id"]) for r in meta.extra.get("cityscapes_labels") or ()} | {0, void}
        values, counts = np.unique(labels, return_counts=True)
        unknown = {int(v): int(n) for v, n in zip(values, counts, strict=True) if int(v) not in declared}
    s = sample.with_instances(tuple(im.instance for im in instances))
    return Materialized(sample=s, instances=tuple(instances), class_map=class_map, void_value=void,
                        unknown_values=unknown)
