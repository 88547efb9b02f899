"""``segpipe run PIPELINE.yaml``: multi-stage jobs from a declarative file."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("run")
    def run_cmd(
        pipeline: Path = typer.Argument(..., help="A pipeline YAML (schema: schemas/pipeline.schema.json)."),
        workdir: Path | None = typer.Option(None, "--workdir", help="Resolve relative paths here."),
        stage: list[int] = typer.Option([], "--stage", help="Run only these stages (1-based; repeatable)."),
    ) -> None:
        """Run a declarative pipeline (ingest → prelabel → export → evaluate ...)."""
        import json

        from segpipe.cli import state
        from segpipe.pipeline.runspec import run_pipeline

        summaries = run_pipeline(pipeline, workdir=workdir, only=[s - 1 for s in stage] or None,
                                 log=lambda m: state.console.print(m, markup=False))
        for s in summaries:
            state.console.print(json.dumps(s, default=str), markup=False)
