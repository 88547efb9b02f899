"""``segpipe evaluate-checkpoints GT CKPT... --images DIR``."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import (
    Task,
    arch_option,
    build_request,
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
        # lazy: pydantic and the workflow load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.cli import state
        from segpipe.cli.report import print_leaderboard
        from segpipe.pipeline.checkpoints import METRICS
        from segpipe.pipeline.requests import EvaluateCheckpointsRequest, evaluation_task

        req = build_request(EvaluateCheckpointsRequest, locals())
        state.OUTPUT = req.report_dir
        scored = evaluation_task(req.task)  # the metrics' name: landmarks are scored as COCO keypoints
        board = api.evaluate_checkpoints(req, workers=workers, scheduler=scheduler, log=state.progress_log())
        print_leaderboard(board, [c for _, c in METRICS[scored]], state.console)  # ranked, best first
        state.console.print(f"best: {board.best}; leaderboard: {report_dir / 'index.html'}", markup=False)
        for p in board.problems:  # images that failed count as problems found: exit 1
            state.err_console.print(
                f"error: {p.checkpoint}: {p.prelabel_failed} image(s) failed to pre-label, "
                f"{p.evaluate_errors} could not be evaluated (see {p.store}/.segpipe/runs and {p.report})",
                markup=False)
        if board.problems:
            raise typer.Exit(1)
