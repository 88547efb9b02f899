"""``segpipe run PIPELINE.yaml``: multi-stage jobs from a declarative file (request :class:`RunRequest`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import build_request
from segpipe.cli.report import print_run_summary


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("run")
    def run_cmd(
        pipeline: Path = typer.Argument(..., help="A pipeline YAML (schema: schemas/pipeline.schema.json)."),
        workdir: Path | None = typer.Option(None, "--workdir", help="Resolve relative paths here."),
        stage: list[int] = typer.Option([], "--stage", help="Run only these stages (1-based; repeatable)."),
        json_lines: bool = typer.Option(False, "--json-lines", help="Print each stage's summary as a JSON line instead "
                                        "of the table (for scripts)."),
    ) -> None:
        """Run a declarative pipeline (ingest → prelabel → export → evaluate ...)."""
        # lazy: pydantic and the workflows load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import RunRequest

        req = build_request(RunRequest, locals())
        log = (lambda m: None) if state.QUIET else (lambda m: state.console.print(m, markup=False))
        summaries = api.run(req, log=log)
        if json_lines:
            for s in summaries:
                state.console.print(json.dumps(s, default=str), markup=False)
        else:
            print_run_summary(summaries, state.console)
        failed = [s for s in summaries if s.get("failed")]
        for s in failed:  # a stage with failed items is a partial failure: one line each, exit 1
            state.err_console.print(f"error: {pipeline}: stage {s['stage']} ({s['step']}): {s['failed']} item(s) "
                                    f"failed (see {s.get('out') or s.get('report')})", markup=False)
        if failed:
            raise typer.Exit(1)
