"""``segpipe pull labelstudio --url URL --project NAME|ID OUT``: a Label Studio project's annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.commands.push import TOKEN_HELP


def register(app: typer.Typer) -> None:
    """Adds the ``pull`` group."""
    pull_app = typer.Typer(help="Fetch annotations from an annotation tool's server.", no_args_is_help=True)
    app.add_typer(pull_app, name="pull")

    @pull_app.command("labelstudio")
    def pull_labelstudio(
        out: Path = typer.Argument(..., help="Output folder: export.json, label_config.xml, segpipe_pull.json."),
        url: str = typer.Option(..., "--url", help="The Label Studio server, e.g. http://localhost:8080."),
        project: str = typer.Option(..., "--project", help="Project id or title."),
        token: str | None = typer.Option(None, "--token", help=TOKEN_HELP, show_default=False),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `segpipe pull` output in OUT."),
    ) -> None:
        """Export a Label Studio project's annotated tasks (JSON export) into OUT."""
        from segpipe.cli import state
        from segpipe.integrations.labelstudio import connect
        from segpipe.integrations.labelstudio.sync import pull

        state.OUTPUT = out
        client = connect(url, token)
        report = pull(client, project, out, overwrite=overwrite)
        state.console.print(
            f"project {report.project_id} ({report.title!r}): {report.annotated} annotated tasks, "
            f"{report.annotations} annotations → {out}", markup=False)
