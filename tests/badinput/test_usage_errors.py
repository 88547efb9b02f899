"""Bad command lines in the corpus (issue 15, point 5): click usage errors keep the bad-input promise.

Every case is refused while the command line is parsed: exit 2, one ``error:`` line naming the option,
argument or command (and where to look), no traceback, no "internal error", nothing written, and the
inputs untouched. The options whose values are a closed set (``--on-error``, ``--task``, ``--images``,
``--layout``, ``--stretch``, ``--match-classes``, synth's ``--format``) are refused before any cluster or
reader starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A folder with an input the commands below would read (``ds/a.json``)."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.json").write_text('{"images": [], "annotations": [], "categories": []}')
    return tmp_path


CASES = [
    # unknown options and commands, with the hints click or difflib offer
    (("synth", "-q"), ["-q", "segpipe -q synth"]),
    (("-q", "synth", "streetview", "sy", "--nope"), ["--nope", "did you mean --n?"]),
    (("-q", "convert", "ds", "out", "--to", "coco", "--on_error", "skip"), ["--on_error", "--on-error"]),
    (("nosuch",), ["nosuch", "segpipe --help"]),
    (("evalute", "ds", "ds"), ["evalute", "did you mean evaluate or validate?"]),
    (("push", "labelstdio"), ["labelstdio", "segpipe push --help"]),
    # missing arguments and options, options without their value
    (("-q", "convert", "ds"), ["missing argument DST", "segpipe convert --help"]),
    (("-q", "convert", "ds", "out"), ["missing option --to"]),
    (("-q", "export", "ds", "out", "--to"), ["option --to needs a value"]),
    # closed sets: refused at parse time, before any cluster, reader or writer
    (("-q", "convert", "ds", "out", "--to", "coco", "--on-error", "ignore", "-w", "0"), ["--on-error", "'ignore'"]),
    (("-q", "convert", "ds", "out", "--to", "coco", "--images", "move"), ["--images", "copy, link, none"]),
    (("-q", "convert", "ds", "out", "--to", "coco", "--layout", "nested"), ["--layout", "'nested'"]),
    (("-q", "evaluate", "ds", "ds", "--task", "detection"), ["--task", "landmarks"]),
    (("-q", "evaluate", "ds", "ds", "--match-classes", "colour"), ["--match-classes", "id, name"]),
    (("-q", "evaluate-checkpoints", "ds", "m.ckpt", "--images", "ds", "--task", "depth"), ["--task"]),
    (("-q", "validate", "ds", "--images", "all", "--json", "v.json"), ["--images", "verify, decode, none"]),
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "o.zarr", "--stretch", "gamma"), ["--stretch", "'gamma'"]),
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "o.zarr", "--task", "pose"), ["--task", "'pose'"]),
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "o.zarr", "--precision", "fp8"), ["--precision", "'fp8'"]),
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "o.zarr", "--gpu-decode", "yes"), ["--gpu-decode", "'yes'"]),
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "o.zarr", "--gpu-decode", "on", "--device", "cpu"),
     ["--gpu-decode on", "--device is cpu"]),
    (("-q", "synth", "streetview", "sy", "--format", "bmp"), ["--format", "'bmp'"]),
    (("models", "--task", "detection"), ["--task", "segpipe models --help"]),
    # values of the wrong type
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "o.zarr", "--tile", "big"), ["--tile", "'big' is not an integer"]),
    (("-q", "evaluate", "ds", "ds", "--worst", "-1"), ["--worst", "-1 is not >= 0"]),
    (("-q", "train", "ds", "--arch", "unet", "--out", "t", "--lr", "fast"), ["--lr", "'fast' is not a number"]),
    (("run", "p.yaml", "--stage", "first"), ["--stage", "'first' is not an integer"]),
    # extra arguments
    (("-q", "validate", "ds", "ds2"), ["unexpected extra argument: ds2"]),
]


@pytest.mark.parametrize(("args", "names"), CASES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_bad_command_line_is_one_line_exit_2(root: Path, args: tuple[str, ...], names: list[str]) -> None:
    check_bad_input(*args, root=root, code=2, names=names, timeout=120)
