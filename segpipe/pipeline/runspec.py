"""Declarative multi-stage pipelines: ``segpipe run PIPELINE.yaml``.

A pipeline is a YAML file validated against :class:`PipelineSpec` (JSON Schema:
``schemas/pipeline.schema.json``). Stages run in order; relative paths are relative to the work
folder (``workdir:`` in the file, else the file's own folder, or ``--workdir``). Every stage is one
library call — the same as the matching command::

    version: 1
    name: street view pre-labeling
    workers: 2                      # or scheduler: tcp://host:8786
    stages:
      - synth: {kind: streetview, out: data, n: 16}
      - train: {dataset: data, arch: unet, out: ckpt, max_minutes: 1}
      - prelabel: {source: data/images, model: ckpt/best.ckpt, out: prelabels.zarr}
      - export: {store: prelabels.zarr, out: export/coco, to: coco}
      - evaluate: {gt: data, pred: prelabels.zarr, task: semantic, report_dir: report}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segpipe.core.problems import Problem
from segpipe.errors import ConfigError, InputError


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SynthStage(_Stage):
    """``segpipe synth``."""

    kind: Literal["streetview", "satellite", "medical", "landmarks"]
    out: str
    n: int = Field(16, ge=1)
    seed: int = 0
    size: list[int] | None = Field(None, min_length=2, max_length=2, description="[height, width]")
    format: str | None = Field(None, description="png, jpg, or a native format (geotiff, nifti, dicom)")
    exif: bool = Field(False, description="photos stored rotated/flipped with an EXIF orientation (JPEG)")


class TrainStage(_Stage):
    """``segpipe train``."""

    dataset: str
    arch: str
    out: str
    epochs: int = Field(10, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    val: str | None = None
    seed: int = 0
    batch: int = Field(4, ge=1)
    resume: bool = False


class IngestStage(_Stage):
    """Write a manifest (stable ids, sizes, content hashes) of a collection."""

    source: str
    out: str = Field(description="the manifest file (.jsonl)")


class PrelabelStage(_Stage):
    """``segpipe prelabel``."""

    source: str
    model: str
    out: str
    arch: str | None = None
    task: Literal["semantic", "instance", "panoptic", "landmarks", "keypoints"] | None = Field(
        None, description="landmarks (keypoints is accepted as its other name, as on the command line)")
    tile: int | None = Field(None, ge=16)
    overlap: float | None = Field(None, ge=0, lt=1, description="tile overlap as a fraction of the tile")
    batch: int = Field(4, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto | cpu | cuda | cuda:N (a CUDA device must exist where it runs)")
    gpus: str | None = Field(None, pattern=r"^\d+(,\d+)*$", description="GPUs of the local cluster, e.g. 0,2")
    resume: bool = True
    on_error: Literal["skip", "fail"] = "skip"
    probs: bool = True
    heatmaps: bool = True
    min_score: float = 0.05
    threads: int | None = Field(None, ge=1, description="torch threads per worker")
    bands: list[int] | None = Field(None, description="GeoTIFF bands as [R, G, B], 1-based")
    window: str | None = Field(None, description="intensity window CENTER,WIDTH for volumes, e.g. 40,400")
    stretch: Literal["auto", "percentile", "minmax", "none"] = "auto"
    percentiles: list[float] | None = Field(None, min_length=2, max_length=2, description="[low, high]")


class ExportStage(_Stage):
    """``segpipe export``."""

    store: str
    out: str
    to: Literal["coco", "coco_results", "coco_panoptic", "voc", "labelstudio", "maskdir", "cityscapes", "geotiff",
                "geojson", "nifti", "yolo", "yolo_detect", "labelme", "labelme_embedded", "cvat"]
    min_score: float = 0.0
    polygons: bool = False
    layout: Literal["split", "single", "devkit", "flat"] | None = Field(
        None, description="coco: split (default) or single; voc: devkit (default) or flat")
    overwrite: bool = True


class ConvertStage(_Stage):
    """``segpipe convert``."""

    src: str
    out: str
    to: str
    categories: str | None = None
    strict: bool = False
    layout: Literal["split", "single", "devkit", "flat"] | None = Field(
        None, description="coco: split (default) or single; voc: devkit (default) or flat")
    overwrite: bool = True


class EvaluateStage(_Stage):
    """``segpipe evaluate``."""

    gt: str
    pred: str
    task: Literal["semantic", "instance", "panoptic", "landmarks", "keypoints"] = Field(
        description="landmarks and keypoints name the same task, as on the command line")
    report_dir: str | None = None
    json_out: str | None = Field(None, alias="json")
    num_classes: int | None = None
    iou_types: list[Literal["segm", "bbox", "keypoints"]] | None = None


class EvaluateCheckpointsStage(_Stage):
    """``segpipe evaluate-checkpoints``."""

    gt: str
    checkpoints: list[str] = Field(min_length=1, description="files or globs, e.g. ckpt/epoch_*.ckpt")
    images: str
    report_dir: str
    task: Literal["semantic", "instance", "panoptic", "landmarks", "keypoints"] = Field(
        "semantic", description="landmarks and keypoints name the same task, as on the command line")


class Stage(BaseModel):
    """One stage: exactly one key naming what it does."""

    model_config = ConfigDict(extra="forbid")
    synth: SynthStage | None = None
    train: TrainStage | None = None
    ingest: IngestStage | None = None
    prelabel: PrelabelStage | None = None
    export: ExportStage | None = None
    convert: ConvertStage | None = None
    evaluate: EvaluateStage | None = None
    evaluate_checkpoints: EvaluateCheckpointsStage | None = Field(None, alias="evaluate-checkpoints")

    @model_validator(mode="after")
    def _exactly_one(self) -> Stage:
        set_ = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"a stage names exactly one step, got {len(set_)}: {set_}")
        return self

    def step(self) -> tuple[str, BaseModel]:
        """``(name, spec)``."""
        for k in type(self).model_fields:
            v = getattr(self, k)
            if v is not None:
                return k.replace("_", "-"), v
        raise AssertionError("validated: one step is set")


class PipelineSpec(BaseModel):
    """A segpipe pipeline file."""

    model_config = ConfigDict(extra="forbid", title="segpipe pipeline", populate_by_name=True)
    version: Literal[1] = 1
    name: str = ""
    description: str = ""
    workdir: str | None = Field(None, description="relative paths resolve here (default: the file's folder)")
    workers: int | None = Field(None, ge=0, description="embedded Dask cluster size (0 = in-process)")
    scheduler: str | None = Field(None, description="existing Dask scheduler address")
    stages: list[Stage] = Field(min_length=1)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def load_pipeline(path: Path) -> PipelineSpec:
    """Reads and validates a pipeline file.

    Raises:
        ConfigError: naming the file and the field of the first problem.
    """
    problems = list(validate_pipeline_file(path))
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more; run `segpipe validate {path}`)" if len(problems) > 1 else ""
        raise ConfigError(p.message + more, path=path, where=p.where)
    import yaml

    return PipelineSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def validate_pipeline_file(path: Path) -> Iterator[Problem]:
    """One problem per invalid field of a pipeline file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None
    except UnicodeDecodeError as e:
        yield Problem("error", str(path), "", f"not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset "
                      f"{e.start}); save the file as UTF-8", "pipeline.encoding")
        return
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        yield Problem("error", str(path), "", f"not valid YAML: {str(e).splitlines()[0]}", "pipeline.yaml")
        return
    except RecursionError:  # PyYAML composes recursively: a few thousand nested brackets exhaust the stack
        yield Problem("error", str(path), "", "not valid YAML: nested too deeply to read (refused)", "pipeline.yaml")
        return
    if not isinstance(data, dict):
        yield Problem("error", str(path), "", "a pipeline must be a mapping with `stages`", "pipeline.shape")
        return
    spec: PipelineSpec | None = None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.endswith("Stage")))
            yield Problem("error", str(path), _loc(loc), err["msg"], f"pipeline.{err['type']}")
    workdir = data.get("workdir")
    why = workdir_problem(path, workdir) if isinstance(workdir, str) else None
    if why:
        yield Problem("error", str(path), "workdir", why, "pipeline.workdir")
    elif spec is not None:  # outputs outside the work folder are refused by `run` (see _out): flagged here too
        from segpipe.storage.paths import is_within

        base = (path.parent / spec.workdir if spec.workdir else path.parent).resolve()
        for i, stage in enumerate(spec.stages):
            name, step = stage.step()
            for field, rel in _stage_outputs(step):
                target = Path(rel) if Path(rel).is_absolute() else base / rel
                if not is_within(base, target):
                    yield Problem("error", str(path), f"stages[{i}].{name}.{field}",
                                  f"output {rel!r} is outside the work folder {base}; `segpipe run` refuses it",
                                  "pipeline.output")


