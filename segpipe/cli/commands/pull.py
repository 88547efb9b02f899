"""``segpipe pull labelstudio --url URL --project NAME|ID OUT``: a Label Studio project's annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import overwrite_option, project_option, token_option, url_option


def register(app: typer.Typer) -> None:
    """Adds the ``pull`` group."""
    pull_app = typer.Typer(help="Fetch annotations from an annotation tool's server.", no_args_is_help=True)
    app.add_typer(pull_app, name="pull")

    @pull_app.command("labelstudio")
    def pull_labelstudio(
        out: Path = typer.Argument(..., help="Output folder: export.json, label_config.xml, segpipe_pull.json."),
        url: str = url_option(),
        project: str = project_option("Project id or title."),
        token: str | None = token_option(),
        overwrite: bool = overwrite_option("Replace an earlier `segpipe pull` output in OUT."),
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
