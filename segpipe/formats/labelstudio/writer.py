"""Writing Label Studio pre-annotation tasks (``labelstudio``, writer only).

Output layout (inside the conversion's destination ``out``)::

    out/tasks.json           one task per image, importable in Label Studio (Import → tasks.json)
    out/label_config.xml     a labeling config listing every category with its colour
    out/images/<file_name>   the images (unless copy_images == "none")
    out/segpipe_meta.json    what Label Studio tasks cannot hold: category ids, supercategories,
                             image ids and attributes, dataset info

A task is ``{"data": {"image": URL, "image_id": id, "file_name": name, "segpipe_id": key}, "predictions":
[{"model_version": ..., "score": mean region score, "result": [...]}]}``. ``segpipe_id`` (the image's file
name, else its id) is the task's stable key: Label Studio's import does not take a task ``id`` from the
file (it numbers tasks itself, so a second import of the same file adds tasks), so none is written, and a
client that must update instead of duplicate (``segpipe push``) matches tasks by ``data.segpipe_id``.
The image URL is ``image_url_prefix`` + the
URL-quoted file name; the default prefix ``/data/local-files/?d=images/`` is Label Studio's local-file
serving: start Label Studio with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<out>`` (and add a local storage for ``<out>/images``), or pass
``image_url_prefix`` (e.g. ``https://host/images/`` or ``s3://bucket/images/``) where the images are
served from elsewhere.

Results (``from_name`` / ``to_name`` match ``label_config.xml``):

* an instance mask → one ``brushlabels`` region (``value.format = "rle"``, Label Studio's own RLE of the
  RGBA image, :mod:`segpipe.formats.labelstudio.brush`): lossless, overlaps kept; or, with
  ``polygons=True``, one ``polygonlabels`` region per polygon (the source's polygons when it had them,
  else traced by :mod:`segpipe.core.contours`; points in percent of width/height;
  pixels the polygons get wrong counted as ``polygon_approximation_pixels``, filled holes as
  ``holes_dropped``, extra regions of multi-part objects as ``object_parts_split``);
* a box-only instance → ``rectanglelabels`` (percent);
* a semantic class map (VOC ``SegmentationClass``, mask folders, the stuff of a panoptic map) → one
  ``brushlabels`` region per class (id ``class_<value>``; background 0 is skipped unless a category has
  id 0); void pixels have no Label Studio label (``void_pixels_dropped``). Class regions are brushes in
  every mode (``polygons`` too: a label map is exact only as pixels). When the source stores probabilities
  (a segpipe store pre-labeled with ``--probs``), each class region has a ``score``: the mean, over its
  pixels, of the highest class probability there.

Scores: a region's ``score`` is its instance's score or its class's confidence; a prediction's ``score``
(what Label Studio sorts tasks by) is ``1 - doubt`` where the source records how unsure its model was
(a segpipe store: :mod:`segpipe.kernels.prelabel.doubt`; the mean pixel entropy of a semantic image,
``1 -`` the lowest instance score of an instance image), else the mean of its regions' scores, absent
when no region has one.

``review_order.csv`` (written when any image has a recorded doubt): one row per image, the most doubtful
first, with ``rank, image_id, file_name, doubt, score, entropy, margin, low_margin`` and the most doubtful
region that is not a speck (``region_category``, ``region_bbox`` ``x y w h`` in pixels, ``region_doubt``;
see :mod:`segpipe.kernels.prelabel.doubt`), so annotators
start with what the model got least sure of; images without a doubt come last.

``label_config.xml`` lists exactly the control tags the results use (``brush``, ``polygon``, ``box``), each
with every category, so Label Studio finds every ``from_name`` and no label set is unused; with no region
at all it holds the mask tag of the mode (``brush``, or ``polygon`` with ``polygons``) for annotators.
Each ``<Label>`` carries ``category="<id>"`` (Label Studio ignores it): the reader gives a pulled or exported
project the same class ids back, so its label maps and evaluations line up with the source's.

Region ids are the source annotation ids (``"<id>"``, ``"<id>_<part>"`` for polygon parts) so results
can be traced back. Label Studio has no crowd flag, keypoints (in this writer) or extra annotation
keys: each is counted. ``options.extra`` keys: ``polygons``, ``polygon_tolerance``, ``polygon_holes`` (as
for COCO), ``image_url_prefix`` (``--image-url-prefix``), ``model_version`` (``--model-version``; default: the
source's model, else ``segpipe``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.labelmap import voc_colormap
from segpipe.core.losses import LossCounter
from segpipe.core.records import Category, DatasetMeta, InstanceMask, Materialized
from segpipe.errors import ConfigError
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.coco.convert import category_to_coco, image_to_coco
from segpipe.formats.coco.writer import PolygonOptions, copy_image, mask_polygons, place_file, refuse_shared_names
from segpipe.formats.derive import derive_class_map, derive_instances
from segpipe.formats.labelstudio.brush import mask_to_rle
from segpipe.formats.perimage import check_unique_names
from segpipe.storage.atomic import atomic_open, write_json_atomic
from segpipe.storage.paths import ensure_inside

FROM_BRUSH = "brush"
FROM_POLYGON = "polygon"
FROM_BOX = "box"
TO_IMAGE = "image"
DEFAULT_URL_PREFIX = "/data/local-files/?d=images/"

NOTES = {
    "crowd_flag_dropped": "Label Studio regions have no crowd flag; crowd regions became ordinary regions",
    "keypoints_dropped": "keypoints are not written to Label Studio tasks",
    "instance_attributes_dropped": "extra annotation keys (VOC difficult/truncated, COCO extras) have no place",
    "void_pixels_dropped": "void / ignore pixels of label maps have no Label Studio label",
    "object_parts_split": (
        "Label Studio polygons have one outline each: extra parts of multi-part objects became separate"
        " regions (ids <id>_<part>), so their grouping is only kept in the region ids"
    ),
    "empty_masks_dropped": "objects with an empty mask have no Label Studio region",
}


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, NOTES.get(kind))


def _model_version(model: Any) -> str:
    """A ``model_version`` string from an option or a store's model record (a name or a dict)."""
    if isinstance(model, dict):
        parts = [str(model[k]) for k in ("name", "architecture", "version", "checkpoint") if model.get(k)]
        return "/".join(parts) or "segpipe"
    return str(model) if model else "segpipe"


