"""The HTML writer: self-contained pages that open from disk in any browser (no server, no network).

A viewer folder holds::

    index.html              the page: inline CSS and script
    data/summary.js         window.SEGPIPE = {title, source, gt, classes, roles, sizes, items: {key: [...]}}:
                            one compact record per item (what sorting and filtering need), as
                            columns (see :func:`columns`)
    data/page-NNNNN.js      segpipeDetail(N, [...]): each image's details (metadata, classes, objects),
                            loaded only when an image of page N is opened
    img/NNNNN/KKKK.<layer>.<t|l>.<jpg|png>
                            thumbnails (t) and detail-size images (l): the photo (o) and transparent
                            layers: pre-label (p), ground truth (g), error (e), instances (i), keypoints (k)

Data files are scripts, not JSON, because browsers refuse ``fetch`` of ``file://`` URLs. An item of
the summary (keys kept short: 100k items load in about a second)::

    {"n": name, "kind": "image"|"scene"|"volume", "w", "h", "fr": [{"b": file prefix, "L": layers,
     "pg": page, "pi": index in page, "z"?}], "c": [class ids], "gc": [ground-truth class ids],
     "d": doubt (mean entropy), "m": mean margin, "e": error, "u": IoU, "ni": objects, "s": mean score,
     "sp": split, "t": searchable text, "f": why it could not be shown}

The evaluation reports use :func:`document` and :func:`table` for the same look.
"""

from __future__ import annotations

import html as _html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segpipe.storage.atomic import write_bytes_atomic
from segpipe.view.assets import CSS, JS

__all__ = ["document", "esc", "table", "write_page", "write_viewer"]


def esc(value: Any) -> str:
    """Text escaped for HTML (quotes too: it also goes into attributes)."""
    return _html.escape(str(value), quote=True)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (JSON has neither)."""
    t = type(obj)
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is dict or isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [_finite(v) for v in obj]
    return obj


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a script file (no ``</script>`` or line separators break out)."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN somewhere: only then walk the whole object
        text = json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def columns(items: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Records as columns (``{key: [value or None per record]}``): 100k items without 100k copies of each key.

    A frame's file prefix (``b``) is left out when it is the one its page and index give
    (``img/<page>/<index>``), and its size when it is its item's: the page computes them.
    """
    keys: dict[str, None] = {}
    for it in items:
        keys.update(dict.fromkeys(it))
    out: dict[str, list[Any]] = {k: [] for k in keys}
    for it in items:
        for k in keys:
            v = it.get(k)
            if k == "fr" and v:
                v = [_frame(f, it) for f in v]
            out[k].append(v)
    return out


def _frame(f: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    g = dict(f)
    if g.get("b") == f"img/{int(g.get('pg', -1)):05d}/{int(g.get('pi', -1)):04d}":
        del g["b"]
    for k in ("w", "h"):
        if k in g and g[k] == item.get(k):
            del g[k]
    return g


def document(title: str, body: str, *, script: str = "", head: str = "") -> str:
    """A complete page: ``title``, the shared stylesheet, ``body`` (HTML) and an inline ``script``.

    Args:
        title: Shown in the tab (escaped here).
        body: The body's HTML (already escaped by the caller).
        script: JavaScript run at the end of the body.
        head: More HTML for the head.

    Returns:
        The page as text.
    """
    tail = f"<script>{script}</script>" if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style>{head}</head>\n<body>\n{body}\n{tail}\n</body></html>\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = (),
          row_class: Sequence[str] | None = None, raw: Sequence[int] = ()) -> str:
    """An HTML table.

    Args:
        headers: Column titles.
        rows: Cells (escaped, except the columns in ``raw``, which hold HTML already).
        numeric: Right-aligned columns.
        row_class: A class per row (e.g. ``best``), or None.
        raw: Columns whose cells are HTML.

    Returns:
        ``<table class="data">…</table>``.
    """
    num = set(numeric)
    out = ['<table class="data"><tr>']
    out += [f'<th{" class=num" if i in num else ""}>{esc(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr>")
    for k, row in enumerate(rows):
        cls = f' class="{esc(row_class[k])}"' if row_class and row_class[k] else ""
        out.append(f"<tr{cls}>")
        for i, cell in enumerate(row):
            text = str(cell) if i in raw else esc(cell)
            out.append(f'<td{" class=num" if i in num else ""}>{text}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


_VIEWER_BODY = """
<header><h1 id="title">segpipe view</h1><div class="sub" id="sub"></div></header>
<div id="app">
<aside>
  <h2>Layers</h2><div id="layers"></div>
  <label>opacity <input id="alpha" type="range" min="0" max="1" step="0.05" value="0.75"></label>
  <h2>Sort</h2><select id="sort"></select>
  <h2>Filter</h2>
  <input id="q" type="search" placeholder="name or metadata (e.g. split=val)">
  <label>doubt ≥ <span id="fdv">0.00</span><input id="fd" type="range" min="0" max="1" step="0.01" value="0"></label>
  <label>error ≥ <span id="fev">0%</span><input id="fe" type="range" min="0" max="1" step="0.01" value="0"></label>
  <label>kind <select id="kind"><option value="">all</option><option value="image">images</option>
    <option value="scene">scenes</option><option value="volume">volumes</option></select></label>
  <label><input id="failed" type="checkbox"> only what could not be shown</label>
  <label>per page <select id="size"><option>50</option><option selected>100</option><option>200</option>
    <option>500</option></select></label>
  <h2>Legend · click to filter</h2><ul id="legend"></ul>
  <p class="note">Doubt is the mean normalised entropy of the stored class probabilities (0: certain,
  1: every class equally likely); error is the share of scored pixels where the labels differ from the
  ground truth.</p>
</aside>
<main>
  <p id="problems" class="warn" hidden></p>
  <div id="status"></div>
  <div class="pager" id="pager"></div>
  <div id="grid"></div>
  <div class="pager" id="pager2"></div>
</main>
</div>
<div id="modal" hidden><div class="box"><div class="view"></div><div class="info"></div></div></div>
<script src="data/summary.js"></script>
"""


def write_viewer(out: str | Path, summary: Mapping[str, Any]) -> Path:
    """Writes ``index.html`` and ``data/summary.js`` (the page files are written by the page tasks).

    Args:
        out: The report folder.
        summary: ``{title, source, gt, roles, classes, page_size, sizes, images, failed, problems, items}``.

    Returns:
        The path of ``index.html``.
    """
    folder = Path(out)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    packed = {**summary, "items": columns(summary.get("items") or [])}
    write_bytes_atomic(folder / "data" / "summary.js", f"window.SEGPIPE = {_script_json(packed)};\n".encode())
    index = folder / "index.html"
    write_bytes_atomic(index, document(f"{summary.get('title', 'segpipe')} · segpipe view", _VIEWER_BODY,
                                       script=JS).encode())
    return index


def write_page(out: str | Path, index: int, details: Sequence[Mapping[str, Any]]) -> Path:
    """Writes ``data/page-NNNNN.js``: the details of page ``index``'s images, in page order.

    Returns:
        Its path.
    """
    path = Path(out) / "data" / f"page-{index:05d}.js"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, f"segpipeDetail({int(index)}, {_script_json(list(details))});\n".encode())
    return path
