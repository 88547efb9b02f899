"""Pipeline files: stages are their commands' requests, with the command line's defaults (issue 15).

The defaults that used to differ between a stage and its command are the command's now; a pipeline
still runs again as it ran the first time through its own top-level ``overwrite: true``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segpipe.pipeline.requests import PrelabelRequest
from segpipe.pipeline.runspec import PipelineSpec, stage_inputs, stage_outputs
from tests.conftest import run_cli


def _write(path: Path, stages: list[dict], **top: object) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, **top, "stages": stages}))
    return path


def test_a_pipeline_runs_again_replacing_its_own_outputs(tmp_path: Path) -> None:
    _write(tmp_path / "p.yaml", [{"synth": {"kind": "streetview", "out": "sy", "n": 1, "size": [32, 32]}},
                                 {"convert": {"src": "sy", "out": "voc", "to": "voc"}}])
    for _ in range(2):
        r = run_cli("-q", "run", "p.yaml", "--json-lines", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "voc" / "VOCdevkit").is_dir()


@pytest.mark.parametrize("where", ["top", "stage"])
def test_overwrite_false_keeps_an_earlier_output(tmp_path: Path, where: str) -> None:
    """``overwrite: false``, at the top or on the stage, refuses to replace what an earlier run made."""
    stage = {"kind": "streetview", "out": "sy", "n": 1, "size": [32, 32]}
    first = _write(tmp_path / "p.yaml", [{"synth": stage}])
    assert run_cli("-q", "run", first.name, cwd=tmp_path).returncode == 0
    before = sorted(p.read_bytes() for p in (tmp_path / "sy").rglob("*") if p.is_file())
    top = {"overwrite": False} if where == "top" else {}
    if where == "stage":
        stage = {**stage, "overwrite": False}
    _write(tmp_path / "p.yaml", [{"synth": {**stage, "seed": 5}}], **top)
    r = run_cli("-q", "run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "--overwrite" in r.stderr, r.stderr
    assert sorted(p.read_bytes() for p in (tmp_path / "sy").rglob("*") if p.is_file()) == before


def test_a_stage_has_its_commands_defaults() -> None:
    """``resume`` was true in pipeline files and false on the command line: false in both now."""
    spec = PipelineSpec.model_validate({"overwrite": False, "stages": [
        {"prelabel": {"source": "imgs", "model": "m.ckpt", "out": "p.zarr"}}]})
    (_, req), = spec.steps()
    assert req == PrelabelRequest.build("imgs", model="m.ckpt", out="p.zarr")
    assert req.resume is False and req.limit is None  # limit: a key of pipeline files now too


def test_resume_on_a_stage_is_not_overridden_by_the_pipeline() -> None:
    spec = PipelineSpec.model_validate({"stages": [
        {"prelabel": {"source": "imgs", "model": "m.ckpt", "out": "p.zarr", "resume": True}},
        {"prelabel": {"source": "imgs", "model": "m.ckpt", "out": "q.zarr"}}]})
    (_, a), (_, b) = spec.steps()
    assert (a.resume, a.overwrite) == (True, False) and (b.resume, b.overwrite) == (False, True)


def test_paths_of_a_stage_are_found_by_their_role() -> None:
    """Inputs and outputs come from the request's fields, so a new path option needs no list here."""
    spec = PipelineSpec.model_validate({"stages": [
        {"convert": {"src": "a.json", "out": "o", "to": "voc", "categories": "map.yaml", "image_root": "imgs"}},
        {"evaluate": {"gt": "g", "pred": "p.zarr", "report_dir": "r", "json": "r.json"}},
        {"evaluate-checkpoints": {"gt": "g", "checkpoints": ["c/*.ckpt"], "images": "imgs"}}]})
    (_, conv), (_, ev), (_, board) = spec.steps()
    assert stage_outputs(conv) == [("out", Path("o"))]
    assert stage_inputs(conv) == [Path("a.json"), Path("map.yaml"), Path("imgs")]
    assert stage_outputs(ev) == [("json", Path("r.json")), ("report_dir", Path("r"))]
    assert stage_outputs(board) == [("report_dir", Path("checkpoint-report"))]  # the command line's default
    assert stage_inputs(board) == [Path("g"), Path("c/*.ckpt"), Path("imgs")]


def test_export_stage_takes_images_and_validate_checks_it(tmp_path: Path) -> None:
    """``images`` (export) was a command-line option only; a pipeline file takes it and validate checks it."""
    _write(tmp_path / "p.yaml", [{"export": {"store": "s.zarr", "out": "e", "to": "coco", "images": "link"}}])
    r = run_cli("validate", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0 and "0 errors" in r.stderr, r.stdout + r.stderr