#: The review order's file name in the output folder, and its columns.
REVIEW_ORDER = "review_order.csv"
REVIEW_COLUMNS = ("rank", "image_id", "file_name", "doubt", "score", "entropy", "margin", "low_margin",
                  "region_category", "region_bbox", "region_doubt")


def _doubt_value(doubt: Any) -> float | None:
    """The number a doubt record sorts by (``doubt``), or None (no record, or no doubt measured)."""
    v = doubt.get("doubt") if isinstance(doubt, dict) else None
    return float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None


def _review_row(image_id: int, file_name: str, doubt: Any, names: dict[int, str]) -> dict[str, Any]:
    """One image's row of ``review_order.csv`` (rank filled in once every image is known)."""
    d = doubt if isinstance(doubt, dict) else {}
    v = _doubt_value(d)
    region = (d.get("regions") or [None])[0]

    def num(key: str) -> Any:
        x = d.get(key)
        return x if isinstance(x, (int, float)) else ""

    return {
        "rank": 0, "image_id": image_id, "file_name": file_name, "doubt": "" if v is None else v,
        "score": "" if v is None else round(1.0 - v, 6), "entropy": num("entropy"), "margin": num("margin"),
        "low_margin": num("low_margin"),
        "region_category": names.get(int(region["category_id"]), str(region["category_id"])) if region else "",
        "region_bbox": " ".join(str(int(b)) for b in region["bbox"]) if region else "",
        "region_doubt": region.get("doubt", "") if region else "",
    }


