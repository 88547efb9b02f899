"""``segpipe evaluate-checkpoints``: run every checkpoint over an archive, evaluate, rank.

The ground truth is decoded once into a Zarr store (``REPORT/gt.zarr``) and reused for every
checkpoint; each checkpoint pre-labels the archive through the same distributed path as
``segpipe prelabel`` (``REPORT/stores/<name>.zarr``, resumable), then the evaluation engine compares the
two stores. The leaderboard is written as Markdown, CSV and JSON, with one plot per metric across the
checkpoints (in the order given, e.g. per epoch). The leaderboard is the typed
:class:`~segpipe.pipeline.eval_specs.Leaderboard` (:func:`checkpoint_leaderboard`), built from each
checkpoint's typed evaluation report; :func:`evaluate_checkpoints` returns its JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from segpipe.errors import InputError
from segpipe.evaluation.report import write_leaderboard_html
from segpipe.execution.cluster import ClusterSpec, open_client
from segpipe.formats import detect_format
from segpipe.pipeline.convert import Conversion, convert
from segpipe.pipeline.eval_specs import CheckpointProblem, EvaluationReport, Leaderboard, LeaderboardRow
from segpipe.pipeline.evaluate import PREFER, EvaluateRequest, evaluate_report
from segpipe.pipeline.prelabel import PrelabelRequest, run_prelabel
from segpipe.pipeline.requests import EvaluateCheckpointsRequest, evaluation_task
from segpipe.storage import outputs
from segpipe.storage.atomic import write_json_atomic

#: Headline metrics per task: (report path, column name), the first one ranks.
METRICS = {
    "semantic": [("semantic.mean_iou", "mIoU"), ("semantic.pixel_accuracy", "pixel acc"),
                 ("semantic.mean_accuracy", "mean acc"), ("semantic.fw_iou", "fw IoU")],
    "instance": [("instance.segm.AP", "mask AP"), ("instance.segm.AP50", "mask AP50"), ("instance.bbox.AP", "box AP")],
    "panoptic": [("panoptic.all.pq", "PQ"), ("panoptic.all.sq", "SQ"), ("panoptic.all.rq", "RQ")],
    "keypoints": [("instance.keypoints.AP", "OKS AP"), ("instance.keypoints.AP50", "OKS AP50")],
}


def _scored(req: EvaluateCheckpointsRequest) -> str:
    """The request's task as the metrics name it (:data:`METRICS`: landmarks are scored as COCO keypoints)."""
    return evaluation_task(req.task)


def _get(report: EvaluationReport, dotted: str) -> float | None:
    """A metric of a typed report by its path in the JSON (``instance.segm.AP``); None where absent."""
    cur: Any = report
    for part in dotted.split("."):
        cur = getattr(cur, part, None) if isinstance(cur, BaseModel) else None
        if cur is None:
            return None
    return float(cur) if isinstance(cur, (int, float)) else None


