"""``segpipe convert SRC DST --to FORMAT``."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import cluster_spec, layout_option, progress_bar, scheduler_option, workers_option


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("convert")
    def convert_cmd(
        src: Path = typer.Argument(..., help="A COCO JSON file or a dataset folder."),
        dst: Path = typer.Argument(..., help="Output folder (created; an earlier segpipe output needs --overwrite)."),
        to: str = typer.Option(..., "--to", help="Target format (see `segpipe formats`)."),
        from_: str = typer.Option("auto", "--from", help="Source format, or auto to detect it."),
        categories: Path | None = typer.Option(None, "--categories", help="Category map (YAML/JSON)."),
        strict: bool = typer.Option(False, "--strict", help="Any loss or missing image is an error."),
        images: str = typer.Option("copy", "--images", help="copy | link | none: what to do with image files."),
        image_root: Path | None = typer.Option(None, "--image-root", help="Folder holding the source images."),
        gt: Path | None = typer.Option(None, "--gt", help="COCO results: the ground truth naming their images."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier segpipe output in DST."),
        on_error: str = typer.Option("fail", "--on-error", help="fail | skip: unreadable samples."),
        shard_size: int | None = typer.Option(None, "--shard-size", min=1, help="Images per task."),
        polygons: bool = typer.Option(False, "--polygons/--rle", help="COCO / Label Studio targets: masks as "
                                      "polygons (holes kept by keyhole cuts; differences counted) or RLE (exact)."),
        polygon_tolerance: float = typer.Option(0.0, "--polygon-tolerance", min=0.0,
                                                help="Simplify polygons by up to this many pixels (losses counted)."),
        image_url_prefix: str | None = typer.Option(None, "--image-url-prefix", help="Label Studio target: the "
                                                    "task images' URL prefix (default /data/local-files/?d=images/)."),
        model_version: str | None = typer.Option(None, "--model-version", help="Label Studio target: the "
                                                 "predictions' model_version (default: the source's model)."),
        layout: str | None = typer.Option(None, "--layout", help="coco: split (default: annotations/"
                                          "instances_<split>.json + images/<split>/) or single (annotations.json); "
                                          "voc: devkit (default: VOCdevkit/VOC2012/, JPEG images) or flat."),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
    ) -> None:
        """Convert a dataset between formats, reporting everything the target cannot hold."""
        from segpipe.cli import state
        from segpipe.cli.report import print_conversion_report
        from segpipe.errors import ConfigError
        from segpipe.pipeline.convert import REPORT_NAME, ConvertRequest, convert

        state.OUTPUT = dst
        if images not in ("copy", "link", "none"):
            raise ConfigError(f"--images must be copy, link or none, got {images!r}")
        if on_error not in ("fail", "skip"):
            raise ConfigError(f"--on-error must be fail or skip, got {on_error!r}")
        for option, v in (("--image-url-prefix", image_url_prefix), ("--model-version", model_version)):
            if v is not None and to != "labelstudio":
                raise ConfigError(f"{option} applies to --to labelstudio, not {to!r}")
        req = ConvertRequest(
            src=src, dst=dst, to=to, from_=from_, category_map=categories, strict=strict, copy_images=images,
            overwrite=overwrite, on_error=on_error, shard_size=shard_size, image_root=image_root,
            gt=gt,
            writer_options={**({"polygons": True, "polygon_tolerance": polygon_tolerance} if polygons else {}),
                            **({"image_url_prefix": image_url_prefix} if image_url_prefix is not None else {}),
                            **({"model_version": model_version} if model_version is not None else {}),
                            **layout_option(layout, to)},
        )
        with progress_bar(f"convert → {to}") as update:
            report = convert(req, cluster_spec(workers, scheduler), progress=update)
        print_conversion_report(report, state.console, state.err_console)
        state.console.print(f"report: {dst / REPORT_NAME}", markup=False)
        if report["images"]["failed"] or any(p.get("severity") == "error" for p in report.get("problems", [])):
            raise typer.Exit(1)  # partial failure, or an error found on the way (README: exit codes)
