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
- ``confusion.png`` — the row-normalised semantic confusion matrix.
- ``per_class.png`` — per-class IoU / AP / PQ bars.
- ``worst/*.png`` — side-by-side ``image | ground-truth overlay | prediction overlay``.

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

from segpipe.core.labelmap import voc_colormap
from segpipe.evaluation.cocoeval import CocoResult
from segpipe.evaluation.panoptic import PanopticResult
from segpipe.evaluation.semantic import SemanticResult

__all__ = [
    "colorize_labels",
    "json_safe",
    "overlay_triptych",
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


# -- plots ---------------------------------------------------------------------------------------


def _save_figure(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from segpipe.storage.atomic import write_bytes_atomic

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes_atomic(path, buf.getvalue())


def _plot_confusion(r: SemanticResult, path: Path) -> None:
    from matplotlib.figure import Figure

    cm = r.confusion.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    c = cm.shape[0]
    size = min(4 + 0.35 * c, 24)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(c)
    if c <= 60:
        ax.set_xticks(ticks, labels=r.class_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels=r.class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix (row-normalised)")
    fig.tight_layout()
    _save_figure(fig, path)


def _plot_per_class(panels: list[tuple[str, list[str], list[float]]], path: Path) -> None:
    from matplotlib.figure import Figure

    n = len(panels)
    width = max(6.0, min(24.0, 0.25 * max(len(p[1]) for p in panels) + 2))
    fig = Figure(figsize=(width, 3.2 * n))
    for i, (title, names, values) in enumerate(panels):
        ax = fig.add_subplot(n, 1, i + 1)
        vals = [0.0 if (v is None or not math.isfinite(v) or v < 0) else v for v in values]
        x = np.arange(len(names))
        ax.bar(x, vals, color="#4878a8")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        if len(names) <= 100:
            ax.set_xticks(x, labels=names, rotation=90, fontsize=6)
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
) -> list[dict[str, Any]]:
    from segpipe.storage.images import write_rgb_png

    entries = []
    for rank, (key, score) in enumerate(worst, 1):
        entry: dict[str, Any] = {"image": key if isinstance(key, (int, str)) else list(key), "score": score}
        if loader is not None:
            image, gt, pred = loader(key)
            rel = f"worst/{section}_{rank:02d}_{_safe_name(key)}.png"
            (out / "worst").mkdir(parents=True, exist_ok=True)
            write_rgb_png(out / rel, overlay_triptych(image, gt, pred, ignore_index=ignore_index))
            entry["overlay"] = rel
        entries.append(entry)
    return entries


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
        ignore_index: Semantic label drawn in white.
        plots: Write the PNG plots (the confusion matrix and the per-class bars).
        header: Top-level keys written first in ``report.json`` (what was evaluated, image counts,
            problems ...); the sections follow.

    Returns:
        The report dictionary (JSON-safe).
    """
    from segpipe.storage.atomic import atomic_open, write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = report_dict(semantic=semantic, instance=instance, panoptic=panoptic)
    worst: dict[str, Any] = {}
    if semantic is not None and semantic.worst:
        worst["semantic"] = _write_worst(out, "semantic", semantic.worst, semantic_loader, ignore_index)
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
        panels: list[tuple[str, list[str], list[float]]] = []
        if semantic is not None:
            panels.append(("Semantic IoU per class", semantic.class_names, [float(v) for v in semantic.iou]))
        for t, r in (instance or {}).items():
            rows = [row for row in r.per_class if math.isfinite(row["ap"])]  # NaN: no ground truth
            panels.append((f"COCO {t} AP per class", [row["name"] for row in rows], [row["ap"] for row in rows]))
        if panoptic is not None:
            rows = [row for row in panoptic.per_class if row["tp"] + row["fp"] + row["fn"] > 0]
            panels.append(("Panoptic PQ per class", [row["name"] for row in rows], [row["pq"] for row in rows]))
        if panels:
            _plot_per_class(panels, out / "per_class.png")
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
    from segpipe.evaluation.panoptic import rgb2id
    from segpipe.storage.images import read_image, read_rgb_png
    from segpipe.storage.paths import safe_join

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
