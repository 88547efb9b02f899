"""Instance and keypoint evaluation on the driver: COCO AP with pycocotools' exact numbers.

The COCO ground-truth dict and result list are built first: COCO JSON inputs are loaded as they are;
other formats are materialised on the workers (:func:`~segpipe.kernels.evaluate.coco.coco_shard`) into
COCO dicts with RLE masks and scores. :func:`~segpipe.evaluation.cocoeval.evaluate_coco` then matches
them in image shards that the driver runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.core.records import ImageInfo, Sample
from segpipe.errors import ConfigError, FormatError
from segpipe.evaluation.cocoeval import IOU_TYPES, evaluate_coco
from segpipe.formats.coco.convert import records_to_coco_dict
from segpipe.formats.coco.reader import find_files
from segpipe.kernels.evaluate.coco import CocoShard, CocoShardSpec
from segpipe.pipeline.evaluate.driver import Driver, TaskOutcome
from segpipe.pipeline.evaluate.inputs import Sources
from segpipe.pipeline.evaluate.plan import Pairing
from segpipe.storage.jsonio import read_json


@dataclass(frozen=True)
class CocoSettings:
    """The options of an instance or keypoint evaluation.

    Attributes:
        task: ``instance`` or ``keypoints``.
        iou_types: COCO iou types, or None for every type the predictions support.
        kpt_sigmas: Per-keypoint OKS sigmas, or None for COCO's 17.
        on_error: ``skip`` or ``fail``.
    """

    task: str = "instance"
    iou_types: tuple[str, ...] | None = None
    kpt_sigmas: tuple[float, ...] | None = None
    on_error: str = "skip"



def default_iou_types(task: str, dt: Sequence[Any], gt: dict[str, Any]) -> list[str]:
    """The iou types the predictions support.

    ``segm`` when they have masks, ``bbox`` always, ``keypoints`` when they and the ground truth have
    keypoints; the keypoints task: ``keypoints``.
    """
    if task == "keypoints":
        return ["keypoints"]
    dicts = [d for d in dt if isinstance(d, dict)]
    types = ["segm"] if any(d.get("segmentation") for d in dicts) else []
    types.append("bbox")
    gt_kp = any(isinstance(c, dict) and c.get("keypoints") for c in gt.get("categories", []))
    if gt_kp and any(d.get("keypoints") for d in dicts):
        types.append("keypoints")
    return types


def kpt_sigmas(gt: dict[str, Any], sigmas: tuple[float, ...] | None) -> list[float] | None:
    """The OKS sigmas to use, checked against the ground truth's number of keypoints.

    Returns:
        ``sigmas``, or None for pycocotools' COCO person sigmas.

    Raises:
        ConfigError: the counts differ, or the skeleton is not COCO's 17 and no sigmas are given.
    """
    counts = {len(c["keypoints"]) for c in gt.get("categories", []) if isinstance(c, dict) and c.get("keypoints")}
    if sigmas is not None:
        if counts and counts != {len(sigmas)}:
            raise ConfigError(f"{len(sigmas)} keypoint sigmas for categories with {sorted(counts)} keypoints")
        return list(sigmas)
    if counts and counts != {17}:
        raise ConfigError(
            f"the ground-truth categories have {sorted(counts)} keypoints, COCO's default sigmas are for 17",
            hint="pass --kpt-sigmas with one OKS sigma per keypoint",
        )
    return None


# ------------------------------------------------------------------------------------- driver


def _from_samples(driver: Driver, items: Iterator[tuple[Sample, int]], n: int, spec: CocoShardSpec) -> CocoShard:
    """COCO dicts of samples, built by the workers, in shard order."""
    parts = driver.run_samples(spec, items, n)
    out = CocoShard(-1)
    for part in parts:
        out.images.extend(part.images)
        out.annotations.extend(part.annotations)
    return out


def coco_ground_truth(driver: Driver, sources: Sources, on_error: str) -> tuple[dict[str, Any], Path]:
    """The ground truth as a COCO dict (a COCO file as it is) and the file or folder it came from."""
    spec = sources.gt_spec
    if spec.name == "coco":
        files = find_files(sources.gt, "dataset")
        if len(files) == 1:
            d = read_json(files[0][0])
            if not isinstance(d, dict):
                raise FormatError("expected a COCO object at the top level", path=files[0][0])
            return d, files[0][0]
    reader = sources.gt_reader()
    driver.tally.reader_errors(reader)
    built = _from_samples(driver, ((s, s.image.id) for s in reader.samples()), len(reader),
                          CocoShardSpec(spec.name, reader.meta, False, on_error))
    for k, a in enumerate(built.annotations, start=1):
        a["id"] = k  # ids unique over the whole dataset, whatever the source numbered
    gt = records_to_coco_dict(reader.meta, [])
    gt["images"], gt["annotations"] = built.images, built.annotations
    return gt, sources.gt


def _results_file(driver: Driver, pred: Path) -> tuple[list[Any], Path]:
    ((path, _),) = find_files(pred, "results")
    dt = read_json(path)
    if isinstance(dt, dict) and isinstance(dt.get("annotations"), list):
        dt = dt["annotations"]
    if not isinstance(dt, list):
        raise FormatError("results must be a JSON list of objects", path=path)
    driver.tally.pred = len({d.get("image_id") for d in dt if isinstance(d, dict)})
    return dt, path


def coco_results(driver: Driver, sources: Sources, gt: dict[str, Any], on_error: str) -> tuple[list[Any], Path]:
    """The predictions as COCO results (a results file as it is) and the file or folder they came from."""
    if sources.pred_spec.name == "coco_results":
        return _results_file(driver, sources.pred)
    reader = sources.pred_reader()
    pairing = Pairing(reader.samples())
    driver.tally.pred = len(pairing.by_id)
    items: list[tuple[Sample, int]] = []
    for img in sorted(gt["images"], key=lambda d: d["id"]):
        info = ImageInfo(int(img["id"]), str(img.get("file_name", "")), 1, 1)
        p = pairing.match(info)
        if p is not None:
            items.append((p, info.id))
    driver.tally.unmatched_predictions(pairing, sources.pred)
    built = _from_samples(driver, iter(items), len(items), CocoShardSpec(sources.pred_spec.name, reader.meta, True,
                                                                         on_error))
    return built.annotations, sources.pred


def _iou_types(settings: CocoSettings, dt: list[Any], gt: dict[str, Any]) -> list[str]:
    iou_types = list(settings.iou_types or default_iou_types(settings.task, dt, gt))
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad:
        raise ConfigError(f"unknown iou type {bad[0]!r}; expected some of {', '.join(IOU_TYPES)}")
    return iou_types


def run_coco(driver: Driver, sources: Sources, settings: CocoSettings) -> TaskOutcome:
    """Evaluates instances (masks, boxes) or keypoints (see the module docstring)."""
    gt, gt_source = coco_ground_truth(driver, sources, settings.on_error)
    if not isinstance(gt.get("images"), list):
        raise FormatError("ground truth has no 'images' list", path=gt_source, where="images")
    all_ids = [img["id"] for img in gt["images"] if isinstance(img, dict) and "id" in img]
    selected = driver.selection.select(all_ids) if driver.selection.active else sorted(all_ids)
    driver.tally.gt = len(selected)
    dt, dt_source = coco_results(driver, sources, gt, settings.on_error)
    iou_types = _iou_types(settings, dt, gt)
    overrides: dict[str, Any] = {"img_ids": selected} if driver.selection.active else {}
    if "keypoints" in iou_types:
        overrides["params"] = {"keypoints": {"kpt_oks_sigmas": kpt_sigmas(gt, settings.kpt_sigmas)}}
    driver.tick(0, len(selected))
    results = evaluate_coco(gt, dt, tuple(iou_types), driver.shards or driver.workers, run=driver.map_shards,
                            gt_source=gt_source, dt_source=dt_source, **overrides)
    with_dt = {d.get("image_id") for d in dt if isinstance(d, dict)}
    driver.tally.unmatched_gt = sum(1 for i in selected if i not in with_dt)
    driver.tally.evaluated = len(selected)
    driver.tick(len(selected), len(selected))
    return TaskOutcome(instance=results)
