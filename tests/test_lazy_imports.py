"""A function-local import keeps start-up light and says so: ``# lazy: <reason>`` (docs/architecture.md).

A local import that dodges an import cycle hides a design problem; ``lint-imports`` (``make lint``)
finds the cycles, this test finds the unexplained local imports. It covers the packages already
cleaned; add a package here once its local imports are moved up or explained.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "segpipe"
# The whole package: every function-local import says why it is lazy (make lint checks the same).
CHECKED = ["."]


def _files() -> list[Path]:
    out: list[Path] = []
    for rel in CHECKED:
        p = ROOT / rel
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def unexplained_local_imports(path: Path) -> list[str]:
    """``line: statement`` for each import inside a function without a ``# lazy:`` reason.

    The reason is on the statement's own lines, or on a comment line right above a group of imports.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if inside and isinstance(child, (ast.Import, ast.ImportFrom)):
                end = child.end_lineno or child.lineno
                ok = any("# lazy:" in line for line in lines[child.lineno - 1:end])
                i = child.lineno - 2
                while not ok and i >= 0 and lines[i].strip().startswith(("#", "import ", "from ")):
                    ok = "# lazy:" in lines[i]
                    i -= 1
                if not ok:
                    found.append(f"{child.lineno}: {ast.unparse(child)}")
            visit(child, inside)

    visit(ast.parse("\n".join(lines)), False)
    return found


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_local_imports_say_why(path: Path) -> None:
    assert unexplained_local_imports(path) == [], f"{path}: a local import without '# lazy: <reason>'"


def test_the_check_finds_an_unexplained_one(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import zarr\n\n\ndef g():\n    # lazy: 0.5 s\n    import zarr\n    import numcodecs\n")
    assert unexplained_local_imports(f) == ["2: import zarr"]
