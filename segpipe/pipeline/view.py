"""``segpipe view``: an HTML report of pre-labels (or any dataset) over their images, built on Dask.

The driver reads the source's index (a store or any dataset segpipe reads) and, with ``--gt``, pairs
each image with its ground truth (by the end of its file path, then by id). Items go to the workers in pages of
``page_size``: a worker decodes each image and its labels, renders the thumbnails and overlay layers
(:mod:`segpipe.view.render`), measures doubt (:mod:`segpipe.core.doubt`, from a store's stored
probabilities) and error (against the ground truth), writes its page's files and its page of details
(``data/page-NNNNN.js``) into the staging folder, and returns one small summary row per image. The driver
groups the slices of each volume into one item, writes the summary index and ``index.html``
(:mod:`segpipe.view.html`), and swaps the folder in whole (:mod:`segpipe.storage.outputs`).

Nothing needs a server: the page loads its data as script files, so it opens from disk in any browser.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segpipe import __version__
from segpipe.core import rle as rle_ops
from segpipe.core.doubt import DoubtAccumulator
from segpipe.core.records import DatasetMeta, InstanceMask, Sample
from segpipe.errors import ConfigError, InputError, SegpipeError, UnsupportedError, describe_failure
from segpipe.execution.cluster import ClusterSpec, use_client
from segpipe.execution.runner import run_tasks
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import FormatSpec
from segpipe.formats.derive import derive_class_map
from segpipe.pipeline.class_match import norm
from segpipe.pipeline.requests import ViewRequest
from segpipe.storage import outputs
from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.images import read_image
from segpipe.storage.manifest import read_manifest
from segpipe.storage.raster import open_raster
from segpipe.storage.volume import parse_slice_ref
from segpipe.storage.zarrstore import ZarrStore
from segpipe.view import html, render
from segpipe.view.colors import class_colors

#: Formats tried first when a path is valid in several: a store, then label maps (every class), then
#: panoptic and COCO objects.
PREFER = ("segpipe_zarr", "voc", "maskdir", "coco_panoptic", "coco")
#: Rough in-process seconds per image (decode, resize, encode ~6 small files), for ClusterSpec.sized.
VIEW_IMAGE_S = 0.05
#: Items above this many pixels are scenes: read strided from the store for the overview, plus a
#: full-resolution crop of their centre, never whole.
SCENE_PIXELS = 4096 * 4096
#: Probabilities read for an image's doubt are strided down to at most this many values (C x h x w).
MAX_DOUBT_VALUES = 1 << 26
#: The entries a view folder holds (its marker lists them: anything else there blocks a replacement).
VIEW_ENTRIES = ("index.html", "data", "img")
ROLES = {"p": "pre-label", "g": "ground truth", "e": "error", "i": "instances", "k": "keypoints"}


@dataclass(frozen=True)
class ViewContext:
    """What a worker needs to render a page (picklable, small).

    Attributes:
        src_format: Registry name of the source's format.
        src_meta: Its metadata.
        gt_format: Registry name of the ground truth's format, or None.
        gt_meta: Its metadata, or None.
        colors: ``{category id: (r, g, b)}``.
        names: ``{category id: name}``.
        skeletons: ``{category id: 1-based keypoint pairs}``.
        thumb: Thumbnail size.
        large: Detail size (0: none).
        on_error: ``skip`` or ``fail``.
        scene_pixels: Items above this many pixels are read as scenes (strided).
    """

    src_format: str
    src_meta: DatasetMeta
    gt_format: str | None
    gt_meta: DatasetMeta | None
    colors: Mapping[int, tuple[int, int, int]]
    names: Mapping[int, str]
    skeletons: Mapping[int, tuple[tuple[int, int], ...]]
    thumb: int = 256
    large: int = 1024
    on_error: str = "skip"
    scene_pixels: int = SCENE_PIXELS


@dataclass
class PageResult:
    """What one page task returns: a summary row per image (small), in the page's order.

    Attributes:
        index: The page's number.
        rows: One dict per image (see :func:`_summary_row`).
    """

    index: int
    rows: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ checks


def _check_request(req: ViewRequest) -> None:
    """Refuses options out of range, naming the option."""
    if not 32 <= req.thumb <= 2048:
        raise ConfigError(f"--thumb must be in 32..2048 pixels, got {req.thumb}")
    if req.large and not req.thumb <= req.large <= 8192:
        raise ConfigError(f"--large must be 0 (none) or in {req.thumb}..8192 pixels (at least --thumb), "
                          f"got {req.large}")
    if not 10 <= req.page_size <= 5000:
        raise ConfigError(f"--page-size must be in 10..5000 images, got {req.page_size}")
    if req.on_error not in ("skip", "fail"):
        raise ConfigError(f"--on-error must be skip or fail, got {req.on_error!r}")


def _source(req: ViewRequest) -> Path:
    """The request's source (optional in the request only for ``segpipe view --serve``).

    Raises:
        ConfigError: none given.
    """
    if req.source is None:
        raise ConfigError("required: a store or dataset to view", where="source")
    return Path(req.source)


def _resolve(path: Path, fmt: str, option: str) -> FormatSpec:
    try:
        name = detect_format(path, prefer=PREFER) if fmt == "auto" else fmt
    except InputError as e:
        # detect_format's hint names convert's --from; this command's option is another.
        if e.hint:
            e.hint = e.hint.replace("(validate: --format), ", "").replace("--from", option)
        raise
    spec = get_format(name)
    if spec.reader is None or spec.materialize is None:
        raise UnsupportedError(f"format {name!r} cannot be read", path=path, hint=f"pass {option}")
    return spec


def _open_reader(spec: FormatSpec, path: Path, image_root: Path | None) -> Any:
    params = inspect.signature(spec.reader).parameters
    return spec.reader(path, **({"image_root": image_root} if image_root is not None and "image_root" in params
                                else {}))


# ------------------------------------------------------------------------------------------ pairing


def _stem(file_name: str) -> str:
    return PurePosixPath(file_name.replace("\\", "/")).stem if file_name else ""


def _parts(file_name: str) -> tuple[str, ...]:
    """A file name's path parts, the last without its suffix (``a/b/001.png`` → ``("a", "b", "001")``)."""
    if not file_name:
        return ()
    path = PurePosixPath(file_name.replace("\\", "/"))
    return tuple(x for x in (*path.parent.parts, path.stem) if x not in ("", ".", "/"))


