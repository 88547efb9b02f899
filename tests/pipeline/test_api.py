"""The Python API (docs/api.md): every command as a function of ``segpipe``, with its request's checks.

The documented example runs as written, in a subprocess (a fresh ``import segpipe``); the other tests
call the functions on real files and compare with what the command line writes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import segpipe
from segpipe import api
from segpipe.errors import ConfigError
from segpipe.pipeline.requests import REQUESTS, ConvertRequest, SynthRequest
from tests.conftest import REPO, run_cli


def _example() -> str:
    """The Python block under "## An example" in docs/api.md."""
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## An example", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m is not None, "docs/api.md has no example"
    return m.group(1)


def test_the_documented_example_runs(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(_example())
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "6 images, " + lines[0].split(", ")[1] and "annotations" in lines[0]
    assert "6 of 6 images pre-labeled" in lines
    assert "exported 6 images, lossless: " in r.stdout
    assert re.search(r"^mIoU [01]\.\d{3}$", r.stdout, re.M)
    assert "voc: 0 errors" in r.stdout
    assert lines[-1] == "refused: images: 'move' is not one of copy, link, none"
    assert not (tmp_path / "voc2").exists()  # refused before anything was written
    coco = json.loads((tmp_path / "export" / "coco" / "annotations" / "instances_train.json").read_text())
    assert len(coco["images"]) == 6
    assert (tmp_path / "voc" / "VOCdevkit").is_dir()


def test_import_segpipe_loads_nothing_heavy() -> None:
    code = ("import sys, segpipe; print(sorted(m for m in ('pydantic', 'numpy', 'dask', 'distributed', 'torch', "
            "'zarr', 'typer') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_every_request_has_its_function() -> None:
    functions = {"synth": "synthesize", "push labelstudio": "push", "pull labelstudio": "pull",
                 "evaluate-checkpoints": "evaluate_checkpoints", "view": "view_report", "": "ingest"}
    for model in REQUESTS:
        name = functions.get(model.COMMAND, model.COMMAND)
        assert getattr(segpipe, name) is getattr(api, name), model.__name__
        assert model.__name__ in segpipe.__all__ and getattr(segpipe, model.__name__) is model
    assert sorted(api.__all__) == sorted(n for n in segpipe.__all__ if n[0].islower() and not n.startswith("_"))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: segpipe.synthesize("streetview", "o", n=0), "n: 0 is not >= 1"),
    (lambda: segpipe.synthesize("streetview", "o", size="axb"), "size: 'axb' is not HxW, e.g. 256x512"),
    (lambda: segpipe.synthesize("street", "o"), "kind: unknown synth 'street'; known: landmarks, medical, "
                                                "satellite, streetview"),
    (lambda: segpipe.synthesize("streetview", "o", colour="red"), "colour: not an option of segpipe synth "
                                                                  "(known: kind, out, n, seed, size, format, exif, "
                                                                  "depth, overwrite)"),
    (lambda: segpipe.convert("a", "b", to="voc", on_eror="skip"), "on_eror: not an option of segpipe convert "
                                                                  "(did you mean on_error?)"),
    (lambda: segpipe.convert("a", "b", "c", to="voc"), "segpipe convert takes 2 positional values (src, out), "
                                                       "got 3"),
    (lambda: segpipe.convert("a", to="voc"), "out: required"),
    (lambda: segpipe.convert("a", "b", to="voc", model_version="v1"), "model_version: applies to the labelstudio "
                                                                      "target, not 'voc'"),
    (lambda: segpipe.export("s.zarr", "o", to="coco", min_score=1.5), "min_score: 1.5 is not <= 1.0"),
    (lambda: segpipe.prelabel("imgs", model="m.ckpt", out="o.zarr", percentiles="98,2"),
     "percentiles: 98,2 is not LOW,HIGH with 0 <= LOW < HIGH <= 100, e.g. 2,98"),
    (lambda: segpipe.prelabel("imgs", model="m.ckpt", out="o.zarr", bands="4,x,2"), "bands[1]: 'x' is not an "
                                                                                   "integer"),
    (lambda: segpipe.train("d", arch="unet", out="o", device="gpu"), "device: 'gpu' is not auto, cpu, cuda or "
                                                                     "cuda:N"),
    (lambda: segpipe.evaluate("g", "p", task="pose"), "task: 'pose' is not one of semantic, instance, panoptic, "
                                                      "landmarks"),
])
def test_a_bad_value_is_one_error_naming_the_field(call, message: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        call()
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []  # refused before anything ran


def test_a_request_given_whole_and_overridden(tmp_path: Path) -> None:
    req = SynthRequest(kind="streetview", out=tmp_path / "a", n=2, size=(32, 48))
    res = segpipe.synthesize(req)
    assert res.images == 2 and tuple(res.size) == (32, 48)
    res = segpipe.synthesize(req, out=tmp_path / "b", n=3)
    assert res.images == 3 and sorted(p.name for p in (tmp_path / "b" / "images").iterdir())[-1].startswith("00002")
    with pytest.raises(ConfigError, match="n: 0 is not >= 1"):
        segpipe.synthesize(req, n=0)


def test_keypoints_is_landmarks_in_every_request() -> None:
    from segpipe.pipeline.requests import EvaluateRequest, PrelabelRequest

    assert EvaluateRequest.build("g", "p", task="keypoints").task == "landmarks"
    assert PrelabelRequest.build("s", model="m", out="o", task="keypoints").task == "landmarks"


def test_the_api_and_the_command_line_write_the_same_conversion(tmp_path: Path) -> None:
    """``segpipe.convert(...)`` and ``segpipe convert ...`` are one library call: the same files, the same report."""
    segpipe.synthesize("streetview", tmp_path / "data", n=3, size="48x64", seed=3)
    rep = segpipe.convert(tmp_path / "data", tmp_path / "api", to="voc", layout="flat", workers=0)
    r = run_cli("-q", "convert", str(tmp_path / "data"), str(tmp_path / "cli"), "--to", "voc", "--layout", "flat",
                "-w", "0")
    assert r.returncode == 0, r.stderr

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "conversion_report.json" and not p.name.startswith(".segpipe")}

    assert files(tmp_path / "api") == files(tmp_path / "cli") and files(tmp_path / "api")
    written = json.loads((tmp_path / "api" / "conversion_report.json").read_text())
    assert rep.model_dump(mode="json") == written  # the typed report is the JSON written, field for field
    assert list(written) == list(type(rep).model_fields)  # in the order written
    assert rep["images"]["converted"] == rep.images["converted"] == 3 and "losses" in rep
    cli = json.loads((tmp_path / "cli" / "conversion_report.json").read_text())
    for report in (written, cli):
        report.pop("elapsed_s"), report.pop("target"), report.pop("workers")
    assert written == cli


def test_a_request_is_frozen() -> None:
    req = ConvertRequest.build("a", "b", to="voc")
    with pytest.raises(Exception, match="frozen"):
        req.strict = True  # type: ignore[misc]


def test_ingest_writes_a_manifest(tmp_path: Path) -> None:
    """The ``ingest`` stage has no command; the API has it as a function with the stage's keys."""
    segpipe.synthesize("streetview", tmp_path / "data", n=2, size="32x48")
    assert segpipe.ingest(tmp_path / "data" / "images", tmp_path / "m.jsonl", workers=0) == 2
    entries = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(e["width"], e["height"]) for e in entries] == [(48, 32), (48, 32)]


