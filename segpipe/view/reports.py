"""HTML pages of the evaluation reports (``segpipe evaluate`` and ``evaluate-checkpoints``), in the viewer's style.

Pure: report dictionaries in, page text out (the callers write it). Every value shown is escaped; the
page links only files beside it (plots, worst-image panels, per-checkpoint reports).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from segpipe.view.colors import css_rgb
from segpipe.view.html import document, esc, table

__all__ = ["evaluation_page", "leaderboard_page", "rank_rows"]

#: The FCN paper's four figures, as the report names them, with what each says.
SEMANTIC_HEADLINE = (
    ("pixel_accuracy", "pixel accuracy", "share of scored pixels labelled right"),
    ("mean_accuracy", "mean accuracy", "per-class pixel accuracy, averaged over the ground truth's classes"),
    ("mean_iou", "mean IoU", "intersection over union per class, averaged over classes on either side"),
    ("fw_iou", "frequency-weighted IoU", "IoU per class weighted by its share of the ground truth's pixels"),
)


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _bar(v: Any, color: str = "var(--accent)") -> str:
    """A value in [0, 1] with a bar of its length."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return "n/a"
    width = max(1, round(100 * min(1.0, float(v))))
    return f'<span class="bar" style="width:{width}px;background:{color}"></span> {float(v):.4f}'


def _swatch(rgb: Sequence[int] | None) -> str:
    return f'<span class="swatch" style="background:{css_rgb(rgb)}"></span>' if rgb else ""


def _tiles(items: Iterable[tuple[str, Any, str]]) -> str:
    out = ['<div class="tiles">']
    for label, value, note in items:
        out.append(f'<div class="tile"><div class="note">{esc(label)}</div><div class="big">{esc(_num(value))}</div>'
                   f'<div class="note">{esc(note)}</div></div>')
    out.append("</div>")
    return "".join(out)


