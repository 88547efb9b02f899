"""``segpipe validate PATH``: request :class:`~segpipe.pipeline.requests.ValidateRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import ImageCheck, build_request, format_option, image_root_option, json_option
from segpipe.core.problems import Problem


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("validate")
    def validate_cmd(
        path: Path = typer.Argument(..., help="A COCO JSON file, a dataset folder or a pipeline YAML."),
        format: str = format_option("--format", "-f"),
        image_root: Path | None = image_root_option("Folder holding the images."),
        fail_on_warnings: bool = typer.Option(False, "--fail-on-warnings", help="Exit 1 on warnings too."),
        json_out: Path | None = json_option("Also write the problems as JSON."),
        images: ImageCheck = typer.Option(ImageCheck.VERIFY, "--images", help="verify reads each image file and "
                                          "checks its integrity; decode decodes every pixel; none skips them."),
    ) -> None:
        """Check a dataset: one line per problem naming the file and the field (exit 0 clean, 1 problems)."""
        # lazy: pydantic and the format readers load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import ValidateRequest

        req = build_request(ValidateRequest, locals())
        state.OUTPUT = req.json_out
        report = api.validate(req)
        for p in report.problems:
            state.console.print(str(Problem(**p.model_dump())), markup=False)
        state.err_console.print(f"{req.path} ({report.format}): {report.errors} errors, {report.warnings} warnings",
                                markup=False)
        if report.errors or (req.fail_on_warnings and report.warnings):
            raise typer.Exit(1)