class GroundTruthIndex:
    """Finds the ground-truth sample of a source image: the longest matching end of its file path (without
    the suffix: ``b/001`` before ``001``), unique on the ground truth's side, else the same id (each taken once).

    Holds a few small keys per ground-truth image (never pixels).

    Args:
        samples: The ground truth's samples.
    """

    def __init__(self, samples: Iterable[Sample]) -> None:
        self.by_id: dict[int, Sample] = {}
        self.by_tail: dict[tuple[str, ...], Sample | None] = {}  # None: that path end is ambiguous
        for s in samples:
            self.by_id[s.image.id] = s
            parts = _parts(s.image.file_name)
            for k in range(1, len(parts) + 1):
                tail = parts[-k:]
                self.by_tail[tail] = None if tail in self.by_tail else s
        self.used: set[int] = set()

    def match(self, sample: Sample) -> Sample | None:
        """The ground truth of ``sample``, or None."""
        parts = _parts(sample.image.file_name)
        g = None
        for k in range(len(parts), 0, -1):
            if parts[-k:] in self.by_tail:  # the longest end the ground truth has decides, even if ambiguous
                g = self.by_tail[parts[-k:]]
                break
        if g is None:
            g = self.by_id.get(sample.image.id)
            if g is not None and _stem(g.image.file_name) and _stem(sample.image.file_name) and \
                    _stem(g.image.file_name) != _stem(sample.image.file_name):
                g = None  # both name their files, differently: the ids were numbered independently
        if g is None or g.image.id in self.used:
            return None
        self.used.add(g.image.id)
        return g


# ------------------------------------------------------------------------------------------ worker


@functools.lru_cache(maxsize=4)
def _volume(path: str, window: tuple[float, float] | None) -> Any:
    from segpipe.storage.volume import open_volume  # lazy: nibabel/pydicom are optional and heavy

    return open_volume(path, window=window)


def _read_photo(path: str | None, shape: tuple[int, int], max_side: int | None = None) -> tuple[np.ndarray | None, str]:
    """The photo at ``path`` (an image, a volume slice reference or a GeoTIFF scene), or why there is none.

    Args:
        path: The sample's ``image_path``.
        shape: ``(H, W)`` of its labels (a photo of another size is not shown under them).
        max_side: Read a scene decimated to about this size (None: whole).

    Returns:
        ``(photo (h, w, 3) uint8 | None, reason when None)``.
    """
    if not path:
        return None, "no photo found for this image"
    ref = parse_slice_ref(path)
    try:
        if ref is not None:
            vol_path, z, window = ref
            return _volume(str(vol_path), window).slice(z), ""
        if Path(path).suffix.lower() in (".tif", ".tiff") and max_side is not None:
            return _scene_overview(path, shape, max_side), ""
        img = read_image(path)
        if img.shape[:2] != shape and img.shape[1::-1] == shape:  # a label map of the stored pixel grid
            img = read_image(path, exif=False)
        if img.shape[:2] != shape:
            return None, f"the photo is {img.shape[1]}x{img.shape[0]}, the labels {shape[1]}x{shape[0]}"
        return img, ""
    except SegpipeError as e:
        return None, f"photo unreadable: {e.message if hasattr(e, 'message') else e}"