def test_view_report_writes_what_segpipe_view_writes(tmp_path: Path) -> None:
    """``segpipe.view_report(...)`` and ``segpipe view ...`` are one library call: the same pages and images."""
    segpipe.synthesize("streetview", tmp_path / "data", n=3, size="48x64", seed=2)
    rep = segpipe.view_report(tmp_path / "data", out=tmp_path / "api", thumb=64, large=0, page_size=10, workers=0)
    r = run_cli("-q", "view", str(tmp_path / "data"), "--out", str(tmp_path / "cli"), "--thumb", "64", "--large", "0",
                "--page-size", "10", "-w", "0")
    assert r.returncode == 0, r.stderr
    assert rep["images"] == 3 and rep["failed"] == 0 and Path(rep["index"]) == tmp_path / "api" / "index.html"

    def files(root: Path) -> dict[str, bytes]:  # the summary holds the source's path and the version: compared apart
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "img").rglob("*")) if p.is_file()}

    assert files(tmp_path / "api") and files(tmp_path / "api") == files(tmp_path / "cli")
    assert (tmp_path / "api" / "index.html").read_bytes() == (tmp_path / "cli" / "index.html").read_bytes()


def test_view_report_needs_a_source_and_checks_its_sizes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source") as e:
        segpipe.view_report(out=tmp_path / "v")
    assert e.value.where == "source"
    with pytest.raises(ConfigError, match=r"--thumb must be in 32\.\.2048"):
        segpipe.view_report(tmp_path, out=tmp_path / "v", thumb=8)
    with pytest.raises(ConfigError, match="on_error: 'ignore' is not one of skip, fail"):
        segpipe.view_report(tmp_path, out=tmp_path / "v", on_error="ignore")
    assert not (tmp_path / "v").exists()


