"""``segpipe evaluate`` itself: the request checked, its outputs planned, the task's run, the report.

See :mod:`segpipe.pipeline.evaluate` for what is compared and how.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segpipe.errors import ConfigError
from segpipe.execution.cluster import ClusterSpec, use_client
from segpipe.pipeline.eval_specs import EvaluationReport
from segpipe.pipeline.evaluate.coco import CocoSettings, run_coco
from segpipe.pipeline.evaluate.driver import Driver, Progress, TaskOutcome
from segpipe.pipeline.evaluate.inputs import Sources, resolve_format
from segpipe.pipeline.evaluate.output import Header, write_outputs
from segpipe.pipeline.evaluate.panoptic import PanopticSettings, run_panoptic
from segpipe.pipeline.evaluate.plan import ImageSelection
from segpipe.pipeline.evaluate.request import TASKS, EvaluateRequest, evaluation_task
from segpipe.pipeline.evaluate.semantic import SemanticSettings, run_semantic
from segpipe.storage.outputs import OutputPlan, check_not_input, check_output, dataset_inputs
from segpipe.storage.zarrstore import ZarrStore

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


def _check_options(req: EvaluateRequest, task: str) -> None:
    """Refuses options that do not fit, naming the option (nothing is read yet).

    Raises:
        ConfigError: an unknown task or mode, a class count below 1, or options that exclude each other.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if req.on_error not in ("skip", "fail"):
        raise ConfigError(f"--on-error must be skip or fail, got {req.on_error!r}")
    if req.num_classes is not None and req.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {req.num_classes}")
    _check_match_classes(req, task)


def _check_match_classes(req: EvaluateRequest, task: str) -> None:
    if req.match_classes not in ("id", "name"):
        raise ConfigError(f"--match-classes must be id or name, got {req.match_classes!r}")
    if req.match_classes == "name" and task != "semantic":
        raise ConfigError(f"--match-classes name applies to --task semantic, not {task}")
    if req.match_classes == "name" and req.num_classes is not None:
        raise ConfigError("--match-classes name needs class names; --num-classes takes label values as classes")


def _sources(req: EvaluateRequest, task: str) -> Sources:
    """Both inputs with their formats, checked against the task.

    Raises:
        ConfigError: ``--categories`` without a label-PNG folder, or a store of semantic pre-labels
            evaluated as instances or panoptic segments (AP on a label map's per-class blobs would be a
            number without meaning).
    """
    sources = Sources(req.gt, req.pred, resolve_format(req.gt, req.gt_format, "gt", task),
                      resolve_format(req.pred, req.pred_format, "pred", task), req.image_root, req.gt_png_dir,
                      req.pred_png_dir, req.categories)
    if req.categories is not None and "labelpngs" not in (sources.gt_spec.name, sources.pred_spec.name):
        raise ConfigError("--categories names the classes of label-PNG folders; neither GT nor PRED is one",
                          path=req.categories, hint="the other formats carry their own categories")
    if sources.pred_spec.name == "segpipe_zarr" and task != "semantic":
        if ZarrStore.open(req.pred).attrs().get("task") == "semantic":
            raise ConfigError(f"the store holds semantic pre-labels, not {task} predictions", path=req.pred,
                              hint="evaluate it with --task semantic")
    return sources


def _n_workers(cluster: ClusterSpec) -> int:
    """Workers the shards are planned for (a scheduler's own workers are unknown here: 4)."""
    if cluster.scheduler is not None:
        return 4
    return max(1, cluster.n_workers())


def _task_key(req: EvaluateRequest, task: str) -> str:
    """Deterministic task keys (house rule 4) that differ between evaluations sharing a scheduler."""
    token = f"{req.gt.resolve()}|{req.pred.resolve()}|{task}|{req.img_ids}"
    return f"evaluate-{hashlib.sha1(token.encode()).hexdigest()[:16]}"


def _run(req: EvaluateRequest, task: str, sources: Sources, driver: Driver) -> TaskOutcome:
    """The task's run."""
    if task == "semantic":
        return run_semantic(driver, sources, SemanticSettings(req.num_classes, req.ignore_index, req.match_classes,
                                                              req.worst, req.on_error))
    if task == "panoptic":
        return run_panoptic(driver, sources, PanopticSettings(req.worst, req.on_error))
    return run_coco(driver, sources, CocoSettings(task, req.iou_types, req.kpt_sigmas, req.on_error))


def evaluate_report(
    req: EvaluateRequest,
    cluster: ClusterSpec | None = None,
    progress: Progress | None = None,
    client: Any = None,
) -> EvaluationReport:
    """Evaluates predictions against ground truth; returns the typed report, also written to
    ``req.json_out`` and ``req.report_dir``.

    Raises:
        SegpipeError: an input cannot be read, or the options do not fit (nothing is evaluated).
    """
    t0 = time.perf_counter()
    task = evaluation_task(req.task)  # landmarks are scored, and reported, as COCO keypoints
    _check_options(req, task)
    json_plan, report_plan = _plan_outputs(req)
    cluster = cluster or ClusterSpec()
    sources = _sources(req, task)
    if client is None:  # a job that gains less from a cluster than its start costs runs here
        cluster = cluster.sized(estimate_evaluate_s([req.gt, req.pred]))
    selection = ImageSelection(req.img_ids)
    with use_client(cluster, client) as client:
        driver = Driver(client, _task_key(req, task), _n_workers(cluster), req.shards, selection, progress)
        outcome = _run(req, task, sources, driver)
    selection.check_found(req.gt)  # before any output is written
    header = Header(task, sources, driver.tally, round(time.perf_counter() - t0, 3))
    return write_outputs(header, outcome, json_plan, report_plan)


def evaluate(
    req: EvaluateRequest,
    cluster: ClusterSpec | None = None,
    progress: Progress | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Evaluates predictions against ground truth; returns the report's JSON (schema
    ``schemas/evaluation_report.schema.json``), as written to ``req.json_out`` and ``req.report_dir``.

    :func:`evaluate_report` returns the typed report instead.

    Raises:
        SegpipeError: an input cannot be read, or the options do not fit (nothing is evaluated).
    """
    return evaluate_report(req, cluster, progress, client).to_json()


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
    json_plan = (check_output(req.json_out, inputs, option="--json", command="evaluate", kind="file")
                 if req.json_out is not None else None)
    report_plan = (check_output(req.report_dir, inputs, option="--report-dir", command="evaluate")
                   if req.report_dir is not None else None)
    if req.json_out is not None and req.report_dir is not None:
        # The report folder is replaced whole: a file of its own inside it would block the next run.
        check_not_input(req.json_out, [req.report_dir], option="--json", what="the --report-dir")
    return json_plan, report_plan


def failed(report: dict[str, Any] | EvaluationReport) -> bool:
    """True when some image could not be evaluated (an error among the report's problems)."""
    if isinstance(report, EvaluationReport):
        return report.failed
    return any(p.get("severity") == "error" for p in report.get("problems", []))
