"""``segpipe run PIPELINE.yaml``: runs a pipeline file's stages (:mod:`segpipe.pipeline.runspec`), in order.

Every stage is the library call of its command (:mod:`segpipe.pipeline.workflows`,
:func:`segpipe.pipeline.convert.convert`) with the stage's request, its paths resolved against the
work folder: inputs may be anywhere, outputs must stay inside it (never a write outside the output).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segpipe.errors import ConfigError, InputError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline import workflows
from segpipe.pipeline.convert import convert
from segpipe.pipeline.requests import (
    ConvertRequest,
    EvaluateCheckpointsRequest,
    EvaluateRequest,
    ExportRequest,
    IngestRequest,
    PathRole,
    PrelabelRequest,
    Request,
    RunRequest,
    SynthRequest,
    TrainRequest,
)
from segpipe.pipeline.runspec import PipelineSpec, load_pipeline, stage_inputs
from segpipe.storage.paths import is_within

Log = Callable[[str], None]

#: Characters that make a path in a pipeline file a glob (``ckpt/epoch_*.ckpt``).
GLOB = "*?["


def run(req: RunRequest, *, log: Log = print) -> list[dict[str, Any]]:
    """Runs the pipeline file of a :class:`~segpipe.pipeline.requests.RunRequest`; one summary per stage run."""
    return run_pipeline(req.pipeline, workdir=req.workdir, log=log, only=[s - 1 for s in req.stage] or None)


def run_pipeline(
    path: Path,
    *,
    workdir: Path | None = None,
    log: Log = print,
    only: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Runs a pipeline file; returns one summary per stage (``only``: 0-based stage numbers to run).

    Raises:
        ConfigError: a bad file or stage, naming the file and ``stages[i].<step>.<key>``.
    """
    spec = load_pipeline(path)  # refuses a workdir: outside the file's folder (runspec.workdir_problem)
    base = workdir or (path.parent / spec.workdir if spec.workdir else path.parent)
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    cluster = ClusterSpec(workers=spec.workers, scheduler=spec.scheduler)
    steps = spec.steps()
    inputs = _inputs(spec, base)
    summaries = []
    for i, (name, step) in enumerate(steps):
        if only is not None and i not in only:
            continue
        log(f"[{i + 1}/{len(steps)}] {name}")
        t0 = time.perf_counter()
        try:
            summary = run_stage(name, resolve(step, base, name), cluster, log, inputs=inputs)
        except ConfigError as e:
            if e.path is not None:
                raise
            raise ConfigError(e.message, path=path, where=f"stages[{i}].{e.where or name}", hint=e.hint) from None
        summary.update({"stage": i + 1, "step": name, "seconds": round(time.perf_counter() - t0, 2)})
        summaries.append(summary)
    return summaries


def _inputs(spec: PipelineSpec, base: Path) -> list[Path]:
    """Every path some stage reads (a glob counts as its folder)."""
    found = []
    for _, step in spec.steps():
        for v in stage_inputs(step):
            p = _p(base, v)
            found.append(_glob_root(p) if any(ch in str(v) for ch in GLOB) else p)
    return found


def _glob_root(p: Path) -> Path:
    """The folder a glob searches (``ckpt/epoch_*.ckpt`` → ``ckpt``)."""
    while any(ch in p.name for ch in GLOB):
        p = p.parent
    return p


def _p(base: Path, rel: str | Path) -> Path:
    """An input path: relative to the work folder, or absolute."""
    p = Path(rel)
    return p if p.is_absolute() else base / p


def _out(base: Path, rel: Path, where: str) -> Path:
    """An output path: must stay inside the work folder (never a write outside the output)."""
    target = rel if rel.is_absolute() else base / rel
    if not is_within(base, target):
        raise ConfigError(f"output {str(rel)!r} is outside the work folder {base}", where=where,
                          hint="use a path relative to the work folder")
    return target