def _prediction(model: str, results: list[dict[str, Any]], scores: list[float], doubt: Any) -> dict[str, Any]:
    """A task's prediction: its score is ``1 - doubt`` where recorded, else the mean of its regions' scores."""
    prediction: dict[str, Any] = {"model_version": model, "result": results}
    v = _doubt_value(doubt)
    if v is not None:  # Label Studio sorts by score, higher = surer: the recorded doubt decides
        prediction["score"] = round(1.0 - v, 6)
    elif scores:
        prediction["score"] = float(np.mean(scores))
    return prediction


def review_order(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted most doubtful first (images without a doubt last; ties by image id), ranked from 1."""
    ordered = sorted(rows, key=lambda r: (r["doubt"] == "", -(r["doubt"] or 0.0), r["image_id"]))
    return [{**r, "rank": k} for k, r in enumerate(ordered, 1)]


def category_colors(categories: Iterable[Category]) -> dict[int, str]:
    """``{category id: "#rrggbb"}``: the category's own colour, else the VOC colormap of its position."""
    cmap = voc_colormap(256)
    out = {}
    for k, c in enumerate(categories):
        rgb = c.color if c.color is not None else tuple(int(v) for v in cmap[(k + 1) % 256])
        out[c.id] = "#{:02x}{:02x}{:02x}".format(*rgb)
    return out


def label_config_xml(categories: Iterable[Category], *, polygons: bool = False,
                     used: Iterable[str] | None = None) -> str:
    """The labeling config: an image and one control tag per kind of region, each listing every class.

    Args:
        categories: The classes, in order.
        polygons: The mask tag when no region is written (``PolygonLabels`` instead of ``BrushLabels``).
        used: The ``from_name``s the results use (``brush``, ``polygon``, ``box``): exactly their tags are
            written, so every result finds its tag and no label set is unused. None: the mask tag of the
            mode and ``box`` (the config before any result is known).

    Returns:
        The XML text.
    """
    cats = list(categories)
    colors = category_colors(cats)
    labels = "".join(
        f"    <Label value={quoteattr(c.name)} background={quoteattr(colors[c.id])} category=\"{c.id}\"/>\n"
        for c in cats
    )
    mask = FROM_POLYGON if polygons else FROM_BRUSH
    names = set(used) if used is not None else {mask, FROM_BOX}
    if not names & {FROM_BRUSH, FROM_POLYGON, FROM_BOX}:
        names = {mask}  # nothing written: annotators still need a tag to label with
    tags = ((FROM_BRUSH, "BrushLabels"), (FROM_POLYGON, "PolygonLabels"), (FROM_BOX, "RectangleLabels"))
    body = "".join(f'  <{tag} name="{name}" toName="{TO_IMAGE}">\n{labels}  </{tag}>\n'
                   for name, tag in tags if name in names)
    return f'<View>\n  <Image name="{TO_IMAGE}" value="$image" zoom="true"/>\n{body}</View>\n'


def _region(rid: str, kind: str, from_name: str, w: int, h: int, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "type": kind,
        "from_name": from_name,
        "to_name": TO_IMAGE,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": value,
    }


def brush_result(rid: str, mask: np.ndarray, label: str) -> dict[str, Any]:
    """A ``brushlabels`` region of a ``(H, W)`` mask."""
    h, w = mask.shape
    value = {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}
    return _region(rid, "brushlabels", FROM_BRUSH, w, h, value)


def polygon_result(rid: str, polygon: list[float], label: str, w: int, h: int) -> dict[str, Any]:
    """A ``polygonlabels`` region: a flat COCO polygon in pixels → points in percent."""
    xs, ys = polygon[0::2], polygon[1::2]
    points = [[x * 100.0 / w, y * 100.0 / h] for x, y in zip(xs, ys, strict=True)]
    value = {"points": points, "closed": True, "polygonlabels": [label]}
    return _region(rid, "polygonlabels", FROM_POLYGON, w, h, value)


def box_result(rid: str, bbox: tuple[float, float, float, float], label: str, w: int, h: int) -> dict[str, Any]:
    """A ``rectanglelabels`` region of a COCO box ``(x, y, w, h)`` in pixels (percent in the value)."""
    x, y, bw, bh = bbox
    value = {
        "x": x * 100.0 / w,
        "y": y * 100.0 / h,
        "width": bw * 100.0 / w,
        "height": bh * 100.0 / h,
        "rotation": 0,
        "rectanglelabels": [label],
    }
    return _region(rid, "rectanglelabels", FROM_BOX, w, h, value)


class LabelStudioWriter:
    """Writes Label Studio tasks (see the module docstring)."""

    format_name: ClassVar[str] = "labelstudio"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()

    def _poly(self) -> PolygonOptions:
        return PolygonOptions.from_extra(self.options.extra)

    def prepare(self) -> None:
        """Checks the options and creates the output folder (driver).

        Raises:
            ConfigError: ``image_url_prefix`` or ``model_version`` is not a non-empty string.
            UnsupportedError: two classes share a name (Label Studio labels are names).
        """
        check_unique_names(self.meta.categories, "Label Studio")
        self._poly()
        for key, option in (("image_url_prefix", "--image-url-prefix"), ("model_version", "--model-version")):
            v = self.options.extra.get(key)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ConfigError(f"{option} must be a non-empty string, got {v!r}")
        self.out.mkdir(parents=True, exist_ok=True)

    def _image_url(self, file_name: str, image_id: int) -> str:
        prefix = str(self.options.extra.get("image_url_prefix", DEFAULT_URL_PREFIX))
        return prefix + quote(file_name or f"{image_id}", safe="/")

    def _instances(self, m: Materialized, losses: LossCounter) -> list[InstanceMask]:
        if m.instances or m.panoptic is None:
            return list(m.instances)

        insts, lost = derive_instances(m, self.meta)  # the thing segments of the panoptic map
        losses.merge(lost)
        return insts

    def _class_map(self, m: Materialized, losses: LossCounter) -> np.ndarray | None:
        """The label map whose classes become brush regions: a source label map, or panoptic stuff."""
        if m.class_map is not None:
            cm = np.asarray(m.class_map)
            _lose(losses, "void_pixels_dropped", int(np.count_nonzero(cm == m.void_value)))
            return cm
        if m.panoptic is None:
            return None

        derived, lost = derive_class_map(m, self.meta)
        losses.merge(lost)
        if derived is None:
            return None
        things = [c.id for c in self.meta.categories if c.isthing]
        # Things are written as instance regions; their pixels here would duplicate them.
        return np.where(np.isin(derived, things), m.void_value, derived)

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Builds one task per image (returned as fragments) and copies the images."""
        res = ShardResult(index=index)
        names = {c.id: c.name for c in self.meta.categories}
        poly = self._poly()
        model = _model_version(self.options.extra.get("model_version") or self.meta.info.get("model"))
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            w, h = img.width, img.height
            if self.options.copy_images != "none" and m.sample.image_path and img.file_name:
                copy_image(m.sample.image_path, place_file(self.out, "images", img.file_name), self.options.copy_images)
            results: list[dict[str, Any]] = []
            scores: list[float] = []
            for k, im in enumerate(self._instances(m, res.losses)):
                inst = im.instance
                cat = names.get(inst.category_id, str(inst.category_id))
                rid = str(inst.id) if inst.id else f"r{k + 1}"
                regions = self._instance_regions(rid, im, cat, w, h, poly, res.losses)
                if not regions:
                    continue
                if inst.score is not None:
                    scores.append(float(inst.score))
                    for r in regions:
                        r["score"] = float(inst.score)
                if inst.iscrowd:
                    _lose(res.losses, "crowd_flag_dropped", 1, cat)
                if inst.keypoints is not None:
                    _lose(res.losses, "keypoints_dropped", 1, cat)
                if inst.attributes:
                    _lose(res.losses, "instance_attributes_dropped", 1, cat)
                results.extend(regions)
                res.losses.counts_out[cat] += 1
            cm = self._class_map(m, res.losses)
            if cm is not None:
                for v in np.unique(cm).tolist():
                    # Void has no label; 0 is background unless the dataset names a class 0.
                    if v == m.void_value or (v == 0 and 0 not in names):
                        continue
                    cat = names.get(int(v), str(v))
                    region = brush_result(f"class_{v}", cm == v, cat)
                    if int(v) in m.class_scores:  # the class's mean confidence, from stored probabilities
                        region["score"] = float(m.class_scores[int(v)])
                        scores.append(region["score"])
                    results.append(region)
                    res.losses.counts_out[cat] += 1
            prediction = _prediction(model, results, scores, m.doubt)
            data = {"image": self._image_url(img.file_name, img.id), "image_id": img.id, "file_name": img.file_name,
                    "segpipe_id": img.file_name or str(img.id)}
            task = {"data": data, "predictions": [prediction]}
            res.fragments.append((task, image_to_coco(img), _review_row(img.id, img.file_name, m.doubt, names)))
        return res

    def _instance_regions(
        self, rid: str, im: InstanceMask, cat: str, w: int, h: int, poly: PolygonOptions, losses: LossCounter
    ) -> list[dict[str, Any]]:
        inst = im.instance
        if im.rle is not None:
            if rle_ops.area(im.rle) == 0:
                _lose(losses, "empty_masks_dropped", 1, cat)
                return []
            if not poly.enabled:
                return [brush_result(rid, rle_ops.decode(im.rle).astype(bool), cat)]
            seg = inst.segmentation
            if seg is not None and seg.kind == "polygons" and seg.polygons:
                polys = [list(p) for p in seg.polygons]  # the source's own polygons: nothing to lose
            else:
                polys = mask_polygons(im.rle, poly, cat, losses) or []
            _lose(losses, "object_parts_split", len(polys) - 1, cat)
            if len(polys) == 1:
                return [polygon_result(rid, polys[0], cat, w, h)]
            return [polygon_result(f"{rid}_{j + 1}", p, cat, w, h) for j, p in enumerate(polys)]
        if inst.bbox is not None:
            return [box_result(rid, inst.bbox, cat, w, h)]
        _lose(losses, "empty_masks_dropped", 1, cat)
        return []

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Streams ``tasks.json`` in shard order and writes the labeling config and the sidecar.

        Raises:
            FormatError: two images of one file name when images are copied (naming both).
        """
        ordered = sorted(results, key=lambda r: r.index)
        if self.options.copy_images != "none":
            # Two images of one file name were copied onto one file: both tasks would show the one kept.
            refuse_shared_names(((int(d["id"]), str(d["file_name"]), str(d["file_name"]))
                                 for r in ordered for _, d, _ in r.fragments if d.get("file_name")),
                                "images", self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        target = ensure_inside(self.out, self.out / "tasks.json")
        images: list[dict[str, Any]] = []
        reviews: list[dict[str, Any]] = []
        used: set[str] = set()
        with atomic_open(target, "w") as f:
            f.write("[")
            n = 0
            for r in ordered:
                for task, image_d, review in r.fragments:
                    reviews.append(review)
                    used.update(reg["from_name"] for p in task["predictions"] for reg in p["result"])
                    f.write(",\n" if n else "\n")
                    f.write(json.dumps(task, ensure_ascii=False))
                    images.append(image_d)
                    n += 1
            f.write("\n]\n" if n else "]\n")
        config = ensure_inside(self.out, self.out / "label_config.xml")
        with atomic_open(config, "w") as f:
            f.write(label_config_xml(self.meta.categories, polygons=self._poly().enabled, used=used))
        sidecar = ensure_inside(self.out, self.out / "segpipe_meta.json")
        write_json_atomic(
            sidecar,
            {
                "source_format": self.meta.format,
                "info": dict(self.meta.info),
                "categories": [category_to_coco(c) for c in self.meta.categories],
                "images": images,
            },
        )
        written = [target, config, sidecar]
        if any(r["doubt"] != "" for r in reviews):
            order = ensure_inside(self.out, self.out / REVIEW_ORDER)
            with atomic_open(order, "w") as f:
                w = csv.DictWriter(f, fieldnames=REVIEW_COLUMNS, lineterminator="\n")
                w.writeheader()
                w.writerows(review_order(reviews))
            written.append(order)
        return written
