"""``segpipe models``: list the registered architectures."""

from __future__ import annotations

import typer

from segpipe.cli.common import Task, task_option, value_of
from segpipe.cli.state import console
from segpipe.models.registry import count_parameters, get_model_spec, model_names


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("models")
    def models_cmd(
        task: Task | None = task_option(None, help="Only the architectures of this task."),
        num_classes: int = typer.Option(21, "--num-classes", help="Classes used for the parameter count."),
    ) -> None:
        """List model architectures with task, parameter count and default input/tile size."""
        console.print(f"{'name':30} {'task':10} {'params':>9}  {'tile':>9}  description", markup=False)
        for name in model_names(value_of(task)):
            spec = get_model_spec(name)
            n = count_parameters(name, num_classes)
            tile = "x".join(str(v) for v in ([spec.default_depth] if spec.dims == 3 else []) + list(spec.default_input))
            console.print(f"{name:30} {spec.task:10} {n / 1e6:8.1f}M  {tile:>9}  {spec.description}", markup=False)
