"""Click usage errors are one ``error:`` line on stderr and exit 2, naming the option or command and --help.

Issue 15, point 5: unknown options and commands, missing arguments, bad choices and bad types read
like every other segpipe error (``error: <what> (see `segpipe CMD --help`)``), with a "did you mean"
where one is close, and never click's usage block or an "internal error".
"""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

CASES = [
    (("synth", "-q"), "no such option: -q (global options go before the command: `segpipe -q synth ...`)"),
    (("synth", "streetview", "out", "--nope"),
     "no such option: --nope; did you mean --n? (see `segpipe synth --help`)"),
    (("synth", "streetview", "out", "-z"), "no such option: -z (see `segpipe synth --help`)"),
    (("--nope",), "no such option: --nope (see `segpipe --help`)"),
    (("nosuch",), "no such command: nosuch (see `segpipe --help`)"),
    (("prelabl",), "no such command: prelabl; did you mean prelabel? (see `segpipe --help`)"),
    (("push", "nosuch"), "no such command: nosuch (see `segpipe push --help`)"),
    (("-q",), "missing command (see `segpipe --help`)"),
    (("evaluate",), "missing argument GT (see `segpipe evaluate --help`)"),
    (("push", "labelstudio"), "missing argument STORE (see `segpipe push labelstudio --help`)"),
    (("convert", "a", "b"), "missing option --to (see `segpipe convert --help`)"),
    (("evaluate", "a", "b", "--task", "bogus"),
     "invalid value for --task: 'bogus' is not one of semantic, instance, panoptic, landmarks "
     "(see `segpipe evaluate --help`)"),
    (("models", "--task", "bogus"),
     "invalid value for --task: 'bogus' is not one of semantic, instance, panoptic, landmarks "
     "(see `segpipe models --help`)"),
    (("evaluate", "a", "b", "--on-error", "nope"),
     "invalid value for --on-error: 'nope' is not one of skip, fail (see `segpipe evaluate --help`)"),
    (("export", "a", "b", "--to", "coco", "--images", "all"),
     "invalid value for --images: 'all' is not one of copy, link, none (see `segpipe export --help`)"),
    (("synth", "streetview", "out", "--n"), "option --n needs a value (see `segpipe synth --help`)"),
    (("synth", "streetview", "out", "--n", "1.5"),
     "invalid value for --n: '1.5' is not an integer (see `segpipe synth --help`)"),
    (("synth", "streetview", "out", "--n", "0"), "invalid value for --n: 0 is not >= 1 (see `segpipe synth --help`)"),
    (("demo", "--epochs", "5000"), "invalid value for --epochs: 5000 is not <= 1000 (see `segpipe demo --help`)"),
    (("prelabel", "s", "-m", "m", "-o", "o", "-w", "x"),
     "invalid value for --workers: 'x' is not an integer (see `segpipe prelabel --help`)"),
    (("train", "d", "--arch", "unet", "--out", "t", "--lr", "fast"),
     "invalid value for --lr: 'fast' is not a number (see `segpipe train --help`)"),
    (("evaluate", "a", "b", "c"), "unexpected extra argument: c (see `segpipe evaluate --help`)"),
]


@pytest.mark.parametrize(("args", "line"), CASES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_usage_error_is_one_line_exit_2(args: tuple[str, ...], line: str, tmp_path) -> None:
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [f"error: {line}"], r.stderr
    assert r.stdout == ""
    assert list(tmp_path.iterdir()) == []  # refused before anything ran


def test_no_arguments_shows_the_help_and_exits_2() -> None:
    for args in ((), ("push",), ("pull",)):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Usage: segpipe" in r.stdout + r.stderr and "error" not in r.stderr.lower()
