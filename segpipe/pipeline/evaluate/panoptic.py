"""Panoptic evaluation on the driver (PQ, SQ, RQ), from two COCO panoptic JSON files or any pair of datasets.

* Two COCO panoptic JSON files go to :func:`~segpipe.evaluation.panoptic.evaluate_panoptic` (PNG
  folders default to the JSON path without ``.json``), its shards run by the driver.
* Any other pair (e.g. a store of panoptic predictions) is materialised on the workers
  (:func:`~segpipe.kernels.evaluate.panoptic.panoptic_shard`) into
  :class:`~segpipe.evaluation.panoptic.PanopticEvaluator` s that merge like the semantic ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core.panoptic import rgb2id
from segpipe.core.problems import Problem
from segpipe.errors import FormatError, InputError, UnsupportedError
from segpipe.evaluation.panoptic import PanopticEvaluator, default_png_folder, evaluate_panoptic
from segpipe.formats import get_format
from segpipe.formats.coco.reader import find_files
from segpipe.formats.derive import derive_panoptic
from segpipe.kernels.evaluate.pairs import PairContext
from segpipe.kernels.evaluate.panoptic import PanopticSpec, panoptic_shard
from segpipe.pipeline.evaluate.driver import Driver, TaskOutcome
from segpipe.pipeline.evaluate.inputs import Sources, WorstPairs, read_photo
from segpipe.pipeline.evaluate.plan import Pairing
from segpipe.storage.images import read_image, read_rgb_png
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import safe_join


@dataclass(frozen=True)
class PanopticSettings:
    """The options of a panoptic evaluation.

    Attributes:
        worst: How many worst images to keep.
        on_error: ``skip`` or ``fail``.
    """

    worst: int = 8
    on_error: str = "skip"



# ------------------------------------------------------------------------------------- overlays


class PanopticOverlays(WorstPairs):
    """Loads the worst images' pairs again, on the driver, as segment-id maps for the overlays."""

    def __call__(self, key: tuple[int, str]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(photo (H, W, 3) or None, gt (H, W) segment ids, pred (H, W) segment ids)``."""
        g, p = self.gt[int(key[0])], self.pred[int(key[0])]
        ctx = self.ctx
        gmap = derive_panoptic(get_format(ctx.gt_format).materialize(g, ctx.gt_meta), ctx.gt_meta)[0]
        pmap = derive_panoptic(get_format(ctx.pred_format).materialize(p, ctx.pred_meta), ctx.pred_meta)[0]
        return read_photo(g), gmap, pmap


@dataclass(frozen=True)
class PanopticPngOverlays:
    """Loads the worst images' PNGs of two COCO panoptic folders for the overlays.

    Attributes:
        gt_folder: The ground truth's PNG folder.
        pred_folder: The predictions' PNG folder.
        pred_names: Predicted image id → its PNG's name.
        image_root: Folder of the photos (``<png stem>.jpg`` / ``.png`` / ``.jpeg``), or None for grey.
    """

    gt_folder: Path
    pred_folder: Path
    pred_names: dict[Any, str]
    image_root: Path | None

    def __call__(self, key: tuple[Any, str]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(photo (H, W, 3) or None, gt (H, W) segment ids, pred (H, W) segment ids)``."""
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


# ------------------------------------------------------------------------------------- driver


def run_panoptic(driver: Driver, sources: Sources, settings: PanopticSettings) -> TaskOutcome:
    """Evaluates panoptic segmentations (see the module docstring)."""
    if sources.gt_spec.name == sources.pred_spec.name == "coco_panoptic":
        return run_panoptic_json(driver, sources, settings)
    gt_reader, pred_reader = sources.pair_readers(driver.tally)
    cats = {c.id: {"isthing": c.isthing, "name": c.name} for c in gt_reader.meta.categories}
    pairing = Pairing(pred_reader.samples())
    driver.tally.pred = len(pairing.by_id)
    ctx = PairContext(sources.gt_spec.name, gt_reader.meta, sources.pred_spec.name, pred_reader.meta,
                      settings.on_error)
    total = driver.run_pairs(panoptic_shard, PanopticSpec(ctx, cats, settings.worst),
                             driver.pairs(gt_reader, pairing, missing_is_error=True), len(gt_reader),
                             PanopticEvaluator(cats, settings.worst))
    driver.tally.unmatched_predictions(pairing, sources.pred)
    result = total.result()
    return TaskOutcome(panoptic=result,
                       panoptic_loader=PanopticOverlays(gt_reader, pairing, ctx, [k for k, _ in result.worst]))


def _one_panoptic_json(path: Path, what: str) -> Path:
    """The one panoptic JSON file of an input.

    Raises:
        UnsupportedError: the input holds several.
    """
    files = find_files(path, "panoptic")
    if len(files) != 1:
        raise UnsupportedError(f"{what} has several panoptic JSON files; pass one of them", path=path)
    json_path: Path = files[0][0]
    return json_path


def _panoptic_jsons(sources: Sources) -> tuple[Path, dict[str, Any], Path, dict[str, Any]]:
    """``(gt JSON path, its content, pred JSON path, its content)``.

    Raises:
        UnsupportedError: an input holds several panoptic JSON files.
        FormatError: a file has no ``annotations`` list.
    """
    gt_path = _one_panoptic_json(sources.gt, "ground truth")
    pred_path = _one_panoptic_json(sources.pred, "prediction")
    gt_json, pred_json = read_json(gt_path), read_json(pred_path)
    for d, p in ((gt_json, gt_path), (pred_json, pred_path)):
        if not isinstance(d, dict) or not isinstance(d.get("annotations"), list):
            raise FormatError("not a COCO panoptic file: no 'annotations' list", path=p)
    return gt_path, gt_json, pred_path, pred_json


def _png_folder(given: Path | None, json_path: Path, what: str) -> Path:
    """The PNG folder of a panoptic JSON: ``given``, else the JSON path without ``.json``.

    Raises:
        InputError: it does not exist.
    """
    folder = Path(given or default_png_folder(json_path))
    if not folder.is_dir():
        raise InputError(f"{what} PNG folder does not exist", path=folder, hint="pass --gt-png-dir / --pred-png-dir")
    return folder


def _selected_annotations(driver: Driver, gt_json: dict[str, Any], preds: dict[Any, Any]) -> list[dict[str, Any]]:
    """The ground truth's annotations taking part and having a prediction; counts the others."""
    tally = driver.tally
    kept: list[dict[str, Any]] = []
    # Sorted by id, as readers stream, so that --img-ids first:N means the N smallest ids.
    anns = sorted((a for a in gt_json["annotations"] if isinstance(a, dict)), key=lambda a: str(a.get("image_id")))
    anns.sort(key=lambda a: a["image_id"] if isinstance(a.get("image_id"), int) else -1)
    for a in anns:
        iid = a.get("image_id")
        if isinstance(iid, int) and not driver.selection.keep(iid):
            continue
        tally.gt += 1
        if iid not in preds:
            tally.unmatched_gt += 1
            tally.problems.append(Problem("error", str(a.get("file_name", "")), f"image {iid}",
                                          "no prediction for this image", "eval.no_prediction"))
            continue
        kept.append(a)
    return kept


def _unmatched_predictions(driver: Driver, preds: dict[Any, Any], used: set[Any]) -> None:
    """Warns about predictions without ground truth (those an ``--img-ids`` selection left out aside)."""
    for iid, a in preds.items():
        if iid not in used and not (isinstance(iid, int) and driver.selection.active):
            driver.tally.unmatched_pred += 1
            driver.tally.problems.append(Problem("warning", str(a.get("file_name", "")), f"image {iid}",
                                                 "prediction has no ground-truth image (ignored)",
                                                 "eval.no_ground_truth"))


def run_panoptic_json(driver: Driver, sources: Sources, settings: PanopticSettings) -> TaskOutcome:
    """Evaluates two COCO panoptic JSON files with their PNG folders (panopticapi's ``pq_compute``)."""
    gt_json_path, gt_json, pred_json_path, pred_json = _panoptic_jsons(sources)
    gt_folder = _png_folder(sources.gt_png_dir, gt_json_path, "ground-truth")
    pred_folder = _png_folder(sources.pred_png_dir, pred_json_path, "prediction")
    preds = {a.get("image_id"): a for a in pred_json["annotations"] if isinstance(a, dict)}
    driver.tally.pred = len(preds)
    kept = _selected_annotations(driver, gt_json, preds)
    _unmatched_predictions(driver, preds, {a.get("image_id") for a in kept})
    driver.tick(0, len(kept))
    result = evaluate_panoptic(
        {**gt_json, "annotations": kept}, pred_json, gt_folder, pred_folder, worst_n=settings.worst,
        shards=driver.shards or (driver.workers * 2), run=driver.map_shards, gt_source=gt_json_path,
        pred_source=pred_json_path,
    )
    driver.tally.evaluated = result.num_images
    driver.tick(len(kept), len(kept))
    pred_names = {iid: str(a.get("file_name")) for iid, a in preds.items()}
    return TaskOutcome(panoptic=result,
                       panoptic_loader=PanopticPngOverlays(gt_folder, pred_folder, pred_names, sources.image_root))
