"""Writing COCO datasets, COCO panoptic datasets and COCO results lists.

Every writer is constructed as ``Writer(out, meta, options)`` with ``out`` the destination folder;
nothing is ever written outside it (every target goes through :func:`safe_join` and
:func:`ensure_inside`).

* ``coco`` (``options.extra["layout"]``):

  - ``split`` (the default), the layout Datumaro, detectron2 (``register_coco_instances``) and most
    training code register: ``out/annotations/instances_<split>.json`` + ``out/images/<split>/<file_name>``,
    one JSON per split (:func:`~segpipe.formats.splits.loader_split`: images without a split, or with
    Datumaro's ``default``, go to ``train``; an image's own split stays in its ``split`` key). Label maps
    go to ``out/annotations/semantic_<split>/<stem>.png`` (beside the JSON, like COCO panoptic's PNG
    folders). Annotation ids are unique over all splits.
  - ``single``: ``out/annotations.json`` + ``out/images/<file_name>`` and ``out/semantic/<stem>.png``.

  Images are copied or hard-linked unless ``copy_images == "none"``. Label maps are written when samples
  carry one (VOC ``SegmentationClass``, mask directories, the semantics of a panoptic source), with the
  top-level key ``segpipe_semantic: {"folder": F, "void_value": V}`` (``F`` relative to the JSON's
  folder) — so COCO panoptic → COCO instances + semantic keeps every pixel's class.
* ``coco_panoptic`` → ``out/panoptic.json`` + ``out/panoptic/<stem>.png`` (the source PNG name when the
  source was panoptic).
* ``coco_results`` → ``out/results.json``.

``write_shard`` (worker) writes per-image files and returns small fragments; ``finalize`` (driver)
streams the JSON in shard order, one object per line, never holding the whole text in memory.
Writers count annotations written per category in ``losses.counts_out``; ``counts_in`` is counted by
the conversion driver (``segpipe.pipeline.convert``), not here, so that nothing is counted twice.

Annotation ids: the source ids are kept when every annotation has a positive integer id and the ids are
unique over the whole output; otherwise all annotations are renumbered ``1..N`` in shard order (images
sorted by id within a shard, annotations in source order), and the renumbering is reported in
``writer.repairs``.

``options.extra`` keys: ``scores`` (``keep`` | ``drop``, default ``keep``: a dataset annotation may
carry a ``score`` key, which COCO tools ignore); ``semantic`` (bool, default True: write label maps);
``polygons`` (bool, default False: ``coco`` only) writes masks as polygons traced along pixel edges
(:mod:`segpipe.core.contours`), with ``polygon_tolerance`` (pixels, default 0: exact) and
``polygon_holes`` (``keyhole``, default: holes kept by zero-width cuts, or ``drop``). Every pixel that
pycocotools' re-rasterisation of the polygons gets wrong is counted as ``polygon_approximation_pixels``
and every filled hole as ``holes_dropped``, per category. Crowd annotations and empty masks stay RLE
(COCO's convention for crowds; an empty mask has no polygon); source polygons are written as given.
RLE stays the default because it is lossless.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.contours import HolePolicy, polygonize
from segpipe.core.losses import LossCounter
from segpipe.core.panoptic import id2rgb
from segpipe.core.problems import Problem
from segpipe.core.records import DatasetMeta, ImageInfo, InstanceMask, Materialized
from segpipe.errors import ConfigError, FormatError
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.coco.convert import (
    PANOPTIC_EXTRA,
    SEMANTIC_KEY,
    header_to_coco,
    image_to_coco,
    instance_to_coco,
    segment_to_coco,
)
from segpipe.formats.derive import derive_class_map, derive_instances, derive_panoptic
from segpipe.formats.splits import loader_split
from segpipe.storage.atomic import atomic_open, copy_or_link
from segpipe.storage.images import write_label_png, write_rgb_png
from segpipe.storage.paths import check_relative_name, ensure_inside, safe_join

#: ``coco`` layouts (module docstring); the first is the default.
LAYOUTS = ("split", "single")
NOTES = {
    "scores_dropped": "prediction scores were not written (scores=drop)",
    "scores_assumed": "annotations without a score were written as results with score 1.0",
    "keypoints_dropped": "the output format holds no keypoints",
    "boxes_dropped": "box-only annotations (no mask) have no place in a panoptic map",
    "crowd_dropped": "crowd flags of label-map regions have no place in a COCO results list",
    "stuff_segment_flags_dropped": (
        "iscrowd/extra keys of stuff segments were lost: stuff is written as a semantic label map"
    ),
    "semantic_void_dropped": "label-map pixels were not written because semantic output is off",
    "image_records_dropped": "a results list holds no image records (file names, sizes)",
    "instance_attributes_dropped": "extra annotation keys have no place in a panoptic segment of stuff",
    "non_thing_instances_dropped": (
        "instances of stuff categories cannot be panoptic things; their pixels became void"
    ),
    "image_file_collision": "two images share a file name; only one file was kept",
    "empty_mask_written": (
        "objects that the source's object map gives no pixel were written with an empty RLE mask"
    ),
    "polygon_approximation_pixels": (
        "masks written as polygons differ from the source masks by these pixels once pycocotools"
        " re-rasterises the polygons (simplification tolerance, filled holes)"
    ),
    "holes_dropped": "COCO polygons cannot hold holes; these holes were filled (polygon_holes=drop)",
    "polygons_kept_rle": "crowd annotations and empty masks were kept as RLE under --polygons",
}


@dataclass(frozen=True)
class PolygonOptions:
    """How masks become polygons (``WriteOptions.extra`` keys ``polygons``, ``polygon_tolerance``,
    ``polygon_holes``).

    Attributes:
        enabled: Write masks as polygons.
        tolerance: Douglas–Peucker tolerance in pixels (0: exact).
        holes: ``keyhole`` or ``drop`` (see :mod:`segpipe.core.contours`).
    """

    enabled: bool = False
    tolerance: float = 0.0
    holes: HolePolicy = "keyhole"

    @staticmethod
    def from_extra(extra: Mapping[str, Any]) -> PolygonOptions:
        """Reads the options from ``WriteOptions.extra``.

        Raises:
            ConfigError: a tolerance that is not a non-negative number, or an unknown hole policy.
        """
        tol = extra.get("polygon_tolerance", 0.0)
        holes = extra.get("polygon_holes", "keyhole")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
            raise ConfigError(f"polygon_tolerance must be a number >= 0, got {tol!r}")
        if holes not in ("keyhole", "drop"):
            raise ConfigError(f"polygon_holes must be 'keyhole' or 'drop', got {holes!r}")
        return PolygonOptions(bool(extra.get("polygons", False)), float(tol), holes)


def mask_polygons(
    rle: dict[str, Any], opts: PolygonOptions, category: str, losses: LossCounter
) -> list[list[float]] | None:
    """Traces one mask into polygons and counts what they lose (for writers of polygon formats).

    Args:
        rle: The mask as compressed RLE.
        opts: Tolerance and hole policy.
        category: Category name the losses are counted under.
        losses: Where ``polygon_approximation_pixels`` and ``holes_dropped`` are counted.

    Returns:
        The polygons, or None for an empty mask (no polygon can hold it; callers keep the RLE).
    """
    result = polygonize(rle_ops.decode(rle), tolerance=opts.tolerance, holes=opts.holes)
    if not result.polygons:
        return None
    _lose(losses, "polygon_approximation_pixels", result.lost_pixels + result.added_pixels, category)
    _lose(losses, "holes_dropped", result.holes_dropped, category)
    return result.polygons


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, NOTES.get(kind))


def _stem_png(file_name: str, image_id: int) -> str:
    """``<stem>.png`` for an image's label maps (subfolders kept); the id when there is no name."""
    if not file_name:
        return f"{image_id}.png"
    rel = check_relative_name(file_name)
    return str(Path(rel).with_suffix(".png")).replace("\\", "/")


