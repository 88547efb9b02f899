"""COCO panoptic evaluation (PQ, SQ, RQ) from panoptic JSON files and their PNG folders.

Same inputs, pairing and rules as ``panopticapi.evaluation.pq_compute``:

- each JSON names its PNG folder, by default the JSON path without its ``.json`` suffix
  (``panoptic_val2017.json`` → ``panoptic_val2017/``);
- PNG pixels encode segment ids as ``id = R + 256 G + 256² B``; id 0 is VOID;
- ground-truth and predicted annotations are paired by ``image_id`` (or by ``file_name``), every
  ground-truth image needs a prediction; categories come from the ground-truth JSON;
- matching, crowd and VOID handling are :class:`segpipe.core.metrics.PanopticAccumulator`'s.

Images are streamed one pair at a time and shards merge their accumulators, so memory holds one
pair of PNGs plus ``O(#categories)`` numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core.metrics import PanopticAccumulator
from segpipe.core.panoptic import id2rgb, rgb2id
from segpipe.errors import FormatError, InputError
from segpipe.evaluation.shards import Executor, ShardMap, shard_map
from segpipe.evaluation.worst import WorstImages
from segpipe.storage.images import read_rgb_png
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import safe_join

__all__ = [
    "PanopticResult",
    "default_png_folder",
    "evaluate_panoptic",
    "evaluate_panoptic_files",
    "evaluate_panoptic_shard",
    "id2rgb",
    "rgb2id",
]


def default_png_folder(json_path: str | Path) -> Path:
    """The PNG folder panopticapi assumes: the JSON path without ``.json``."""
    p = Path(json_path)
    return p.with_suffix("") if p.suffix == ".json" else p.with_name(p.name + "_png")


@dataclass
class PanopticResult:
    """Final PQ figures.

    Attributes:
        all: ``{"pq", "sq", "rq", "n"}`` over all categories taking part.
        things: The same over thing categories.
        stuff: The same over stuff categories.
        per_class: ``[{"id", "name", "isthing", "pq", "sq", "rq", "tp", "fp", "fn"}]``.
        worst: ``[(key, per-image PQ)]`` from the worst up; keys are ``(image_id, file_name)``.
        num_images: Number of image pairs evaluated.
    """

    all: dict[str, Any]
    things: dict[str, Any]
    stuff: dict[str, Any]
    per_class: list[dict[str, Any]]
    worst: list[tuple[Any, float]] = field(default_factory=list)
    num_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        """``{"all", "things", "stuff", "per_class"}``."""
        return {"all": self.all, "things": self.things, "stuff": self.stuff, "per_class": self.per_class}


class PanopticEvaluator:
    """A :class:`PanopticAccumulator` plus the worst images by per-image PQ; mergeable."""

    def __init__(self, categories: Mapping[int, Any], worst_n: int = 0) -> None:
        self.acc = PanopticAccumulator(categories)
        self.worst = WorstImages(worst_n)
        self.num_images = 0

    def merge(self, other: PanopticEvaluator) -> PanopticEvaluator:
        """Folds ``other`` in and returns ``self``."""
        self.acc.merge(other.acc)
        self.worst.merge(other.worst)
        self.num_images += other.num_images
        return self

    def result(self) -> PanopticResult:
        """Computes PQ/SQ/RQ."""
        r = self.acc.compute()
        return PanopticResult(
            all=r["all"],
            things=r["things"],
            stuff=r["stuff"],
            per_class=r["per_class"],
            worst=self.worst.items(),
            num_images=self.num_images,
        )


def _read_ids(folder: Path, name: str, source: Path | None, where: str) -> np.ndarray:
    path = safe_join(folder, name, source=source, where=where)
    return rgb2id(read_rgb_png(path))


def _png_name(ann: Mapping[str, Any]) -> str:
    name = str(ann["file_name"])
    # panopticapi reads annotation['file_name'] as is; COCO panoptic JSONs name the PNG there.
    return name


def evaluate_panoptic_shard(
    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    gt_folder: str | Path,
    pred_folder: str | Path,
    categories: Mapping[int, Any],
    worst_n: int = 0,
    gt_source: str | Path | None = None,
    pred_source: str | Path | None = None,
) -> PanopticEvaluator:
    """Evaluates a shard of (ground-truth, prediction) annotation pairs; a Dask/executor task.

    Args:
        pairs: ``(gt_annotation, pred_annotation)`` entries of the two panoptic JSONs.
        gt_folder: Folder of ground-truth PNGs.
        pred_folder: Folder of predicted PNGs.
        categories: Category id → ``{"isthing", "name", ...}`` (the ground-truth categories).
        worst_n: How many worst images (by per-image PQ) to remember.
        gt_source: Ground-truth JSON path, for messages.
        pred_source: Prediction JSON path, for messages.

    Returns:
        A :class:`PanopticEvaluator` to merge.

    Raises:
        FormatError: a PNG disagrees with its segment list, or a segment has an unknown category.
    """
    ev = PanopticEvaluator(categories, worst_n)
    gtf, prf = Path(gt_folder), Path(pred_folder)
    gsrc = Path(gt_source) if gt_source else None
    psrc = Path(pred_source) if pred_source else None
    for gt_ann, pred_ann in pairs:
        image_id = gt_ann.get("image_id")
        gt_ids = _read_ids(gtf, _png_name(gt_ann), gsrc, f"image_id {image_id}")
        pred_ids = _read_ids(prf, _png_name(pred_ann), psrc, f"image_id {image_id}")
        if gt_ids.shape != pred_ids.shape:
            raise FormatError(
                f"prediction PNG is {pred_ids.shape[1]}x{pred_ids.shape[0]} but the ground truth is "
                f"{gt_ids.shape[1]}x{gt_ids.shape[0]}",
                path=prf / _png_name(pred_ann),
                where=f"image_id {image_id}",
            )
        for name, ann, src in (("ground-truth", gt_ann, gsrc), ("prediction", pred_ann, psrc)):
            for k, seg in enumerate(ann.get("segments_info", [])):
                if not isinstance(seg, Mapping) or "id" not in seg or "category_id" not in seg:
                    raise FormatError(
                        f"{name} segment lacks id or category_id",
                        path=src,
                        where=f"image_id {image_id}: segments_info[{k}]",
                    )
        try:
            pq = ev.acc.update_from_maps(gt_ids, gt_ann["segments_info"], pred_ids, pred_ann["segments_info"])
        except ValueError as e:
            raise FormatError(str(e), path=psrc, where=f"image_id {image_id}") from None
        ev.num_images += 1
        ev.worst.add((image_id, str(gt_ann.get("file_name", ""))), pq)
    return ev


def _check_panoptic_json(d: Any, path: Path | None, need_categories: bool) -> None:
    if not isinstance(d, Mapping) or not isinstance(d.get("annotations"), list):
        raise FormatError("not a COCO panoptic file: no 'annotations' list", path=path)
    if need_categories and not isinstance(d.get("categories"), list):
        raise FormatError("ground truth has no 'categories' list", path=path, where="categories")
    for i, ann in enumerate(d["annotations"]):
        if not isinstance(ann, Mapping) or "file_name" not in ann or "segments_info" not in ann:
            raise FormatError(
                "panoptic annotation needs file_name and segments_info", path=path, where=f"annotations[{i}]"
            )


def evaluate_panoptic(
    gt_json: Mapping[str, Any],
    pred_json: Mapping[str, Any],
    gt_folder: str | Path,
    pred_folder: str | Path,
    *,
    match_by: str = "image_id",
    worst_n: int = 0,
    shards: int = 1,
    client: Executor | None = None,
    gt_source: str | Path | None = None,
    pred_source: str | Path | None = None,
    run: ShardMap | None = None,
) -> PanopticResult:
    """Evaluates panoptic predictions against ground truth (panopticapi's ``pq_compute``).

    Args:
        gt_json: Ground-truth COCO panoptic dict (``annotations``, ``categories``).
        pred_json: Predicted COCO panoptic dict (``annotations``).
        gt_folder: Folder of ground-truth PNGs.
        pred_folder: Folder of predicted PNGs.
        match_by: ``image_id`` (panopticapi) or ``file_name``.
        worst_n: How many worst images to report.
        shards: Number of image shards.
        client: Optional executor with ``submit`` (dask ``Client`` or ``concurrent.futures``).
        gt_source: Ground-truth JSON path, for messages.
        pred_source: Prediction JSON path, for messages.
        run: Runs the shards instead of ``client`` (:class:`~segpipe.evaluation.shards.ShardMap`).

    Returns:
        A :class:`PanopticResult`.

    Raises:
        InputError: a ground-truth image has no prediction.
        FormatError: malformed JSON content or PNGs that disagree with it.
    """
    gsrc = Path(gt_source) if gt_source else None
    psrc = Path(pred_source) if pred_source else None
    _check_panoptic_json(gt_json, gsrc, True)
    _check_panoptic_json(pred_json, psrc, False)
    if match_by not in ("image_id", "file_name"):
        raise InputError(f"match_by must be image_id or file_name, got {match_by!r}")
    categories = {int(c["id"]): c for c in gt_json["categories"]}
    preds = {ann.get(match_by): ann for ann in pred_json["annotations"]}
    pairs = []
    for i, gt_ann in enumerate(gt_json["annotations"]):
        key = gt_ann.get(match_by)
        if key not in preds:
            raise InputError(
                f"no prediction for the image with {match_by} {key!r}",
                path=psrc,
                where=f"ground truth annotations[{i}]",
            )
        pairs.append((gt_ann, preds[key]))

    n = max(1, min(int(shards), len(pairs)))
    bounds = np.linspace(0, len(pairs), n + 1).round().astype(int)
    chunks = [pairs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    shard = partial(evaluate_panoptic_shard, gt_folder=str(gt_folder), pred_folder=str(pred_folder),
                    categories=categories, worst_n=worst_n, gt_source=gt_source, pred_source=pred_source)
    parts = shard_map(client, run)(shard, chunks)
    total = PanopticEvaluator(categories, worst_n)
    for part in parts:
        total.merge(part)
    return total.result()


def evaluate_panoptic_files(
    gt_json_path: str | Path,
    pred_json_path: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
    **kwargs: Any,
) -> PanopticResult:
    """Reads two COCO panoptic JSON files and calls :func:`evaluate_panoptic`.

    PNG folders default to each JSON path without ``.json``, as panopticapi does.

    Raises:
        InputError: a file or folder is missing.
    """
    gt_folder = Path(gt_folder) if gt_folder is not None else default_png_folder(gt_json_path)
    pred_folder = Path(pred_folder) if pred_folder is not None else default_png_folder(pred_json_path)
    for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not folder.is_dir():
            raise InputError(
                f"{what} PNG folder does not exist",
                path=folder,
                hint="pass the folder explicitly; by default it is the JSON path without .json",
            )
    return evaluate_panoptic(
        read_json(gt_json_path),
        read_json(pred_json_path),
        gt_folder,
        pred_folder,
        gt_source=gt_json_path,
        pred_source=pred_json_path,
        **kwargs,
    )