def _scene_overview(path: str, shape: tuple[int, int], max_side: int) -> np.ndarray:
    """A GeoTIFF scene decimated to about ``max_side``, read block by block (memory: one block)."""
    src = open_raster(path)
    h, w = src.shape
    step = max(1, math.ceil(max(h, w) / max_side))
    block = max(step, (2048 // step) * step)
    rows = []
    for y0 in range(0, h, block):
        cols = [src[y0:min(h, y0 + block), x0:min(w, x0 + block)][::step, ::step] for x0 in range(0, w, block)]
        rows.append(np.concatenate(cols, axis=1))
    return np.concatenate(rows, axis=0)


def _objects(instances: Iterable[InstanceMask], height: int, width: int) -> list[render.InstanceDraw]:
    out = []
    for im in instances:
        inst = im.instance
        if inst.iscrowd and im.rle is None and inst.bbox is None:
            continue
        mask = rle_ops.decode(im.rle).astype(bool) if im.rle is not None else None
        if mask is not None and mask.shape != (height, width):
            mask = None
        kps = np.asarray(inst.keypoints, dtype=np.float64).reshape(-1, 3) if inst.keypoints else None
        out.append(render.InstanceDraw(inst.category_id, tuple(inst.bbox) if inst.bbox else None,  # type: ignore[arg-type]
                                       mask, inst.score, kps))
    return out


class _Writer:
    """Writes one image's files under ``<out>/<base>.<layer>.<t|l>.<ext>`` and remembers the layers."""

    def __init__(self, out: Path, base: str, sizes: dict[str, tuple[int, int]]) -> None:
        self.out, self.base, self.sizes = out, base, sizes
        self.layers: list[str] = []

    def photo(self, image: np.ndarray | None, reason: str) -> None:
        for tag, size in self.sizes.items():
            pic = render.resize_image(image, size) if image is not None else render.placeholder(size, reason)
            write_bytes_atomic(self.out / f"{self.base}.o.{tag}.jpg", render.encode_jpeg(pic))

    def layer(self, name: str, make: Callable[[tuple[int, int]], np.ndarray]) -> None:
        for tag, size in self.sizes.items():
            write_bytes_atomic(self.out / f"{self.base}.{name}.{tag}.png", render.encode_png(make(size)))
        self.layers.append(name)


def _doubt(group: Any, names: set[str], shape: tuple[int, int]) -> dict[str, Any] | None:
    """The doubt of a store image from its stored probabilities (strided when large), or None."""
    if "probs" not in names:
        return None
    node = group["probs"]
    c = int(node.shape[0])
    step = max(1, math.ceil(math.sqrt(c * shape[0] * shape[1] / MAX_DOUBT_VALUES)))
    probs = np.asarray(node[:, ::step, ::step]) if step > 1 else np.asarray(node[...])
    acc = DoubtAccumulator().update(probs)
    return acc.compute().to_dict()


def _class_stats(labels: np.ndarray | None, void: int) -> dict[int, float]:
    """``{class id: fraction of the image}`` (void left out)."""
    if labels is None:
        return {}
    lab = np.asarray(labels).ravel().astype(np.int64)
    counts = np.bincount(lab[lab != void]) if lab.size else np.zeros(0, dtype=np.int64)
    n = max(1, lab.size)
    return {int(v): round(float(counts[v]) / n, 5) for v in np.flatnonzero(counts)}


def _image_iou(gt: np.ndarray, pred: np.ndarray, void: int) -> tuple[float | None, dict[int, float]]:
    """Mean IoU over the classes in either map (void ground truth left out), and the IoU of each."""
    valid = gt != void
    g, p = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    ious: dict[int, float] = {}
    for c in np.union1d(np.unique(g), np.unique(p)):
        inter = int(np.count_nonzero((g == c) & (p == c)))
        union = int(np.count_nonzero((g == c) | (p == c)))
        if union:
            ious[int(c)] = round(inter / union, 5)
    return (float(np.mean(list(ious.values()))) if ious else None), ious


def _store_group(meta: DatasetMeta, sample: Sample) -> Any:
    """The store group of a store sample (for what ``materialize`` does not read: probabilities, scenes)."""
    check = getattr(sample, "check", None)
    store = _stores(str(meta.extra["store"]))
    return store.group(sample.image.id, check.hint if check is not None else None)


@functools.lru_cache(maxsize=4)
def _stores(path: str) -> ZarrStore:
    return ZarrStore(path)


def render_item(sample: Sample, gt: Sample | None, ctx: ViewContext, out: Path,
                base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Renders one image's files; returns its summary row and its details.

    Args:
        sample: The source sample.
        gt: Its ground truth, or None.
        ctx: The context.
        out: The report folder.
        base: Its files' path prefix below ``out`` (``img/00003/0042``).

    Returns:
        ``(row, detail)``: see :func:`_summary_row` and the page files of :mod:`segpipe.view.html`.

    Raises:
        SegpipeError: the image's labels cannot be read.
    """
    img = sample.image
    is_store = ctx.src_format == "segpipe_zarr"
    scene = is_store and img.width * img.height > ctx.scene_pixels
    group = _store_group(ctx.src_meta, sample) if is_store else None
    attrs = dict(group.attrs) if group is not None else {}
    detail: dict[str, Any] = {"file": img.file_name, "id": img.id, "width": img.width, "height": img.height}
    row: dict[str, Any] = {"n": img.file_name, "w": img.width, "h": img.height, "b": base, "sp": img.split}
    if scene:
        return _render_scene(sample, group, attrs, ctx, out, base, row, detail)
    m = get_format(ctx.src_format).materialize(sample, ctx.src_meta)
    labels = m.class_map
    full = (img.height, img.width)
    if labels is not None:
        full = tuple(np.asarray(labels).shape[:2])  # type: ignore[assignment]
    elif m.panoptic is not None:
        full = tuple(np.asarray(m.panoptic[0]).shape[:2])  # type: ignore[assignment]
    photo, reason = _read_photo(sample.image_path, full)  # type: ignore[arg-type]
    sizes = {"t": render.fit_size(*full, ctx.thumb)}
    if ctx.large:
        sizes["l"] = render.fit_size(*full, ctx.large)
    w = _Writer(out, base, sizes)
    w.photo(photo, reason or "no photo")
    lut = render.class_lut(ctx.colors, ctx.names)
    void = int(m.void_value)
    if m.panoptic is not None:
        ids, segs = m.panoptic
        cat_of = {int(s.id): int(s.category_id) for s in segs}
        w.layer("p", lambda sz: render.panoptic_layer(render.resize_labels(ids, sz), cat_of, ctx.colors, ctx.names))
    elif labels is not None:
        w.layer("p", lambda sz: render.colorize(render.resize_labels(labels, sz), lut))
    objs = _objects(m.instances, *full)  # type: ignore[misc]
    boxes = [o for o in objs if o.box is not None or o.mask is not None]
    if boxes and m.panoptic is None:
        w.layer("i", lambda sz: render.instances_layer(boxes, full, sz, ctx.colors, ctx.names))  # type: ignore[arg-type]
    points = [o for o in objs if o.keypoints is not None]
    if points:
        skel = ctx.skeletons.get(points[0].category_id, ())
        w.layer("k", lambda sz: render.keypoints_layer(points, skel, full, sz, ctx.colors))  # type: ignore[arg-type]
    pred_map = labels if labels is not None else derive_class_map(m, ctx.src_meta)[0]
    row["c"] = sorted(_class_stats(pred_map, void)) if pred_map is not None else sorted(
        {o.category_id for o in objs})
    detail["classes"] = _class_stats(pred_map, void)
    scores = [o.score for o in objs if o.score is not None]
    row["ni"] = len(objs)
    row["s"] = round(float(np.mean(scores)), 4) if scores else None
    detail["instances"] = [{"category": o.category_id, "score": None if o.score is None else round(o.score, 4),
                            "box": [round(v, 1) for v in o.box] if o.box else None,
                            "keypoints": int((o.keypoints[:, 2] > 0).sum()) if o.keypoints is not None else None}
                           for o in objs[:500]]
    if m.class_scores:
        detail["class_scores"] = {int(k): round(float(v), 4) for k, v in m.class_scores.items()}
    if group is not None:
        doubt = _doubt(group, set(group.array_keys()), full)  # type: ignore[arg-type]
        if doubt is not None:
            row["d"], row["m"] = doubt["entropy"], doubt["margin"]
            detail["doubt"] = doubt
    if gt is not None:
        _compare(gt, pred_map, full, ctx, w, row, detail)  # type: ignore[arg-type]
    _metadata(sample, attrs, row, detail)
    row["L"] = "".join(w.layers)
    return row, detail


def _compare(gt: Sample, pred_map: np.ndarray | None, full: tuple[int, int], ctx: ViewContext, w: _Writer,
             row: dict[str, Any], detail: dict[str, Any]) -> None:
    """The ground-truth layer, the error layer and the image's error and IoU."""
    assert ctx.gt_format is not None and ctx.gt_meta is not None
    gm = get_format(ctx.gt_format).materialize(gt, ctx.gt_meta)
    gmap, _ = derive_class_map(gm, ctx.gt_meta)
    detail["gt_file"] = gt.image.file_name
    if gmap is None:
        detail["gt_note"] = row["gn"] = "the ground truth has no pixel annotation for this image"
        return
    gmap = np.asarray(gmap)
    gvoid = int(gm.void_value)
    lut = render.class_lut(ctx.colors, ctx.names)
    w.layer("g", lambda sz: render.colorize(render.resize_labels(gmap, sz), lut))
    row["gc"] = sorted(_class_stats(gmap, gvoid))
    detail["gt_classes"] = _class_stats(gmap, gvoid)
    if pred_map is None:
        return
    if gmap.shape != np.asarray(pred_map).shape:
        detail["gt_note"] = row["gn"] = (f"the ground truth is {gmap.shape[1]}x{gmap.shape[0]}, the labels "
                                         f"{pred_map.shape[1]}x{pred_map.shape[0]}: not compared")
        return
    pred = np.asarray(pred_map)
    _, err = render.error_layer(gmap, pred, (gvoid,))
    w.layer("e", lambda sz: render.error_layer(render.resize_labels(gmap, sz), render.resize_labels(pred, sz),
                                               (gvoid,))[0])
    miou, ious = _image_iou(gmap, pred, gvoid)
    row["e"] = None if err is None else round(err, 5)
    row["u"] = None if miou is None else round(miou, 5)
    detail["iou"] = ious


#: Metadata left out of the searchable text (long, and nobody filters by them).
_UNSEARCHED = frozenset({"sha256", "path", "source", "width", "height"})


def _metadata(sample: Sample, attrs: Mapping[str, Any], row: dict[str, Any], detail: dict[str, Any]) -> None:
    """The image's metadata in its details, and a searchable text in its row."""
    meta: dict[str, Any] = {}
    merged = {**dict(sample.image.attributes), **dict(attrs)}
    for k, v in merged.items():
        if k in ("affine", "segments", "id", "file", "width", "height"):  # the first three: shown apart
            continue
        if isinstance(v, (str, int, float, bool)) or v is None:
            meta[k] = v
        elif isinstance(v, (list, tuple)) and len(v) <= 8 and all(isinstance(x, (int, float, str)) for x in v):
            meta[k] = list(v)
        elif isinstance(v, Mapping):
            meta[k] = {kk: vv for kk, vv in v.items() if isinstance(vv, (str, int, float, bool))}
    if sample.image.split:
        meta["split"] = sample.image.split
    detail["meta"] = meta
    if "volume" in merged and "z" in merged:  # a slice: shown with the others of its volume
        row["vol"], row["z"] = str(merged["volume"]), int(merged["z"])
    words = [f"{k}={v}" for k, v in meta.items() if isinstance(v, (str, int, float)) and k not in _UNSEARCHED]
    if words:  # searched with the name (the page adds it)
        row["t"] = " ".join(words)[:300].lower()


def _render_scene(sample: Sample, group: Any, attrs: Mapping[str, Any], ctx: ViewContext, out: Path, base: str,
                  row: dict[str, Any], detail: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A scene: an overview (labels read strided, photo decimated block by block) and a full-resolution
    crop of its centre, each with its layers; never the whole scene in memory.
    """
    img = sample.image
    h, w = img.height, img.width
    side = max(ctx.large, ctx.thumb)
    step = max(1, math.ceil(max(h, w) / side))
    node = group["labels"]
    labels = np.asarray(node[::step, ::step])
    geo = attrs.get("geo") if isinstance(attrs.get("geo"), Mapping) else {}
    void = int(geo.get("nodata", 255)) if isinstance(geo, Mapping) and geo.get("nodata") is not None else 255
    photo, reason = _read_photo(sample.image_path, labels.shape, side)  # type: ignore[arg-type]
    if photo is not None and photo.shape[:2] != labels.shape:
        photo = photo[: labels.shape[0], : labels.shape[1]] if photo.shape[0] >= labels.shape[0] and \
            photo.shape[1] >= labels.shape[1] else None
        reason = reason or "the scene's overview does not match its labels"
    sizes = {"t": render.fit_size(labels.shape[0], labels.shape[1], ctx.thumb)}
    if ctx.large:
        sizes["l"] = render.fit_size(labels.shape[0], labels.shape[1], ctx.large)
    lut = render.class_lut(ctx.colors, ctx.names)
    wr = _Writer(out, base, sizes)
    wr.photo(photo, reason or "no photo")
    wr.layer("p", lambda sz: render.colorize(render.resize_labels(labels, sz), lut))
    # The centre at full resolution: what the overview cannot show.
    cy, cx, half = h // 2, w // 2, min(ctx.large or ctx.thumb, h, w) // 2
    y0, x0 = max(0, cy - half), max(0, cx - half)
    crop = np.asarray(node[y0:y0 + 2 * half, x0:x0 + 2 * half])
    cwr = _Writer(out, base + ".crop", {"l" if ctx.large else "t": crop.shape[:2]})  # type: ignore[dict-item]
    cphoto = None
    if sample.image_path and Path(sample.image_path).suffix.lower() in (".tif", ".tiff"):
        try:
            cphoto = open_raster(sample.image_path)[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        except SegpipeError:
            cphoto = None
    cwr.photo(cphoto, "no photo")
    cwr.layer("p", lambda sz: render.colorize(crop, lut))
    stats = _class_stats(labels, void)
    row.update({"c": sorted(stats), "ni": 0, "s": None, "kind": "scene", "L": "".join(wr.layers)})
    detail.update({"classes": stats, "overview_step": step, "crop": [y0, x0, int(crop.shape[0]), int(crop.shape[1])]})
    doubt = _doubt(group, set(group.array_keys()), (h, w))
    if doubt is not None:
        row["d"], row["m"] = doubt["entropy"], doubt["margin"]
        detail["doubt"] = doubt
    _metadata(sample, attrs, row, detail)
    return row, detail


def view_page(index: int, items: list[tuple[Sample, Sample | None]], ctx: ViewContext, out_dir: str) -> PageResult:
    """Worker task: renders one page of images and writes its page of details.

    Returns:
        A :class:`PageResult` (one small row per image; a failed image's row says why).
    """
    out = Path(out_dir)
    (out / "img" / f"{index:05d}").mkdir(parents=True, exist_ok=True)
    result = PageResult(index)
    details: list[dict[str, Any]] = []
    for k, (sample, gt) in enumerate(items):
        base = f"img/{index:05d}/{k:04d}"
        try:
            row, detail = render_item(sample, gt, ctx, out, base)
        except (SegpipeError, MemoryError, OSError, ValueError) as exc:
            e = describe_failure(exc, path=sample.image.file_name) or SegpipeError(str(exc))
            if ctx.on_error == "fail":
                e.where = f"image {sample.image.id}"
                raise e from None
            row = {"n": sample.image.file_name, "w": sample.image.width, "h": sample.image.height, "b": base,
                   "f": str(e), "L": ""}
            detail = {"file": sample.image.file_name, "id": sample.image.id, "failed": str(e)}
        row["pg"], row["pi"] = index, k
        result.rows.append(row)
        details.append(detail)
    html.write_page(out, index, details)
    return result


# ------------------------------------------------------------------------------------------ driver


def _photo_folders(source: Path) -> list[Path]:
    """The folders of a store's photos (read from its manifest): inputs of the view like the store itself.

    A store keeps its photos where they were; ``--out`` inside their folder would write into the
    dataset that was pre-labeled. Anything but a store: none (its photos are inside it or ``--image-root``).
    """
    manifest = source / ".segpipe" / "manifest.jsonl"
    if not manifest.is_file():
        return []
    folders: set[Path] = set()
    for entry in read_manifest(manifest):
        ref = parse_slice_ref(entry.path) if entry.path else None
        photo = Path(ref[0] if ref is not None else entry.path)
        if photo.is_absolute():  # an entry that could not be listed keeps the name it was given
            folders.add(photo.parent)
    return sorted(folders)


def _not_prelabeled(source: Path) -> list[dict[str, str]]:
    """The images a store's last pre-label run failed (they have no labels, so no card): named, not left out.

    Returns:
        ``[{"file", "problem"}]`` from the newest ``.segpipe/runs/*.json`` (none for other sources, or
        when the report cannot be read: it only adds to what the page says).
    """
    runs = sorted((source / ".segpipe" / "runs").glob("*.json")) if (source / ".segpipe").is_dir() else []
    if not runs:
        return []
    try:
        failed = json.loads(runs[-1].read_text(encoding="utf-8")).get("failed") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [{"file": str(f.get("file")), "problem": f"not pre-labeled: {f.get('reason')}"}
            for f in failed if isinstance(f, dict) and f.get("file")]


def _unnamed(name: str, cid: int) -> bool:
    """Whether ``name`` was made up from the value (a label-PNG folder without a label map)."""
    return not name.strip() or name == f"class_{cid}"


def _check_classes(meta: DatasetMeta, gt_meta: DatasetMeta, gt: Path) -> None:
    """Refuses a ground truth that gives a class id another name than the source: its layer, the legend
    and the error compare values, so they would pair different classes without a word.

    Raises:
        ConfigError: naming ``--gt`` and the first classes that differ.
    """
    src = {int(c.id): str(c.name) for c in meta.categories}
    clash = [(int(c.id), src[int(c.id)], str(c.name)) for c in gt_meta.categories
             if int(c.id) in src and not _unnamed(str(c.name), int(c.id)) and not _unnamed(src[int(c.id)], int(c.id))
             and norm(src[int(c.id)]) != norm(str(c.name))]
    if clash:
        listed = ", ".join(f"{i} ({a!r} vs {b!r})" for i, a, b in clash[:4]) + (
            f" and {len(clash) - 4} more" if len(clash) > 4 else "")
        raise ConfigError(f"--gt numbers its classes differently: SOURCE and GT name class {listed}; the error "
                          "and overlays compare class ids", path=gt,
                          hint="view them apart, or convert one side to the other's label map first")


def _categories(meta: DatasetMeta, gt_meta: DatasetMeta | None) -> list[dict[str, Any]]:
    """The legend's classes: the source's, with the ground truth's colour where the source has none
    (matched by name, then id), then the ground truth's other classes.
    """
    gt_cats = list(gt_meta.categories) if gt_meta is not None else []
    gt_by_name = {c.name: c for c in gt_cats}
    gt_by_id = {c.id: c for c in gt_cats}
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for c in meta.categories:
        color = c.color
        if color is None:
            twin = gt_by_name.get(c.name) or gt_by_id.get(c.id)
            color = twin.color if twin is not None else None
        out.append({"id": c.id, "name": c.name, "color": list(color) if color else None})
        seen.add(c.id)
    for c in gt_cats:
        if c.id not in seen:
            out.append({"id": c.id, "name": c.name, "color": list(c.color) if c.color else None})
    return out


def _items(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary items: an image or scene is one item; the slices of a volume are one item, by ``z``."""
    items: list[dict[str, Any]] = []
    volumes: dict[str, dict[str, Any]] = {}
    for r in rows:
        frame = {k: r[k] for k in ("b", "L", "pg", "pi", "z", "w", "h", "f") if k in r}
        vol = r.get("vol")
        if vol is None:
            items.append({**{k: v for k, v in r.items() if k not in frame or k in ("w", "h", "f")}, "fr": [frame],
                          "kind": r.get("kind", "image")})
            continue
        item = volumes.get(vol)
        if item is None:
            item = volumes[vol] = {"n": vol, "kind": "volume", "fr": [], "c": set(), "gc": set(), "ni": 0,
                                   "_d": [], "_m": [], "_e": [], "_u": [], "_s": [],
                                   "w": r.get("w"), "h": r.get("h")}
            items.append(item)
        item["fr"].append(frame)
        item["c"].update(r.get("c", ()))
        item["gc"].update(r.get("gc", ()))
        item["ni"] += int(r.get("ni") or 0)
        for key in ("d", "m", "e", "u", "s"):
            if r.get(key) is not None:
                item[f"_{key}"].append(r[key])
        if r.get("f"):
            item["f"] = r["f"]
    for item in volumes.values():
        item["fr"].sort(key=lambda f: f.get("z", 0))
        item["c"], item["gc"] = sorted(item["c"]), sorted(item["gc"])
        for key in ("d", "m", "e", "u", "s"):
            vals = item.pop(f"_{key}")
            item[key] = round(float(np.mean(vals)), 5) if vals else None
        item["L"] = "".join(sorted({ch for f in item["fr"] for ch in f.get("L", "")}, key="pgeik".index))
        item["t"] = f"volume {len(item['fr'])} slices"
    return items


def _task_key(req: ViewRequest, index: int) -> str:
    text = f"{_source(req).resolve()}|{req.gt and Path(req.gt).resolve()}|{req.thumb}|{req.large}|{index}"
    return f"view-{hashlib.sha1(text.encode()).hexdigest()[:16]}-{index}"


def _pages(reader: Any, gt_index: GroundTruthIndex | None, size: int) -> Iterator[list[tuple[Sample, Sample | None]]]:
    page: list[tuple[Sample, Sample | None]] = []
    for s in reader.samples():
        page.append((s, gt_index.match(s) if gt_index is not None else None))
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def view(req: ViewRequest, cluster: ClusterSpec | None = None, progress: Callable[[int, int, int], None] | None = None,
         client: Any = None) -> dict[str, Any]:
    """Writes the HTML report of ``req.source`` into ``req.out``; returns a small summary.

    Raises:
        SegpipeError: an input cannot be read, an option is out of range, or ``--out`` may not be
            written (nothing is written then).
    """
    t0 = time.perf_counter()
    _check_request(req)
    source = _source(req)
    inputs = [*outputs.dataset_inputs(source, req.image_root), req.image_root,
              *outputs.dataset_inputs(req.gt), *_photo_folders(source)]
    plan = outputs.check_output(req.out, inputs, option="--out", command="view")
    spec = _resolve(source, req.source_format, "--format")
    reader = _open_reader(spec, source, req.image_root)
    gt_spec = gt_reader = gt_index = None
    if req.gt is not None:
        gt_spec = _resolve(Path(req.gt), req.gt_format, "--gt-format")
        gt_reader = _open_reader(gt_spec, Path(req.gt), None)
        _check_classes(reader.meta, gt_reader.meta, Path(req.gt))
        gt_index = GroundTruthIndex(gt_reader.samples())
    meta: DatasetMeta = reader.meta
    cats = _categories(meta, gt_reader.meta if gt_reader is not None else None)
    colors = class_colors(cats)
    skeletons = {c.id: tuple(c.skeleton) for c in (*meta.categories,
                                                   *(gt_reader.meta.categories if gt_reader else ())) if c.skeleton}
    ctx = ViewContext(spec.name, meta, gt_spec.name if gt_spec else None, gt_reader.meta if gt_reader else None,
                      colors, {int(c["id"]): str(c["name"]) for c in cats}, skeletons, req.thumb, req.large,
                      req.on_error)
    n = len(reader)
    n_pages = math.ceil(n / req.page_size) if n else 0
    cluster = cluster or ClusterSpec()
    if client is None:
        cluster = cluster.sized(n * VIEW_IMAGE_S, threads=1)
    workers = cluster.n_workers() if cluster.scheduler is None else 4
    staging = outputs.begin_staging(plan)
    try:
        (staging / "data").mkdir()
        (staging / "img").mkdir()
        tasks = ((_task_key(req, i), (i, page, ctx, str(staging)))
                 for i, page in enumerate(_pages(reader, gt_index, req.page_size)))
        results: list[PageResult] = []
        done = 0
        with use_client(cluster, client) as cl:
            for _, res in run_tasks(cl, view_page, tasks, total=n_pages, max_in_flight=max(2, 2 * workers)):
                results.append(res)
                done += len(res.rows)
                if progress:
                    progress(done, n, 0)
        results.sort(key=lambda r: r.index)
        rows = [r for res in results for r in res.rows]
        not_compared = [(r["n"], r.pop("gn")) for r in rows if "gn" in r]  # said once below, not per card
        items = _items(rows)
        failed = [r for r in rows if r.get("f")]
        problems = [{"file": r["n"], "problem": r["f"]} for r in failed]
        for p in getattr(reader, "problems", []):
            problems.append({"file": p.file, "problem": p.message})
        shown = {r["n"] for r in rows}
        problems += [p for p in _not_prelabeled(source) if p["file"] not in shown]
        if not_compared:
            problems.insert(0, {"file": str(req.gt), "problem": f"{len(not_compared)} of {len(rows)} images are "
                                f"not compared with --gt, e.g. {not_compared[0][0]}: {not_compared[0][1]}"})
        unpaired = len(rows) - len(gt_index.used) if gt_index is not None else 0
        if unpaired:  # asked for a comparison: say where there is none, rather than show fewer numbers
            problems.insert(0, {"file": str(req.gt), "problem": f"--gt has no image matching {unpaired} of "
                                f"{len(rows)} images (paired by file path, then id): they are not compared"})
        summary = {
            "title": req.title or source.name,
            "source": {"path": str(source), "format": spec.name, "task": meta.extra.get("task")},
            "gt": {"path": str(req.gt), "format": gt_spec.name} if gt_spec is not None else None,
            "roles": {**ROLES, **({} if spec.name == "segpipe_zarr" else {"p": "labels"})},
            "classes": [{**c, "color": list(colors[int(c["id"])])} for c in cats],
            "page_size": req.page_size,
            "sizes": {"t": req.thumb, "l": req.large},
            "images": len(rows),
            "failed": len(failed),
            "problems": problems[:200],
            "segpipe_version": __version__,
            "items": items,
        }
        html.write_viewer(staging, summary)
    except BaseException:
        outputs.discard(staging)
        raise
    outputs.install(staging, plan, entries=list(VIEW_ENTRIES))
    return {"out": str(req.out), "index": str(Path(req.out) / "index.html"), "images": len(rows),
            "items": len(items), "failed": len(failed), "problems": problems,
            "pages": n_pages, "elapsed_s": round(time.perf_counter() - t0, 3),
            "workers": "in-process" if cluster.in_process() else (cluster.scheduler or workers)}


def check_source(path: Path) -> None:
    """Refuses a missing source with one line (before anything is planned)."""
    if not Path(path).exists():
        raise InputError("no such file or folder", path=path)
