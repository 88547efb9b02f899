"""tools/check_local_imports.py: the `make lint` check for function-local imports without `# lazy: <reason>`.

Runs the tool as `make lint` does (a subprocess) on small files written here, and on the training code
it already guards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "check_local_imports.py"


def run_tool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


MIXED = '''\
    """A module with every kind of import."""
    import json
    from typing import TYPE_CHECKING
    import typing

    if TYPE_CHECKING:
        from pathlib import Path


    class A:
        import os  # a class body at module level is no function

        def method(self):
            import zarr
            return zarr

        async def fetch(self):
            from ..storage import atomic
            return atomic


    def explained():
        import numcodecs  # lazy: 0.3 s, only for compressed stores
        # lazy: torch costs seconds; only training needs it
        import torch
        import torch.nn as nn
        from PIL import Image
        return numcodecs, torch, nn, Image


    def outer():
        def inner():
            import dask.array, dask.bag
            return dask
        return inner


    def typing_only():
        if TYPE_CHECKING:
            import numpy
        if typing.TYPE_CHECKING:
            import pandas
        else:
            import xarray
        return None


    def comment_too_far():
        # lazy: a reason two lines above, with code between, explains nothing
        x = 1
        import yaml
        return x, yaml
'''


def test_lists_each_unexplained_local_import_and_fails(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "mixed.py", MIXED)
    r = run_tool("pkg", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines() == [
        "pkg/mixed.py:14: zarr",
        "pkg/mixed.py:18: ..storage",
        "pkg/mixed.py:33: dask.array, dask.bag",
        "pkg/mixed.py:44: xarray",
        "pkg/mixed.py:51: yaml",
        "5 function-local import(s) without '# lazy: <reason>'",
    ]
    assert r.stderr == ""


def test_count_only_passes_with_the_count(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "mixed.py", MIXED)
    r = run_tool("--count-only", "pkg", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout == "5 function-local import(s) without '# lazy: <reason>'\n"


def test_clean_tree_passes_and_caches_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "__init__.py", "import os\n")
    write(tmp_path / "pkg" / "sub" / "ok.py", "def f():\n    import zarr  # lazy: 0.5 s\n    return zarr\n")
    write(tmp_path / "pkg" / "__pycache__" / "stale.py", "def f():\n    import zarr\n")
    r = run_tool("pkg", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "0 function-local import(s) without '# lazy: <reason>'\n")


def test_single_files_are_checked_too(tmp_path: Path) -> None:
    f = write(tmp_path / "one.py", "def f():\n    import zarr\n")
    r = run_tool(f, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout.splitlines()[0] == "one.py:2: zarr"


def test_unparsable_or_missing_input_is_one_error_line(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "broken.py", "def f(:\n")
    r = run_tool("pkg", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: pkg/broken.py: cannot be checked:") and len(r.stderr.splitlines()) == 1
    r = run_tool("nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: nope: no such file or folder"


def test_training_and_architectures_are_clean() -> None:
    models = REPO / "segpipe" / "models"
    r = run_tool(models / "train.py", models / "training", models / "architectures", cwd=REPO)
    assert (r.returncode, r.stdout) == (0, "0 function-local import(s) without '# lazy: <reason>'\n"), r.stdout
