"""``segpipe evaluate``: predictions against ground truth, sharded on Dask, one report.

Any two datasets segpipe reads can be compared: COCO, COCO results (image ids and sizes from the
ground truth), COCO panoptic, VOC, mask directories, and a segpipe Zarr store as the prediction. The
flow is the one :mod:`segpipe.pipeline.convert` uses — readers on the driver stream lightweight
samples, workers decode pixels — and the metric engines of :mod:`segpipe.evaluation` merge the
shards' small results:

* **semantic**: shards of ``(gt sample, pred sample)`` pairs go to the workers; each worker decodes
  both samples itself (``materialize`` + :func:`~segpipe.formats.derive.derive_class_map`), maps
  category ids to contiguous class indices and folds the pair into a
  :class:`~segpipe.evaluation.semantic.SemanticEvaluator` (a ``C × C`` confusion matrix plus the
  worst-N per-image mIoU). Only that ``O(C² + N_worst)`` object comes back; the driver merges them as
  they complete, so memory does not grow with the number of images, and never holds pixels.
* **instance / keypoints**: the COCO ground-truth dict and result list are built (COCO JSON inputs
  are loaded as they are; other formats are materialised on the workers into COCO dicts with RLE
  masks and scores) and :func:`~segpipe.evaluation.cocoeval.evaluate_coco` runs
  ``COCOeval.evaluate()`` in image shards on the same client — pycocotools' exact numbers.
* **panoptic**: two COCO panoptic JSON files go to
  :func:`~segpipe.evaluation.panoptic.evaluate_panoptic` (PNG folders default to the JSON path
  without ``.json``); any other pair (e.g. a store of panoptic predictions) is materialised on the
  workers (:func:`~segpipe.formats.derive.derive_panoptic`) into
  :class:`~segpipe.evaluation.panoptic.PanopticEvaluator` s that merge like the semantic ones.

Pairing images. A prediction is paired with the ground-truth image of the **same image id**, unless
both name a file and the two file stems (file names without folders and extension) differ: then the
ids were numbered independently (a mask directory numbers its images 1..N in stem order) and the
prediction with the ground truth's **file stem** is taken instead, if any. When no prediction has the
id, the file stem is tried too. Each prediction is used once.
Ground-truth images left without a prediction are problems (errors for semantic and panoptic: the
image could not be evaluated; for COCO AP an image without detections is simply a miss); predictions
left without ground truth are warnings and are ignored.

Semantic classes. Class ``k`` is the ``k``-th ground-truth category (``background`` with id 0 is put
first when the ground truth has no category 0, as COCO has not: rendered COCO label maps use 0 for
unlabelled pixels). With ``num_classes=N`` the label values ``0 .. N-1`` are the classes directly.
Ground-truth pixels equal to the ground truth's void value (``DatasetMeta.void_value``, 255 by
default) or to ``ignore_index`` are ignored. Every other ground-truth value must be a class, and the
prediction must give a class on every pixel that is not ignored: an image where either is not the
case is reported as a problem (naming the values) and left out, never silently remapped.
The two sides' class names are compared too (:mod:`segpipe.pipeline.class_match`): by default values
are compared as ids and every naming disagreement is a warning in the report's ``classes`` section;
``match_classes="name"`` maps prediction ids to ground-truth ids by name instead.

Two flat folders of label PNGs (``gt/*.png``, ``pred/*.png``) are read as ``labelpngs``
(:mod:`segpipe.formats.labelpngs`) when no other format matches; their images pair by file stem.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segpipe import __version__
from segpipe.core.problems import Problem
from segpipe.core.records import DatasetMeta, ImageInfo, InstanceMask, Sample, chunked
from segpipe.errors import ConfigError, FormatError, InputError, SegpipeError, UnsupportedError
from segpipe.execution.cluster import ClusterSpec, use_client
from segpipe.execution.runner import run_tasks
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import FormatSpec
from segpipe.storage.outputs import OutputPlan, check_not_input, check_output, dataset_inputs

TASKS = ("semantic", "instance", "panoptic", "keypoints")
IOU_TYPES = ("segm", "bbox", "keypoints")
#: progress(done images, total images, failed images)
Progress = Callable[[int, int, int], None]
#: Worst-image key: ``(ground-truth image id, ground-truth file name)``.
WorstKey = tuple[int, str]


@dataclass
class EvaluateRequest:
    """Everything ``segpipe evaluate`` was asked to do.

    Attributes:
        gt: Ground truth: a file or folder in any readable format.
        pred: Predictions: a file or folder in any readable format, or a segpipe Zarr store.
        task: ``semantic``, ``instance``, ``panoptic`` or ``keypoints``.
        gt_format: Format name of ``gt``, or ``auto`` to detect it.
        pred_format: Format name of ``pred``, or ``auto`` to detect it.
        iou_types: COCO iou types (``segm``, ``bbox``, ``keypoints``); None = every type the
            predictions support (``segm`` when they have masks, ``bbox`` always, ``keypoints`` when
            they and the ground truth have keypoints; the keypoints task: ``keypoints``).
        num_classes: Semantic: take label values ``0 .. N-1`` as the classes instead of the
            ground-truth categories.
        ignore_index: Semantic: a ground-truth label value ignored besides the ground truth's void.
        worst: How many worst images to list (and draw, with ``report_dir``).
        shards: Number of image shards (None: a few per worker).
        img_ids: Restrict to some ground-truth images: ``first:N`` (the N smallest ids, as the
            cocoapi demo does with ``imgIds[:N]``) or ``ID,ID,...``.
        json_path: Write the report JSON here.
        report_dir: Write ``report.json``, ``summary.md``, ``per_class.csv`` and plots here.
        image_root: Folder of the ground-truth photos (readers and overlays), if not beside them.
        gt_png_dir: Panoptic: the ground-truth PNG folder (default: the JSON path without ``.json``).
        pred_png_dir: Panoptic: the predicted PNG folder (same default).
        kpt_sigmas: Keypoints: per-keypoint OKS sigmas (default COCO's 17; required for other
            skeletons).
        on_error: ``skip`` reports an image that cannot be evaluated and goes on; ``fail`` stops.
        match_classes: Semantic: ``id`` compares label values as they are (warning about classes the
            two sides name differently); ``name`` maps prediction ids to ground-truth ids by class
            name (:mod:`segpipe.pipeline.class_match`).
        categories: Class names of label-PNG folders (``labelpngs``): a YAML/JSON ``{id: name}`` or
            a ``labelmap.txt``; without it their classes are their values, named ``class_<v>``.
    """

    gt: Path
    pred: Path
    task: str = "semantic"
    gt_format: str = "auto"
    pred_format: str = "auto"
    iou_types: tuple[str, ...] | None = None
    num_classes: int | None = None
    ignore_index: int | None = 255
    worst: int = 8
    shards: int | None = None
    img_ids: str | None = None
    json_path: Path | None = None
    report_dir: Path | None = None
    image_root: Path | None = None
    gt_png_dir: Path | None = None
    pred_png_dir: Path | None = None
    kpt_sigmas: tuple[float, ...] | None = None
    on_error: str = "skip"
    match_classes: str = "id"
    categories: Path | None = None


# ------------------------------------------------------------------------------------ small helpers


class ImageSelection:
    """Which ground-truth images take part (``--img-ids``).

    Readers stream samples sorted by image id, so ``first:N`` keeps the first N offered: the N
    smallest ids, without listing them all first.

    Args:
        spec: None (all), ``first:N`` or ``ID,ID,...``.

    Raises:
        ConfigError: malformed ``spec``.
    """

    def __init__(self, spec: str | None) -> None:
        self.first: int | None = None
        self.ids: set[int] | None = None
        self.found: set[int] = set()  # the listed ids the ground truth offered
        self._taken = 0
        if spec is None or not spec.strip():
            return
        text = spec.strip()
        try:
            if text.lower().startswith("first:"):
                self.first = int(text.split(":", 1)[1])
                if self.first < 1:
                    raise ValueError
            else:
                self.ids = {int(t) for t in text.split(",") if t.strip()}
                if not self.ids:
                    raise ValueError
        except ValueError:
            raise ConfigError(f"--img-ids must be first:N (N >= 1) or ID,ID,..., got {spec!r}") from None

    @property
    def active(self) -> bool:
        """True when some images are left out."""
        return self.first is not None or self.ids is not None

    def keep(self, image_id: int) -> bool:
        """Offers the next image id (in increasing order); True when it takes part."""
        if self.ids is not None:
            if image_id in self.ids:
                self.found.add(image_id)
                return True
            return False
        if self.first is not None:
            if self._taken >= self.first:
                return False
            self._taken += 1
        return True

    def check_found(self, gt: Path) -> None:
        """Refuses listed ids that the ground truth did not offer (once every id was offered).

        Raises:
            ConfigError: naming ``--img-ids`` and the first few missing ids; a typo once gave
                "0/0 images evaluated" and exit 0.
        """
        missing = sorted(self.ids - self.found) if self.ids is not None else []
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(str(i) for i in missing[:5]) + more
            raise ConfigError(f"--img-ids: {len(missing)} id(s) are no image of the ground truth: {shown}", path=gt,
                              hint="list ground-truth image ids, or use first:N")

    def select(self, ids: Iterable[int]) -> list[int]:
        """The selected ids among ``ids``, sorted."""
        return [i for i in sorted(ids) if self.keep(i)]


def _stem(file_name: str) -> str:
    return PurePosixPath(file_name.replace("\\", "/")).stem if file_name else ""


class Pairing:
    """Pairs ground-truth images with predicted samples (see the module docstring for the rule).

    Holds one small record per predicted image (never pixels).

    Args:
        preds: The predicted samples.
    """

    def __init__(self, preds: Iterable[Sample]) -> None:
        self.by_id: dict[int, Sample] = {}
        self._by_stem: dict[str, int | None] = {}  # None: the stem is ambiguous
        for s in preds:
            self.by_id[s.image.id] = s
            st = _stem(s.image.file_name)
            if st:
                self._by_stem[st] = None if st in self._by_stem else s.image.id
        self.used: set[int] = set()
        #: ground-truth image id -> predicted image id, as matched
        self.matches: dict[int, int] = {}

    def _free_by_stem(self, stem: str) -> Sample | None:
        pid = self._by_stem.get(stem) if stem else None
        if pid is None or pid in self.used:
            return None
        return self.by_id[pid]

    def match(self, image: ImageInfo) -> Sample | None:
        """The prediction for ground-truth ``image``, or None (each prediction is taken once)."""
        stem = _stem(image.file_name)
        p = self.by_id.get(image.id)
        if p is not None and p.image.id not in self.used:
            pstem = _stem(p.image.file_name)
            if stem and pstem and pstem != stem:
                # Both name their file and the names differ: the ids were numbered independently.
                p = self._free_by_stem(stem)
        else:
            p = self._free_by_stem(stem)
        if p is not None:
            self.used.add(p.image.id)
            self.matches[image.id] = p.image.id
        return p

    def unmatched(self) -> list[Sample]:
        """Predictions that no ground-truth image took, sorted by id."""
        return [s for i, s in sorted(self.by_id.items()) if i not in self.used]


#: Formats tried first per task when detecting: a folder valid in several formats is read in the one that
#: holds what the task evaluates (a synth folder's COCO JSON has its objects only, its masks every class).
PREFER = {
    "semantic": ("segpipe_zarr", "voc", "maskdir"),
    "panoptic": ("segpipe_zarr", "coco_panoptic"),
    "instance": ("segpipe_zarr", "coco_results", "coco"),
    "keypoints": ("segpipe_zarr", "coco_results", "coco"),
}


def _resolve_format(path: Path, fmt: str, what: str, task: str = "") -> FormatSpec:
    if fmt == "auto":
        try:
            name = detect_format(path, prefer=PREFER.get(task, ()))
        except FormatError:
            raise  # a file of the input is malformed (a store's zarr.json): its own line names it
        except InputError as e:
            if not Path(path).exists():
                raise
            from segpipe.formats.labelpngs import looks_like_labelpngs

            # A flat folder of label PNGs (a prediction dump) is never auto-detected elsewhere, where a
            # folder of greyscale photos would look the same; here both inputs are annotations.
            if task in ("semantic", "") and looks_like_labelpngs(path):
                return get_format("labelpngs")
            raise InputError(e.message, path=path, hint=f"pass --{what}-format (see `segpipe formats`)") from None
    else:
        name = fmt
    spec = get_format(name)
    if spec.reader is None or spec.materialize is None:
        raise UnsupportedError(f"format {name!r} cannot be read", path=path, hint=f"pass --{what}-format")
    return spec


def _open_reader(spec: FormatSpec, path: Path, **options: Any) -> Any:
    params = inspect.signature(spec.reader).parameters
    kwargs = {k: v for k, v in options.items() if v is not None and k in params}
    return spec.reader(path, **kwargs)


def _problem(severity: str, sample: Sample, message: str, code: str) -> Problem:
    return Problem(severity, sample.image.file_name, f"image {sample.image.id}", message, code)  # type: ignore[arg-type]


def _n_workers(cluster: ClusterSpec) -> int:
    if cluster.scheduler is not None:
        return 4
    return max(1, cluster.n_workers())


def _shard_size(n: int, shards: int | None, workers: int) -> int:
    if shards:
        return max(1, math.ceil(n / max(1, shards)))
    # A few shards per worker balance the load; 200 pairs bound a task's run time.
    return max(1, min(200, math.ceil(n / max(1, workers * 4))))


@dataclass(frozen=True)
class PairContext:
    """What a worker needs to decode a pair: both formats with their metadata.

    Attributes:
        gt_format: Registry name of the ground truth's format.
        gt_meta: Its metadata.
        pred_format: Registry name of the predictions' format.
        pred_meta: Its metadata.
        on_error: ``skip`` or ``fail``.
        n_gt: Semantic: the first ``n_gt`` class ids are the ground truth's (0: all of them).
        pred_map: Semantic: prediction category id → class id (``--match-classes name``), or None.
    """

    gt_format: str
    gt_meta: DatasetMeta
    pred_format: str
    pred_meta: DatasetMeta
    on_error: str = "skip"
    n_gt: int = 0
    pred_map: tuple[tuple[int, int], ...] | None = None


@dataclass
class ShardOutcome:
    """What a semantic or panoptic shard returns: small and mergeable.

    Attributes:
        index: Shard position.
        evaluator: A ``SemanticEvaluator`` or ``PanopticEvaluator``.
        problems: Images that could not be evaluated.
        n_pairs: Pairs given.
    """

    index: int
    evaluator: Any
    problems: list[Problem] = field(default_factory=list)
    n_pairs: int = 0


# ------------------------------------------------------------------------------------------ semantic


def label_indices(
    gt: np.ndarray,
    gt_void: int | None,
    pred: np.ndarray,
    class_ids: Sequence[int],
    ignore_index: int | None,
    *,
    n_gt: int | None = None,
    pred_map: Sequence[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps category-id label maps to contiguous class indices.

    Args:
        gt: ``(H, W)`` integer ground-truth category ids.
        gt_void: The ground truth's void value (ignored pixels), or None.
        pred: ``(H, W)`` integer predicted category ids.
        class_ids: ``C`` category ids; class ``k`` is ``class_ids[k]``.
        ignore_index: Another ground-truth value to ignore, or None.
        n_gt: Only the first ``n_gt`` classes are ground-truth values (the others are classes only
            the prediction has); None: all.
        pred_map: ``(prediction id, class id)`` pairs: the prediction's values are mapped through
            them (``--match-classes name``), a value not listed is no class; None: the prediction's
            values are class ids.

    Returns:
        ``(gt, pred)`` as ``(H, W)`` uint8 (int32 when ``C >= 255``) class indices; ignored
        ground-truth pixels hold ``C`` (pass ``ignore_index=C`` to the confusion matrix).

    Raises:
        InputError: the shapes differ, or a ground-truth value is neither a class nor ignored, or the
            prediction is not a class on a pixel that is not ignored (values and pixel counts named).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise InputError(f"prediction is {pred.shape[1::-1]} (w, h) but the ground truth is {gt.shape[1::-1]}")
    c = len(class_ids)
    for name, arr in (("ground truth", gt), ("prediction", pred)):
        if arr.dtype.kind not in "iu":
            raise InputError(f"{name} label map is {arr.dtype}, not integers")
        if arr.size and int(arr.min()) < 0:
            raise InputError(f"{name} label map has negative values")
    k = c if n_gt is None else int(n_gt)
    top = max([*class_ids, int(gt.max()) if gt.size else 0, int(pred.max()) if pred.size else 0,
               *(p for p, _ in pred_map or ())]) + 1
    lut = np.full(top, -1, dtype=np.int32)
    lut[np.asarray(class_ids[:k], dtype=np.int64)] = np.arange(k, dtype=np.int32)
    plut = lut
    if pred_map is not None or k != c:
        index = {int(cid): j for j, cid in enumerate(class_ids)}
        plut = np.full(top, -1, dtype=np.int32)
        pairs = list(pred_map) if pred_map is not None else [(int(cid), int(cid)) for cid in class_ids]
        for p, cid in pairs:
            plut[int(p)] = index[int(cid)]
    valid = np.ones(gt.shape, dtype=bool)
    for v in (gt_void, ignore_index):
        if v is not None:
            valid &= gt != v
    gi = lut[gt]
    bad = valid & (gi < 0)
    if bad.any():
        vals = np.unique(gt[bad])[:10].tolist()
        raise InputError(
            f"ground-truth values {vals} are not classes ({int(bad.sum())} pixels)",
            hint="pass --num-classes, or check the ground truth's categories and void value",
        )
    pi = plut[pred]
    bad = valid & (pi < 0)
    if bad.any():
        vals = np.unique(pred[bad])[:10].tolist()
        if pred_map is not None:
            raise InputError(
                f"prediction values {vals} are no category of the prediction ({int(bad.sum())} evaluated pixels)",
                hint="with --match-classes name every predicted value must be a category the prediction names",
            )
        raise InputError(
            f"prediction values {vals} are not classes of the ground truth on {int(bad.sum())} evaluated pixels",
            hint="a prediction must give a ground-truth class (category id) on every pixel that is not void"
                 + ("" if k == c else "; pass --match-classes name to map classes by name"),
        )
    dtype = np.uint8 if c < 255 else np.int32
    return np.where(valid, gi, c).astype(dtype), np.where(valid, pi, 0).astype(dtype)


def _class_maps(g: Sample, p: Sample, ctx: PairContext) -> tuple[np.ndarray, int, np.ndarray]:
    from segpipe.formats.derive import derive_class_map

    gm = get_format(ctx.gt_format).materialize(g, ctx.gt_meta)
    gmap, _ = derive_class_map(gm, ctx.gt_meta)
    if gmap is None:
        raise InputError("the ground truth has no pixel annotation for this image")
    pm = get_format(ctx.pred_format).materialize(p, ctx.pred_meta)
    pmap, _ = derive_class_map(pm, ctx.pred_meta)
    if pmap is None:
        raise InputError("the prediction has no pixel annotation for this image")
    return np.asarray(gmap), int(gm.void_value), np.asarray(pmap)


def semantic_shard(
    index: int,
    pairs: list[tuple[Sample, Sample]],
    ctx: PairContext,
    class_ids: tuple[int, ...],
    ignore_index: int | None,
    worst_n: int,
) -> ShardOutcome:
    """Worker task: decodes each pair and folds it into one confusion matrix.

    Args:
        index: Shard position.
        pairs: ``(gt sample, pred sample)`` records (no pixels).
        ctx: Formats and metadata of both sides.
        class_ids: ``C`` category ids, in class order.
        ignore_index: Ground-truth value ignored besides the void value.
        worst_n: How many worst images (per-image mIoU) to keep.

    Returns:
        A :class:`ShardOutcome` holding a ``SemanticEvaluator`` (``O(C² + worst_n)``).
    """
    from segpipe.evaluation.semantic import SemanticEvaluator

    c = len(class_ids)
    ev = SemanticEvaluator(c, ignore_index=c, worst_n=worst_n)
    problems: list[Problem] = []
    for g, p in pairs:
        try:
            gmap, void, pmap = _class_maps(g, p, ctx)
            gi, pi = label_indices(gmap, void, pmap, class_ids, ignore_index, n_gt=ctx.n_gt or None,
                                   pred_map=ctx.pred_map)
            ev.update(gi, pi, key=(g.image.id, g.image.file_name))
        except SegpipeError as e:
            if ctx.on_error == "fail":
                raise
            problems.append(_problem("error", g, str(e), "eval.unreadable"))
    return ShardOutcome(index, ev, problems, len(pairs))


def semantic_classes(meta: DatasetMeta, num_classes: int | None) -> tuple[list[int], list[str]]:
    """The class ids and names of a semantic evaluation (see the module docstring).

    Raises:
        InputError: the ground truth has no categories and ``num_classes`` is not given.
    """
    names = {c.id: c.name for c in meta.categories}
    if num_classes is not None:
        ids = list(range(int(num_classes)))
        return ids, [names.get(i, "background" if i == 0 else str(i)) for i in ids]
    ids = [c.id for c in meta.categories]
    if not ids:
        raise InputError("the ground truth lists no categories", hint="pass --num-classes")
    if 0 not in names:
        ids = [0, *ids]
    return ids, [names.get(i, "background") for i in ids]


# ------------------------------------------------------------------------------------------ panoptic


def _segments(segs: Iterable[Any]) -> list[dict[str, Any]]:
    from segpipe.formats.coco.convert import segment_to_coco

    return [segment_to_coco(s) for s in segs]


def panoptic_shard(
    index: int,
    pairs: list[tuple[Sample, Sample]],
    ctx: PairContext,
    categories: dict[int, dict[str, Any]],
    worst_n: int,
) -> ShardOutcome:
    """Worker task: decodes each pair to panoptic maps and folds it into a PQ accumulator.

    Args:
        index: Shard position.
        pairs: ``(gt sample, pred sample)`` records.
        ctx: Formats and metadata of both sides.
        categories: Ground-truth category id → ``{"isthing", "name"}``.
        worst_n: How many worst images (per-image PQ) to keep.

    Returns:
        A :class:`ShardOutcome` holding a ``PanopticEvaluator`` (``O(#categories + worst_n)``).
    """
    from segpipe.evaluation.panoptic import PanopticEvaluator
    from segpipe.formats.derive import derive_panoptic

    ev = PanopticEvaluator(categories, worst_n)
    problems: list[Problem] = []
    for g, p in pairs:
        try:
            gm = get_format(ctx.gt_format).materialize(g, ctx.gt_meta)
            g_ids, g_segs, _ = derive_panoptic(gm, ctx.gt_meta)
            pm = get_format(ctx.pred_format).materialize(p, ctx.pred_meta)
            p_ids, p_segs, _ = derive_panoptic(pm, ctx.pred_meta)
            try:
                pq = ev.acc.update_from_maps(g_ids, _segments(g_segs), p_ids, _segments(p_segs))
            except ValueError as e:
                raise FormatError(str(e)) from None
            ev.num_images += 1
            ev.worst.add((g.image.id, g.image.file_name), pq)
        except SegpipeError as e:
            if ctx.on_error == "fail":
                raise
            problems.append(_problem("error", g, str(e), "eval.unreadable"))
    return ShardOutcome(index, ev, problems, len(pairs))


# ------------------------------------------------------------------------------------------ COCO


@dataclass
class CocoShard:
    """COCO dicts built by a worker from one shard of samples.

    Attributes:
        index: Shard position.
        images: COCO ``images`` entries (ground truth only).
        annotations: Annotation (ground truth) or result (prediction) dicts.
        problems: Samples that could not be read.
        n_samples: Samples given.
    """

    index: int
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_samples: int = 0


def _annotation(im: InstanceMask, image_id: int, results: bool) -> dict[str, Any] | None:
    from segpipe.core import rle as rle_ops
    from segpipe.formats.coco.convert import instance_to_coco

    inst = im.instance
    if results and inst.iscrowd:
        return None  # a crowd region is not a detection
    d = instance_to_coco(inst, results=results)
    d["image_id"] = int(image_id)
    if im.rle is not None:
        counts = im.rle["counts"]
        # pycocotools wants compressed RLE; the counts string is what JSON results carry.
        d["segmentation"] = {
            "size": [int(v) for v in im.rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
        if "area" not in d:
            d["area"] = float(rle_ops.area(im.rle))
        if "bbox" not in d:
            d["bbox"] = [float(v) for v in rle_ops.to_bbox(im.rle)]
    elif "segmentation" in d and not d["segmentation"]:
        del d["segmentation"]
    if results:
        d.pop("id", None)
        d.setdefault("score", 1.0)  # a dataset used as predictions: every object is certain
    else:
        d.setdefault("iscrowd", 0)
        if "area" not in d and "bbox" in d:
            d["area"] = float(d["bbox"][2] * d["bbox"][3])
    return d


def coco_shard(
    index: int,
    items: list[tuple[Sample, int]],
    fmt: str,
    meta: DatasetMeta,
    results: bool,
    on_error: str,
) -> CocoShard:
    """Worker task: materialises samples into COCO annotation (or result) dicts with RLE masks.

    Args:
        index: Shard position.
        items: ``(sample, ground-truth image id to record)`` pairs.
        fmt: The samples' format.
        meta: Its metadata.
        results: Build results (scores, no ids or crowd) rather than ground truth.
        on_error: ``skip`` or ``fail``.

    Returns:
        A :class:`CocoShard`.
    """
    from segpipe.formats.coco.convert import image_to_coco
    from segpipe.formats.derive import derive_instances

    spec = get_format(fmt)
    out = CocoShard(index, n_samples=len(items))
    for sample, image_id in items:
        try:
            m = spec.materialize(sample, meta)
            instances, _ = derive_instances(m, meta)
            anns = [_annotation(im, image_id, results) for im in instances]
        except SegpipeError as e:
            if on_error == "fail":
                raise
            out.problems.append(_problem("error", sample, str(e), "eval.unreadable"))
            continue
        if not results:
            img = image_to_coco(sample.image)
            img["id"] = int(image_id)
            out.images.append(img)
        out.annotations.extend(a for a in anns if a is not None)
    return out


# ------------------------------------------------------------------------------------------ driver


class _Run:
    """State of one evaluation on the driver."""

    def __init__(self, req: EvaluateRequest, cluster: ClusterSpec, progress: Progress | None) -> None:
        self.req = req
        self.cluster = cluster
        self.progress = progress
        self.workers = _n_workers(cluster)
        self.select = ImageSelection(req.img_ids)
        self.problems: list[Problem] = []
        self.counts = {"gt": 0, "pred": 0, "evaluated": 0, "failed": 0, "unmatched_gt": 0, "unmatched_pred": 0}
        self.semantic: Any = None
        self.instance: Any = None
        self.panoptic: Any = None
        self.semantic_loader: Any = None
        self.panoptic_loader: Any = None
        self.void = 255
        #: The report's ``classes`` section (semantic: how the two sides' classes matched).
        self.classes: dict[str, Any] | None = None
        # Deterministic task keys (house rule 5) that differ between evaluations sharing a scheduler.
        token = f"{req.gt.resolve()}|{req.pred.resolve()}|{req.task}|{req.img_ids}"
        self.key = f"evaluate-{hashlib.sha1(token.encode()).hexdigest()[:16]}"

    def tick(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(done, total, self.counts["failed"])

    # ---- pairing

    def _pairs(self, gt_reader: Any, pairing: Pairing, severity: str) -> Iterator[tuple[Sample, Sample]]:
        """Streams selected ground-truth samples with their predictions; counts the unmatched."""
        for g in gt_reader.samples():
            if not self.select.keep(g.image.id):
                continue
            self.counts["gt"] += 1
            p = pairing.match(g.image)
            if p is None:
                self.counts["unmatched_gt"] += 1
                if severity == "error":
                    self.problems.append(_problem("error", g, "no prediction for this image", "eval.no_prediction"))
                continue
            yield g, p

    def _unmatched_preds(self, pairing: Pairing) -> None:
        for s in pairing.unmatched():
            self.counts["unmatched_pred"] += 1
            self.problems.append(
                Problem(
                    "warning",
                    s.image.file_name or str(self.req.pred),
                    f"image {s.image.id}",
                    "prediction has no ground-truth image (ignored)",
                    "eval.no_ground_truth",
                )
            )

    def _readers(self, gt_spec: FormatSpec, pred_spec: FormatSpec) -> tuple[Any, Any]:
        req = self.req
        gt_reader = _open_reader(gt_spec, req.gt, image_root=req.image_root, png_root=req.gt_png_dir,
                                 categories=req.categories)
        # COCO results name images by id only: the ground truth gives their files and sizes.
        gt_for_results = req.gt if pred_spec.name == "coco_results" and gt_spec.name == "coco" else None
        pred_reader = _open_reader(pred_spec, req.pred, gt=gt_for_results, png_root=req.pred_png_dir,
                                   categories=req.categories)
        self.problems.extend(p for p in getattr(gt_reader, "problems", []) if p.severity == "error")
        self.problems.extend(p for p in getattr(pred_reader, "problems", []) if p.severity == "error")
        return gt_reader, pred_reader

    def _sharded_pairs(self, client: Any, fn: Callable[..., ShardOutcome], gt_reader: Any, pairing: Pairing,
                       extra: tuple[Any, ...], merge_into: Any) -> None:
        """Runs ``fn(index, pairs, *extra)`` over shards of pairs and merges the outcomes."""
        n = len(gt_reader)
        size = _shard_size(n, self.req.shards, self.workers)
        total = n
        if self.select.first is not None or self.select.ids is not None:
            total = min(n, self.select.first or len(self.select.ids or ()))
        tasks = (
            (f"{self.key}-{i}", (i, shard, *extra))
            for i, shard in enumerate(chunked_pairs(self._pairs(gt_reader, pairing, "error"), size))
        )
        done = 0
        for _, out in run_tasks(client, fn, tasks, total=math.ceil(max(total, 1) / size),
                                max_in_flight=max(2, 2 * self.workers)):
            merge_into.merge(out.evaluator)
            self.problems.extend(out.problems)
            self.counts["failed"] += len(out.problems)
            done += out.n_pairs
            self.tick(done, total)
        self.counts["evaluated"] = merge_into.num_images
        self._unmatched_preds(pairing)

    # ---- semantic

    def run_semantic(self, client: Any, gt_spec: FormatSpec, pred_spec: FormatSpec) -> None:
        from segpipe.evaluation.semantic import SemanticEvaluator

        req = self.req
        gt_reader, pred_reader = self._readers(gt_spec, pred_spec)
        gt_ids, gt_names = semantic_classes(gt_reader.meta, req.num_classes)
        match = self._match_classes(gt_ids, gt_names, gt_reader, pred_reader)
        ids, names = list(match.class_ids), list(match.names)
        self.void = gt_reader.meta.void_value if gt_reader.meta.void_value is not None else 255
        pairing = Pairing(pred_reader.samples())
        self.counts["pred"] = len(pairing.by_id)
        ctx = PairContext(gt_spec.name, gt_reader.meta, pred_spec.name, pred_reader.meta, req.on_error,
                          n_gt=match.n_gt, pred_map=match.pred_map)
        total = SemanticEvaluator(len(ids), ignore_index=len(ids), worst_n=req.worst)
        self._sharded_pairs(client, semantic_shard, gt_reader, pairing,
                            (ctx, tuple(ids), req.ignore_index, req.worst), total)
        self.semantic = total.result(names, ids)
        self.semantic_loader = _PairLoader(gt_reader, pairing, ctx, [k for k, _ in self.semantic.worst], "semantic")

    def _match_classes(self, gt_ids: list[int], gt_names: list[str], gt_reader: Any, pred_reader: Any) -> Any:
        """Compares the two sides' class names (:mod:`segpipe.pipeline.class_match`); keeps the report section."""
        from segpipe.formats.labelpngs import names_generated
        from segpipe.pipeline.class_match import match_classes

        pred_meta = pred_reader.meta
        match = match_classes(
            gt_ids, gt_names, {c.id: c.name for c in pred_meta.categories}, mode=self.req.match_classes,
            gt_named=not names_generated(gt_reader.meta, gt_reader) and self.req.num_classes is None,
            pred_named=not names_generated(pred_meta, pred_reader) and bool(pred_meta.categories),
        )
        self.classes = match.report
        return match

    # ---- panoptic

    def run_panoptic(self, client: Any, gt_spec: FormatSpec, pred_spec: FormatSpec) -> None:
        from segpipe.evaluation.panoptic import PanopticEvaluator

        req = self.req
        if gt_spec.name == pred_spec.name == "coco_panoptic":
            self._run_panoptic_json(client)
            return
        gt_reader, pred_reader = self._readers(gt_spec, pred_spec)
        cats = {c.id: {"isthing": c.isthing, "name": c.name} for c in gt_reader.meta.categories}
        pairing = Pairing(pred_reader.samples())
        self.counts["pred"] = len(pairing.by_id)
        ctx = PairContext(gt_spec.name, gt_reader.meta, pred_spec.name, pred_reader.meta, req.on_error)
        total = PanopticEvaluator(cats, req.worst)
        self._sharded_pairs(client, panoptic_shard, gt_reader, pairing, (ctx, cats, req.worst), total)
        self.panoptic = total.result()
        self.panoptic_loader = _PairLoader(gt_reader, pairing, ctx, [k for k, _ in self.panoptic.worst], "panoptic")

    def _run_panoptic_json(self, client: Any) -> None:
        from segpipe.evaluation.panoptic import default_png_folder, evaluate_panoptic
        from segpipe.formats.coco.reader import find_files
        from segpipe.storage.jsonio import read_json

        req = self.req
        paths = []
        for path, what in ((req.gt, "ground truth"), (req.pred, "prediction")):
            files = find_files(path, "panoptic")
            if len(files) != 1:
                raise UnsupportedError(f"{what} has several panoptic JSON files; pass one of them", path=path)
            paths.append(files[0][0])
        gt_json_path, pred_json_path = paths
        gt_json, pred_json = read_json(gt_json_path), read_json(pred_json_path)
        for d, p in ((gt_json, gt_json_path), (pred_json, pred_json_path)):
            if not isinstance(d, dict) or not isinstance(d.get("annotations"), list):
                raise FormatError("not a COCO panoptic file: no 'annotations' list", path=p)
        gt_folder = req.gt_png_dir or default_png_folder(gt_json_path)
        pred_folder = req.pred_png_dir or default_png_folder(pred_json_path)
        for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
            if not Path(folder).is_dir():
                raise InputError(f"{what} PNG folder does not exist", path=folder,
                                 hint="pass --gt-png-dir / --pred-png-dir")
        preds = {a.get("image_id"): a for a in pred_json["annotations"] if isinstance(a, dict)}
        self.counts["pred"] = len(preds)
        kept: list[dict[str, Any]] = []
        used: set[Any] = set()
        # Sorted by id, as readers stream, so that --img-ids first:N means the N smallest ids.
        anns = sorted((a for a in gt_json["annotations"] if isinstance(a, dict)), key=lambda a: str(a.get("image_id")))
        anns.sort(key=lambda a: a["image_id"] if isinstance(a.get("image_id"), int) else -1)
        for a in anns:
            iid = a.get("image_id")
            if isinstance(iid, int) and not self.select.keep(iid):
                continue
            self.counts["gt"] += 1
            if iid not in preds:
                self.counts["unmatched_gt"] += 1
                self.problems.append(Problem("error", str(a.get("file_name", "")), f"image {iid}",
                                             "no prediction for this image", "eval.no_prediction"))
                continue
            used.add(iid)
            kept.append(a)
        for iid, a in preds.items():
            if iid not in used and not (isinstance(iid, int) and self.select.active):
                self.counts["unmatched_pred"] += 1
                self.problems.append(Problem("warning", str(a.get("file_name", "")), f"image {iid}",
                                             "prediction has no ground-truth image (ignored)", "eval.no_ground_truth"))
        shards = req.shards or (self.workers * 2)
        self.tick(0, len(kept))
        self.panoptic = evaluate_panoptic(
            {**gt_json, "annotations": kept}, pred_json, gt_folder, pred_folder, worst_n=req.worst, shards=shards,
            client=client, gt_source=gt_json_path, pred_source=pred_json_path,
        )
        self.counts["evaluated"] = self.panoptic.num_images
        self.tick(len(kept), len(kept))
        pred_names = {iid: str(a.get("file_name")) for iid, a in preds.items()}
        self.panoptic_loader = _PanopticPngLoader(Path(gt_folder), Path(pred_folder), pred_names, req.image_root)

    # ---- instance / keypoints

    def _coco_from_samples(self, client: Any, items: Iterator[tuple[Sample, int]], n: int, fmt: str,
                           meta: DatasetMeta, results: bool) -> CocoShard:
        size = _shard_size(n, self.req.shards, self.workers)
        tasks = (
            (f"{self.key}-{'dt' if results else 'gt'}-{i}", (i, chunk, fmt, meta, results, self.req.on_error))
            for i, chunk in enumerate(chunked_pairs(items, size))
        )
        parts: list[CocoShard] = []
        done = 0
        for _, part in run_tasks(client, coco_shard, tasks, total=math.ceil(max(n, 1) / size),
                                 max_in_flight=max(2, 2 * self.workers)):
            parts.append(part)
            done += part.n_samples
            self.problems.extend(part.problems)
            self.counts["failed"] += len(part.problems)
            self.tick(done, n)
        parts.sort(key=lambda s: s.index)  # shard order: deterministic annotation order and ids
        out = CocoShard(-1)
        for part in parts:
            out.images.extend(part.images)
            out.annotations.extend(part.annotations)
        return out

    def _coco_gt(self, client: Any, spec: FormatSpec) -> tuple[dict[str, Any], Any]:
        from segpipe.formats.coco.convert import records_to_coco_dict
        from segpipe.formats.coco.reader import find_files
        from segpipe.storage.jsonio import read_json

        req = self.req
        if spec.name == "coco":
            files = find_files(req.gt, "dataset")
            if len(files) == 1:
                d = read_json(files[0][0])
                if not isinstance(d, dict):
                    raise FormatError("expected a COCO object at the top level", path=files[0][0])
                return d, files[0][0]
        reader = _open_reader(spec, req.gt, image_root=req.image_root, png_root=req.gt_png_dir)
        self.problems.extend(p for p in getattr(reader, "problems", []) if p.severity == "error")
        built = self._coco_from_samples(
            client, ((s, s.image.id) for s in reader.samples()), len(reader), spec.name, reader.meta, False
        )
        for k, a in enumerate(built.annotations, start=1):
            a["id"] = k  # ids unique over the whole dataset, whatever the source numbered
        gt = records_to_coco_dict(reader.meta, [])
        gt["images"], gt["annotations"] = built.images, built.annotations
        return gt, req.gt

    def _coco_dt(self, client: Any, spec: FormatSpec, gt: dict[str, Any], gt_spec: FormatSpec) -> tuple[list[Any], Any]:
        from segpipe.formats.coco.reader import find_files
        from segpipe.storage.jsonio import read_json

        req = self.req
        if spec.name == "coco_results":
            ((path, _),) = find_files(req.pred, "results")
            dt = read_json(path)
            if isinstance(dt, dict) and isinstance(dt.get("annotations"), list):
                dt = dt["annotations"]
            if not isinstance(dt, list):
                raise FormatError("results must be a JSON list of objects", path=path)
            self.counts["pred"] = len({d.get("image_id") for d in dt if isinstance(d, dict)})
            return dt, path
        gt_for_results = req.gt if spec.name == "coco_results" and gt_spec.name == "coco" else None
        reader = _open_reader(spec, req.pred, gt=gt_for_results, png_root=req.pred_png_dir)
        pairing = Pairing(reader.samples())
        self.counts["pred"] = len(pairing.by_id)
        items: list[tuple[Sample, int]] = []
        for img in sorted(gt["images"], key=lambda d: d["id"]):
            info = ImageInfo(int(img["id"]), str(img.get("file_name", "")), 1, 1)
            p = pairing.match(info)
            if p is not None:
                items.append((p, info.id))
        self._unmatched_preds(pairing)
        built = self._coco_from_samples(client, iter(items), len(items), spec.name, reader.meta, True)
        return built.annotations, req.pred

    def _kpt_sigmas(self, gt: dict[str, Any]) -> list[float] | None:
        """The OKS sigmas to use, checked against the ground truth's number of keypoints."""
        counts = {len(c["keypoints"]) for c in gt.get("categories", []) if isinstance(c, dict) and c.get("keypoints")}
        sigmas = self.req.kpt_sigmas
        if sigmas is not None:
            if counts and counts != {len(sigmas)}:
                raise ConfigError(f"{len(sigmas)} keypoint sigmas for categories with {sorted(counts)} keypoints")
            return list(sigmas)
        if counts and counts != {17}:
            raise ConfigError(
                f"the ground-truth categories have {sorted(counts)} keypoints, COCO's default sigmas are for 17",
                hint="pass --kpt-sigmas with one OKS sigma per keypoint",
            )
        return None  # pycocotools' COCO person sigmas

    def run_coco(self, client: Any, gt_spec: FormatSpec, pred_spec: FormatSpec) -> None:
        from segpipe.evaluation.cocoeval import evaluate_coco

        req = self.req
        gt, gt_source = self._coco_gt(client, gt_spec)
        if not isinstance(gt.get("images"), list):
            raise FormatError("ground truth has no 'images' list", path=gt_source, where="images")
        all_ids = [img["id"] for img in gt["images"] if isinstance(img, dict) and "id" in img]
        selected = self.select.select(all_ids) if self.select.active else sorted(all_ids)
        self.counts["gt"] = len(selected)
        dt, dt_source = self._coco_dt(client, pred_spec, gt, gt_spec)
        iou_types = req.iou_types or default_iou_types(req.task, dt, gt)
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad:
            raise ConfigError(f"unknown iou type {bad[0]!r}; expected some of {', '.join(IOU_TYPES)}")
        overrides: dict[str, Any] = {"img_ids": selected} if self.select.active else {}
        if "keypoints" in iou_types:
            overrides["params"] = {"keypoints": {"kpt_oks_sigmas": self._kpt_sigmas(gt)}}
        shards = req.shards or self.workers
        self.tick(0, len(selected))
        self.instance = evaluate_coco(gt, dt, tuple(iou_types), shards, client, gt_source=gt_source,
                                      dt_source=dt_source, **overrides)
        with_dt = {d.get("image_id") for d in dt if isinstance(d, dict)}
        self.counts["unmatched_gt"] = sum(1 for i in selected if i not in with_dt)
        self.counts["evaluated"] = len(selected)
        self.tick(len(selected), len(selected))


def chunked_pairs(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Groups a stream into lists of at most ``size`` (like :func:`~segpipe.core.records.chunked`)."""
    yield from chunked(iter(items), size)  # type: ignore[arg-type]


def default_iou_types(task: str, dt: Sequence[Any], gt: dict[str, Any]) -> list[str]:
    """The iou types the predictions support (see :class:`EvaluateRequest`)."""
    if task == "keypoints":
        return ["keypoints"]
    dicts = [d for d in dt if isinstance(d, dict)]
    types = ["segm"] if any(d.get("segmentation") for d in dicts) else []
    types.append("bbox")
    gt_kp = any(isinstance(c, dict) and c.get("keypoints") for c in gt.get("categories", []))
    if gt_kp and any(d.get("keypoints") for d in dicts):
        types.append("keypoints")
    return types


# ------------------------------------------------------------------------------------------ overlays


class _PairLoader:
    """Loads the worst images' pairs again, on the driver, for the report's overlays.

    Only the worst keys' ground-truth samples are kept (found in one more pass over the reader).
    """

    def __init__(self, gt_reader: Any, pairing: Pairing, ctx: PairContext, keys: list[Any], kind: str) -> None:
        wanted = {int(k[0]) for k in keys}
        self.gt = {s.image.id: s for s in gt_reader.samples() if s.image.id in wanted} if wanted else {}
        self.pred = {i: pairing.by_id[pairing.matches[i]] for i in wanted if i in pairing.matches}
        self.ctx = ctx
        self.kind = kind

    def __call__(self, key: Any) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        from segpipe.formats.derive import derive_panoptic
        from segpipe.storage.images import read_image

        g, p = self.gt[int(key[0])], self.pred[int(key[0])]
        if self.kind == "semantic":
            gmap, _, pmap = _class_maps(g, p, self.ctx)
            if self.ctx.pred_map:  # drawn in the ground truth's ids (values no category keep theirs)
                top = max(int(pmap.max(initial=0)), *(a for a, _ in self.ctx.pred_map)) + 1
                lut = np.arange(top, dtype=np.int64)
                for a, b in self.ctx.pred_map:
                    lut[a] = b
                pmap = lut[pmap]
        else:
            gmap = derive_panoptic(get_format(self.ctx.gt_format).materialize(g, self.ctx.gt_meta), self.ctx.gt_meta)[0]
            pmap = derive_panoptic(
                get_format(self.ctx.pred_format).materialize(p, self.ctx.pred_meta), self.ctx.pred_meta
            )[0]
        image = None
        if g.image_path:
            try:
                image = read_image(g.image_path)
            except SegpipeError:
                image = None  # an overlay on grey is still useful
        return image, gmap, pmap


class _PanopticPngLoader:
    def __init__(self, gt_folder: Path, pred_folder: Path, pred_names: dict[Any, str], image_root: Path | None):
        self.gt_folder, self.pred_folder = gt_folder, pred_folder
        self.pred_names = pred_names
        self.image_root = image_root

    def __call__(self, key: Any) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        from segpipe.core.panoptic import rgb2id
        from segpipe.storage.images import read_image, read_rgb_png
        from segpipe.storage.paths import safe_join

        image_id, name = key
        gt = rgb2id(read_rgb_png(safe_join(self.gt_folder, name)))
        pred = rgb2id(read_rgb_png(safe_join(self.pred_folder, self.pred_names.get(image_id, name))))
        image = None
        if self.image_root is not None:
            for ext in (".jpg", ".png", ".jpeg"):
                cand = self.image_root / f"{Path(name).stem}{ext}"
                if cand.is_file():
                    image = read_image(cand)
                    break
        return image, gt, pred


# ------------------------------------------------------------------------------------------ entry


#: Rough in-process costs of evaluation, for :func:`estimate_evaluate_s` (2-core VM, session 7): COCO
#: JSON (ground truth and results) parses and evaluates at ~11 MB/s (1,500 segm images, 79 MB: 7.1 s);
#: a label-map file costs ~4 ms to decode and count; other bytes (store shards, images) ~30 MB/s.
EVAL_JSON_BYTES_S = 11e6
EVAL_FILE_S = 0.004
EVAL_BYTES_S = 30e6
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy"})


def estimate_evaluate_s(paths: Sequence[str | Path], *, enough: float = 60.0) -> float:
    """Rough in-process seconds of evaluating ``paths`` (files or folders), from their files' sizes.

    Stops listing once the estimate passes ``enough`` (a large collection is large; its exact size
    does not matter here). Only picks in-process or the embedded cluster (ClusterSpec.sized).
    """
    import os

    total = 0.0

    def cost(path: str, size: int) -> float:
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".json":
            return size / EVAL_JSON_BYTES_S
        return EVAL_FILE_S + size / EVAL_BYTES_S if suffix in _IMAGE_SUFFIXES else size / EVAL_BYTES_S

    for given in paths:
        p = os.fspath(given)
        if os.path.isfile(p):
            total += cost(p, os.path.getsize(p))
            continue
        for folder, _, files in os.walk(p):
            for name in files:
                f = os.path.join(folder, name)
                try:
                    total += cost(f, os.stat(f).st_size)
                except OSError:
                    continue
                if total > enough:
                    return total
    return total


def evaluate(
    req: EvaluateRequest,
    cluster: ClusterSpec | None = None,
    progress: Progress | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Evaluates predictions against ground truth; returns the report (schema
    ``schemas/evaluation_report.schema.json``), also written to ``req.json_path`` and ``req.report_dir``.

    Raises:
        SegpipeError: an input cannot be read, or the options do not fit (nothing is evaluated).
    """
    from segpipe.evaluation.report import json_safe, report_dict, write_report
    from segpipe.storage.atomic import write_json_atomic
    from segpipe.storage.outputs import begin_staging, discard, install

    t0 = time.perf_counter()
    if req.task not in TASKS:
        raise ConfigError(f"unknown task {req.task!r}; expected one of {', '.join(TASKS)}")
    if req.on_error not in ("skip", "fail"):
        raise ConfigError(f"--on-error must be skip or fail, got {req.on_error!r}")
    if req.num_classes is not None and req.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {req.num_classes}")
    if req.match_classes not in ("id", "name"):
        raise ConfigError(f"--match-classes must be id or name, got {req.match_classes!r}")
    if req.match_classes == "name" and req.task != "semantic":
        raise ConfigError(f"--match-classes name applies to --task semantic, not {req.task}")
    if req.match_classes == "name" and req.num_classes is not None:
        raise ConfigError("--match-classes name needs class names; --num-classes takes label values as classes")
    json_plan, report_plan = _plan_outputs(req)
    cluster = cluster or ClusterSpec()
    gt_spec = _resolve_format(req.gt, req.gt_format, "gt", req.task)
    pred_spec = _resolve_format(req.pred, req.pred_format, "pred", req.task)
    if req.categories is not None and "labelpngs" not in (gt_spec.name, pred_spec.name):
        raise ConfigError("--categories names the classes of label-PNG folders; neither GT nor PRED is one",
                          path=req.categories, hint="the other formats carry their own categories")
    if pred_spec.name == "segpipe_zarr" and req.task != "semantic":
        from segpipe.storage.zarrstore import ZarrStore

        made_for = ZarrStore.open(req.pred).attrs().get("task")
        if made_for == "semantic":
            # Per-class blobs of a label map are no instances: AP on them would be a number without meaning.
            raise ConfigError(f"the store holds semantic pre-labels, not {req.task} predictions", path=req.pred,
                              hint="evaluate it with --task semantic")
    if client is None:  # a job that gains less from a cluster than its start costs runs here
        cluster = cluster.sized(estimate_evaluate_s([req.gt, req.pred]))
    run = _Run(req, cluster, progress)
    with use_client(cluster, client) as client:
        if req.task == "semantic":
            run.run_semantic(client, gt_spec, pred_spec)
        elif req.task == "panoptic":
            run.run_panoptic(client, gt_spec, pred_spec)
        else:
            run.run_coco(client, gt_spec, pred_spec)
    run.select.check_found(req.gt)  # before any output is written
    header: dict[str, Any] = {
        "segpipe_version": __version__,
        "task": req.task,
        "gt": {"path": str(req.gt), "format": gt_spec.name},
        "pred": {"path": str(req.pred), "format": pred_spec.name},
        "images": dict(run.counts),
        "problems": [p.to_dict() for p in run.problems],
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    if run.classes is not None:
        header["classes"] = run.classes
    staging = None
    if report_plan is not None:
        # Built beside the folder and swapped in whole once report.json is written (an earlier report
        # stays until then, and none of its overlays survive next to the new ones).
        staging = begin_staging(report_plan)
        try:
            report = write_report(
                staging,
                semantic=run.semantic,
                instance=run.instance,
                panoptic=run.panoptic,
                semantic_loader=run.semantic_loader,
                panoptic_loader=run.panoptic_loader,
                ignore_index=run.void,
                header=header,
            )
        except BaseException:
            discard(staging)
            raise
    else:
        report = {**json_safe(header), **report_dict(semantic=run.semantic, instance=run.instance,
                                                      panoptic=run.panoptic)}
        worst = {
            name: [{"image": list(k), "score": s} for k, s in r.worst]
            for name, r in (("semantic", run.semantic), ("panoptic", run.panoptic))
            if r is not None and r.worst
        }
        if worst:
            report["worst"] = json_safe(worst)
    # The task section's keys also stand at the top level (report["mean_iou"], report["segm"]["AP"],
    # report["all"]["pq"]), as the issue names them; the sections stay for reports of several kinds.
    section = report.get("semantic") or report.get("instance") or report.get("panoptic") or {}
    report.update({k: v for k, v in section.items() if k not in report})
    if report_plan is not None and staging is not None:  # (both or neither)
        try:
            write_json_atomic(staging / "report.json", report)
        except BaseException:
            discard(staging)
            raise
        install(staging, report_plan)
    if json_plan is not None:
        write_json_atomic(json_plan.given, report)
    return report


def _plan_outputs(req: EvaluateRequest) -> tuple[OutputPlan | None, OutputPlan | None]:
    """Checks ``--json`` and ``--report-dir`` before anything is read: neither may overlap an input,
    and the report folder may only replace an earlier ``evaluate`` report.

    Returns:
        ``(json plan | None, report folder plan | None)``.

    Raises:
        OutputError: naming the option.
    """
    # Ground truth given as its annotation file occupies the folder its images and masks are read from
    # (predictions given as a JSON file carry their masks in it, or in the PNG folder added below).
    inputs: list[Any] = [*dataset_inputs(req.gt, req.image_root), req.pred, req.image_root,
                         req.gt_png_dir, req.pred_png_dir, req.categories]
    if req.task == "panoptic":  # the PNG folders default to the JSON paths without ".json"
        inputs += [p.with_suffix("") for p in (req.gt, req.pred) if p.suffix == ".json"]
    json_plan = (check_output(req.json_path, inputs, option="--json", command="evaluate", kind="file")
                 if req.json_path is not None else None)
    report_plan = (check_output(req.report_dir, inputs, option="--report-dir", command="evaluate")
                   if req.report_dir is not None else None)
    if req.json_path is not None and req.report_dir is not None:
        # The report folder is replaced whole: a file of its own inside it would block the next run.
        check_not_input(req.json_path, [req.report_dir], option="--json", what="the --report-dir")
    return json_plan, report_plan


def failed(report: dict[str, Any]) -> bool:
    """True when some image could not be evaluated (an error among the report's problems)."""
    return any(p.get("severity") == "error" for p in report.get("problems", []))
