"""``segpipe formats``: list the registered dataset formats."""

from __future__ import annotations

import typer

from segpipe.cli.state import console
from segpipe.formats import all_formats


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("formats")
    def formats_cmd() -> None:
        """List the dataset formats segpipe reads and writes."""
        for spec in all_formats():
            rw = ("r" if spec.reader else "-") + ("w" if spec.writer else "-")
            console.print(f"{spec.name:16} {rw}  {spec.description}", markup=False)
