"""Rendering of reports on the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_conversion_report(report: dict[str, Any], console: Console, err: Console | None = None) -> None:
    """Prints the per-category counts and every loss of a conversion.

    Args:
        report: The conversion report.
        console: Where the summary, the counts and the losses go (stdout).
        err: Where the per-image problem lines go (stderr, like every error line); ``console`` when None.
    """
    err = err or console
    src, dst = report["source"], report["target"]
    imgs = report["images"]
    console.print(
        f"{src['format']} → {dst['format']}: {imgs['converted']}/{imgs['total']} images, "
        f"{imgs['failed']} failed, {imgs['missing_files']} image files missing, "
        f"{report['elapsed_s']:.2f} s",
        markup=False,
    )
    losses = report["losses"]
    cin, cout = losses["counts_in"], losses["counts_out"]
    if cin or cout:
        t = Table(title="annotations per category", show_edge=False)
        t.add_column("category")
        t.add_column("in", justify="right")
        t.add_column("out", justify="right")
        for name in sorted(set(cin) | set(cout)):
            t.add_row(name, str(cin.get(name, 0)), str(cout.get(name, 0)))
        console.print(t)
    if losses["lossless"] and imgs["failed"]:  # "lossless" must not read as "complete"
        console.print(f"lossless for the {imgs['converted']} images converted; {imgs['failed']} failed (see the "
                      "errors)", markup=False)
    elif losses["lossless"]:
        console.print("lossless: nothing the target cannot hold", markup=False)
    else:
        t = Table(title="what the target cannot hold", show_edge=False)
        t.add_column("loss")
        t.add_column("count", justify="right")
        t.add_column("meaning")
        for kind, n in losses["totals"].items():
            t.add_row(kind, str(n), losses["notes"].get(kind, ""))
        console.print(t)
    for kind, note in losses["notes"].items():
        if kind not in losses["totals"]:
            console.print(f"note: {note}", markup=False)
    for p in report["problems"][:20]:
        err.print(f"{p['severity']}: {p['file']}: {p['where']}: {p['message']}", markup=False)
    if len(report["problems"]) > 20:
        err.print(f"... and {len(report['problems']) - 20} more problems in the report", markup=False)
