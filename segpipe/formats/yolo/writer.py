"""Writing Ultralytics YOLO datasets: ``yolo`` (segment: one polygon per object) and ``yolo_detect`` (boxes).

Layout written (what ``ultralytics`` loads as is, and Datumaro's ``yolo_ultralytics`` importer for boxes)::

    out/
      data.yaml                 train / val / test image folders, names {index: name}, nc (no ``path``:
                                Ultralytics then uses the YAML's own folder, so the dataset can move)
      images/<split>/<file_name>
      labels/<split>/<stem>.txt one line per object; an empty file for an image without objects

Splits: ``train``, ``val`` and ``test`` are kept (``valid`` / ``validation`` become ``val``); an image
without split (or Datumaro's ``default``) goes to ``train``; any other split is merged into ``train``
(counted ``split_merged_into_train``). Ultralytics needs ``val``: without val images it points at
``images/train`` (a comment in ``data.yaml`` says so).

Classes: every category in the source's order except the background class of a label-map source (its
pixels are YOLO's implicit background); index = position.

What YOLO cannot hold is counted (``--strict`` fails on it):

* ``holes_dropped`` / ``hole_pixels_added``: a polygon has no holes; they are filled (as Ultralytics' own
  mask converter does, outer contours only).
* ``parts_joined``: an object of several parts (disconnected components) is written as one polygon whose
  parts are joined by zero-width bridges, as Ultralytics' ``convert_coco`` joins multi-polygon objects.
  segpipe and pycocotools read such a polygon back exactly; OpenCV's fill (Ultralytics' rasteriser)
  also draws each bridge, one pixel wide.
* ``overlap_pixels``: pixels covered by several objects of an image. Every polygon is written whole, but
  Ultralytics trains segmentation with ``overlap_mask`` (each pixel belongs to one object).
* ``crowd_dropped``: crowd regions (and their RLE-only masks) have no YOLO form.
* ``boxes_as_polygons`` (segment): a box-only object becomes its rectangle polygon, because a segment
  file cannot mix in detect lines (Ultralytics reads every line of such a file as a polygon).
* ``masks_to_boxes`` (detect): an object's mask is reduced to its tight box.
* ``keypoints_dropped``, ``scores_dropped``, ``attributes_dropped``, ``box_clipped_to_image``,
  ``empty_objects_dropped``, ``unknown_category_dropped``, ``semantic_pixels_dropped`` (label-map pixels
  of an image that also has objects, not covered by any of them), ``image_name_collision`` (two images
  whose files share a stem in one split: the later one is not written).

Label-map (semantic) sources: every connected component (8-connected) of every class becomes one
object, largest first so that an object inside another's hole is drawn on top when the polygons are
rendered in order (a note, not a loss: the class map comes back identical apart from counted holes).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import yaml

from segpipe.core import rle as rle_ops
from segpipe.core.contours import polygonize, rasterize
from segpipe.core.losses import LossCounter
from segpipe.core.records import DatasetMeta, Materialized
from segpipe.core.render import regions_from_class_map
from segpipe.formats import perimage
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.yolo.lines import box_line, polygon_line
from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.paths import check_relative_name, ensure_inside

SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
NO_SPLIT = ("", "default")
NOTES = {
    "holes_dropped": "YOLO polygons have no holes: holes are filled (Ultralytics' mask converter does the same)",
    "hole_pixels_added": "pixels of filled holes, now inside their object",
    "parts_joined": "objects of several parts are one polygon with zero-width bridges between the parts (as "
    "Ultralytics' convert_coco writes them); OpenCV's fill draws the bridges one pixel wide",
    "overlap_pixels": "pixels covered by several objects: each polygon is whole, but Ultralytics trains with "
    "overlap_mask (one object per pixel)",
    "crowd_dropped": "crowd regions have no YOLO form and are not written",
    "boxes_as_polygons": "box-only objects are written as rectangle polygons (a segment file cannot hold box lines)",
    "masks_to_boxes": "YOLO detect keeps the tight box of each object, not its mask",
    "keypoints_dropped": "YOLO detect/segment files hold no keypoints",
    "scores_dropped": "YOLO label files hold no confidence scores",
    "attributes_dropped": "YOLO label files hold no object attributes",
    "box_clipped_to_image": "boxes reaching outside the image are clipped to it (YOLO coordinates are in [0, 1])",
    "empty_objects_dropped": "objects with an empty mask and no box hold nothing to write",
    "unknown_category_dropped": "objects whose category is not in the dataset's categories are not written",
    "semantic_pixels_dropped": "label-map pixels of images that also have objects, not covered by any object",
    "split_merged_into_train": "YOLO knows train, val and test; images of other splits are written to train",
    "polygon_pixels_changed": "pixels a joined polygon failed to reproduce (not expected: bridges cancel)",
    "image_name_collision": "two images share a stem in one split (one label file each is impossible): the "
    "later one is not written",
}


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, NOTES[kind])


def out_split(split: str | None) -> tuple[str, bool]:
    """``(YOLO split, merged)``: the folder an image goes to, and whether its own split was merged."""
    if split is None or split in NO_SPLIT:
        return "train", False
    s = SPLITS.get(split.lower())
    return (s, False) if s else ("train", True)


def join_parts(polygons: list[list[float]]) -> list[float]:
    """Joins polygons into one by zero-width bridges between nearest vertices.

    Each next polygon ``P`` is spliced in at the vertex ``r`` of the result nearest to one of its vertices
    ``p``: ``... r, p, (around P), p, r ...``. The bridge runs there and back, so even-odd rasterisers
    (pycocotools) cancel it exactly.

    Args:
        polygons: Flat ``[x1, y1, ...]`` polygons (outer boundaries of disjoint parts).

    Returns:
        One flat polygon.
    """
    res = np.asarray(polygons[0], dtype=np.float64).reshape(-1, 2)
    for poly in polygons[1:]:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        best = (np.inf, 0, 0)
        for start in range(0, len(res), 2048):  # bounded memory: 2048 × len(p) distances at a time
            block = res[start : start + 2048]
            d = ((block[:, None, :] - p[None, :, :]) ** 2).sum(-1)
            k = int(np.argmin(d))
            i, j = divmod(k, p.shape[0])
            if d[i, j] < best[0]:
                best = (float(d[i, j]), start + i, j)
        _, i, j = best
        loop = np.concatenate([p[j:], p[: j + 1]])
        res = np.concatenate([res[: i + 1], loop, res[i:]])
    return res.reshape(-1).tolist()


def mask_polygon(mask: np.ndarray, *, join: bool = True) -> tuple[list[list[float]], dict[str, int]]:
    """The YOLO polygon(s) of a mask and what they change.

    Args:
        mask: ``(H, W) bool|uint8``.
        join: One polygon with bridged parts (an object); False: one polygon per part (label-map regions).

    Returns:
        ``(polygons, stats)``; stats: ``holes``, ``hole_pixels``, ``parts``, ``changed_pixels`` (pixels the
        written polygons fail to reproduce beyond the filled holes; 0 by construction, checked).
    """
    res = polygonize(mask, holes="drop")
    polys = res.polygons
    stats = {"holes": res.holes, "hole_pixels": res.added_pixels, "parts": len(polys), "changed_pixels": 0}
    if not polys:
        return [], stats
    if join and len(polys) > 1:
        joined = join_parts(polys)
        filled = rasterize(polys, mask.shape[0], mask.shape[1])
        again = rasterize([joined], mask.shape[0], mask.shape[1])
        stats["changed_pixels"] = int(np.count_nonzero(filled != again))
        return [joined], stats
    return polys, stats


class YoloWriter:
    """Writes the Ultralytics segment layout (see the module docstring); ``YoloDetectWriter`` writes boxes."""

    format_name: ClassVar[str] = "yolo"
    task: ClassVar[str] = "segment"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.background = perimage.background_id(meta)
        self.classes = [c for c in meta.categories if c.id != self.background]
        self.index_of = {c.id: k for k, c in enumerate(self.classes)}
        self.names = {c.id: c.name for c in meta.categories}

    def prepare(self) -> None:
        """Creates ``images/train`` and ``labels/train`` (Ultralytics needs train even when empty)."""
        for d in ("images/train", "labels/train"):
            ensure_inside(self.out, self.out / d / "x")
            (self.out / d).mkdir(parents=True, exist_ok=True)

    def _objects(self, m: Materialized, losses: LossCounter) -> list[tuple[int, Any, Any, str]]:
        """``(category id, rle | None, bbox | None, kind)`` to write, in z-order; counts what is left out.

        ``kind`` is ``instance`` (one polygon per object) or ``region`` (a label-map component).
        """
        out: list[tuple[int, Any, Any, str]] = []
        lose = partial(_lose, losses)
        if m.instances:
            for im in m.instances:
                inst = im.instance
                if not perimage.keep_instance(inst, self.index_of, self.names, lose):
                    continue
                if inst.attributes:
                    _lose(losses, "attributes_dropped", 1, self.names.get(inst.category_id, str(inst.category_id)))
                out.append((inst.category_id, im.rle, inst.bbox, "instance"))
            if m.class_map is not None:
                self._uncovered(m, out, losses)
            return out
        if m.panoptic is not None:
            segments = perimage.kept_segments(m, self.index_of, self.names, lose)
            out.extend((cid, r, None, "instance") for cid, r, _ in segments)
            return out
        if m.class_map is not None:
            bg = self.background if self.background is not None else 0
            regions = regions_from_class_map(np.asarray(m.class_map), void_value=m.void_value, background=bg)
            for cat, r in regions:
                if int(cat) not in self.index_of:
                    _lose(losses, "unknown_category_dropped", 1, str(cat))
                    continue
                out.append((int(cat), r, None, "region"))
            losses.notes.setdefault("semantic_components_as_objects", "label maps were written as one object per "
                                    "connected component of each class, largest first")
        return out

    def _uncovered(self, m: Materialized, objs: list[tuple[int, Any, Any, str]], losses: LossCounter) -> None:
        cm = np.asarray(m.class_map)
        labelled = (cm != m.void_value) & (cm != (self.background if self.background is not None else 0))
        for _, r, _, _ in objs:
            if r is not None:
                labelled &= ~rle_ops.decode(r).astype(bool)
        _lose(losses, "semantic_pixels_dropped", int(np.count_nonzero(labelled)))

    def _lines(self, m: Materialized, losses: LossCounter) -> list[str]:
        img = m.sample.image
        w, h = img.width, img.height
        lines: list[tuple[int, str, int]] = []  # (sort key, line, category id)
        cover: np.ndarray | None = None
        for order, (cid, r, bbox, kind) in enumerate(self._objects(m, losses)):
            cls, name = self.index_of[cid], self.names.get(cid, str(cid))
            if kind == "region":
                mask = rle_ops.decode(r)
                polys, stats = mask_polygon(mask, join=False)
                if self.task == "segment":
                    self._count_shape(stats, name, losses)
                for p in polys:
                    part = rasterize([p], h, w)
                    n = int(np.count_nonzero(part))
                    line = self._line(cls, p, rle_ops.to_bbox(rle_ops.encode(part)), w, h, has_mask=True,
                                      name=name, losses=losses)
                    # Largest first: a component inside another's (filled) hole is drawn on top of it.
                    lines.append((-n, line, cid))
                    cover = self._cover(cover, part, h, w)
                continue
            if r is not None and rle_ops.area(r) > 0:
                mask = rle_ops.decode(r)
                if self.task == "segment":
                    polys, stats = mask_polygon(mask, join=True)
                    self._count_shape(stats, name, losses)
                    if stats["parts"] > 1:
                        _lose(losses, "parts_joined", 1, name)
                    poly = polys[0]
                    lines.append((order, self._line(cls, poly, None, w, h, has_mask=True, name=name,
                                                    losses=losses), cid))
                    cover = self._cover(cover, rasterize([poly], h, w), h, w)
                else:
                    lines.append((order, self._line(cls, None, rle_ops.to_bbox(r), w, h, has_mask=True, name=name,
                                                    losses=losses), cid))
            elif bbox is not None and bbox[2] > 0 and bbox[3] > 0:
                if self.task == "segment":
                    _lose(losses, "boxes_as_polygons", 1, name)
                lines.append((order, self._line(cls, None, bbox, w, h, has_mask=False, name=name, losses=losses),
                              cid))
            else:
                _lose(losses, "empty_objects_dropped", 1, name)
        if cover is not None:
            _lose(losses, "overlap_pixels", int(np.count_nonzero(cover > 1)))
        regions_first = sorted((k for k in lines if k[0] < 0), key=lambda t: t[0])
        ordered = regions_first + [k for k in lines if k[0] >= 0]
        for _, _, cid in ordered:
            losses.counts_out[self.names.get(cid, str(cid))] += 1
        return [ln for _, ln, _ in ordered]

    @staticmethod
    def _cover(cover: np.ndarray | None, part: np.ndarray, h: int, w: int) -> np.ndarray:
        if cover is None:
            cover = np.zeros((h, w), dtype=np.uint16)
        cover += part.astype(np.uint16)
        return cover

    @staticmethod
    def _count_shape(stats: dict[str, int], name: str, losses: LossCounter) -> None:
        _lose(losses, "holes_dropped", stats["holes"], name)
        _lose(losses, "hole_pixels_added", stats["hole_pixels"], name)
        _lose(losses, "polygon_pixels_changed", stats["changed_pixels"], name)

    def _line(self, cls: int, poly: list[float] | None, bbox: Any, w: int, h: int, *, has_mask: bool, name: str,
              losses: LossCounter) -> str:
        if self.task == "detect":
            if has_mask:
                _lose(losses, "masks_to_boxes", 1, name)
            x, y, bw, bh = (float(v) for v in bbox)
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                _lose(losses, "box_clipped_to_image", 1, name)
            return box_line(cls, (x0, y0, x1 - x0, y1 - y0), w, h)
        if poly is None:
            x, y, bw, bh = (float(v) for v in bbox)
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                _lose(losses, "box_clipped_to_image", 1, name)
            poly = [x0, y0, x1, y0, x1, y1, x0, y1]
        return polygon_line(cls, poly, w, h)

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes one shard's label files and images; fragments name each image's split."""
        res = ShardResult(index)
        losses = res.losses
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            split, merged = out_split(img.split)
            if merged:
                _lose(losses, "split_merged_into_train")
            rel = check_relative_name(img.file_name or f"{img.id}.jpg", where="file_name")
            stem = str(PurePosixPath(rel).with_suffix(""))
            label_rel = f"labels/{split}/{stem}.txt"
            label = ensure_inside(self.out, self.out / label_rel)
            label.parent.mkdir(parents=True, exist_ok=True)
            counted = LossCounter()  # merged once the label file is known to be this image's
            lines = self._lines(m, counted)
            # A second image with the same stem in this split must not replace the first (a re-run shard
            # rewrites its own files: see segpipe.formats.perimage).
            text = "".join(ln + "\n" for ln in lines)
            if not perimage.write_claimed(self.out, label_rel, label, text.encode("utf-8"), perimage.owner(m)):
                _lose(losses, "image_name_collision")
                continue
            losses.merge(counted)
            perimage.copy_image(self.out, self.options.copy_images, m.sample.image_path, f"images/{split}/{rel}", rel,
                                losses)
            res.fragments.append({"split": split, "file_name": rel, "objects": len(lines)})
        return res

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ``data.yaml``."""
        perimage.release_claims(self.out)
        splits: set[str] = set()
        for r in results:
            for f in r.fragments:
                splits.add(f["split"])
        doc: dict[str, Any] = {"train": "images/train"}
        comment = "# written by segpipe: Ultralytics YOLO " + self.task + "\n"
        if "val" in splits:
            doc["val"] = "images/val"
        else:
            doc["val"] = "images/train"
            comment += "# no val images in the source: val points at the train images\n"
        if "test" in splits:
            doc["test"] = "images/test"
        doc["nc"] = len(self.classes)
        doc["names"] = {k: c.name for k, c in enumerate(self.classes)}
        text = comment + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        path = ensure_inside(self.out, self.out / "data.yaml")
        write_bytes_atomic(path, text.encode("utf-8"))
        return [path]


class YoloDetectWriter(YoloWriter):
    """Writes the Ultralytics detect layout: one ``cls cx cy w h`` line per object."""

    format_name: ClassVar[str] = "yolo_detect"
    task: ClassVar[str] = "detect"