_OUTPUT_FIELDS = ("out", "report_dir", "json_out")
_INPUT_FIELDS = ("source", "dataset", "val", "model", "store", "src", "categories", "gt", "pred", "images")


def _stage_outputs(step: BaseModel) -> list[tuple[str, str]]:
    """``(field, path)`` of every output a stage names (``json_out`` is spelt ``json`` in the file)."""
    return [("json" if f == "json_out" else f, v) for f in _OUTPUT_FIELDS
            if isinstance(v := getattr(step, f, None), str) and v]


def _stage_inputs(spec: PipelineSpec, base: Path) -> list[Path]:
    """Every path some stage of ``spec`` reads (checkpoint globs count as their folder)."""
    found: list[Path] = []
    for stage in spec.stages:
        _, step = stage.step()
        for f in _INPUT_FIELDS:
            v = getattr(step, f, None)
            if isinstance(v, str) and v:
                found.append(_p(base, v))
        found += [_p(base, c) for c in getattr(step, "checkpoints", None) or []]
    return found


def workdir_problem(path: Path, workdir: str) -> str | None:
    """Why a pipeline file's ``workdir:`` is refused, or None.

    A pipeline writes everything under its work folder, so a file that names a folder elsewhere (an
    absolute path, ``..``, a symlink out) could make whoever runs it write anywhere; only folders
    inside the file's own folder are accepted (``--workdir`` on the command line chooses freely).
    """
    if not workdir.strip():
        return "workdir is empty"
    if Path(workdir).is_absolute() or workdir.startswith("~"):
        return f"{workdir!r} is absolute: a pipeline's workdir must be a folder inside the file's own folder"
    from segpipe.storage.paths import is_within

    if ".." in Path(workdir).parts or not is_within(path.parent, path.parent / workdir):
        return f"{workdir!r} leaves the file's folder: a pipeline's workdir must be a folder inside it"
    return None


