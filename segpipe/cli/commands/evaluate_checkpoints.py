"""``segpipe evaluate-checkpoints GT CKPT... --images DIR``."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import (
    Task,
    arch_option,
    cluster_spec,
    report_dir_option,
    scheduler_option,
    task_option,
    workers_option,
)


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("evaluate-checkpoints")
    def evaluate_checkpoints_cmd(
        gt: Path = typer.Argument(..., help="The labeled archive (any format segpipe reads)."),
        checkpoints: list[Path] = typer.Argument(..., help="Checkpoint files, in order (e.g. epoch_*.ckpt)."),
        images: Path = typer.Option(..., "--images", help="The archive's images."),
        report_dir: Path = report_dir_option(Path("checkpoint-report"), help="Output folder."),
        task: Task = task_option(Task.SEMANTIC),
        arch: str | None = arch_option("Architecture of plain state-dict checkpoints (see `segpipe models`)."),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
    ) -> None:
        """Evaluate many checkpoints on one archive: leaderboard (MD, CSV, JSON) and metric plots."""
        from rich.table import Table

        from segpipe.cli import state
        from segpipe.pipeline.checkpoints import METRICS, EvaluateCheckpointsRequest, evaluate_checkpoints

        state.OUTPUT = report_dir
        scored = task.evaluation_name()  # the metrics' name: landmarks are scored as COCO keypoints
        board = evaluate_checkpoints(
            EvaluateCheckpointsRequest(gt=gt, checkpoints=list(checkpoints), images=images, report_dir=report_dir,
                                       task=scored, arch=arch),
            cluster_spec(workers, scheduler), log=state.progress_log())
        cols = [c for _, c in METRICS[scored]]
        t = Table(title=f"leaderboard ({board['metric']})", show_edge=False)
        t.add_column("checkpoint")
        for c in cols:
            t.add_column(c, justify="right")
        for r in board["rows"]:
            t.add_row(r["name"], *[("" if r[c] is None else f"{r[c]:.4f}") for c in cols])
        state.console.print(t)
        state.console.print(f"best: {board['best']}; leaderboard: {report_dir / 'leaderboard.md'}", markup=False)
        for p in board.get("problems", []):  # images that failed count as problems found: exit 1
            state.err_console.print(
                f"error: {p['checkpoint']}: {p['prelabel_failed']} image(s) failed to pre-label, "
                f"{p['evaluate_errors']} could not be evaluated (see {p['store']}/.segpipe/runs and {p['report']})",
                markup=False)
        if board.get("problems"):
            raise typer.Exit(1)
