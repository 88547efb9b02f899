"""``segpipe view STORE|DATASET [--gt DATASET] --out report/ [--serve]``: see the pre-labels over the images."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import (
    OnError,
    build_request,
    format_option,
    image_root_option,
    on_error_option,
    progress_bar,
    scheduler_option,
    workers_option,
)


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("view")
    def view_cmd(
        source: Path | None = typer.Argument(None, help="A segpipe store, or any dataset segpipe reads "
                                             "(omit with --serve to serve an existing report)."),
        out: Path = typer.Option(Path("view-report"), "--out", "-o", help="Report folder (index.html inside)."),
        gt: Path | None = typer.Option(None, "--gt", help="Ground truth to compare with: adds its layer, an "
                                       "error map and per-image error."),
        source_format: str = format_option("--format", help="Format of SOURCE, or auto to detect it."),
        gt_format: str = format_option("--gt-format", help="Format of --gt, or auto to detect it."),
        image_root: Path | None = image_root_option("Folder holding the source's photos."),
        thumb: int = typer.Option(256, "--thumb", help="Longest side of the grid's thumbnails (32..2048 px)."),
        large: int = typer.Option(1024, "--large", help="Longest side of the detail view's images (0 = none)."),
        page_size: int = typer.Option(200, "--page-size", help="Images per data page and per task (10..5000)."),
        title: str | None = typer.Option(None, "--title", help="The page's title (default: SOURCE's name)."),
        on_error: OnError = on_error_option(OnError.SKIP, help="Images that cannot be shown: skip shows each as "
                                            "a failed card and exits 1; fail stops at the first."),
        serve: bool = typer.Option(False, "--serve", help="Then serve --out on http://127.0.0.1:PORT/ until "
                                   "Ctrl-C (the page needs no server: this is for a browser elsewhere)."),
        port: int = typer.Option(8000, "--port", help="Port of --serve (0 = any free port)."),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
    ) -> None:
        """Write a self-contained HTML report: images with toggleable pre-label / ground-truth / error
        overlays, doubt and error per image, sorting, filtering, pages; opens from disk.
        """
        # lazy: the CLI answers --help without numpy, Pillow or the format registry
        from segpipe.cli import state
        from segpipe.errors import ConfigError
        from segpipe.pipeline.requests import ViewRequest

        req = build_request(ViewRequest, locals())

        if source is None and not serve:
            raise ConfigError("SOURCE is missing: name a store or dataset to view, or pass --serve to serve "
                              "an existing report")
        if source is not None:
            if serve:
                from segpipe.view.serve import check_port  # lazy: only --serve starts a server

                check_port(port)  # before the build, not after it
            # lazy: pydantic and the workflow load when the command runs, not for `segpipe --help`
            from segpipe import api
            from segpipe.pipeline.view import check_source  # lazy: numpy, Pillow, formats

            check_source(source)
            if gt is not None:
                check_source(gt)
            state.OUTPUT = req.out
            with progress_bar("view") as update:
                rep = api.view_report(req, workers=workers, scheduler=scheduler, progress=update)
            state.console.print(f"{rep['items']} items ({rep['images']} images) in {rep['pages']} pages, "
                                f"{rep['failed']} could not be shown, {rep['elapsed_s']:.1f} s", markup=False)
            state.console.print(f"report: {Path(rep['index']).resolve()}", markup=False)
            for p in rep["problems"][:20]:
                state.err_console.print(f"error: {p['file']}: {p['problem']}", markup=False)
            if len(rep["problems"]) > 20:
                state.err_console.print(f"... {len(rep['problems']) - 20} more problems in the report", markup=False)
        if serve:
            from segpipe.view.serve import serve as serve_folder  # lazy: only --serve starts a server

            serve_folder(out, port, announce=lambda url: state.console.print(
                f"serving {out} on {url} (Ctrl-C stops)", markup=False))
        if source is not None and rep["failed"]:
            raise typer.Exit(1)
