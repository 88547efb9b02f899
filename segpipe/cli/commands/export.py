"""``segpipe export STORE DST --to FORMAT``: request :class:`~segpipe.pipeline.requests.ExportRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import (
    ImagesMode,
    Layout,
    build_request,
    images_option,
    layout_option,
    overwrite_option,
    polygons_option,
    progress_bar,
    scheduler_option,
    score_option,
    to_option,
    workers_option,
)
from segpipe.cli.report import print_conversion_report


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("export")
    def export_cmd(
        store: Path = typer.Argument(..., help="A segpipe Zarr store made by `segpipe prelabel` (a path or a URL)."),
        out: Path = typer.Argument(..., metavar="dst", help="Output folder (or s3://, gs://, az:// prefix)."),
        to: str = to_option("A writable format: coco, coco_results, coco_panoptic, voc, labelstudio, maskdir, "
                            "cityscapes, geotiff, geojson, nifti (see `segpipe formats`)."),
        min_score: float = score_option(0.0, help="Drop instances scored below this (0..1)."),
        polygons: bool = polygons_option("Masks as polygons (approximate, losses counted) or RLE (exact, default)."),
        images: ImagesMode = images_option(ImagesMode.NONE, help="What to do with the source images."),
        overwrite: bool = overwrite_option("Replace an earlier segpipe output in DST."),
        layout: Layout | None = layout_option(),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
    ) -> None:
        """Export a store's pre-labels as COCO, VOC, Label Studio (and GeoTIFF/GeoJSON/NIfTI) files."""
        # lazy: pydantic and the conversion engine load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.convert import REPORT_NAME
        from segpipe.pipeline.requests import ExportRequest

        req = build_request(ExportRequest, locals())
        state.OUTPUT = req.out
        with progress_bar(f"export → {req.to}") as update:
            report = api.export(req, workers=workers, scheduler=scheduler, progress=update)
        print_conversion_report(report.model_dump(mode="json"), state.console, state.err_console)
        shown = report.target["path"]  # DST, or its URL when the export was uploaded to object storage
        where = req.out / REPORT_NAME if shown == str(req.out) else f"{shown}/{REPORT_NAME}"
        state.console.print(f"report: {where}", markup=False)
        if report.images["failed"] or any(p.severity == "error" for p in report.problems):
            raise typer.Exit(1)  # some image could not be exported: partial failure (README: exit codes)
