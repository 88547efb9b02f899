"""Shared CLI options (issue 15, point 5): one definition per option, choices in --help, one name per task.

The drift tests read the command modules: an option that several commands take is built by its
factory in ``segpipe/cli/common.py``, never by a ``typer.Option`` call of its own, and every command
that has it shows the same flags. The behaviour tests drive the real CLI.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

COMMANDS = REPO / "segpipe" / "cli" / "commands"

#: Options that more than one command takes, each with its factory in segpipe.cli.common.
SHARED = {
    "--workers": "workers_option", "--scheduler": "scheduler_option", "--threads": "threads_option",
    "--device": "device_option", "--on-error": "on_error_option", "--task": "task_option",
    "--overwrite": "overwrite_option", "--resume": "resume_option", "--image-root": "image_root_option",
    "--arch": "arch_option", "--json": "json_option", "--report-dir": "report_dir_option",
    "--layout": "layout_option", "--polygons/--rle": "polygons_option", "--to": "to_option",
    "--categories": "categories_option", "--url": "url_option", "--project": "project_option",
    "--token": "token_option", "--image-url-prefix": "image_url_prefix_option",
    "--model-version": "model_version_option", "--min-score": "score_option", "--seed": "seed_option",
    "--overlap": "overlap_option",
}


def _inline_options(path: Path) -> list[tuple[int, str]]:
    """``(line, flag)`` for every ``typer.Option(...)`` call in ``path`` that declares a shared flag."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Option"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "typer"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value in SHARED:
                    found.append((node.lineno, arg.value))
    return found


def test_no_command_defines_a_shared_option_itself() -> None:
    inline = {p.name: found for p in sorted(COMMANDS.glob("*.py")) if (found := _inline_options(p))}
    assert inline == {}, f"use the factories of segpipe/cli/common.py ({SHARED}) instead: {inline}"


def _click_options() -> dict[str, dict[str, tuple[str, ...]]]:
    """``{command path: {long flag: every flag of that option}}`` of the built CLI."""
    from typer.main import get_command

    from segpipe.cli.main import app

    out: dict[str, dict[str, tuple[str, ...]]] = {}

    def walk(cmd, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}")
            return
        out[path] = {next(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")): (*p.opts, *p.secondary_opts)
                     for p in cmd.params if getattr(p, "param_type_name", "") == "option"}

    walk(get_command(app), "segpipe")
    return out


def test_each_shared_option_has_the_same_flags_in_every_command() -> None:
    options = _click_options()
    for flag in ("--workers", "--scheduler", "--on-error", "--task", "--overwrite", "--image-root", "--arch",
                 "--json", "--layout", "--device", "--url", "--project", "--token"):
        spellings = {path: sorted(opts[flag]) for path, opts in options.items() if flag in opts}
        assert len(spellings) >= 2, (flag, spellings)
        assert len({tuple(s) for s in spellings.values()}) == 1, (flag, spellings)
    # the commands that run on Dask take both cluster options
    cluster = sorted(p for p, opts in options.items() if "--workers" in opts)
    assert cluster == ["segpipe convert", "segpipe demo", "segpipe evaluate", "segpipe evaluate-checkpoints",
                       "segpipe export", "segpipe prelabel", "segpipe view"]
    assert all("--scheduler" in options[p] for p in cluster if p != "segpipe demo")


def _help(*command: str) -> str:
    r = run_cli(*command, "--help")
    assert r.returncode == 0, r.stderr
    return re.sub(r"\s+", " ", r.stdout)


@pytest.mark.parametrize("command", [("evaluate",), ("evaluate-checkpoints",), ("prelabel",), ("models",)])
def test_task_has_one_name_in_help(command: tuple[str, ...]) -> None:
    text = _help(*command)
    assert "--task -t <semantic|instance|panoptic|landmarks>" in text, text
    assert "keypoints" not in text.replace("--iou-types <str> segm,bbox,keypoints", "")


@pytest.mark.parametrize(("command", "default"), [(("convert",), "fail"), (("evaluate",), "skip"),
                                                  (("prelabel",), "skip")])
def test_on_error_is_one_choice_with_its_default_shown(command: tuple[str, ...], default: str) -> None:
    text = _help(*command)
    m = re.search(r"--on-error <skip\|fail> (.*?)\[default: (\w+)\]", text)
    assert m is not None and m.group(2) == default, text


@pytest.mark.parametrize(("command", "choices"), [
    (("convert",), "--images <copy|link|none>"), (("export",), "--images <copy|link|none>"),
    (("validate",), "--images <verify|decode|none>"), (("convert",), "--layout <split|single|devkit|flat>"),
    (("export",), "--layout <split|single|devkit|flat>"), (("prelabel",), "--stretch <auto|percentile|minmax|none>"),
    (("evaluate",), "--match-classes <id|name>"), (("synth",), "--format <png|jpg|geotiff|nifti|dicom>"),
])
def test_closed_sets_are_listed_in_help(command: tuple[str, ...], choices: str) -> None:
    assert choices in _help(*command)


def test_keypoints_is_accepted_for_landmarks_in_models() -> None:
    a, b = run_cli("models", "--task", "landmarks"), run_cli("models", "--task", "keypoints")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "hourglass" in a.stdout and "unet " not in a.stdout


def test_keypoints_and_landmarks_evaluate_the_same(tmp_path: Path) -> None:
    """``--task keypoints`` (the name evaluate had) and ``--task landmarks`` give the same report."""
    from segpipe.synth import synth

    synth("landmarks", tmp_path / "lm", n=2, seed=0, size=(48, 48))
    ann = str(tmp_path / "lm" / "annotations.json")
    reports = []
    for task in ("keypoints", "landmarks"):
        out = tmp_path / f"{task}.json"
        r = run_cli("-q", "evaluate", ann, ann, "--task", task, "--kpt-sigmas", ".05,.05,.05,.05", "-w", "0",
                    "--json", str(out))
        assert r.returncode == 0, r.stderr
        rep = json.loads(out.read_text())
        rep.pop("elapsed_s", None)
        reports.append(rep)
    assert reports[0] == reports[1]
    assert reports[0]["task"] == "keypoints"  # the report keeps the evaluation's name (schema unchanged)
    assert reports[0]["instance"]["keypoints"]["AP"] == pytest.approx(1.0)


def test_task_alias_reaches_prelabel_as_landmarks(tmp_path: Path) -> None:
    """``prelabel --task keypoints`` is checked against the checkpoint as ``landmarks``."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "imgs" / "a.png")
    torch.manual_seed(0)
    kw = {"base": 4, "depth": 1}
    save_checkpoint(tmp_path / "m.ckpt", build_model("unet", 2, **kw),
                    CheckpointMeta.for_arch("unet", 2, model_kwargs=kw, tile_size=[32, 32]))
    r = run_cli("-q", "prelabel", "imgs", "-m", "m.ckpt", "-o", "o.zarr", "-w", "0", "--task", "keypoints",
                cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --task landmarks but the model unet is a semantic model", r.stderr
