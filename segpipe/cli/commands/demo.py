"""``segpipe demo``: the quickstart, end to end on generated data."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for everything the demo makes."),
        n: int = typer.Option(24, "--n", min=2, help="Images to synthesise."),
        workers: int = typer.Option(2, "--workers", "-w", min=0, help="Dask worker processes (0 = in-process)."),
    ) -> None:
        """Run the whole pipeline on generated data and show where everything is."""
        from rich.table import Table

        from segpipe.cli import state
        from segpipe.execution.cluster import ClusterSpec
        from segpipe.pipeline.demo import run_demo

        res = run_demo(out, n=n, cluster=ClusterSpec(workers=workers),
                       log=lambda m: state.console.print(m, markup=False))
        t = Table(title=f"segpipe demo — {res.figures['elapsed_s']} s", show_edge=False)
        t.add_column("step")
        t.add_column("where")
        t.add_column("result")
        for step, path, summary in res.steps:
            t.add_row(step, path, summary)
        state.console.print(t)
        errors = sum(v for k, v in res.figures.items() if k.startswith("validate_"))
        if errors:
            raise typer.Exit(1)
