"""The bad-input corpus harness: one call runs the real CLI on a bad input and checks the promise.

The promise, for every case: the exit code the README gives (1 problems / partial failure, 2 cannot
run), exactly one ``error:`` line on stderr naming the file and the field (or the option), no
traceback, no ``internal error``, and nothing changed under the case's root except the paths the
case names as outputs: inputs stay byte-identical, nothing is written beside them.

Each reader or command adds its cases in a ``test_*.py`` file of this folder; every case goes
through :func:`check_bad_input`, so the whole corpus asserts that none of them says "internal error".
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli


def tree_state(root: Path, exclude: Sequence[Path] = ()) -> dict[str, str]:
    """Every path under ``root`` (relative) mapped to its kind and content digest.

    Args:
        root: The folder to describe.
        exclude: Paths (and everything below them) left out: the case's permitted outputs.

    Returns:
        ``{"rel/path": "dir" | "link:<target>" | "<sha256 of the bytes>"}``.
    """
    ex = [Path(e).resolve() for e in exclude]
    state: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in [*dirnames, *filenames]:
            p = d / name
            rp = p.resolve() if not p.is_symlink() else p.parent.resolve() / p.name
            if any(rp == e or e in rp.parents for e in ex):
                continue
            rel = str(p.relative_to(root))
            if p.is_symlink():
                state[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        dirnames[:] = [n for n in dirnames if not (d / n).is_symlink()]
    return state


def _diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added[:10]}, removed {removed[:10]}, changed {changed[:10]}"


def check_bad_input(
    *args: str,
    root: Path,
    code: int,
    names: Sequence[str] = (),
    outputs: Sequence[Path] = (),
    one_line: bool = True,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Runs ``segpipe ARGS`` and asserts the bad-input promise.

    Args:
        *args: The command line after ``segpipe``.
        root: The case's folder: nothing under it may change except ``outputs``.
        code: The expected exit code (1 or 2).
        names: Strings the error line must contain (the file, the field or the option).
        outputs: Paths the command may create or change (a refused run must leave them as they were
            too, unless the case says otherwise by listing them here).
        one_line: Exactly one ``error:`` line and no other non-warning line on stderr; ``False``
            for per-item failure reports (several lines, each checked for tracebacks only).
        cwd: Working folder of the command (default: ``root``).
        timeout: Seconds before the case counts as a hang.

    Returns:
        The finished process, for case-specific assertions.
    """
    before = tree_state(root, outputs)
    r = run_cli(*args, cwd=cwd or root, timeout=timeout)
    after = tree_state(root, outputs)
    where = f"segpipe {' '.join(args)}\nrc={r.returncode}\nstderr:\n{r.stderr[-3000:]}\nstdout:\n{r.stdout[-1500:]}"
    assert r.returncode == code, where
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, where
    assert "internal error" not in r.stderr.lower() and "internal error" not in r.stdout.lower(), where
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if one_line:
        assert len(errors) == 1 and len(lines) == 1, where
    else:
        assert errors, where
    for name in names:
        assert any(name in ln for ln in errors), f"{name!r} not named\n{where}"
    assert before == after, f"files changed outside the outputs: {_diff(before, after)}\n{where}"
    return r


def synth_with_unet(data: Path, ckpt: Path, *, n: int, seed: int, size: tuple[int, int]) -> None:
    """``data``: ``n`` synthetic street-view images of ``size`` (``seed``); ``ckpt``: a tiny U-Net for its classes.

    The U-Net (base 8, depth 2, torch seed 0) is semantic, tiled at the images' shorter side, untrained.
    """
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model
    from segpipe.synth import synth

    synth("streetview", data, n=n, seed=seed, size=size)
    names = [ln.split(":")[0] for ln in (data / "labelmap.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    torch.manual_seed(0)
    kw = {"base": 8, "depth": 2}
    meta = CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                          tile_size=[min(size), min(size)], tile_overlap=0.25, model_kwargs=kw)
    save_checkpoint(ckpt, build_model("unet", len(cats), **kw), meta)


def check_convert_refused(root: Path, names: Sequence[str]) -> None:
    """``segpipe convert ds out --to coco -w 0`` in ``root``: the bad-input promise, exit 2, no ``out``."""
    check_bad_input("convert", "ds", "out", "--to", "coco", "-w", "0", root=root, code=2, names=names,
                    outputs=[root / "out"])
    assert not (root / "out").exists()


def check_validate_one_error(root: Path, fmt: str, names: Sequence[str]) -> None:
    """``segpipe validate ds --format FMT`` in ``root``: exit 1, one ``error:`` line naming ``names``, nothing changed.

    validate lists problems on stdout (one per line) and its summary on stderr, so the corpus's
    one-error-line-on-stderr promise does not apply; the rest of it does.
    """
    before = tree_state(root)
    r = run_cli("validate", "ds", "--format", fmt, cwd=root)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "internal error" not in (r.stdout + r.stderr).lower()
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in names), r.stdout
    assert tree_state(root) == before


def unet_model_fixture(prefix: str) -> Any:
    """A module-scoped pytest fixture: a tiny U-Net checkpoint (its one image is not used)."""

    @pytest.fixture(scope="module")
    def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp(prefix)
        synth_with_unet(root / "data", root / "unet.ckpt", n=1, seed=0, size=(32, 32))
        return root / "unet.ckpt"

    return model
