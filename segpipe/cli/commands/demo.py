"""``segpipe demo``: the quickstart, end to end on generated data (request :class:`DemoRequest`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segpipe.cli import state
from segpipe.cli.common import build_request, workers_option


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for everything the demo makes."),
        n: int = typer.Option(8, "--n", min=2, help="New images to pre-label."),
        epochs: int = typer.Option(20, "--epochs", min=1, max=1000, help="Training epochs (fixed, so the result "
                                   "does not depend on how busy the machine is)."),
        train_seconds: float = typer.Option(300.0, "--train-seconds", min=5, help="Training time cap: stops "
                                            "earlier epochs on a very slow machine."),
        workers: int = workers_option(2, help="Dask worker processes (0 = in-process)."),
    ) -> None:
        """Synthesise → train → pre-label on Dask into Zarr → export → evaluate, and show where it all is."""
        # lazy: pydantic and every workflow load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import DemoRequest

        req = build_request(DemoRequest, locals())
        state.OUTPUT = req.out
        res = api.demo(req, workers=workers,
                       log=(lambda m: None) if state.QUIET else (lambda m: state.console.print(m, markup=False)))
        t = Table(title=f"segpipe demo — {res.figures['elapsed_s']} s", show_edge=False)
        t.add_column("step")
        t.add_column("where")
        t.add_column("result")
        for step, path, summary in res.steps:
            t.add_row(step, path, summary)
        state.console.print(t)
        f = res.figures
        state.console.print(
            f"pre-labels vs ground truth: mIoU {f['mean_iou']:.3f}, pixel accuracy {f['pixel_accuracy']:.3f}, "
            f"fwIoU {f['fw_iou']:.3f}; pre-labeling {f['prelabel_img_s']} img/s", markup=False)
        if f.get("view"):  # the last line: where to look at the pre-labels
            state.console.print(f"HTML report (open in a browser): {f['view']}", markup=False)
        if f["validation_errors"]:
            raise typer.Exit(1)