def _model(base: Path, model: str) -> str:
    """A checkpoint path relative to the work folder; ``ARCH:WEIGHTS`` (no such file) as it is."""
    return model if ":" in model and not _p(base, model).exists() else str(_p(base, model))


def _globbed(base: Path, values: tuple[Path, ...], where: str) -> tuple[Path, ...]:
    """Paths with globs expanded (sorted), relative to the work folder.

    Raises:
        InputError: the globs match nothing at all.
    """
    found: list[Path] = []
    for v in values:
        found.extend(sorted(base.glob(str(v))) if any(ch in str(v) for ch in GLOB) else [_p(base, v)])
    if not found:
        raise InputError("no file matches", path=base, where=where)
    return tuple(found)


def resolve(req: Request, base: Path, stage: str) -> Request:
    """``req`` with its paths resolved against the work folder ``base`` (outputs checked to stay inside it).

    Raises:
        ConfigError: an output outside the work folder (``where``: ``<stage>.<key>``).
        InputError: a glob that matches nothing.
    """
    update: dict[str, Any] = {}
    for name in type(req).model_fields:
        value, role, where = getattr(req, name), req.role(name), f"{stage}.{req.key_of(name)}"
        if value is None or role is None:
            continue
        if role is PathRole.OUTPUT:
            update[name] = _out(base, value, where)
        elif role is PathRole.MODEL:  # a tuple: an ensemble's members
            update[name] = tuple(_model(base, v) for v in value) if isinstance(value, tuple) else _model(base, value)
        elif isinstance(value, tuple):
            update[name] = _globbed(base, value, where)
        else:
            update[name] = str(_p(base, value)) if isinstance(value, str) else _p(base, value)
    return req.model_copy(update=update)


def run_stage(name: str, req: Request, cluster: ClusterSpec, log: Log,
              inputs: list[Path] | None = None) -> dict[str, Any]:
    """Runs one resolved stage; returns its summary (``inputs``: what every stage of the pipeline reads)."""
    if isinstance(req, SynthRequest):
        workflows.synthesize(req)
        return {"out": str(req.out)}
    if isinstance(req, TrainRequest):
        res = workflows.train(req, log=log)
        return {"out": str(req.out), "best": str(getattr(res, "best_path", ""))}
    if isinstance(req, IngestRequest):
        return {"out": str(req.out), "images": workflows.ingest(req, cluster, inputs=inputs or [])}
    if isinstance(req, PrelabelRequest):
        rep = workflows.prelabel(req, cluster, log=log)
        return {"out": rep.store, "images": rep.images.model_dump(mode="json"), "img_s": rep.throughput_img_s,
                "failed": rep.images.failed}
    if isinstance(req, (ExportRequest, ConvertRequest)):
        conv = convert(req, cluster)
        return {"out": str(req.out), "losses": conv.losses.totals, "failed": conv.images["failed"]}
    if isinstance(req, EvaluateRequest):
        ev = workflows.evaluate(req, cluster)
        # the headline from the report's JSON: a metric that is not a number is null there, as in report.json
        return {"report": str(req.report_dir) if req.report_dir else None, "headline": _headline(ev.to_json()),
                "failed": sum(1 for p in ev.problems if p.severity == "error")}
    if isinstance(req, EvaluateCheckpointsRequest):
        board = workflows.evaluate_checkpoints(req, cluster, log=log)
        return {"report": str(req.report_dir), "best": board.best, "failed": len(board.problems)}
    raise ConfigError(f"unknown step {name!r}")


def _headline(rep: dict[str, Any]) -> dict[str, Any]:
    sem = rep.get("semantic") or {}
    if sem:
        return {k: sem.get(k) for k in ("mean_iou", "pixel_accuracy", "fw_iou")}
    pan = rep.get("panoptic") or {}
    if pan:
        return {"pq": (pan.get("all") or {}).get("pq")}
    inst = rep.get("instance") or {}
    return {f"{k}_AP": inst[k].get("AP") for k in ("segm", "bbox", "keypoints") if inst.get(k)}
