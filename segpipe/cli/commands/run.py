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

        log = (lambda m: None) if state.QUIET else (lambda m: state.console.print(m, markup=False))
        summaries = run_pipeline(pipeline, workdir=workdir, only=[s - 1 for s in stage] or None, log=log)
        for s in summaries:
            state.console.print(json.dumps(s, default=str), markup=False)
        failed = [s for s in summaries if s.get("failed")]
        for s in failed:  # a stage with failed items is a partial failure: one line each, exit 1
            state.err_console.print(f"error: {pipeline}: stage {s['stage']} ({s['step']}): {s['failed']} item(s) "
                                    f"failed (see {s.get('out') or s.get('report')})", markup=False)
        if failed:
            raise typer.Exit(1)
