"""``segpipe push labelstudio STORE --url URL --project NAME|ID``: pre-labels into a Label Studio project."""

from __future__ import annotations

from pathlib import Path

import typer

TOKEN_HELP = "API token: a personal access token or a legacy token (default: $LABEL_STUDIO_API_KEY); never printed."


def register(app: typer.Typer) -> None:
    """Adds the ``push`` group."""
    push_app = typer.Typer(help="Send pre-labels to an annotation tool's server.", no_args_is_help=True)
    app.add_typer(push_app, name="push")

    @push_app.command("labelstudio")
    def push_labelstudio(
        store: Path = typer.Argument(..., help="A segpipe Zarr store made by `segpipe prelabel`."),
        url: str = typer.Option(..., "--url", help="The Label Studio server, e.g. http://localhost:8080."),
        project: str = typer.Option(..., "--project", help="Project id, or title (created when no project has it)."),
        token: str | None = typer.Option(None, "--token", help=TOKEN_HELP, show_default=False),
        batch: int = typer.Option(100, "--batch", min=1, max=10000, help="Tasks per import request."),
        image_url_prefix: str | None = typer.Option(
            None, "--image-url-prefix", help="Prefix of the tasks' image URLs (default: Label Studio's local-file "
            "serving, /data/local-files/?d=images/)."),
        model_version: str | None = typer.Option(None, "--model-version", help="The predictions' model_version "
                                                 "(default: the store's model)."),
        resend: bool = typer.Option(False, "--resend", help="Ignore the record of earlier pushes; send every image."),
    ) -> None:
        """Import a store's pre-labels into a Label Studio project, in batches; a rerun sends only the rest."""
        from segpipe.cli import state
        from segpipe.cli.common import progress_bar
        from segpipe.integrations.labelstudio import connect
        from segpipe.integrations.labelstudio.sync import push

        client = connect(url, token)
        with progress_bar("push → labelstudio", unit="tasks") as update:
            report = push(store, client, project, batch_size=batch, image_url_prefix=image_url_prefix,
                          model_version=model_version, resend=resend, progress=update, log=state.progress_log())
        for image_id, why in report.failed:
            state.err(f"image {image_id}: {why}")
        made = "created" if report.created else "existing"
        state.console.print(
            f"project {report.project_id} ({report.title!r}, {made}): sent {report.sent} tasks, "
            f"{report.skipped} pushed before, {len(report.failed)} failed; {report.task_number} tasks in the project",
            markup=False)
        if report.failed:
            raise typer.Exit(1)
