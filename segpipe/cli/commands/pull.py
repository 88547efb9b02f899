"""``segpipe pull labelstudio --url URL --project NAME|ID OUT``: request :class:`PullRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import build_request, overwrite_option, project_option, token_option, url_option


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
        # lazy: pydantic and the Label Studio client load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import PullRequest

        req = build_request(PullRequest, locals())
        state.OUTPUT = req.out
        report = api.pull(req)
        state.console.print(
            f"project {report.project_id} ({report.title!r}): {report.annotated} annotated tasks, "
            f"{report.annotations} annotations → {req.out}", markup=False)
