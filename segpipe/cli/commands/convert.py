"""``segpipe convert SRC DST --to FORMAT``: request :class:`~segpipe.pipeline.requests.ConvertRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import (
    ImagesMode,
    Layout,
    OnError,
    build_request,
    categories_option,
    format_option,
    image_root_option,
    image_url_prefix_option,
    images_option,
    layout_option,
    model_version_option,
    on_error_option,
    overwrite_option,
    polygons_option,
    progress_bar,
    scheduler_option,
    to_option,
    workers_option,
)
from segpipe.cli.report import print_conversion_report


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("convert")
    def convert_cmd(
        src: Path = typer.Argument(..., help="A COCO JSON file or a dataset folder."),
        out: Path = typer.Argument(..., metavar="dst",
                                   help="Output folder (created; an earlier segpipe output needs --overwrite)."),
        to: str = to_option("Target format (see `segpipe formats`)."),
        from_: str = format_option("--from", help="Source format (see `segpipe formats`), or auto to detect it."),
        categories: Path | None = categories_option("Category map (YAML/JSON)."),
        strict: bool = typer.Option(False, "--strict", help="Any loss or missing image is an error."),
        images: ImagesMode = images_option(ImagesMode.COPY, help="What to do with the image files."),
        image_root: Path | None = image_root_option(),
        gt: Path | None = typer.Option(None, "--gt", help="COCO results: the ground truth naming their images."),
        overwrite: bool = overwrite_option("Replace an earlier segpipe output in DST."),
        # fail, unlike prelabel and evaluate: a converted dataset is complete or not written (exit 2).
        on_error: OnError = on_error_option(OnError.FAIL, help="Unreadable samples: fail stops and writes "
                                            "nothing; skip reports each, writes the rest and exits 1."),
        shard_size: int | None = typer.Option(None, "--shard-size", min=1, help="Images per task."),
        polygons: bool = polygons_option("COCO / Label Studio targets: masks as polygons (holes kept by keyhole "
                                         "cuts; differences counted) or RLE (exact)."),
        polygon_tolerance: float = typer.Option(0.0, "--polygon-tolerance", min=0.0,
                                                help="Simplify polygons by up to this many pixels (losses counted)."),
        image_url_prefix: str | None = image_url_prefix_option("Label Studio target: the task images' URL prefix "
                                                               "(default /data/local-files/?d=images/)."),
        model_version: str | None = model_version_option("Label Studio target: the predictions' model_version "
                                                         "(default: the source's model)."),
        layout: Layout | None = layout_option(),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
    ) -> None:
        """Convert a dataset between formats, reporting everything the target cannot hold."""
        # lazy: pydantic and the conversion engine load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.convert import REPORT_NAME
        from segpipe.pipeline.requests import ConvertRequest

        req = build_request(ConvertRequest, locals())
        state.OUTPUT = req.out
        with progress_bar(f"convert → {req.to}") as update:
            report = api.convert(req, workers=workers, scheduler=scheduler, progress=update)
        print_conversion_report(report.model_dump(mode="json"), state.console, state.err_console)
        state.console.print(f"report: {req.out / REPORT_NAME}", markup=False)
        if report.images["failed"] or any(p.severity == "error" for p in report.problems):
            raise typer.Exit(1)  # partial failure, or an error found on the way (README: exit codes)
