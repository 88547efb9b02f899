"""Evaluation reports: ``report.json``, a Markdown summary, a per-class CSV and plots.

Files written into the output folder (each atomically):

- ``report.json`` — sections present among:

  - ``semantic``: ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``fw_iou``,
    ``per_class`` (``[{id, name, iou, accuracy, dice}]``), ``confusion`` (``C × C`` counts);
  - ``instance``: one entry per iou type (``segm``, ``bbox``, ``keypoints``) with ``stats``
    (pycocotools order), the same numbers named ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
    ARs, ARm, ARl`` (keypoints: ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl``) and
    ``per_class`` (``[{id, name, ap, ap50, ap75}]``);
  - ``panoptic``: ``all``, ``things``, ``stuff`` (each ``{pq, sq, rq, n}``) and ``per_class``;
  - ``worst``: ``{"semantic": [...], "panoptic": [...]}``, the lowest-scoring images with their
    overlay files.

  Floats are JSON-safe: NaN and infinities are written as ``null``. Fractions stay in ``[0, 1]``;
  pycocotools' ``-1`` ("no ground truth") is kept as is in ``stats`` and the named figures.
- ``summary.md`` — headline figures and per-class tables.
- ``per_class.csv`` — one row per (section, class).
- ``confusion.png`` — the row-normalised semantic confusion matrix, each cell's value written in it;
  classes absent from both sides are left out (no blank rows).
- ``per_class.png`` — per-class IoU / AP / PQ bars with their values, in the classes' colours.
- ``worst/*.png`` — titled panels side by side: ``photo | ground truth | prediction | error`` (semantic,
  red where they differ) or ``photo | ground truth | prediction`` (panoptic segments), with a legend
  of the classes drawn, in the label map's colours.
- ``index.html`` — all of it on one self-contained page (opens from disk): headline figures, per-class
  tables with bars, the confusion matrix with its values, the plots and the worst images.

Plots use matplotlib's object API with the Agg canvas, so no global backend is switched.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segpipe.core.labelmap import voc_colormap
from segpipe.evaluation.cocoeval import CocoResult
from segpipe.evaluation.panoptic import PanopticResult, rgb2id
from segpipe.evaluation.semantic import SemanticResult
from segpipe.storage.atomic import atomic_open, write_bytes_atomic, write_json_atomic
from segpipe.storage.images import read_image, read_rgb_png, write_rgb_png
from segpipe.storage.paths import safe_join
from segpipe.view import render
from segpipe.view.colors import class_colors
from segpipe.view.reports import evaluation_page, leaderboard_page

__all__ = [
    "colorize_labels",
    "json_safe",
    "overlay_triptych",
    "worst_panel",
    "write_leaderboard_html",
    "panoptic_overlay_loader",
    "report_dict",
    "write_report",
]

#: ``loader(key) -> (image (H, W, 3) uint8 or None, gt (H, W) int, pred (H, W) int)``.
OverlayLoader = Callable[[Any], tuple[np.ndarray | None, np.ndarray, np.ndarray]]


def json_safe(obj: Any) -> Any:
    """Converts numpy values and containers to plain JSON types; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _semantic_section(r: SemanticResult) -> dict[str, Any]:
    return {
        "pixel_accuracy": r.pixel_accuracy,
        "mean_accuracy": r.mean_accuracy,
        "mean_iou": r.mean_iou,
        "fw_iou": r.fw_iou,
        "per_class": r.per_class(),
        "confusion": r.confusion,
    }


def _instance_section(r: CocoResult) -> dict[str, Any]:
    out: dict[str, Any] = {"stats": [float(v) for v in r.stats]}
    out.update(r.named)
    out["per_class"] = r.per_class
    return out


def report_dict(
    *,
    semantic: SemanticResult | None = None,
    instance: Mapping[str, CocoResult] | None = None,
    panoptic: PanopticResult | None = None,
) -> dict[str, Any]:
    """The ``report.json`` content (JSON-safe) for the results given."""
    rep: dict[str, Any] = {}
    if semantic is not None:
        rep["semantic"] = _semantic_section(semantic)
    if instance:
        rep["instance"] = {t: _instance_section(r) for t, r in instance.items()}
    if panoptic is not None:
        rep["panoptic"] = panoptic.to_dict()
    return json_safe(rep)


# -- overlays ------------------------------------------------------------------------------------


