"""``segpipe evaluate GT PRED --task semantic|instance|panoptic|landmarks``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from segpipe.cli.common import (
    MatchClasses,
    OnError,
    Task,
    build_request,
    categories_option,
    format_option,
    image_root_option,
    json_option,
    on_error_option,
    progress_bar,
    report_dir_option,
    scheduler_option,
    task_option,
    workers_option,
)

if TYPE_CHECKING:
    from segpipe.pipeline.eval_specs import EvaluationReport


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_headline(report: EvaluationReport, console: Console) -> None:
    """A compact table of the headline figures, and one line of image counts."""
    imgs = report.images
    console.print(
        f"{report.task}: {report.gt.format} vs {report.pred.format}: "
        f"{imgs.evaluated}/{imgs.gt} images evaluated, {imgs.failed} failed, "
        f"{imgs.unmatched_gt} without prediction, {imgs.unmatched_pred} predictions without ground truth, "
        f"{report.elapsed_s:.2f} s",
        markup=False,
    )
    t = Table(show_edge=False)
    if report.semantic is not None:
        s = report.semantic
        for col in ("pixel acc", "mean acc", "mIoU", "fwIoU"):
            t.add_column(col, justify="right")
        t.add_row(*(_fmt(v) for v in (s.pixel_accuracy, s.mean_accuracy, s.mean_iou, s.fw_iou)))
    elif report.instance is not None:
        t.add_column("iou type")
        for col in ("AP", "AP50", "AP75", "AR"):
            t.add_column(col, justify="right")
        inst = report.instance
        rows: list[tuple[str, Any, float]] = []  # AR at 100 detections for boxes and masks; keypoints' AR
        if inst.segm is not None:
            rows.append(("segm", inst.segm, inst.segm.AR100))
        if inst.bbox is not None:
            rows.append(("bbox", inst.bbox, inst.bbox.AR100))
        if inst.keypoints is not None:
            rows.append(("keypoints", inst.keypoints, inst.keypoints.AR))
        for iou_type, sec, ar in rows:
            t.add_row(iou_type, _fmt(sec.AP), _fmt(sec.AP50), _fmt(sec.AP75), _fmt(ar))
    elif report.panoptic is not None:
        t.add_column("")
        for col in ("PQ", "SQ", "RQ", "N"):
            t.add_column(col, justify="right")
        pan = report.panoptic
        for k, g in (("all", pan.all), ("things", pan.things), ("stuff", pan.stuff)):
            t.add_row(k, _fmt(g.pq), _fmt(g.sq), _fmt(g.rq), str(g.n))
    console.print(t)


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("evaluate")
    def evaluate_cmd(
        gt: Path = typer.Argument(..., help="Ground truth: any format segpipe reads."),
        pred: Path = typer.Argument(..., help="Predictions: any format segpipe reads, or a segpipe Zarr store."),
        task: Task = task_option(Task.SEMANTIC, help="What to score: label maps (semantic), COCO AP (instance), "
                                 "PQ (panoptic) or keypoint AP by OKS (landmarks)."),
        gt_format: str = format_option("--gt-format", help="Format of GT, or auto to detect it."),
        pred_format: str = format_option("--pred-format", help="Format of PRED, or auto to detect it."),
        iou_types: str | None = typer.Option(
            None, "--iou-types", help="segm,bbox,keypoints (default: every type the predictions support)."
        ),
        num_classes: int | None = typer.Option(
            None, "--num-classes", min=1, help="Semantic: label values 0..N-1 are the classes."
        ),
        ignore_index: int = typer.Option(
            255, "--ignore-index", help="Semantic: ground-truth value ignored (besides the dataset's void)."
        ),
        img_ids: str | None = typer.Option(
            None, "--img-ids", help="Only these ground-truth images: first:N (smallest ids) or ID,ID,..."
        ),
        json_out: Path | None = json_option("Write the report JSON here."),
        report_dir: Path | None = report_dir_option(
            None, help="Write report.json, summary.md, per_class.csv and plots here."
        ),
        worst: int = typer.Option(8, "--worst", min=0, help="How many worst images to list and draw."),
        image_root: Path | None = image_root_option("Folder of the ground-truth photos."),
        gt_png_dir: Path | None = typer.Option(None, "--gt-png-dir", help="Panoptic: ground-truth PNG folder."),
        pred_png_dir: Path | None = typer.Option(None, "--pred-png-dir", help="Panoptic: predicted PNG folder."),
        kpt_sigmas: str | None = typer.Option(
            None, "--kpt-sigmas", help="Keypoints: comma-separated OKS sigmas, one per keypoint (default COCO's 17)."
        ),
        on_error: OnError = on_error_option(OnError.SKIP, help="Images that cannot be evaluated: skip reports "
                                            "each and exits 1; fail stops at the first."),
        match_classes: MatchClasses = typer.Option(
            MatchClasses.ID, "--match-classes",
            help="Semantic: id compares label values (warning when the sides name a class differently); "
                 "name maps PRED's ids to GT's by class name.",
        ),
        categories: Path | None = categories_option(
            "Class names of label-PNG folders: YAML/JSON {id: name} or a labelmap.txt "
            "(default: each value v is class_<v>)."
        ),
        shards: int | None = typer.Option(None, "--shards", min=1, help="Number of image shards."),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
    ) -> None:
        """Evaluate predictions against ground truth (mIoU, COCO AP, PQ, keypoint AP).

        Images are paired by image id, falling back to the file stem. Two flat folders of label PNGs
        (gt/*.png, pred/*.png) pair by file stem. Exit 1 when some image could not be evaluated
        (listed in the report's problems).
        """
        # lazy: pydantic and the workflow load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.cli import state
        from segpipe.pipeline.requests import EvaluateRequest

        req = build_request(EvaluateRequest, locals())
        state.OUTPUT = req.report_dir or req.json_out
        with progress_bar(f"evaluate {req.task}") as update:
            report = api.evaluate(req, workers=workers, scheduler=scheduler, progress=update)
        for line in report.classes.warnings if report.classes else []:
            state.err_console.print(f"warning: {line}", markup=False)
        print_headline(report, state.console)
        for p in report.problems[:20]:
            state.err_console.print(f"{p.severity}: {p.file}: {p.where}: {p.message}", markup=False)
        if len(report.problems) > 20:
            state.err_console.print(f"... {len(report.problems) - 20} more problems in the report", markup=False)
        if report_dir is not None:
            state.console.print(f"report: {report_dir / 'report.json'}", markup=False)
        if report.failed:
            raise typer.Exit(1)
