"""``segpipe validate PATH``."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import ImageCheck, format_option, image_root_option, json_option


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
        from segpipe.cli import state
        from segpipe.pipeline.validate import validate_path
        from segpipe.storage.atomic import write_json_atomic

        state.OUTPUT = json_out
        if json_out is not None:  # never over what is being validated (checked before anything is read)
            from segpipe.storage.outputs import check_output, dataset_inputs

            # A dataset given as its annotation file occupies the folder its images are read from.
            pipeline = path.suffix in (".yaml", ".yml") and format in ("auto", "pipeline")
            inputs = [path] if pipeline else dataset_inputs(path, image_root)
            check_output(json_out, [*inputs, image_root], option="--json", command="validate", kind="file")
        fmt, problems = validate_path(path, format, image_root=image_root, images=images.value)
        for p in problems:
            state.console.print(str(p), markup=False)
        errors = sum(1 for p in problems if p.severity == "error")
        warnings = len(problems) - errors
        state.err_console.print(f"{path} ({fmt}): {errors} errors, {warnings} warnings", markup=False)
        if json_out is not None:
            from segpipe import __version__

            write_json_atomic(json_out, {"segpipe_version": __version__, "path": str(path), "format": fmt,
                                         "problems": [p.to_dict() for p in problems]})
        if errors or (fail_on_warnings and warnings):
            raise typer.Exit(1)