_PALETTE = voc_colormap(256)


def colorize_labels(labels: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """Colours a label map or segment-id map.

    Labels below 256 use the VOC colour map; larger ids (panoptic segments) get a hashed colour.
    ``ignore_index`` and 0-valued VOID stay as the VOC map has them (255 → cream, 0 → black).

    Args:
        labels: ``(H, W)`` integers.
        ignore_index: Shown in white when given.

    Returns:
        ``(H, W, 3) uint8``.
    """
    lab = np.asarray(labels).astype(np.int64)
    if lab.size and lab.max() < 256 and lab.min() >= 0:
        out = _PALETTE[lab]
    else:
        h = (lab * 2654435761) & 0xFFFFFF
        out = np.stack([(h >> 16) & 255, (h >> 8) & 255, h & 255], axis=-1).astype(np.uint8)
        out[lab == 0] = 0
    if ignore_index is not None:
        out[lab == ignore_index] = 255
    return out


def overlay_triptych(
    image: np.ndarray | None,
    gt: np.ndarray,
    pred: np.ndarray,
    alpha: float = 0.5,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """``image | GT overlay | prediction overlay`` side by side.

    Args:
        image: ``(H, W, 3) uint8`` photo, or None for a grey background.
        gt: ``(H, W)`` labels or segment ids.
        pred: ``(H, W)`` labels or segment ids.
        alpha: Weight of the colours in the overlays.
        ignore_index: Label shown in white.

    Returns:
        ``(H, 3W + 2·gap, 3) uint8``.
    """
    h, w = np.asarray(gt).shape
    if image is None:
        base = np.full((h, w, 3), 128, dtype=np.uint8)
    else:
        base = np.asarray(image)
        if base.ndim == 2:
            base = np.repeat(base[..., None], 3, axis=2)
        base = base[..., :3].astype(np.uint8)
        if base.shape[:2] != (h, w):
            base = np.full((h, w, 3), 128, dtype=np.uint8)
    f = base.astype(np.float32)

    def blend(lab: np.ndarray) -> np.ndarray:
        col = colorize_labels(lab, ignore_index).astype(np.float32)
        return np.clip((1 - alpha) * f + alpha * col + 0.5, 0, 255).astype(np.uint8)

    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([base, gap, blend(gt), gap, blend(pred)], axis=1)


def _safe_name(key: Any) -> str:
    s = re.sub(r"\.(png|jpe?g|tiff?)\b", "", str(key), flags=re.IGNORECASE)
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")
    return s[:60] or "image"


def _key_text(key: Any) -> str:
    """An image key as people read it: ``(id, file)`` keys by their file."""
    if isinstance(key, (tuple, list)) and len(key) == 2:
        return str(key[1])
    return str(key)


def _labels_rgba(labels: np.ndarray, colors: Mapping[int, tuple[int, int, int]] | None,
                 names: Mapping[int, str] | None) -> np.ndarray:
    """``(H, W, 4)`` class colours (label-map colours when given, else :func:`colorize_labels`)."""
    lab = np.asarray(labels)
    if colors:
        top = max(int(lab.max(initial=0)) + 1, max(colors) + 1, 256)
        return render.colorize(lab, render.class_lut(colors, names, top=top, alpha=200))
    rgb = colorize_labels(lab, None)
    return np.concatenate([rgb, np.full((*lab.shape, 1), 200, np.uint8)], axis=-1)


def _over(base: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.clip(base.astype(np.float32) * (1 - a) + rgba[..., :3].astype(np.float32) * a + 0.5, 0,
                   255).astype(np.uint8)


def worst_panel(
    image: np.ndarray | None,
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    title: str,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    names: Mapping[int, str] | None = None,
    ignore_index: int | None = 255,
    error: bool = True,
) -> np.ndarray:
    """One worst image as titled panels side by side, with a legend of the classes drawn.

    ``photo | ground truth | prediction | error`` (the error panel darkens the photo and marks in red
    the pixels where the two differ, ``ignore_index`` left out). Without a photo the panels are drawn
    on grey, and the photo panel says so.

    Args:
        image: ``(H, W, 3) uint8`` photo, or None.
        gt: ``(H, W)`` class ids (or panoptic segment ids, with ``colors`` None and ``error`` False).
        pred: ``(H, W)`` of the same kind.
        title: The line above the panels (rank, image, score).
        colors: ``{class id: (r, g, b)}``: the label map's colours; None colours ids by hashing.
        names: ``{class id: name}`` for the legend.
        ignore_index: Ground-truth value not scored.
        error: Draw the error panel.

    Returns:
        ``(h, w, 3) uint8``.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    h, w = gt.shape
    scale = max(1, 240 // max(1, w)) if w < 240 else 1  # small images are enlarged (labels by nearest)
    size = (h * scale, w * scale)
    note = ""
    photo: np.ndarray | None = None
    if image is not None:
        photo = np.asarray(image)
        photo = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3].astype(np.uint8)
        if photo.shape[:2] != (h, w):
            photo, note = None, "the photo's size differs from the labels'"
    else:
        photo, note = None, "no photo (pass --image-root)"
    base = render.resize_image(photo, size) if photo is not None else np.full((*size, 3), 110, np.uint8)
    g_small, p_small = render.resize_labels(gt, size), render.resize_labels(pred, size)
    panels = [("photo" if photo is not None else note, base),
              ("ground truth", _over(base, _labels_rgba(g_small, colors, names))),
              ("prediction", _over(base, _labels_rgba(p_small, colors, names)))]
    if error:
        err, frac = render.error_layer(g_small, p_small, () if ignore_index is None else (ignore_index,))
        dark = base  # the error layer darkens the pixels that are right itself
        label = "error: red = differs" + (f" ({100 * frac:.1f}% of pixels)" if frac is not None else "")
        panels.append((label, _over(dark, err)))
    pw, gap, head, cap = size[1], 6, 26, 22
    present = [int(v) for v in np.union1d(np.unique(gt), np.unique(pred))
               if colors and int(v) in colors and int(v) != ignore_index
               and str((names or {}).get(int(v), "")).lower() not in render.UNDRAWN]
    legend_rows = max(1, math.ceil(len(present) * 130 / max(1, len(panels) * (pw + gap)))) if present else 0
    width = len(panels) * (pw + gap) - gap
    canvas = Image.new("RGB", (width, head + cap + size[0] + 22 * legend_rows + 6), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font, small = render.font(15), render.font(12)
    draw.text((2, 4), title, font=font, fill=(20, 20, 20))
    for k, (label, arr) in enumerate(panels):
        x = k * (pw + gap)
        draw.text((x + 2, head + 3), label, font=small, fill=(60, 60, 60))
        canvas.paste(Image.fromarray(arr), (x, head + cap))
    x, y = 2, head + cap + size[0] + 6
    for cid in present:
        name = str((names or {}).get(cid, cid))
        if x + 130 > width:
            x, y = 2, y + 22
        draw.rectangle((x, y + 2, x + 14, y + 16), fill=tuple(colors[cid]) if colors else (0, 0, 0),
                       outline=(80, 80, 80))
        draw.text((x + 19, y + 2), name[:16], font=small, fill=(30, 30, 30))
        x += 130
    return np.asarray(canvas)


# -- plots ---------------------------------------------------------------------------------------


def _save_figure(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib costs ~0.4 s to import

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(path, buf.getvalue())


def present_classes(confusion: np.ndarray) -> np.ndarray:
    """Indices of the classes with a pixel on either side (a row or a column of the matrix that is not 0)."""
    cm = np.asarray(confusion)
    return np.flatnonzero((cm.sum(axis=1) > 0) | (cm.sum(axis=0) > 0))


def _plot_confusion(r: SemanticResult, path: Path) -> None:
    from matplotlib.figure import Figure  # lazy: matplotlib costs ~0.4 s to import

    keep = present_classes(r.confusion)
    cm = r.confusion.astype(np.float64)[np.ix_(keep, keep)]
    names = [r.class_names[i] for i in keep]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    c = len(keep)
    size = min(3.5 + 0.55 * c, 26)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the ground-truth class's pixels")
    ticks = np.arange(c)
    fs = 10 if c <= 20 else 8 if c <= 40 else 6
    if c <= 80:
        ax.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fs)
        ax.set_yticks(ticks, labels=names, fontsize=fs)
    if c <= 30:  # the values themselves, in percent of the row
        for i in range(c):
            for j in range(c):
                if rows[i, 0] == 0:
                    continue
                v = norm[i, j]
                ax.text(j, i, f"{100 * v:.0f}" if v >= 0.005 or v == 0 else "<1", ha="center", va="center",
                        fontsize=max(6, fs - 1), color="white" if v > 0.5 else "#1f2937")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    left_out = len(r.class_names) - c
    ax.set_title("Confusion matrix (% of each ground-truth row)"
                 + (f"\n{left_out} class(es) absent from both sides left out" if left_out else ""), fontsize=11)
    fig.tight_layout()
    _save_figure(fig, path)


def _plot_per_class(panels: list[tuple[str, list[str], list[float], list[Any] | None]], path: Path) -> None:
    """Horizontal bars, one panel per section: names readable at any count, each value written at its bar."""
    from matplotlib.figure import Figure  # lazy: matplotlib costs ~0.4 s to import

    n = len(panels)
    longest = max(len(p[1]) for p in panels)
    height = sum(1.0 + 0.28 * max(1, len(p[1])) for p in panels)
    fig = Figure(figsize=(8.5, min(60.0, max(3.0, height))))
    weights = [max(1, len(p[1])) + 3 for p in panels]
    grid = fig.add_gridspec(n, 1, height_ratios=weights)
    for i, (title, names, values, colors) in enumerate(panels):
        ax = fig.add_subplot(grid[i, 0])
        vals = [None if (v is None or not math.isfinite(v) or v < 0) else float(v) for v in values]
        y = np.arange(len(names))
        face = [tuple(np.asarray(c[:3]) / 255.0) if c is not None else "#4878a8"
                for c in (colors or [None] * len(names))]
        bars = ax.barh(y, [v or 0.0 for v in vals], color=face, edgecolor="#333333", linewidth=0.5)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3f}" for v in vals], padding=3, fontsize=8)
        ax.set_xlim(0, 1.12)
        ax.set_yticks(y, labels=names, fontsize=9 if longest <= 40 else 7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=11, loc="left")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)


# -- text ----------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4f}"
    return str(v)


def _markdown(rep: Mapping[str, Any]) -> str:
    lines = ["# Evaluation report", ""]
    if "semantic" in rep:
        s = rep["semantic"]
        lines += ["## Semantic segmentation", "", "| metric | value |", "|---|---:|"]
        for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
            lines.append(f"| {k} | {_fmt(s[k])} |")
        lines += ["", "| id | class | IoU | accuracy | Dice |", "|---:|---|---:|---:|---:|"]
        for row in s["per_class"]:
            lines.append(
                f"| {row['id']} | {row['name']} | {_fmt(row['iou'])} | {_fmt(row['accuracy'])} | {_fmt(row['dice'])} |"
            )
        lines.append("")
    for t, sec in rep.get("instance", {}).items():
        names = [k for k in sec if k not in ("stats", "per_class")]
        lines += [f"## COCO {t}", "", "| " + " | ".join(names) + " |", "|" + "---:|" * len(names)]
        lines.append("| " + " | ".join(_fmt(sec[k]) for k in names) + " |")
        lines += ["", "| id | class | AP | AP50 | AP75 |", "|---:|---|---:|---:|---:|"]
        for row in sec["per_class"]:
            lines.append(
                f"| {row['id']} | {row['name']} | {_fmt(row['ap'])} | {_fmt(row['ap50'])} | {_fmt(row['ap75'])} |"
            )
        lines.append("")
    if "panoptic" in rep:
        p = rep["panoptic"]
        lines += ["## Panoptic", "", "| | PQ | SQ | RQ | N |", "|---|---:|---:|---:|---:|"]
        for k in ("all", "things", "stuff"):
            g = p[k]
            lines.append(f"| {k} | {_fmt(g['pq'])} | {_fmt(g['sq'])} | {_fmt(g['rq'])} | {g['n']} |")
        lines += [
            "",
            "| id | class | thing | PQ | SQ | RQ | TP | FP | FN |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in p["per_class"]:
            if row["tp"] + row["fp"] + row["fn"] == 0:
                continue  # not in the data: left out of the means, and of the table
            lines.append(
                f"| {row['id']} | {row['name']} | {'yes' if row['isthing'] else 'no'} | {_fmt(row['pq'])} | "
                f"{_fmt(row['sq'])} | {_fmt(row['rq'])} | {row['tp']} | {row['fp']} | {row['fn']} |"
            )
        lines.append("")
    worst = rep.get("worst", {})
    for section, entries in worst.items():
        if not entries:
            continue
        metric = "mIoU" if section == "semantic" else "PQ"
        lines += [
            f"## Worst images ({section}, lowest per-image {metric})",
            "",
            f"| rank | image | {metric} |",
        ]
        lines.append("|---:|---|---:|")
        for i, e in enumerate(entries, 1):
            img = f"[{e['image']}]({e['overlay']})" if e.get("overlay") else str(e["image"])
            lines.append(f"| {i} | {img} | {_fmt(e['score'])} |")
        lines.append("")
    return "\n".join(lines)


_CSV_FIELDS = [
    "section",
    "id",
    "name",
    "iou",
    "accuracy",
    "dice",
    "ap",
    "ap50",
    "ap75",
    "pq",
    "sq",
    "rq",
    "tp",
    "fp",
    "fn",
]


def _csv(rep: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    if "semantic" in rep:
        for row in rep["semantic"]["per_class"]:
            w.writerow({"section": "semantic", **row})
    for t, sec in rep.get("instance", {}).items():
        for row in sec["per_class"]:
            w.writerow({"section": t, **row})
    if "panoptic" in rep:
        for row in rep["panoptic"]["per_class"]:
            w.writerow({"section": "panoptic", **row})
    return buf.getvalue()


# -- entry point ---------------------------------------------------------------------------------


def _write_worst(
    out: Path,
    section: str,
    worst: Sequence[tuple[Any, float]],
    loader: OverlayLoader | None,
    ignore_index: int | None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    names: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    metric = "mIoU" if section == "semantic" else "PQ"
    entries = []
    for rank, (key, score) in enumerate(worst, 1):
        entry: dict[str, Any] = {"image": key if isinstance(key, (int, str)) else list(key), "score": score}
        if loader is not None:
            image, gt, pred = loader(key)
            rel = f"worst/{section}_{rank:02d}_{_safe_name(key)}.png"
            (out / "worst").mkdir(parents=True, exist_ok=True)
            shown = "n/a" if score is None or not math.isfinite(score) else f"{score:.3f}"
            title = f"#{rank} worst by per-image {metric}: {_key_text(key)} ({metric} {shown})"
            semantic = section == "semantic"
            write_rgb_png(out / rel, worst_panel(image, gt, pred, title=title, colors=colors if semantic else None,
                                                 names=names, ignore_index=ignore_index if semantic else None,
                                                 error=semantic))
            entry["overlay"] = rel
        entries.append(entry)
    return entries


def _class_palette(semantic: SemanticResult | None, categories: Sequence[Mapping[str, Any]] | None,
                   ) -> tuple[dict[int, tuple[int, int, int]], dict[int, str]]:
    """Colours and names by class id: the categories' own colours (label map), distinct ones for the rest."""
    cats = [dict(c) for c in categories or ()]
    known = {int(c["id"]) for c in cats if "id" in c}
    if semantic is not None:
        ids = semantic.class_ids if semantic.class_ids is not None else list(range(len(semantic.class_names)))
        cats += [{"id": int(i), "name": n} for i, n in zip(ids, semantic.class_names, strict=True)
                 if int(i) not in known]
    cats = [c for c in cats if "id" in c]
    return class_colors(cats), {int(c["id"]): str(c.get("name", c["id"])) for c in cats}


def write_report(
    out_dir: str | Path,
    *,
    semantic: SemanticResult | None = None,
    instance: Mapping[str, CocoResult] | None = None,
    panoptic: PanopticResult | None = None,
    semantic_loader: OverlayLoader | None = None,
    panoptic_loader: OverlayLoader | None = None,
    ignore_index: int | None = 255,
    plots: bool = True,
    header: Mapping[str, Any] | None = None,
    categories: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Writes the report files (see the module docstring) and returns the ``report.json`` content.

    Args:
        out_dir: Output folder (created).
        semantic: Semantic result, if any.
        instance: iou type → :class:`CocoResult`, if any.
        panoptic: Panoptic result, if any.
        semantic_loader: ``key -> (image | None, gt labels, pred labels)`` for the worst-image
            overlays; without it the worst images are listed but not drawn.
        panoptic_loader: ``(image_id, file_name) -> (image | None, gt ids, pred ids)``; see
            :func:`segpipe.evaluation.report.panoptic_overlay_loader`.
        ignore_index: Semantic label not scored (left uncoloured, out of the error map).
        plots: Write the PNG plots (the confusion matrix and the per-class bars).
        header: Top-level keys written first in ``report.json`` (what was evaluated, image counts,
            problems ...); the sections follow.
        categories: ``[{"id", "name", "color"?}]`` of the ground truth: the label map's colours for the
            overlays, bars and tables (classes without one get distinct colours).

    Returns:
        The report dictionary (JSON-safe).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = report_dict(semantic=semantic, instance=instance, panoptic=panoptic)
    colors, names = _class_palette(semantic, categories)
    worst: dict[str, Any] = {}
    if semantic is not None and semantic.worst:
        worst["semantic"] = _write_worst(out, "semantic", semantic.worst, semantic_loader, ignore_index, colors,
                                         names)
    if panoptic is not None and panoptic.worst:
        worst["panoptic"] = _write_worst(out, "panoptic", panoptic.worst, panoptic_loader, None)
    if worst:
        rep["worst"] = json_safe(worst)
    if header:
        rep = {**json_safe(dict(header)), **rep}
    write_json_atomic(out / "report.json", rep)
    with atomic_open(out / "summary.md", "w") as f:
        f.write(_markdown(rep))
    with atomic_open(out / "per_class.csv", "w") as f:
        f.write(_csv(rep))
    if plots:
        if semantic is not None:
            _plot_confusion(semantic, out / "confusion.png")
        panels: list[tuple[str, list[str], list[float], list[Any] | None]] = []
        if semantic is not None:
            keep = present_classes(semantic.confusion)
            ids = semantic.class_ids if semantic.class_ids is not None else list(range(len(semantic.class_names)))
            panels.append(("Semantic IoU per class (classes present on either side)",
                           [semantic.class_names[i] for i in keep], [float(semantic.iou[i]) for i in keep],
                           [colors.get(int(ids[i])) for i in keep]))
        for t, r in (instance or {}).items():
            rows = [row for row in r.per_class if math.isfinite(row["ap"])]  # NaN: no ground truth
            panels.append((f"COCO {t} AP per class", [row["name"] for row in rows], [row["ap"] for row in rows],
                           None))
        if panoptic is not None:
            rows = [row for row in panoptic.per_class if row["tp"] + row["fp"] + row["fn"] > 0]
            panels.append(("Panoptic PQ per class", [row["name"] for row in rows], [row["pq"] for row in rows],
                           None))
        if panels and any(p[1] for p in panels):
            _plot_per_class([p for p in panels if p[1]], out / "per_class.png")
    page = evaluation_page(rep, colors={int(k): list(v) for k, v in colors.items()}, plots=plots,
                           files={n for n in ("confusion.png", "per_class.png") if (out / n).exists()})
    write_bytes_atomic(out / "index.html", page.encode())
    return rep


def panoptic_overlay_loader(
    gt_folder: str | Path, pred_folder: str | Path, image_root: str | Path | None = None
) -> OverlayLoader:
    """A loader for panoptic worst-image overlays.

    Args:
        gt_folder: Ground-truth PNG folder.
        pred_folder: Predicted PNG folder.
        image_root: Folder of the photos (``<png stem>.jpg`` / ``.png``), or None for grey.

    Returns:
        ``(image_id, file_name) -> (image | None, gt ids, pred ids)``.
    """
    def load(key: Any) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        _, name = key
        gt = rgb2id(read_rgb_png(safe_join(gt_folder, name)))
        pred = rgb2id(read_rgb_png(safe_join(pred_folder, name)))
        image = None
        if image_root is not None:
            stem = Path(name).stem
            for ext in (".jpg", ".png", ".jpeg"):
                p = Path(image_root) / f"{stem}{ext}"
                if p.is_file():
                    image = read_image(p)
                    break
        return image, gt, pred

    return load


def write_leaderboard_html(out_dir: str | Path, board: Mapping[str, Any], columns: Sequence[str]) -> Path:
    """Writes ``index.html`` of an ``evaluate-checkpoints`` folder: the checkpoints ranked by the board's
    metric (best first), each linked to its own report, with the metrics plot.

    Args:
        out_dir: The ``--report-dir`` folder.
        board: The leaderboard (``task``, ``gt``, ``metric``, ``rows``, ``problems``).
        columns: The metric columns, the ranking one first.

    Returns:
        The page's path.
    """
    path = Path(out_dir) / "index.html"
    write_bytes_atomic(path, leaderboard_page(board, columns).encode())
    return path
