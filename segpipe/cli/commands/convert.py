"""``segpipe convert SRC DST --to FORMAT``."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import (
    ImagesMode,
    Layout,
    OnError,
    categories_option,
    cluster_spec,
    format_option,
    image_root_option,
    image_url_prefix_option,
    images_option,
    layout_option,
    layout_writer_options,
    model_version_option,
    on_error_option,
    overwrite_option,
    polygons_option,
    progress_bar,
    scheduler_option,
    to_option,
    value_of,
    workers_option,
)


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("convert")
    def convert_cmd(
        src: Path = typer.Argument(..., help="A COCO JSON file or a dataset folder."),
        dst: Path = typer.Argument(..., help="Output folder (created; an earlier segpipe output needs --overwrite)."),
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
        from segpipe.cli import state
        from segpipe.cli.report import print_conversion_report
        from segpipe.errors import ConfigError
        from segpipe.pipeline.convert import REPORT_NAME, ConvertRequest, convert

        state.OUTPUT = dst
        for option, v in (("--image-url-prefix", image_url_prefix), ("--model-version", model_version)):
            if v is not None and to != "labelstudio":
                raise ConfigError(f"{option} applies to --to labelstudio, not {to!r}")
        req = ConvertRequest(
            src=src, dst=dst, to=to, from_=from_, category_map=categories, strict=strict, copy_images=images.value,
            overwrite=overwrite, on_error=on_error.value, shard_size=shard_size, image_root=image_root,
            gt=gt,
            writer_options={**({"polygons": True, "polygon_tolerance": polygon_tolerance} if polygons else {}),
                            **({"image_url_prefix": image_url_prefix} if image_url_prefix is not None else {}),
                            **({"model_version": model_version} if model_version is not None else {}),
                            **layout_writer_options(value_of(layout), to)},
        )
        with progress_bar(f"convert → {to}") as update:
            report = convert(req, cluster_spec(workers, scheduler), progress=update)
        print_conversion_report(report, state.console, state.err_console)
        state.console.print(f"report: {dst / REPORT_NAME}", markup=False)
        if report["images"]["failed"] or any(p.get("severity") == "error" for p in report.get("problems", [])):
            raise typer.Exit(1)  # partial failure, or an error found on the way (README: exit codes)