def refuse_shared_names(named: Iterable[tuple[int, str, str]], folder: str, out: Path) -> None:
    """Refuses two images that would write one output file (the second would replace the first's).

    ``img.png`` and ``img.jpg`` share the label map ``img.png``; ``x/a.png`` and ``x//a.png`` are one
    path; two images may even share a ``file_name`` (a store resumed after an id changed). A reader
    then finds one image's mask for both, so the export fails before the JSON is written.

    Args:
        named: ``(image id, file_name, output name)`` of each image that writes a file under ``folder``.
        folder: The output folder, relative to ``out`` (for the message).
        out: The output root.

    Raises:
        FormatError: naming both images and the output file they share.
    """
    seen: dict[str, tuple[int, str]] = {}
    for image_id, file_name, name in named:
        if name in seen:
            first_id, first_name = seen[name]
            raise FormatError(
                f"images {first_id} {first_name!r} and {image_id} {file_name!r} both map to "
                f"{folder}/{name}",
                path=out,
                hint="rename one of the images (their file names must differ once the extension is dropped)",
            )
        seen[name] = (image_id, file_name)


def place_file(out: Path, folder: str, rel_name: str) -> Path:
    """The path of ``out/folder/rel_name``, refusing any name that leaves ``out``; creates parents.

    Raises:
        UnsafePathError: ``rel_name`` is absolute, a URL, has ``..`` or resolves outside (symlinks).
    """
    base = out / folder
    ensure_inside(out, base / "_")  # the folder itself must not be a link leading out
    base.mkdir(parents=True, exist_ok=True)
    target = safe_join(base, rel_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    return ensure_inside(out, target)


def copy_image(src: str, dest: Path, mode: str) -> None:
    """Copies or hard-links ``src`` to ``dest`` atomically (see :func:`segpipe.storage.atomic.copy_or_link`)."""
    copy_or_link(src, dest, mode)


def _names(meta: DatasetMeta) -> dict[int, str]:
    return {c.id: c.name for c in meta.categories}


def _dump_stream(
    f: IO[str], head: Mapping[str, Any], lists: list[tuple[str, Iterable[Any]]], tail: Mapping[str, Any]
) -> None:
    """Writes ``{**head, list_key: [...], ..., **tail}`` item by item."""
    f.write("{\n")
    first = True

    def sep() -> None:
        nonlocal first
        if not first:
            f.write(",\n")
        first = False

    for k, v in head.items():
        sep()
        f.write(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    for key, items in lists:
        sep()
        f.write(f"{json.dumps(key)}: [")
        n = 0
        for item in items:
            f.write(",\n" if n else "\n")
            f.write(json.dumps(item, ensure_ascii=False))
            n += 1
        f.write("\n]" if n else "]")
    for k, v in tail.items():
        sep()
        f.write(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    f.write("\n}\n")


def _renumber(anns: list[dict[str, Any]], repairs: list[Problem], file: Path) -> None:
    ids = [a.get("id") for a in anns]
    ok = all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids) and len(set(ids)) == len(
        ids
    )
    if ok:
        return
    for k, a in enumerate(anns, start=1):
        a["id"] = k
    repairs.append(
        Problem(
            "warning",
            str(file),
            "annotations",
            f"annotation ids were missing or not unique: renumbered 1..{len(anns)} in output order",
            "repair.annotation_ids",
        )
    )


class _Base:
    format_name: ClassVar[str] = ""

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        #: Repairs and collisions noticed by ``finalize`` (for the report).
        self.repairs: list[Problem] = []

    def prepare(self) -> None:
        """Creates the output folder."""
        self.out.mkdir(parents=True, exist_ok=True)

    def _copy_image(self, m: Materialized, folder: str = "images") -> str | None:
        """Copies the sample's image under ``folder``; returns the source copied (None: nothing copied)."""
        s = m.sample
        if self.options.copy_images == "none" or not s.image_path or not s.image.file_name:
            return None
        dest = place_file(self.out, folder, s.image.file_name)
        copy_image(s.image_path, dest, self.options.copy_images)
        return str(s.image_path)

    def _instances(self, m: Materialized, losses: LossCounter) -> list[InstanceMask]:
        if m.instances:
            return list(m.instances)
        if m.panoptic is None and m.class_map is None:
            return []

        insts, lost = derive_instances(m, self.meta)
        losses.merge(lost)
        return insts

    def _check_collisions(self, images: list[dict[str, Any]], file: Path) -> None:
        counts = Counter(i.get("file_name") for i in images if i.get("file_name"))
        for name, n in sorted(counts.items()):
            if n > 1:
                self.repairs.append(
                    Problem(
                        "warning",
                        str(file),
                        "images",
                        f"{n} images share the file name {name!r}",
                        "image.file_name_collision",
                    )
                )


def annotation_dict(im: InstanceMask, *, results: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The COCO dict of an instance, completing what a dataset needs from its mask.

    A missing ``segmentation`` is taken from the mask RLE; a missing ``area`` / ``bbox`` is computed
    from the mask (or, for box-only annotations, ``area = w × h`` as ``loadRes`` does). Not for results,
    where ``loadRes`` computes them.

    Returns:
        ``(dict, repairs)`` with the names of the fields that were computed.
    """
    inst = im.instance
    d = instance_to_coco(inst, results=results)
    done: list[str] = []
    if "segmentation" not in d and im.rle is not None:
        d["segmentation"] = dict(im.rle)
    if results:
        return d, done
    if inst.area is None:
        if im.rle is not None:
            d["area"] = float(rle_ops.area(im.rle))
            done.append("area")
        elif inst.bbox is not None:
            d["area"] = float(inst.bbox[2] * inst.bbox[3])
            done.append("area")
    if inst.bbox is None and im.rle is not None:
        d["bbox"] = list(rle_ops.to_bbox(im.rle))
        done.append("bbox")
    return d, done


class CocoWriter(_Base):
    """Writes a COCO instances / keypoints dataset (see the module docstring).

    Raises:
        ConfigError: an unknown ``layout``.
    """

    format_name: ClassVar[str] = "coco"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        super().__init__(out, meta, options)
        self.layout = str(self.options.extra.get("layout") or LAYOUTS[0])
        if self.layout not in LAYOUTS:
            raise ConfigError(f"COCO layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    def prepare(self) -> None:
        """Checks the polygon options on the driver (a bad value fails before any task runs)."""
        PolygonOptions.from_extra(self.options.extra)
        super().prepare()

    def _split(self, img: ImageInfo) -> str | None:
        """The split an image is written under (None in the ``single`` layout)."""
        return loader_split(img.split) if self.layout == "split" else None

    def json_path(self, split: str | None) -> Path:
        """Where the JSON of ``split`` goes (``annotations.json`` in the ``single`` layout)."""
        if split is None:
            return self.out / "annotations.json"
        return self.out / "annotations" / f"instances_{split}.json"

    @staticmethod
    def semantic_folder(split: str | None) -> str:
        """The label-map folder, relative to the JSON's folder (the ``segpipe_semantic`` key's ``folder``)."""
        return "semantic" if split is None else f"semantic_{split}"

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Copies images, writes label maps, and returns image + annotation dicts as fragments."""
        res = ShardResult(index=index)
        names = _names(self.meta)
        drop_scores = self.options.extra.get("scores", "keep") == "drop"
        semantic = bool(self.options.extra.get("semantic", True))
        poly = PolygonOptions.from_extra(self.options.extra)
        computed: Counter[str] = Counter()
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            split = self._split(img)
            copied = self._copy_image(m, "images" if split is None else f"images/{split}")
            anns = []
            # A sample with an object / panoptic map states every object's pixels: an instance of it
            # without a mask (e.g. a VOC object fully covered by later ones) has an empty mask, which we
            # write as an empty RLE so that COCO tools can decode it. Samples without any pixel map
            # (COCO box-only annotations, VOC detection-only images) keep no segmentation.
            has_pixels = bool(m.sample.object_file or m.sample.panoptic_file or m.panoptic is not None)
            for im in self._instances(m, res.losses):
                cat = names.get(im.instance.category_id, str(im.instance.category_id))
                d, done = annotation_dict(im)
                computed.update(done)
                if has_pixels and "segmentation" not in d:
                    d["segmentation"] = rle_ops.encode(np.zeros((img.height, img.width), dtype=np.uint8))
                    res.losses.notes.setdefault("empty_mask_written", NOTES["empty_mask_written"])
                if drop_scores and "score" in d:
                    del d["score"]
                    _lose(res.losses, "scores_dropped", 1, cat)
                if poly.enabled and im.rle is not None and isinstance(d.get("segmentation"), dict):
                    polys = None if im.instance.iscrowd else mask_polygons(im.rle, poly, cat, res.losses)
                    if polys is None:
                        res.losses.notes.setdefault("polygons_kept_rle", NOTES["polygons_kept_rle"])
                    else:
                        d["segmentation"] = polys
                anns.append(d)
                res.losses.counts_out[cat] += 1
            wrote_sem = False
            class_map = m.class_map
            if class_map is None and m.panoptic is not None:
                class_map, lost = derive_class_map(m, self.meta)
                res.losses.merge(lost)
                self._count_stuff(m, res.losses)
            if class_map is not None:
                if semantic:
                    folder = self.json_path(split).parent.relative_to(self.out) / self.semantic_folder(split)
                    dest = place_file(self.out, folder.as_posix(), _stem_png(img.file_name, img.id))
                    write_label_png(dest, np.asarray(class_map))
                    wrote_sem = True
                else:
                    n = int(np.count_nonzero(np.asarray(class_map) != m.void_value))
                    _lose(res.losses, "semantic_void_dropped", n)
            res.fragments.append((image_to_coco(img), anns, wrote_sem, m.void_value, split, copied))
        for field_name, n in sorted(computed.items()):
            res.problems.append(
                Problem(
                    "warning",
                    str(self.json_path(None) if self.layout == "single" else self.out / "annotations"),
                    "annotations",
                    f"{n} annotations had no {field_name}: computed from the mask",
                    f"repair.{field_name}_computed",
                )
            )
        return res

    def _refuse_collisions(self, split: str | None, images: list[dict[str, Any]], copied: list[str | None],
                           semantic: bool) -> None:
        """Refuses images of one split that would share a label map or an image file.

        A reader of the split looks up ``<semantic folder>/<stem>.png`` for every image once the split has
        label maps, so two images of one stem would read one mask. Two records of one ``file_name`` copied
        from different files would pair one image file with both records' annotations.

        Raises:
            FormatError: naming both images and the shared output file.
        """
        json_dir = self.json_path(split).parent.relative_to(self.out)
        if semantic:
            folder = (json_dir / self.semantic_folder(split)).as_posix()
            refuse_shared_names(((int(i["id"]), str(i.get("file_name") or ""),
                                  _stem_png(str(i.get("file_name") or ""), int(i["id"]))) for i in images),
                                folder, self.out)
        # The same source file under two records is one image written twice, not a collision.
        first: dict[str, tuple[int, str, str]] = {}
        folder = "images" if split is None else f"images/{split}"
        for i, src in zip(images, copied, strict=True):
            if src is None:
                continue
            image_id, file_name = int(i["id"]), str(i["file_name"])
            rel = str(Path(check_relative_name(file_name))).replace("\\", "/")
            prev = first.setdefault(rel, (image_id, file_name, src))
            if prev[2] != src:
                refuse_shared_names([(prev[0], prev[1], rel), (image_id, file_name, rel)], folder, self.out)

    def _count_stuff(self, m: Materialized, losses: LossCounter) -> None:
        """Stuff segments of a panoptic source go to the label map; count what they carried beyond a class."""
        things = {c.id: c.isthing for c in self.meta.categories}
        names = _names(self.meta)
        _, segments = m.panoptic
        for s in segments:
            if not things.get(s.category_id, True):
                cat = names.get(s.category_id, str(s.category_id))
                losses.counts_out[cat] += 1  # kept as label-map pixels
                if s.iscrowd or s.attributes:
                    _lose(losses, "stuff_segment_flags_dropped", 1, cat)

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Streams one JSON per split (``annotations.json`` in the ``single`` layout), in shard order."""
        ordered = sorted(results, key=lambda r: r.index)
        # split -> (images, annotations, void values of its label maps), splits in order of first image
        parts: dict[str | None, tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]] = {}
        sources: dict[str | None, list[str | None]] = {}  # the file each image's copy came from
        for r in ordered:
            for image_d, image_anns, wrote_sem, void, split, copied in r.fragments:
                images, anns, voids = parts.setdefault(split, ([], [], set()))
                images.append(image_d)
                sources.setdefault(split, []).append(copied)
                anns.extend(image_anns)
                if wrote_sem:
                    voids.add(int(void))
        for split, (images, _, void_values) in parts.items():
            self._refuse_collisions(split, images, sources[split], bool(void_values))
        if not parts:  # an empty dataset still loads: one empty JSON where a loader looks first
            parts[loader_split(None) if self.layout == "split" else None] = ([], [], set())
        # Ids are unique over the whole output, so that the splits can be merged back (segpipe does).
        _renumber([a for _, anns, _ in parts.values() for a in anns], self.repairs,
                  self.json_path(None) if self.layout == "single" else self.out / "annotations")
        head, tail0 = header_to_coco(self.meta)
        written: list[Path] = []
        for split, (images, anns, void_values) in parts.items():
            target = ensure_inside(self.out, self.json_path(split))
            self._check_collisions(images, target)
            tail = tail0
            if void_values:
                folder = self.semantic_folder(split)
                tail = {**tail, SEMANTIC_KEY: {"folder": folder, "void_value": min(void_values)}}
                if len(void_values) > 1:
                    self.repairs.append(
                        Problem(
                            "warning",
                            str(target),
                            SEMANTIC_KEY,
                            f"label maps use several void values {sorted(void_values)}",
                            "semantic.void_values",
                        )
                    )
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(target, "w") as f:
                _dump_stream(f, head, [("images", images), ("annotations", anns)], tail)
            written.append(target)
        return written


class CocoPanopticWriter(_Base):
    """Writes a COCO panoptic dataset (see the module docstring)."""

    format_name: ClassVar[str] = "coco_panoptic"

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes one PNG per image and returns image + panoptic annotation dicts as fragments."""
        res = ShardResult(index=index)
        names = _names(self.meta)
        things = {c.id: c.isthing for c in self.meta.categories}
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            self._copy_image(m)
            extra: dict[str, Any] = {}
            if m.panoptic is not None:
                id_map, segments = m.panoptic
                segments = list(segments)
                raw = img.attributes.get(PANOPTIC_EXTRA)
                if isinstance(raw, Mapping):
                    extra = dict(raw)
            else:
                for im in m.instances:
                    inst = im.instance
                    cat = names.get(inst.category_id, str(inst.category_id))
                    if im.rle is None:
                        _lose(res.losses, "boxes_dropped", 1, cat)
                    elif not things.get(inst.category_id, True):
                        _lose(res.losses, "non_thing_instances_dropped", 1, cat)
                    if inst.keypoints is not None:
                        _lose(res.losses, "keypoints_dropped", 1, cat)
                    if inst.score is not None:
                        _lose(res.losses, "scores_dropped", 1, cat)

                id_map, segments, lost = derive_panoptic(m, self.meta)
                res.losses.merge(lost)
            for s in segments:
                res.losses.counts_out[names.get(s.category_id, str(s.category_id))] += 1
            png_name = extra.get("file_name")
            if not isinstance(png_name, str) or not png_name:
                png_name = _stem_png(img.file_name, img.id)
            dest = place_file(self.out, "panoptic", png_name)
            write_rgb_png(dest, id2rgb(np.asarray(id_map)))
            ann = {
                "image_id": img.id,
                "file_name": png_name,
                "segments_info": [segment_to_coco(s) for s in segments],
            }
            ann.update({k: v for k, v in extra.items() if k not in ann})
            res.fragments.append((image_to_coco(img), ann))
        return res

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Streams ``panoptic.json`` from the fragments in shard order."""
        ordered = sorted(results, key=lambda r: r.index)
        images = [i for r in ordered for i, _ in r.fragments]
        anns = [a for r in ordered for _, a in r.fragments]
        target = ensure_inside(self.out, self.out / "panoptic.json")
        # Every image wrote its PNG: two of one name leave one image's map for both records.
        refuse_shared_names(((int(a["image_id"]), str(i.get("file_name") or ""),
                              str(Path(check_relative_name(str(a["file_name"])))).replace("\\", "/"))
                             for i, a in zip(images, anns, strict=True)), "panoptic", self.out)
        self._check_collisions(images, target)
        head, tail = header_to_coco(self.meta, panoptic=True)
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "w") as f:
            _dump_stream(f, head, [("images", images), ("annotations", anns)], tail)
        return [target]


class CocoResultsWriter(_Base):
    """Writes a COCO results list (``loadRes`` input) to ``out/results.json``."""

    format_name: ClassVar[str] = "coco_results"

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Returns one list of result dicts per image as fragments (results hold no image files)."""
        res = ShardResult(index=index)
        names = _names(self.meta)
        for m in samples:
            res.n_samples += 1
            out: list[dict[str, Any]] = []
            for im in self._instances(m, res.losses):
                cat = names.get(im.instance.category_id, str(im.instance.category_id))
                d, _ = annotation_dict(im, results=True)
                if "score" not in d:
                    d["score"] = 1.0
                    _lose(res.losses, "scores_assumed", 1, cat)
                out.append(d)
                res.losses.counts_out[cat] += 1
            if m.sample.image.file_name or m.sample.image.attributes:
                _lose(res.losses, "image_records_dropped", 1)
            res.fragments.append(out)
        return res

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Streams ``results.json`` (a JSON list) in shard order."""
        ordered = sorted(results, key=lambda r: r.index)
        target = ensure_inside(self.out, self.out / "results.json")
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "w") as f:
            f.write("[")
            n = 0
            for r in ordered:
                for frag in r.fragments:
                    for d in frag:
                        f.write(",\n" if n else "\n")
                        f.write(json.dumps(d, ensure_ascii=False))
                        n += 1
            f.write("\n]\n" if n else "]\n")
        return [target]


def image_dict(img: ImageInfo) -> dict[str, Any]:
    """Alias of :func:`image_to_coco` for callers that build fragments themselves."""
    return image_to_coco(img)
