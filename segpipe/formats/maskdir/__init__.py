"""Semantic mask directories: label-map PNGs paired with images by file stem.

Layout (read and written)::

    root/
      images/<name>.jpg|png ...     photos (sub-folders allowed; paired by relative path without extension)
      masks/<name>.png              label maps: palette/grey 8-bit, 16-bit, or colour-coded RGB
      labelmap.txt                  optional: label index = line position (Datumaro/CVAT style)
      dataset_meta.json             optional alternative: Datumaro ``common_semantic_segmentation`` meta

Categories: the label map's entries with ``id = label index`` (background = label 0); without any
label-map file the reader scans the masks once and names each value ``class_<v>`` (slow path).
Void is 255, or 65535 when the label map has more than 255 entries (16-bit masks).
Colour-coded RGB masks are mapped back to labels through the label map's colours.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from segpipe.core.labelmap import LabelEntry, format_labelmap_txt, palette_for, voc_colormap
from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import Category, DatasetMeta, ImageInfo, InstanceMask, Materialized, Sample
from segpipe.core.render import render_maps
from segpipe.errors import FormatError, InputError, SegpipeError
from segpipe.formats.base import FormatSpec, ShardResult, WriteOptions
from segpipe.formats.derive import derive_class_map
from segpipe.formats.registry import register_format
from segpipe.formats.voc.masks import read_indexed_mask
from segpipe.formats.voc.reader import IMAGE_EXTS, MARKER_DIRS, read_labelmap_file
from segpipe.formats.voc.writer import VocWriter, class_map_to_labels
from segpipe.storage.atomic import copy_or_link, source_exists, write_bytes_atomic
from segpipe.storage.images import image_size, read_label_map, write_label_png
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import check_relative_name, ensure_inside, safe_join

LABELMAP = "labelmap.txt"
DATASET_META = "dataset_meta.json"
NOTES = {
    "instance_identity_dropped": "a semantic mask holds classes, not objects: instances of one class merge",
    "keypoints_dropped": "semantic masks have no keypoints; instances with keypoints lose them",
    "scores_dropped": "semantic masks have no confidence scores",
    "unknown_class_pixels_to_void": "class-map pixels whose value is no known category are written as void",
}


def _rel_files(d: Path, exts: tuple[str, ...], *, label: str | None = None) -> dict[str, str]:
    """``{relative stem: relative file name}`` of the files below ``d`` with one of ``exts``.

    Args:
        d: The folder.
        exts: Lower-case extensions (with the dot).
        label: The folder as named in messages (``images``); None names ``d``.

    Raises:
        FormatError: two files share a relative stem (``a.png`` and ``a.jpg``): masks pair with images
            by stem, so one of them would be dropped without a word.
    """
    out: dict[str, str] = {}
    if not d.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames.sort()
        for f in sorted(filenames):
            stem, ext = os.path.splitext(f)
            if ext.lower() not in exts:
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), d).replace(os.sep, "/")
            key = str(PurePosixPath(rel).with_suffix(""))
            if key in out:
                where = label or str(d)
                raise FormatError(
                    f"{where}/{out[key]} and {where}/{rel} share the stem {key!r}: masks pair with images by stem",
                    path=d / rel,
                    hint="rename one of them (or move it out of the folder)",
                )
            out[key] = rel
    return out


def _pairs_by_stem(root: Path, limit: int = 64) -> bool:
    """Whether one of the first ``limit`` masks has an image of the same relative stem under ``images/``."""
    masks, images = root / "masks", root / "images"
    for n, m in enumerate(sorted(masks.rglob("*.png"))):
        if n >= limit:
            break
        key = m.relative_to(masks).with_suffix("")
        if any((images / f"{key}{ext}").is_file() for ext in IMAGE_EXTS):
            return True
    return False


def detect_maskdir(path: str | Path) -> bool:
    """True for a folder with ``masks/*.png`` in this format's own layout (and no VOC folder).

    The layout is a label map (``labelmap.txt`` / ``dataset_meta.json``), no ``images/`` at all, or
    masks that pair with ``images/`` by stem. Other layouts have a ``masks/`` folder too (Open Images:
    ``masks/<subset>/<image>_<class>_<box>.png`` binary object masks beside ``annotations/*.csv``);
    claiming them would read object masks as label maps of classes ``class_1`` ... without a word.
    """
    p = Path(path)
    if not p.is_dir() or any((p / d).is_dir() for d in MARKER_DIRS):
        return False
    m = p / "masks"
    if not (m.is_dir() and any(f.suffix.lower() == ".png" for f in m.rglob("*.png"))):
        return False
    if (p / LABELMAP).is_file() or (p / DATASET_META).is_file():
        return True
    if any(p.glob("annotations/*.csv")):  # Open Images (Datumaro's open_images layout)
        return False
    return not (p / "images").is_dir() or _pairs_by_stem(p)


def read_label_entries(root: Path) -> tuple[list[LabelEntry] | None, int]:
    """Label entries from ``labelmap.txt`` or ``dataset_meta.json`` and the background label index."""
    lm = root / LABELMAP
    if lm.is_file():
        return read_labelmap_file(lm), 0
    dm = root / DATASET_META
    if dm.is_file():
        data = read_json(dm)
        label_map = data.get("label_map") if isinstance(data, dict) else None
        if not isinstance(label_map, dict):
            raise FormatError("'label_map' must be an object {index: name}", path=dm, where="label_map")
        try:
            idx = {int(k): str(v) for k, v in label_map.items()}
        except ValueError:
            raise FormatError("'label_map' keys must be integers", path=dm, where="label_map") from None
        colors = data.get("segmentation_colors") or []
        n = max(idx) + 1 if idx else 0
        entries = []
        for i in range(n):
            c = colors[i] if i < len(colors) else None
            entries.append(LabelEntry(idx.get(i, f"class_{i}"), tuple(int(v) for v in c) if c else None))  # type: ignore[arg-type]
        bg = data.get("background_label", "0")
        try:
            bgi = int(bg)
        except (TypeError, ValueError):
            bgi = 0
        return entries, bgi
    return None, 0


class MaskDirReader:
    """Indexes a mask directory (driver side).

    Args:
        path: The folder holding ``masks/`` (and usually ``images/``).
        image_root: Folder of the images (default ``<path>/images``).
    """

    format_name: ClassVar[str] = "maskdir"

    def __init__(self, path: str | Path, *, image_root: str | Path | None = None) -> None:
        root = Path(path)
        if not (root / "masks").is_dir():
            raise InputError("not a mask directory (no masks/ folder)", path=root)
        self.root = root
        self.image_root = Path(image_root) if image_root is not None else root / "images"
        self.problems: list[Problem] = []
        masks = _rel_files(root / "masks", (".png",), label="masks")
        images = _rel_files(self.image_root, IMAGE_EXTS,
                            label="images" if image_root is None else str(self.image_root))
        entries, bg = read_label_entries(root)
        if entries is None:
            values: set[int] = set()
            for rel in masks.values():
                values.update(int(v) for v in np.unique(read_label_map(safe_join(root / "masks", rel))))
            values.discard(255)
            top = max(values | {0})
            entries = [LabelEntry("background" if v == 0 else f"class_{v}") for v in range(top + 1)]
            self.scanned = sorted(values)
        void = 255 if len(entries) <= 255 else 65535
        cmap = voc_colormap(256)
        colors = [
            list(e.color) if e.color is not None else cmap[i % 256].tolist() for i, e in enumerate(entries)
        ]
        self.meta = DatasetMeta(
            format="maskdir",
            categories=tuple(
                Category(id=i, name=e.name, isthing=False, color=e.color) for i, e in enumerate(entries)
            ),
            void_value=void,
            extra={"voc_labels": list(range(len(entries))), "voc_colors": colors, "background_id": bg},
        )
        self._samples: list[Sample] = []
        for n, key in enumerate(sorted(set(masks) | set(images)), start=1):
            mrel, irel = masks.get(key), images.get(key)
            mpath = str(safe_join(root / "masks", mrel)) if mrel else None
            ipath = str(safe_join(self.image_root, irel)) if irel else None
            if mpath is None:
                self.problems.append(
                    Problem("warning", f"images/{irel}", "", "image has no mask", "maskdir.no_mask")
                )
            if ipath is None:
                self.problems.append(
                    Problem("warning", f"masks/{mrel}", "", "mask has no image", "maskdir.missing_image")
                )
            src = ipath or mpath
            assert src is not None
            w, h = image_size(src, exif=src == ipath)
            self._samples.append(
                Sample(ImageInfo(n, irel or f"{key}.png", w, h), image_path=ipath, semantic_file=mpath)
            )

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id (= sorted relative stem)."""
        yield from self._samples


def materialize_maskdir(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Decodes the sample's mask to ``class_map`` (category id = label index); no instances."""
    void = meta.void_value if meta.void_value is not None else 255
    if sample.semantic_file is None:
        return Materialized(sample=sample, void_value=void)
    colors = meta.extra.get("voc_colors")
    cols = np.asarray(colors, dtype=np.uint8)[:256] if colors else None
    cm = read_indexed_mask(sample.semantic_file, cols, void_value=void)
    return Materialized(sample=sample, class_map=cm, void_value=void)


class MaskDirWriter:
    """Writes ``masks/`` (palette PNGs, 16-bit beyond 255 labels), ``images/`` and ``labelmap.txt``.

    Labels follow the VOC writer's rule (background 0, then the categories in meta order).
    Instances are rendered in z-order; losses: those of :func:`~segpipe.core.render.render_maps` plus
    ``instance_identity_dropped``, ``keypoints_dropped``, ``scores_dropped``.
    """

    format_name: ClassVar[str] = "maskdir"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.entries, self.label_of, self.labels = VocWriter._labels(meta)
        self.wide = len(self.entries) > 255
        self.void = 65535 if self.wide else 255
        self.palette = None if self.wide else palette_for([e.color for e in self.entries])
        self.names = {c.id: c.name for c in meta.categories}

    def prepare(self) -> None:
        """Creates ``masks/`` and ``images/``."""
        (self.out / "masks").mkdir(parents=True, exist_ok=True)
        (self.out / "images").mkdir(parents=True, exist_ok=True)

    def _labels_of_class_map(self, m: Materialized, losses: LossCounter) -> np.ndarray:
        return class_map_to_labels(
            np.asarray(m.class_map), self.label_of, self.labels[0], int(m.void_value), self.void, losses
        )

    def _labels(self, m: Materialized, instances: list[InstanceMask], losses: LossCounter) -> np.ndarray | None:
        """The ``(H, W)`` label map written for a sample: its class map, else one derived from its panoptic map,
        else rendered from its instances; None when it has none of them. Identities not kept are counted.
        """
        if m.class_map is not None:
            labels = self._labels_of_class_map(m, losses)
            for im in instances:  # instances beside a class map: their identity is not kept
                losses.lose(
                    "instance_identity_dropped",
                    1,
                    self.names.get(im.instance.category_id, ""),
                    NOTES["instance_identity_dropped"],
                )
            return labels
        if not instances and m.panoptic is not None:
            cmap, dl = derive_class_map(m, self.meta)
            losses.merge(dl)
            things = {c.id: c.isthing for c in self.meta.categories}
            for seg in m.panoptic[1]:  # objects of a panoptic map: one label-map region per class
                if things.get(seg.category_id, True) and not seg.iscrowd:
                    losses.lose("instance_identity_dropped", 1, self.names.get(seg.category_id, ""),
                                NOTES["instance_identity_dropped"])
            if cmap is not None:
                return self._labels_of_class_map(Materialized(m.sample, (), cmap, None, m.void_value), losses)
            return None
        if instances:
            return self._labels_of_instances(m, instances, losses)
        return None

    def _labels_of_instances(self, m: Materialized, instances: list[InstanceMask], losses: LossCounter) -> np.ndarray:
        """The ``(H, W)`` label map of a sample's instances of known classes (their identity is not kept)."""
        known = [im for im in instances if im.instance.category_id in self.label_of]
        for im in instances:
            if im.instance.category_id not in self.label_of:
                losses.lose(
                    "unknown_category_dropped",
                    1,
                    str(im.instance.category_id),
                    "instances whose category is unknown are not written",
                )
        img = m.sample.image
        cm, _, rl = render_maps(
            known,
            img.height,
            img.width,
            label_of=self.label_of,
            void_value=self.void,
            max_object_index=self.void - 1,
            names=self.names,
        )
        losses.merge(rl)
        for im in known:
            if im.rle is not None and not im.instance.iscrowd:
                name = self.names.get(im.instance.category_id, "")
                losses.lose("instance_identity_dropped", 1, name, NOTES["instance_identity_dropped"])
                losses.counts_out[name] += 1
        return cm

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes one shard's masks and images."""
        res = ShardResult(index)
        losses = res.losses
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            rel = check_relative_name(img.file_name, where="file_name")
            key = str(PurePosixPath(rel).with_suffix(""))
            instances = list(m.instances)
            for im in instances:
                name = self.names.get(im.instance.category_id, str(im.instance.category_id))
                if im.instance.keypoints and any(v > 0 for v in im.instance.keypoints[2::3]):
                    losses.lose("keypoints_dropped", 1, name, NOTES["keypoints_dropped"])
                if im.instance.score is not None:
                    losses.lose("scores_dropped", 1, name, NOTES["scores_dropped"])
            labels = self._labels(m, instances, losses)
            if labels is not None:
                dst = ensure_inside(self.out, self.out / "masks" / f"{key}.png")
                dst.parent.mkdir(parents=True, exist_ok=True)
                arr = labels.astype(np.uint8 if not self.wide else np.uint16)
                write_label_png(dst, arr, self.palette)
            self._copy_image(m.sample.image_path, rel, losses)
            res.fragments.append({"file_name": rel, "mask": labels is not None})
        return res

    def _copy_image(self, src: str | None, rel: str, losses: LossCounter) -> None:
        if self.options.copy_images == "none":
            return
        if src is None or not source_exists(src):
            losses.missing_images.append(rel)
            return
        dst = ensure_inside(self.out, self.out / "images" / rel)
        dst.parent.mkdir(parents=True, exist_ok=True)

        copy_or_link(src, dst, self.options.copy_images)

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ``labelmap.txt``.

        Raises:
            FormatError: two images share a stem (``a.png`` and ``a.jpg``): both would write
                ``masks/a.png``, so one mask would silently replace the other.
        """
        seen: dict[str, str] = {}
        for r in sorted(results, key=lambda r: r.index):
            for f in r.fragments:
                key = str(PurePosixPath(f["file_name"]).with_suffix(""))
                if key in seen:
                    raise FormatError(
                        f"images {seen[key]!r} and {f['file_name']!r} would both write masks/{key}.png; "
                        "nothing was written",  # the output is a staging folder, not worth naming
                        hint="rename one of the images",
                    )
                seen[key] = f["file_name"]
        lm = ensure_inside(self.out, self.out / LABELMAP)
        write_bytes_atomic(lm, format_labelmap_txt(self.entries).encode("utf-8"))
        return [lm]


def validate_maskdir(path: str | Path) -> Iterator[Problem]:
    """Checks a mask directory; yields one problem per issue (file and field named).

    Codes: ``maskdir.not_a_maskdir``, ``maskdir.labelmap``, ``maskdir.missing_image``,
    ``maskdir.no_mask``, ``maskdir.unreadable``, ``maskdir.size_mismatch``, ``maskdir.unknown_value``.
    16-bit masks are fine.
    """
    root = Path(path)
    if not (root / "masks").is_dir():
        yield Problem("error", str(root), "masks/", "no masks/ folder", "maskdir.not_a_maskdir")
        return
    try:
        entries, _ = read_label_entries(root)
    except SegpipeError as e:
        yield Problem("error", e.path or str(root), e.where or "", e.message, "maskdir.labelmap")
        return
    try:
        masks = _rel_files(root / "masks", (".png",), label="masks")
        images = _rel_files(root / "images", IMAGE_EXTS, label="images")
    except SegpipeError as e:  # the reader refuses the same way
        yield Problem("error", e.path or str(root), "", e.message, "maskdir.same_stem")
        return
    n_labels = len(entries) if entries is not None else None
    void = 255 if n_labels is None or n_labels <= 255 else 65535
    colors = None
    if entries is not None:
        cmap = voc_colormap(256)
        colors = np.asarray(
            [e.color if e.color is not None else cmap[i % 256] for i, e in enumerate(entries)][:256],
            dtype=np.uint8,
        )
    for key in sorted(set(masks) | set(images)):
        mrel, irel = masks.get(key), images.get(key)
        if mrel is None:
            yield Problem("warning", f"images/{irel}", "", "image has no mask", "maskdir.no_mask")
            continue
        mfile = f"masks/{mrel}"
        if irel is None:
            yield Problem(
                "warning", mfile, "", "mask has no image (no images/" + key + ".*)", "maskdir.missing_image"
            )
        try:
            mpath = safe_join(root / "masks", mrel)
            arr = read_indexed_mask(mpath, colors, void_value=void)
        except SegpipeError as e:
            yield Problem("error", mfile, "pixels", e.message, "maskdir.unreadable")
            continue
        if irel is not None:
            try:
                w, h = image_size(safe_join(root / "images", irel))
            except SegpipeError as e:
                yield Problem("error", f"images/{irel}", "", e.message, "maskdir.unreadable")
            else:
                if (h, w) != arr.shape:
                    yield Problem(
                        "error",
                        mfile,
                        "size",
                        f"mask is {arr.shape[1]}x{arr.shape[0]} but image images/{irel} is {w}x{h}",
                        "maskdir.size_mismatch",
                    )
        if n_labels is not None:
            vals = np.unique(arr)
            bad = [int(v) for v in vals if int(v) >= n_labels and int(v) != void]
            if bad:
                yield Problem(
                    "error",
                    mfile,
                    "pixel values",
                    f"values {bad[:10]} are not in the label map ({n_labels} labels; {void} = void)",
                    "maskdir.unknown_value",
                )


SPEC = register_format(
    FormatSpec(
        name="maskdir",
        description="semantic mask directory: images/ + masks/*.png label maps (+ labelmap.txt)",
        detect=detect_maskdir,
        reader=MaskDirReader,
        materialize=materialize_maskdir,
        writer=MaskDirWriter,
        validate=validate_maskdir,
        holds=frozenset({"semantic"}),
    )
)

__all__: list[Any] = [
    "MaskDirReader",
    "MaskDirWriter",
    "detect_maskdir",
    "materialize_maskdir",
    "validate_maskdir",
]
