"""``segpipe export STORE DST --to FORMAT``: pre-labels out of a store, for annotators' tools."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import (
    ImagesMode,
    Layout,
    cluster_spec,
    images_option,
    layout_option,
    layout_writer_options,
    overwrite_option,
    polygons_option,
    progress_bar,
    scheduler_option,
    score_option,
    to_option,
    value_of,
    workers_option,
)


def _targets() -> list[str]:
    """Every registered format that can be written (the store itself excepted)."""
    from segpipe.formats import all_formats

    return [f.name for f in all_formats() if f.writer is not None and f.name != "segpipe_zarr"]


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("export")
    def export_cmd(
        store: Path = typer.Argument(..., help="A segpipe Zarr store made by `segpipe prelabel`."),
        dst: Path = typer.Argument(..., help="Output folder."),
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
        from segpipe.cli import state
        from segpipe.cli.report import print_conversion_report
        from segpipe.errors import ConfigError
        from segpipe.pipeline.convert import REPORT_NAME, ConvertRequest, convert

        state.OUTPUT = dst
        targets = _targets()
        if to not in targets:
            raise ConfigError(f"--to must be one of {', '.join(targets)}, got {to!r}")
        req = ConvertRequest(
            src=store, dst=dst, to=to, from_="segpipe_zarr", copy_images=images.value, overwrite=overwrite,
            # An image whose outputs fail their receipt is a per-image problem; the others export.
            on_error="skip",
            reader_options={"min_score": min_score},
            writer_options={**({"polygons": True} if polygons else {}),
                            **layout_writer_options(value_of(layout), to)},
        )
        with progress_bar(f"export → {to}") as update:
            report = convert(req, cluster_spec(workers, scheduler), progress=update)
        print_conversion_report(report, state.console, state.err_console)
        state.console.print(f"report: {dst / REPORT_NAME}", markup=False)
        if report["images"]["failed"] or any(p.get("severity") == "error" for p in report.get("problems", [])):
            raise typer.Exit(1)  # some image could not be exported: partial failure (README: exit codes)
