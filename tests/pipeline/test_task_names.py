"""Pipeline files take the task names the CLI takes: ``landmarks`` everywhere, ``keypoints`` as its alias."""

from __future__ import annotations

from pathlib import Path

from segpipe.pipeline.workflows import evaluation_task
from tests.conftest import run_cli


def test_pipeline_files_accept_both_task_names(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\nstages:\n"
        "  - prelabel: {source: imgs, model: m.ckpt, out: p.zarr, task: keypoints}\n"
        "  - evaluate: {gt: gt.json, pred: p.zarr, task: landmarks}\n"
        "  - evaluate-checkpoints: {gt: gt.json, checkpoints: [m.ckpt], images: imgs, report_dir: r,"
        " task: landmarks}\n")
    r = run_cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0 and "0 errors" in r.stderr, r.stdout + r.stderr
    (tmp_path / "q.yaml").write_text("version: 1\nstages:\n  - evaluate: {gt: gt.json, pred: p.zarr, task: landmark}\n")
    r = run_cli("validate", "q.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "stages[0].evaluate.task: 'landmark' is not one of semantic, instance, panoptic, " \
        "landmarks" in r.stdout, r.stdout


def test_landmarks_are_evaluated_as_coco_keypoints() -> None:
    assert evaluation_task("landmarks") == "keypoints" == evaluation_task("keypoints")
    assert evaluation_task("semantic") == "semantic"
