"""``segpipe evaluate GT PRED --task semantic|instance|panoptic|landmarks``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from segpipe.cli.common import (
    MatchClasses,
    OnError,
    Task,
    categories_option,
    cluster_spec,
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


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_headline(report: dict[str, Any], console: Console) -> None:
    """A compact table of the headline figures, and one line of image counts."""
    imgs = report["images"]
    console.print(
        f"{report['task']}: {report['gt']['format']} vs {report['pred']['format']}: "
        f"{imgs['evaluated']}/{imgs['gt']} images evaluated, {imgs['failed']} failed, "
        f"{imgs['unmatched_gt']} without prediction, {imgs['unmatched_pred']} predictions without ground truth, "
        f"{report['elapsed_s']:.2f} s",
        markup=False,
    )
    t = Table(show_edge=False)
    if "semantic" in report:
        s = report["semantic"]
        for col in ("pixel acc", "mean acc", "mIoU", "fwIoU"):
            t.add_column(col, justify="right")
        t.add_row(*(_fmt(s[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")))
    elif "instance" in report:
        t.add_column("iou type")
        for col in ("AP", "AP50", "AP75", "AR"):
            t.add_column(col, justify="right")
        for iou_type, sec in report["instance"].items():
            ar = sec.get("AR100", sec.get("AR"))
            t.add_row(iou_type, _fmt(sec["AP"]), _fmt(sec["AP50"]), _fmt(sec["AP75"]), _fmt(ar))
    elif "panoptic" in report:
        t.add_column("")
        for col in ("PQ", "SQ", "RQ", "N"):
            t.add_column(col, justify="right")
        for k in ("all", "things", "stuff"):
            g = report["panoptic"][k]
            t.add_row(k, _fmt(g["pq"]), _fmt(g["sq"]), _fmt(g["rq"]), str(g["n"]))
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
        json_path: Path | None = json_option("Write the report JSON here."),
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
        from segpipe.cli import state
        from segpipe.errors import ConfigError
        from segpipe.pipeline.evaluate import EvaluateRequest, evaluate, failed

        state.OUTPUT = report_dir or json_path
        types = tuple(t.strip() for t in iou_types.split(",") if t.strip()) if iou_types else None
        try:
            sigmas = tuple(float(v) for v in kpt_sigmas.split(",")) if kpt_sigmas else None
        except ValueError:
            raise ConfigError(f"--kpt-sigmas must be comma-separated numbers, got {kpt_sigmas!r}") from None
        req = EvaluateRequest(
            gt=gt, pred=pred, task=task.evaluation_name(), gt_format=gt_format, pred_format=pred_format,
            iou_types=types, num_classes=num_classes, ignore_index=ignore_index, worst=worst, shards=shards,
            img_ids=img_ids,
            json_path=json_path, report_dir=report_dir, image_root=image_root, gt_png_dir=gt_png_dir,
            pred_png_dir=pred_png_dir, kpt_sigmas=sigmas, on_error=on_error.value, match_classes=match_classes.value,
            categories=categories,
        )
        with progress_bar(f"evaluate {task.value}") as update:
            report = evaluate(req, cluster_spec(workers, scheduler), progress=update)
        for line in (report.get("classes") or {}).get("warnings", []):
            state.err_console.print(f"warning: {line}", markup=False)
        print_headline(report, state.console)
        for p in report["problems"][:20]:
            state.err_console.print(f"{p['severity']}: {p['file']}: {p['where']}: {p['message']}", markup=False)
        if len(report["problems"]) > 20:
            state.err_console.print(f"... {len(report['problems']) - 20} more problems in the report", markup=False)
        if report_dir is not None:
            state.console.print(f"report: {report_dir / 'report.json'}", markup=False)
        if failed(report):
            raise typer.Exit(1)
