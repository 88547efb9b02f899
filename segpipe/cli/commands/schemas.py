"""``segpipe schemas``: write or check the JSON Schemas generated from the typed models."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("schemas")
    def schemas_cmd(
        out: Path = typer.Argument(Path("schemas"), help="Folder to write the schemas to."),
        check: bool = typer.Option(False, "--check", help="Only check that the files match the code."),
    ) -> None:
        """Write (or --check) the JSON Schemas generated from segpipe's typed models."""
        # lazy: the typed models (pydantic) load when the command runs, not for `segpipe --help`
        from segpipe.pipeline.schemas import drifted, write_schemas

        if check:
            bad = drifted(out)
            for name in bad:
                state.err(f"{out / name}: out of date; run `segpipe schemas {out}`")
            raise typer.Exit(1 if bad else 0)
        for p in write_schemas(out):
            state.console.print(str(p), markup=False)
