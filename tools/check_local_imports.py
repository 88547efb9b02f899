#!/usr/bin/env python3
"""Lists function-local imports that do not say why they are local.

A function-local import is for keeping start-up light only (docs/architecture.md, "Function-local
imports"): the CLI answers ``--help`` without numpy, a driver plans without torch. Each one carries a
``# lazy: <reason>`` comment, on the statement's own lines or on the comment line right above it (one
comment may head a group of consecutive imports, as ``tests/test_lazy_imports.py`` accepts). An import
inside a function or method body without one is an offender: it either belongs at module level or
hides an import cycle that should be broken instead. Imports under ``if TYPE_CHECKING:`` never run and
are fine anywhere.

Usage::

    python tools/check_local_imports.py [--count-only] [PATH ...]

PATH (default ``segpipe``, beside this folder) is a package folder or a ``.py`` file. Prints
``path:line: name`` per offender, then the count; exits 1 when there is any offender, unless
``--count-only`` (the Makefile's ``LOCAL_IMPORTS_STRICT=0``), which prints only the count and exits 0.
Exits 2 when a file cannot be read or parsed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "# lazy:"


@dataclass(frozen=True)
class Offender:
    """One unexplained function-local import."""

    path: Path
    line: int
    name: str

    def __str__(self) -> str:
        return f"{_shown(self.path)}:{self.line}: {self.name}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _imported_name(node: ast.Import | ast.ImportFrom) -> str:
    """``a.b`` for ``import a.b``; ``pkg.mod`` for ``from pkg.mod import x``; ``..mod`` for relative ones."""
    if isinstance(node, ast.Import):
        return ", ".join(alias.name for alias in node.names)
    return "." * node.level + (node.module or "")


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (any module alias)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _explained(node: ast.stmt, lines: Sequence[str]) -> bool:
    """Whether ``# lazy:`` is on the statement's lines or on the comment/import lines just above it."""
    end = node.end_lineno or node.lineno
    if any(MARK in ln for ln in lines[node.lineno - 1 : end]):
        return True
    i = node.lineno - 2
    while i >= 0 and lines[i].strip().startswith(("#", "import ", "from ")):
        if MARK in lines[i]:
            return True
        i -= 1
    return False


def _local_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement inside a function body, skipping ``if TYPE_CHECKING:`` blocks."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the else branch does run
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), in_function)
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if inside and isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            yield from visit(child, inside)

    yield from visit(tree, False)


def check_file(path: Path) -> list[Offender]:
    """The unexplained function-local imports of one file, in line order.

    Raises:
        OSError, UnicodeDecodeError, SyntaxError: the file cannot be read or parsed.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    found = [Offender(path, n.lineno, _imported_name(n)) for n in _local_imports(tree) if not _explained(n, lines)]
    return sorted(found, key=lambda o: o.line)


def python_files(paths: Sequence[Path]) -> list[Path]:
    """``.py`` files under ``paths`` (folders searched recursively), sorted, ``__pycache__`` left out."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*.py")) if "__pycache__" not in f.parts)
        else:
            out.append(p)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the check; returns the exit status (0 clean or ``--count-only``, 1 offenders, 2 unreadable)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[REPO / "segpipe"], help="folders or .py files")
    ap.add_argument("--count-only", action="store_true", help="print the count only and exit 0 (not strict)")
    args = ap.parse_args(argv)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"error: {missing[0]}: no such file or folder", file=sys.stderr)
        return 2
    offenders: list[Offender] = []
    for f in python_files(args.paths):
        try:
            offenders.extend(check_file(f))
        except (OSError, UnicodeDecodeError, SyntaxError) as e:
            print(f"error: {_shown(f)}: cannot be checked: {e}", file=sys.stderr)
            return 2
    if not args.count_only:
        for o in offenders:
            print(o)
    print(f"{len(offenders)} function-local import(s) without '{MARK} <reason>'")
    return 1 if offenders and not args.count_only else 0


if __name__ == "__main__":
    sys.exit(main())
