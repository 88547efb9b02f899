"""The terminal and HTML summaries: ``segpipe run``'s table, and ``evaluate-checkpoints`` ranked by its metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import run_cli
from tests.view.conftest import make_checkpoint


def test_run_prints_a_table_and_json_lines_on_request(tmp_path):
    pipe = tmp_path / "p.yaml"
    pipe.write_text("version: 1\nworkers: 0\nstages:\n"
                    "  - synth: {kind: streetview, out: data, n: 2, size: [32, 64]}\n"
                    "  - convert: {src: data/annotations.json, out: voc, to: voc}\n")
    r = run_cli("run", str(pipe), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any("pipeline run" in ln for ln in lines)
    synth_row = next(ln for ln in lines if re.match(r"\s*1\W+synth\s", ln))
    convert_row = next(ln for ln in lines if re.match(r"\s*2\W+convert\s", ln))
    assert str(tmp_path / "w" / "data") in synth_row
    assert str(tmp_path / "w" / "voc") in convert_row and ("lossless" in convert_row or "losses:" in convert_row)
    assert not any(ln.lstrip().startswith("{") for ln in lines)  # no JSON lines by default
    r = run_cli("run", str(pipe), "--workdir", str(tmp_path / "w"), "--json-lines")
    assert r.returncode == 0, r.stderr
    stages = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert [s["step"] for s in stages] == ["synth", "convert"] and all("seconds" in s for s in stages)


def test_evaluate_checkpoints_ranks_best_first(tmp_path):
    from segpipe.synth import synth

    collection = tmp_path / "data"
    synth("streetview", collection, n=3, seed=8, size=(32, 64))
    # random-weight checkpoints: the order given (by epoch) need not be the ranking's
    ckpts = [make_checkpoint(tmp_path / f"epoch_{k}.ckpt", collection, seed=k) for k in (1, 2, 3)]
    out = tmp_path / "board"
    r = run_cli("evaluate-checkpoints", str(collection), *map(str, ckpts), "--images", str(collection / "images"),
                "--report-dir", str(out), "-w", "0", timeout=600)
    assert r.returncode == 0, r.stderr
    board = json.loads((out / "leaderboard.json").read_text())
    want = [r_["name"] for r_ in sorted(board["rows"], key=lambda r_: -r_["mIoU"])]
    printed = [m.group(1) for m in re.finditer(r"^\s*\d+\W+(epoch_\d)\s", r.stdout, re.M)]
    assert printed == want, r.stdout
    page = (out / "index.html").read_text()
    assert [m for m in re.findall(r'href="reports/(epoch_\d)/index.html"', page)] == want
    assert 'class="best"' in page and "ranked by mIoU (best first)" in page
    for name in want:
        assert (out / "reports" / name / "index.html").is_file()
    assert Path(out / "metrics.png").is_file()
