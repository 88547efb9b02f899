"""``segpipe push labelstudio STORE --url URL --project NAME|ID``: request :class:`PushRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import (
    build_request,
    image_url_prefix_option,
    model_version_option,
    progress_bar,
    project_option,
    token_option,
    url_option,
)


def register(app: typer.Typer) -> None:
    """Adds the ``push`` group."""
    push_app = typer.Typer(help="Send pre-labels to an annotation tool's server.", no_args_is_help=True)
    app.add_typer(push_app, name="push")

    @push_app.command("labelstudio")
    def push_labelstudio(
        store: Path = typer.Argument(..., help="A segpipe Zarr store made by `segpipe prelabel`."),
        url: str = url_option(),
        project: str = project_option("Project id, or title (created when no project has it)."),
        token: str | None = token_option(),
        batch: int = typer.Option(100, "--batch", min=1, max=10000, help="Tasks per import request."),
        image_url_prefix: str | None = image_url_prefix_option(
            "Prefix of the tasks' image URLs (default: Label Studio's local-file serving, "
            "/data/local-files/?d=images/)."),
        model_version: str | None = model_version_option("The predictions' model_version "
                                                         "(default: the store's model)."),
        resend: bool = typer.Option(False, "--resend", help="Ignore the record of earlier pushes; send every image."),
    ) -> None:
        """Import a store's pre-labels into a Label Studio project, in batches; a rerun sends only the rest."""
        # lazy: pydantic and the Label Studio client load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import PushRequest

        req = build_request(PushRequest, locals())
        with progress_bar("push → labelstudio", unit="tasks") as update:
            report = api.push(req, progress=update, log=state.progress_log())
        for image_id, why in report.failed:
            state.err(f"image {image_id}: {why}")
        made = "created" if report.created else "existing"
        state.console.print(
            f"project {report.project_id} ({report.title!r}, {made}): sent {report.sent} tasks, "
            f"{report.skipped} pushed before, {len(report.failed)} failed; {report.task_number} tasks in the project",
            markup=False)
        if report.failed:
            raise typer.Exit(1)
