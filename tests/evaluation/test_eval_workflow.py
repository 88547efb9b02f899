"""The evaluate workflow's typed reports and its one driver, end to end on real files.

* :func:`evaluate_report` returns the typed :class:`EvaluationReport`; what it writes (``--json``,
  ``report.json``) and what :func:`evaluate` returns is that model's JSON, valid against the schema.
* Every task runs through the driver on real Dask worker processes with the numbers of a run in this
  process (COCO dicts built by the workers, pycocotools' matching in shards).
* ``evaluate-checkpoints`` writes the typed :class:`Leaderboard`, valid against its schema, whose rows
  hold each checkpoint's own evaluation figures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.eval_specs import EvaluationReport
from segpipe.pipeline.evaluate import EvaluateRequest, evaluate, evaluate_report

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _schema(name: str) -> dict[str, object]:
    return json.loads((SCHEMAS / name).read_text())


@pytest.fixture(scope="module")
def sv(tmp_path_factory) -> Path:
    from segpipe.synth import synth

    out = tmp_path_factory.mktemp("sv")
    synth("streetview", out, n=4, seed=3, size=(48, 96))
    return out


def _without_time(d: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in d.items() if k != "elapsed_s"}


def test_the_typed_report_is_what_is_written_and_returned(sv, tmp_path):
    req = EvaluateRequest(gt=sv, pred=sv, task="semantic", gt_format="maskdir", pred_format="maskdir", worst=2,
                          json_out=tmp_path / "r.json", report_dir=tmp_path / "rep")
    rep = evaluate_report(req, ClusterSpec(workers=0))
    assert isinstance(rep, EvaluationReport)
    written = rep.to_json()
    assert json.loads((tmp_path / "r.json").read_text()) == written
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == written
    jsonschema.validate(written, _schema("evaluation_report.schema.json"))
    # the typed fields and the JSON agree; the task's section is repeated at the top level
    assert rep.semantic is not None and rep.semantic.mean_iou == 1.0 == written["mean_iou"]
    assert written["per_class"] == written["semantic"]["per_class"]
    assert rep.images.evaluated == 4 and rep.images.gt == 4 and not rep.failed
    assert rep.classes is not None and rep.classes.match == "id"
    assert "instance" not in written and "panoptic" not in written  # other tasks' sections are absent, not null
    worst = rep.worst["semantic"] if rep.worst else []
    assert len(worst) == 2 and all(w.overlay and (tmp_path / "rep" / w.overlay).is_file() for w in worst)
    # read back, the report is the same model
    assert EvaluationReport.model_validate(written).to_json() == written
    again = evaluate(EvaluateRequest(gt=sv, pred=sv, task="semantic", gt_format="maskdir", pred_format="maskdir",
                                     worst=2), ClusterSpec(workers=0))
    assert "overlay" not in json.dumps(again["worst"])  # nothing drawn without a report folder
    assert _without_time(again) == _without_time({**written, "worst": again["worst"]})


def test_instance_on_dask_workers_equals_this_process(sv, tmp_path):
    # ground truth read from the masks (COCO dicts built by the workers), predictions from the COCO file
    def run(cluster: ClusterSpec) -> dict[str, object]:
        return evaluate(EvaluateRequest(gt=sv, pred=sv / "annotations.json", task="instance", gt_format="maskdir",
                                        shards=2), cluster)

    here = run(ClusterSpec(workers=0))
    there = run(ClusterSpec(workers=2))  # real worker processes: samples, then AP matching, in shards
    assert _without_time(there) == _without_time(here)
    jsonschema.validate(there, _schema("evaluation_report.schema.json"))
    assert set(there["instance"]) == {"segm", "bbox"}
    assert 0.0 < there["instance"]["segm"]["AP"] <= 1.0
    assert there["images"]["evaluated"] == 4


def test_leaderboard_is_typed_and_holds_each_checkpoints_figures(sv, tmp_path):
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model
    from segpipe.pipeline.checkpoints import EvaluateCheckpointsRequest, checkpoint_leaderboard
    from segpipe.pipeline.eval_specs import Leaderboard

    names = [ln.split(":")[0] for ln in (sv / "labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    kw = {"base": 4, "depth": 2}
    torch.manual_seed(0)
    ckpt = tmp_path / "epoch_3.ckpt"
    save_checkpoint(ckpt, build_model("unet", len(cats), **kw),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                                   tile_size=[48, 48], model_kwargs=kw))
    out = tmp_path / "board"
    board = checkpoint_leaderboard(EvaluateCheckpointsRequest(gt=sv, checkpoints=[ckpt], images=sv / "images",
                                                              report_dir=out), ClusterSpec(workers=0),
                                   log=lambda m: None)
    assert isinstance(board, Leaderboard)
    written = json.loads((out / "leaderboard.json").read_text())
    assert written == board.to_json()
    jsonschema.validate(written, _schema("leaderboard.schema.json"))
    (row,) = written["rows"]
    assert list(row) == ["checkpoint", "name", "img_s", "seconds", "epoch", "mIoU", "pixel acc", "mean acc", "fw IoU"]
    assert row["epoch"] == 3 and written["best"] == str(ckpt) and written["metric"] == "mIoU"
    # the row's figures are the checkpoint's own report's
    report = json.loads((out / "reports" / "epoch_3" / "report.json").read_text())
    assert row["mIoU"] == report["semantic"]["mean_iou"] and row["fw IoU"] == report["semantic"]["fw_iou"]
    with open(out / "leaderboard.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(row)