def run_pipeline(
    path: Path,
    *,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
    only: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Runs a pipeline file; returns one summary per stage."""
    from segpipe.execution.cluster import ClusterSpec

    spec = load_pipeline(path)  # refuses a workdir: outside the file's folder (workdir_problem)
    base = workdir or (path.parent / spec.workdir if spec.workdir else path.parent)
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    cluster = ClusterSpec(workers=spec.workers, scheduler=spec.scheduler)
    summaries = []
    for i, stage in enumerate(spec.stages):
        if only is not None and i not in only:
            continue
        name, step = stage.step()
        log(f"[{i + 1}/{len(spec.stages)}] {name}")
        t0 = time.perf_counter()
        try:
            summary = _run_stage(name, step, base, cluster, log, inputs=_stage_inputs(spec, base))
        except ConfigError as e:
            if e.path is not None:
                raise
            raise ConfigError(e.message, path=path, where=f"stages[{i}].{e.where or name}", hint=e.hint) from None
        summary.update({"stage": i + 1, "step": name, "seconds": round(time.perf_counter() - t0, 2)})
        summaries.append(summary)
    return summaries


def _p(base: Path, rel: str) -> Path:
    """An input path: relative to the work folder, or absolute."""
    p = Path(rel)
    return p if p.is_absolute() else base / p


def _out(base: Path, rel: str, field: str) -> Path:
    """An output path: must stay inside the work folder (never a write outside the output)."""
    from segpipe.storage.paths import is_within

    p = Path(rel)
    target = p if p.is_absolute() else base / p
    if not is_within(base, target):
        raise ConfigError(f"output {rel!r} is outside the work folder {base}", where=field,
                          hint="use a path relative to the work folder")
    return target


def _run_stage(name: str, step: Any, base: Path, cluster: Any, log: Callable[[str], None],
               inputs: list[Path] | None = None) -> dict[str, Any]:
    """Runs one stage; ``inputs``: what every stage of the pipeline reads (an ingest manifest may be none)."""
    if name == "synth":
        from segpipe.synth import synth

        size = tuple(step.size) if step.size else None
        if step.exif:
            from segpipe.synth.native import synth_native

            synth_native(step.kind, _out(base, step.out, "synth.out"), n=step.n, seed=step.seed, size=size,
                         fmt=step.format or "jpg", exif=True, overwrite=True)
            return {"out": str(_out(base, step.out, "synth.out"))}
        kw: dict[str, Any] = {"overwrite": True}  # a pipeline re-run regenerates its own outputs
        if step.format:
            kw["image_format"] = step.format
        synth(step.kind, _out(base, step.out, "synth.out"), n=step.n, seed=step.seed, size=size, **kw)
        return {"out": str(_out(base, step.out, "synth.out"))}
    if name == "train":
        from segpipe.models.train import train

        res = train(_p(base, step.dataset), step.arch, _out(base, step.out, "train.out"), epochs=step.epochs,
                    max_minutes=step.max_minutes, val_dir=_p(base, step.val) if step.val else None,
                    resume=step.resume, overwrite=True, seed=step.seed, batch_size=step.batch, progress=False,
                    log=log)
        return {"out": str(_p(base, step.out)), "best": str(getattr(res, "best_path", ""))}
    if name == "ingest":
        from segpipe.execution.cluster import open_client
        from segpipe.pipeline.prelabel import ingest
        from segpipe.storage.manifest import write_manifest
        from segpipe.storage.outputs import check_output, resolved

        out = _out(base, step.out, "ingest.out")
        # Never over, in or around what a stage reads (the manifest itself aside: a later stage reads it),
        # nor over a file segpipe did not write (an earlier manifest is replaced).
        others = [p for p in inputs or [] if resolved(p) != resolved(out)]
        check_output(out, [_p(base, step.source), *others], option="ingest.out", command="ingest", kind="file")
        with open_client(cluster) as client:
            entries = ingest(str(_p(base, step.source)), client)
        out.parent.mkdir(parents=True, exist_ok=True)
        return {"out": str(out), "images": write_manifest(out, entries)}
    if name == "prelabel":
        from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

        req = PrelabelRequest(source=str(_p(base, step.source)), model=str(_p(base, step.model))
                              if not (":" in step.model and not _p(base, step.model).exists()) else step.model,
                              out=_out(base, step.out, "prelabel.out"), arch=step.arch,
                              task="landmarks" if step.task == "keypoints" else step.task, tile=step.tile,
                              overlap=step.overlap, batch=step.batch, device=step.device, gpus=step.gpus,
                              resume=step.resume and _p(base, step.out).exists(), on_error=step.on_error,
                              probs=step.probs, heatmaps=step.heatmaps, min_score=step.min_score,
                              threads=step.threads, bands=step.bands, window=step.window, stretch=step.stretch,
                              percentiles=(step.percentiles[0], step.percentiles[1]) if step.percentiles else None)
        rep = prelabel(req, cluster, log=log)
        return {"out": rep["store"], "images": rep["images"], "img_s": rep["throughput_img_s"],
                "failed": rep["images"]["failed"]}
    if name in ("export", "convert"):
        from segpipe.formats.splits import layout_option
        from segpipe.pipeline.convert import ConvertRequest, convert

        if name == "export":
            req2 = ConvertRequest(src=_p(base, step.store), dst=_out(base, step.out, "export.out"), to=step.to,
                                  from_="segpipe_zarr",
                                  copy_images="none", overwrite=step.overwrite,
                                  reader_options={"min_score": step.min_score},
                                  writer_options={**({"polygons": True} if step.polygons else {}),
                                                  **layout_option(step.layout, step.to)})
        else:
            req2 = ConvertRequest(src=_p(base, step.src), dst=_out(base, step.out, "convert.out"), to=step.to,
                                  category_map=_p(base, step.categories) if step.categories else None,
                                  strict=step.strict, overwrite=step.overwrite,
                                  writer_options=layout_option(step.layout, step.to))
        rep2 = convert(req2, cluster)
        return {"out": str(_p(base, step.out)), "losses": rep2["losses"]["totals"],
                "failed": rep2["images"]["failed"]}
    if name == "evaluate":
        from segpipe.pipeline.evaluate import EvaluateRequest, evaluate

        req3 = EvaluateRequest(gt=_p(base, step.gt), pred=_p(base, step.pred), task=_eval_task(step.task),
                               report_dir=_out(base, step.report_dir, "evaluate.report_dir")
                               if step.report_dir else None,
                               json_path=_out(base, step.json_out, "evaluate.json") if step.json_out else None,
                               num_classes=step.num_classes,
                               iou_types=tuple(step.iou_types) if step.iou_types else None)
        rep3 = evaluate(req3, cluster)
        return {"report": str(_p(base, step.report_dir)) if step.report_dir else None,
                "headline": _headline(rep3),
                "failed": sum(1 for p in rep3.get("problems", []) if p.get("severity") == "error")}
    if name == "evaluate-checkpoints":
        from segpipe.pipeline.checkpoints import EvaluateCheckpointsRequest, evaluate_checkpoints

        ckpts: list[Path] = []
        for c in step.checkpoints:
            matches = sorted(base.glob(c)) if any(ch in c for ch in "*?[") else [_p(base, c)]
            ckpts.extend(matches)
        if not ckpts:
            raise InputError("no checkpoint matches", path=base, where="evaluate-checkpoints.checkpoints")
        rep4 = evaluate_checkpoints(EvaluateCheckpointsRequest(gt=_p(base, step.gt), checkpoints=ckpts,
                                                               images=_p(base, step.images),
                                                               report_dir=_out(base, step.report_dir,
                                                                               "evaluate-checkpoints.report_dir"),
                                                               task=_eval_task(step.task)),
                                    cluster, log=log)
        return {"report": str(_p(base, step.report_dir)), "best": rep4.get("best"),
                "failed": len(rep4.get("problems", []))}
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


def _eval_task(task: str) -> str:
    """The evaluation library's name of a task: ``landmarks`` is evaluated as COCO ``keypoints``."""
    return "keypoints" if task == "landmarks" else task
