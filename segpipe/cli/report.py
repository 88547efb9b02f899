"""Rendering of reports on the terminal."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from segpipe.pipeline.eval_specs import Leaderboard


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


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else "n/a"
    return str(v)


def print_leaderboard(board: Leaderboard, columns: list[str], console: Console) -> None:
    """The checkpoints ranked by the board's metric, best first (the order given is in the ``#`` column).

    Args:
        board: ``evaluate_checkpoints``' result (``metric``, ``rows``).
        columns: The metric columns by name (``mIoU`` ...), the ranking one first.
        console: Where to print.
    """
    from segpipe.view.reports import rank_rows  # lazy: only evaluate-checkpoints ranks

    metric = board.metric
    rows = [r.to_json() for r in board.rows]  # keyed by column name, as leaderboard.json and the HTML page rank them
    order = {id(r): i for i, r in enumerate(rows, 1)}
    t = Table(title=f"leaderboard: ranked by {metric}, best first", show_edge=False)
    t.add_column("rank", justify="right")
    t.add_column("checkpoint")
    t.add_column("#", justify="right")
    for c in columns:
        t.add_column(c, justify="right", style="bold" if c == metric else None)
    for k, r in enumerate(rank_rows(rows, metric), 1):
        t.add_row(str(k), r["name"], str(order[id(r)]), *[_cell(r.get(c)) for c in columns])
    console.print(t)


#: What each stage's summary shows in the run table (the key, then how it is named).
_RESULT_KEYS = (("images", "images"), ("img_s", "img/s"), ("losses", "losses"), ("headline", ""), ("best", "best"))


def _stage_result(s: dict[str, Any]) -> str:
    parts: list[str] = []
    for key, label in _RESULT_KEYS:
        v = s.get(key)
        if v is None or (v in ({}, "") and key != "losses"):
            continue
        if key == "images" and isinstance(v, dict):
            parts.append(f"{v.get('done', 0)}/{v.get('total', 0)} images" if "total" in v else
                         ", ".join(f"{k} {n}" for k, n in v.items()))
        elif key == "images":
            parts.append(f"{v} images")
        elif key == "losses":
            parts.append("losses: " + ", ".join(f"{k}={n}" for k, n in v.items()) if v else "lossless")
        elif key == "headline" and isinstance(v, dict):
            parts.append(", ".join(f"{k.replace('_', ' ')} {_cell(n)}" for k, n in v.items()))
        else:
            parts.append(f"{label} {_cell(v)}")
    return "; ".join(parts)


def print_run_summary(summaries: list[dict[str, Any]], console: Console) -> None:
    """One row per stage of a pipeline run: what it made, where, how long it took.

    Args:
        summaries: ``run_pipeline``'s stage summaries.
        console: Where to print.
    """
    from rich.markup import escape  # lazy: only `segpipe run` prints stage results

    t = Table(title="pipeline run", show_edge=False)
    t.add_column("#", justify="right")
    t.add_column("stage")
    t.add_column("output")
    t.add_column("result")
    t.add_column("seconds", justify="right")
    for s in summaries:
        where = s.get("out") or s.get("report") or ""
        result = _stage_result({k: v for k, v in s.items() if k != "failed"})
        result = escape(result) + (f" [red]{s['failed']} failed[/red]" if s.get("failed") else "")
        secs = s.get("seconds")
        t.add_row(str(s.get("stage", "")), escape(str(s.get("step", ""))), escape(str(where)), result,
                  f"{secs:.1f}" if isinstance(secs, (int, float)) else "")
    console.print(t)