def test_prelabel_fsck_and_evaluate_return_typed_reports_that_are_the_json_written(tmp_path: Path) -> None:
    """``segpipe.prelabel/fsck/evaluate`` return the typed reports (read by attribute); their JSON is what the
    run file and ``--json`` hold, and ``segpipe fsck`` prints the same counts."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model
    from segpipe.pipeline.eval_specs import EvaluationReport, Leaderboard
    from segpipe.pipeline.prelabel import FsckReport, PrelabelReport

    data = segpipe.synthesize("streetview", tmp_path / "data", n=3, size="48x64", seed=4)
    names = [ln.split(":")[0] for ln in (data.out / "labelmap.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    torch.manual_seed(0)
    meta = CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats, tile_size=[64, 64],
                          tile_overlap=0.25, model_kwargs={"base": 8, "depth": 2})
    save_checkpoint(tmp_path / "m.ckpt", build_model("unet", len(cats), base=8, depth=2), meta)

    store = tmp_path / "s.zarr"
    run = segpipe.prelabel(str(data.out / "images"), model=tmp_path / "m.ckpt", out=store, threads=1, workers=0)
    assert isinstance(run, PrelabelReport)
    assert (run.images.done, run.images.total, run.images.failed, run.failed) == (3, 3, 0, [])
    (run_file,) = (store / ".segpipe" / "runs").glob("*.json")
    assert run.to_json() == json.loads(run_file.read_text()) and run_file.stem == run.run_id

    check = segpipe.fsck(store)
    assert isinstance(check, FsckReport)
    assert (check.receipts, check.ok, check.bad, check.problems, check.orphans) == (3, 3, [], [], [])
    r = run_cli("fsck", str(store))
    assert r.returncode == 0, r.stderr
    assert f"{check.ok}/{check.receipts} receipts ok, 0 bad receipts, 0 orphans, 0 problems" in r.stdout

    scores = segpipe.evaluate(data.out, store, task="semantic", json_out=tmp_path / "ev.json", workers=0)
    assert isinstance(scores, EvaluationReport) and scores.semantic is not None and not scores.failed
    written = json.loads((tmp_path / "ev.json").read_text())
    assert scores.to_json() == written
    assert scores.images.evaluated == written["images"]["evaluated"] == 3
    assert scores.semantic.mean_iou == written["semantic"]["mean_iou"] == written["mean_iou"]

    lines: list[str] = []
    board = segpipe.evaluate_checkpoints(data.out, [tmp_path / "m.ckpt"], images=data.out / "images",
                                         report_dir=tmp_path / "ck", workers=0, log=lines.append)
    assert isinstance(board, Leaderboard) and lines
    assert board.best == str(tmp_path / "m.ckpt") and board.problems == [] and len(board.rows) == 1
    assert board.rows[0].miou == pytest.approx(scores.semantic.mean_iou, abs=1e-3)  # same model, same images
    assert board.to_json() == json.loads((tmp_path / "ck" / "leaderboard.json").read_text())