def _name(path: Path, seen: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "ckpt"
    name, k = base, 1
    while name in seen:
        k += 1
        name = f"{base}_{k}"
    seen.add(name)
    return name


def evaluate_checkpoints(
    req: EvaluateCheckpointsRequest,
    cluster: ClusterSpec | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the whole comparison; returns the leaderboard's JSON (as written to ``leaderboard.json``)."""
    return checkpoint_leaderboard(req, cluster, log).to_json()


def checkpoint_leaderboard(
    req: EvaluateCheckpointsRequest,
    cluster: ClusterSpec | None = None,
    log: Callable[[str], None] = print,
) -> Leaderboard:
    """Runs the whole comparison; returns the typed leaderboard (also written as Markdown, CSV and JSON).

    Raises:
        InputError: an unknown task, or a checkpoint file that does not exist.
        SegpipeError: as pre-labeling and evaluation raise them.
    """
    if _scored(req) not in METRICS:
        raise InputError(f"unknown task {_scored(req)!r}; known: {', '.join(METRICS)}")
    for c in req.checkpoints:
        if not Path(c).is_file():
            raise InputError("checkpoint file not found", path=c)
    inputs = [*outputs.dataset_inputs(req.gt, req.images), req.images, *req.checkpoints]
    plan = outputs.check_output(req.report_dir, inputs, option="--report-dir", command="evaluate-checkpoints")
    if not plan.replaces:
        outputs.start_in_place(plan)
    # else: an earlier report of this command is continued in place (its decoded ground truth and its
    # stores are reused; each report below is replaced whole).
    cluster = cluster or ClusterSpec()
    # Each worker runs as many images at once as it has cores (every forward pass is single-threaded).
    if not cluster.scheduler:
        cluster = dataclasses.replace(cluster, threads_per_worker=cluster.worker_threads())
    with open_client(cluster) as client:  # one cluster for every step of every checkpoint
        return _evaluate_all(req, cluster, client, log)


def _decode_ground_truth(req: EvaluateCheckpointsRequest, cluster: ClusterSpec, client: Any,
                         log: Callable[[str], None]) -> Path:
    """``REPORT/gt.zarr``: the ground truth decoded once (kept from an earlier run of this report)."""
    gt_store = req.report_dir / "gt.zarr"
    if not (gt_store / "zarr.json").exists():
        log(f"decoding the ground truth once: {req.gt} → {gt_store}")
        # The same reading of the ground truth as `segpipe evaluate` (a synth folder's masks, not its
        # objects-only COCO JSON, for semantic tasks).
        gt_format = detect_format(req.gt, prefer=PREFER.get(_scored(req), ()))
        convert(Conversion(src=req.gt, dst=gt_store, to="segpipe_zarr", from_=gt_format, copy_images="none",
                           overwrite=True), cluster, client=client)
    return gt_store


def _row(ckpt: Path, name: str, img_s: float, seconds: float, task: str, rep: EvaluationReport) -> LeaderboardRow:
    epoch = re.search(r"epoch[_-]?(\d+)", Path(ckpt).stem)
    return LeaderboardRow.model_validate({
        "checkpoint": str(ckpt), "name": name, "img_s": img_s, "seconds": seconds,
        "epoch": int(epoch.group(1)) if epoch else None,
        **{col: _get(rep, path) for path, col in METRICS[task]},
    })


def _evaluate_all(req: EvaluateCheckpointsRequest, cluster: ClusterSpec, client: Any,
                  log: Callable[[str], None]) -> Leaderboard:
    out = req.report_dir
    gt_store = _decode_ground_truth(req, cluster, client, log)
    typed_rows: list[LeaderboardRow] = []
    problems: list[CheckpointProblem] = []  # checkpoints some images failed for: the command exits 1
    seen: set[str] = set()
    for i, ckpt in enumerate(req.checkpoints):
        name = _name(Path(ckpt), seen)
        store = out / "stores" / f"{name}.zarr"
        log(f"[{i + 1}/{len(req.checkpoints)}] {ckpt}")
        t0 = time.perf_counter()
        pre = run_prelabel(PrelabelRequest.build(source=str(req.images), model=str(ckpt), out=store, arch=req.arch,
                                                 resume=store.exists(), probs=False), cluster, client=client)
        rep = evaluate_report(EvaluateRequest.build(gt=gt_store, pred=store, task=req.task,
                                              report_dir=out / "reports" / name), cluster, client=client)
        typed_rows.append(_row(ckpt, name, pre.throughput_img_s, round(time.perf_counter() - t0, 2), _scored(req), rep))
        n_eval = sum(1 for p in rep.problems if p.severity == "error")
        if pre.images.failed or n_eval:
            problems.append(CheckpointProblem(checkpoint=str(ckpt), prelabel_failed=pre.images.failed,
                                              evaluate_errors=n_eval, store=str(store),
                                              report=str(out / "reports" / name)))
    rows = [r.to_json() for r in typed_rows]
    key = METRICS[_scored(req)][0][1]
    ranked = sorted(rows, key=lambda r: -1.0 if r[key] is None else r[key], reverse=True)
    leaderboard = Leaderboard.model_validate({"task": _scored(req), "gt": str(req.gt), "metric": key,
                                              "rows": typed_rows, "best": ranked[0]["checkpoint"] if ranked else None,
                                              "problems": problems})
    board = leaderboard.to_json()
    write_json_atomic(out / "leaderboard.json", board)
    _write_csv(out / "leaderboard.csv", rows)
    _write_md(out / "leaderboard.md", board, ranked)
    _plot(out, rows, [c for _, c in METRICS[_scored(req)]])
    write_leaderboard_html(out, board, [c for _, c in METRICS[_scored(req)]])  # index.html: ranked, best first
    return leaderboard


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


def _write_md(path: Path, board: dict[str, Any], ranked: list[dict[str, Any]]) -> None:
    cols = [c for c in ranked[0] if c not in ("checkpoint",)] if ranked else []
    lines = [f"# Leaderboard — {board['task']}, ranked by {board['metric']}", "",
             "| rank | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for k, r in enumerate(ranked, 1):
        lines.append(f"| {k} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    lines += ["", f"ground truth: `{board['gt']}`; plots: `metrics.png`; per-checkpoint reports: `reports/`", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _plot(out: Path, rows: list[dict[str, Any]], metrics: list[str]) -> None:
    # lazy: matplotlib costs ~0.5 s to import; only the leaderboard's plot needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    if not rows:
        return
    xs = [r["epoch"] if r["epoch"] is not None else i + 1 for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        ys = [r[m] if r[m] is not None else float("nan") for r in rows]
        ax.plot(xs, ys, marker="o")
        ax.set_title(m)
        ax.set_xlabel("epoch" if all(r["epoch"] is not None for r in rows) else "checkpoint")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)
    (out / "metrics.json").write_text(json.dumps({"x": xs, **{m: [r[m] for r in rows] for m in metrics}}))