def _confusion_table(sem: Mapping[str, Any], colors: Mapping[int, Sequence[int]]) -> str:
    """The confusion matrix with its values: % of each ground-truth row (counts on hover); classes absent
    from both sides left out.
    """
    cm = sem.get("confusion") or []
    per = sem.get("per_class") or []
    n = len(cm)
    keep = [i for i in range(n) if any(cm[i]) or any(cm[r][i] for r in range(n))]
    if not keep or len(keep) > 60:
        return '<p class="note">The matrix has too many classes for a table: see confusion.png.</p>' if keep else ""
    head = ['<table class="data"><tr><th>ground truth ↓ / predicted →</th>']
    for j in keep:
        row: Mapping[str, Any] = per[j] if j < len(per) else {"id": j, "name": str(j)}
        head.append(f'<th class="num">{_swatch(colors.get(int(row["id"])))}{esc(row["name"])}</th>')
    head.append("</tr>")
    body = []
    for i in keep:
        row = per[i] if i < len(per) else {"id": i, "name": str(i)}
        total = sum(cm[i]) or 0
        cells = [f"<td>{_swatch(colors.get(int(row['id'])))}{esc(row['name'])}</td>"]
        for j in keep:
            v = cm[i][j] / total if total else 0.0
            shade = f"rgba(37,99,235,{0.08 + 0.8 * v:.2f})" if v > 0 else "transparent"
            fg = "#fff" if v > 0.55 else "inherit"
            text = f"{100 * v:.1f}%" if total else "—"
            strong = "font-weight:600;" if i == j else ""
            cells.append(f'<td class="num" style="background:{shade};color:{fg};{strong}" '
                         f'title="{int(cm[i][j])} pixels">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    left = n - len(keep)
    note = (f'<p class="note">{left} class(es) with no pixel on either side left out.</p>' if left else "")
    return "".join(head) + "".join(body) + "</table>" + note


def _semantic(sem: Mapping[str, Any], colors: Mapping[int, Sequence[int]]) -> str:
    out = ["<h2>Semantic segmentation</h2>", _tiles((label, sem.get(k), note) for k, label, note in SEMANTIC_HEADLINE)]
    cm = sem.get("confusion") or []
    rows, classes = [], []
    for i, r in enumerate(sem.get("per_class") or []):
        gt_px = sum(cm[i]) if i < len(cm) else 0
        pred_px = sum(cm[k][i] for k in range(len(cm))) if i < len(cm) else 0
        rgb = colors.get(int(r["id"]))
        color = css_rgb(rgb) if rgb else "var(--accent)"
        rows.append([f"{_swatch(rgb)}{esc(r['name'])}", r["id"], _bar(r.get("iou"), color), _num(r.get("accuracy")),
                     _num(r.get("dice")), f"{gt_px:,}", f"{pred_px:,}"])
        classes.append("" if gt_px or pred_px else "absent")
    out.append("<h2>Per class</h2>")
    out.append(table(["class", "id", "IoU", "accuracy", "Dice", "ground-truth pixels", "predicted pixels"], rows,
                     numeric=(1, 2, 3, 4, 5, 6), raw=(0, 2), row_class=classes))
    out.append('<p class="note">n/a: the class has no pixel where the figure is defined (accuracy needs '
               "ground truth; IoU and Dice need either side).</p>")
    out.append("<h2>Confusion matrix</h2>" + _confusion_table(sem, colors))
    return "".join(out)


def _instance(kind: str, sec: Mapping[str, Any]) -> str:
    names = [k for k in sec if k not in ("stats", "per_class")]
    out = [f"<h2>COCO {esc(kind)}</h2>", _tiles((k, sec[k], "") for k in names[:3])]
    out.append(table(names, [[_num(sec[k]) for k in names]], numeric=range(len(names))))
    rows = [[r["name"], r["id"], _bar(r.get("ap")), _num(r.get("ap50")), _num(r.get("ap75"))]
            for r in sec.get("per_class") or []]
    if rows:
        out.append(table(["class", "id", "AP", "AP50", "AP75"], rows, numeric=(1, 2, 3, 4), raw=(2,)))
    out.append('<p class="note">-1: no ground truth of that kind (pycocotools\' convention); '
               "n/a: the class has no ground truth.</p>")
    return "".join(out)


def _panoptic(p: Mapping[str, Any]) -> str:
    groups = {k: p.get(k) or {} for k in ("all", "things", "stuff")}
    out = ["<h2>Panoptic</h2>", _tiles((f"PQ {k}", g.get("pq"), f"{g.get('n', 0)} classes") for k, g in groups.items())]
    out.append(table(["", "PQ", "SQ", "RQ", "N"],
                     [[k, _num(p[k]["pq"]), _num(p[k]["sq"]), _num(p[k]["rq"]), p[k]["n"]]
                      for k in ("all", "things", "stuff") if k in p], numeric=(1, 2, 3, 4)))
    rows = [[r["name"], "thing" if r.get("isthing") else "stuff", _bar(r.get("pq")), _num(r.get("sq")),
             _num(r.get("rq")), r["tp"], r["fp"], r["fn"]]
            for r in p.get("per_class") or [] if r["tp"] + r["fp"] + r["fn"]]
    if rows:
        out.append(table(["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"], rows, numeric=(2, 3, 4, 5, 6, 7),
                         raw=(2,)))
    return "".join(out)


def _worst(worst: Mapping[str, Any]) -> str:
    out = []
    for section, entries in worst.items():
        if not entries:
            continue
        metric = "mIoU" if section == "semantic" else "PQ"
        out.append(f"<h2>Worst images ({esc(section)}, lowest per-image {metric})</h2>")
        for k, e in enumerate(entries, 1):
            name = e["image"][-1] if isinstance(e["image"], list) else e["image"]
            if e.get("overlay"):
                out.append(f'<div class="panel"><img src="{esc(e["overlay"])}" alt="#{k} {esc(name)}" '
                           f'loading="lazy"></div>')
            else:
                out.append(f"<p>#{k} {esc(name)}: {metric} {_num(e.get('score'), 3)}</p>")
    return "".join(out)


def evaluation_page(rep: Mapping[str, Any], *, colors: Mapping[int, Sequence[int]] | None = None,
                    plots: bool = True, files: Iterable[str] = ()) -> str:
    """The ``index.html`` of an evaluation report.

    Args:
        rep: The ``report.json`` content (header keys and sections).
        colors: ``{class id: [r, g, b]}`` (the label map's colours).
        plots: The report has its PNG plots.
        files: The plot files present (``confusion.png``, ``per_class.png``).

    Returns:
        The page.
    """
    colors = colors or {}
    files = set(files)
    sub = []
    if isinstance(rep.get("gt"), Mapping) and isinstance(rep.get("pred"), Mapping):
        sub.append(f"ground truth <code>{esc(rep['gt'].get('path'))}</code> ({esc(rep['gt'].get('format'))}) · "
                   f"predictions <code>{esc(rep['pred'].get('path'))}</code> ({esc(rep['pred'].get('format'))})")
    imgs = rep.get("images")
    if isinstance(imgs, Mapping):
        sub.append(", ".join(f"{esc(v)} {esc(str(k).replace('_', ' '))}" for k, v in imgs.items()))
    task = rep.get("task") or "/".join(k for k in ("semantic", "instance", "panoptic") if k in rep)
    body = [f'<header><h1>Evaluation report: {esc(task)}</h1><div class="sub">{"<br>".join(sub)}</div></header>',
            '<div class="wrap">']
    problems = rep.get("problems") or []
    if problems:
        body.append(f'<p class="warn">{len(problems)} problem(s): ' + "; ".join(
            esc(f"{p.get('file')}: {p.get('message')}") for p in problems[:5]) + (" …" if len(problems) > 5 else "")
            + "</p>")
    if "semantic" in rep:
        body.append(_semantic(rep["semantic"], colors))
    for kind, sec in (rep.get("instance") or {}).items():
        body.append(_instance(kind, sec))
    if "panoptic" in rep:
        body.append(_panoptic(rep["panoptic"]))
    if plots and files:
        body.append('<h2>Plots</h2><div class="panels">')
        for name, title in (("confusion.png", "Confusion matrix"), ("per_class.png", "Per class")):
            if name in files:
                body.append(f'<div class="panel"><h3>{title}</h3><img src="{name}" alt="{title}"></div>')
        body.append("</div>")
    body.append(_worst(rep.get("worst") or {}))
    body.append('<p class="note">Files: report.json, summary.md, per_class.csv beside this page.</p></div>')
    return document(f"Evaluation report: {task}", "\n".join(body))


def rank_rows(rows: Sequence[Mapping[str, Any]], metric: str) -> list[Mapping[str, Any]]:
    """Rows sorted by ``metric``, best (largest) first; rows without it last, in their order."""
    return sorted(rows, key=lambda r: (r.get(metric) is None, -(r.get(metric) or 0.0)))


def leaderboard_page(board: Mapping[str, Any], columns: Sequence[str]) -> str:
    """The ``index.html`` of ``evaluate-checkpoints``: the checkpoints ranked by the board's metric.

    Args:
        board: ``{"task", "gt", "metric", "rows": [...], "best", "problems"}``.
        columns: The metric columns, the ranking one first.

    Returns:
        The page.
    """
    metric = board["metric"]
    ranked = rank_rows(board.get("rows") or [], metric)
    rows, classes = [], []
    for k, r in enumerate(ranked, 1):
        link = f'<a href="reports/{esc(r["name"])}/index.html">{esc(r["name"])}</a>'
        rows.append([k, link, "" if r.get("epoch") is None else r["epoch"],
                     *[_bar(r.get(c)) if c == metric else _num(r.get(c)) for c in columns],
                     _num(r.get("img_s"), 2), _num(r.get("seconds"), 1)])
        classes.append("best" if k == 1 and r.get(metric) is not None else "")
    heads = ["rank", "checkpoint", "epoch", *columns, "img/s", "seconds"]
    num = [0, 2, *range(3, len(heads))]
    body = [f'<header><h1>Leaderboard: {esc(board.get("task"))}, ranked by {esc(metric)} (best first)</h1>'
            f'<div class="sub">ground truth <code>{esc(board.get("gt"))}</code> · {len(ranked)} checkpoints</div>'
            "</header>", '<div class="wrap">']
    for p in board.get("problems") or []:
        body.append(f'<p class="warn">{esc(p.get("checkpoint"))}: {esc(p.get("prelabel_failed"))} image(s) failed '
                    f'to pre-label, {esc(p.get("evaluate_errors"))} could not be evaluated</p>')
    raw = (1, 3 + list(columns).index(metric)) if metric in columns else (1,)
    body.append(table(heads, rows, numeric=num, raw=raw, row_class=classes))
    body.append('<p class="note">Each checkpoint\'s name opens its evaluation report. Files: leaderboard.md, '
                "leaderboard.csv, leaderboard.json.</p>")
    body.append('<h2>Metrics across the checkpoints (in the order given)</h2>'
                '<div class="panel"><img src="metrics.png" alt="metrics per checkpoint"></div></div>')
    return document(f"Leaderboard: {board.get('task')}", "\n".join(body))
