"""Pipeline files: ``segpipe run PIPELINE.yaml`` runs their stages (:mod:`segpipe.pipeline.run`).

A pipeline is a YAML file validated against :class:`PipelineSpec` (JSON Schema:
``schemas/pipeline.schema.json``). Each stage names one step, and its keys are that command's
request (:mod:`segpipe.pipeline.requests`): the same names and defaults as the command's options.
Stages run in order; relative paths are relative to the work folder (``workdir:`` in the file, else
the file's own folder, or ``--workdir``), and every output stays inside it::

    version: 1
    name: street view pre-labeling
    workers: 2                      # or scheduler: tcp://host:8786
    stages:
      - synth: {kind: streetview, out: data, n: 16}
      - train: {dataset: data, arch: unet, out: ckpt, max_minutes: 1}
      - prelabel: {source: data/images, model: ckpt/best.ckpt, out: prelabels.zarr}
      - export: {store: prelabels.zarr, out: export/coco, to: coco}
      - evaluate: {gt: data, pred: prelabels.zarr, task: semantic, report_dir: report}

A pipeline runs again as it ran the first time: ``overwrite: true`` (the default) lets each stage
replace its own earlier output, as ``--overwrite`` does, unless the stage says ``overwrite`` or
``resume`` itself (``resume: true`` continues a pre-label store after a crash).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segpipe.core.problems import Problem
from segpipe.errors import ConfigError, InputError
from segpipe.pipeline.requests import (
    ConvertRequest,
    EvaluateCheckpointsRequest,
    EvaluateRequest,
    ExportRequest,
    IngestRequest,
    PathRole,
    PrelabelRequest,
    Request,
    SynthRequest,
    TrainRequest,
    describe,
    location,
)
from segpipe.storage.paths import is_within


class Stage(BaseModel):
    """One stage: exactly one key naming what it does, holding that command's request."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)
    synth: SynthRequest | None = None
    train: TrainRequest | None = None
    ingest: IngestRequest | None = None
    prelabel: PrelabelRequest | None = None
    export: ExportRequest | None = None
    convert: ConvertRequest | None = None
    evaluate: EvaluateRequest | None = None
    evaluate_checkpoints: EvaluateCheckpointsRequest | None = Field(None, alias="evaluate-checkpoints")

    @model_validator(mode="after")
    def _exactly_one(self) -> Stage:
        set_ = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"a stage names exactly one step, got {len(set_)}: {set_}")
        return self

    def step(self) -> tuple[str, Request]:
        """``(stage key, request)``."""
        for k, info in type(self).model_fields.items():
            v = getattr(self, k)
            if v is not None:
                return info.alias or k, v
        raise AssertionError("validated: one step is set")


class PipelineSpec(BaseModel):
    """A segpipe pipeline file."""

    model_config = ConfigDict(extra="forbid", title="segpipe pipeline", validate_by_name=True,
                              validate_by_alias=True)
    version: Literal[1] = 1
    name: str = ""
    description: str = ""
    workdir: str | None = Field(None, description="relative paths resolve here (default: the file's folder)")
    workers: int | None = Field(None, ge=0, description="embedded Dask cluster size (0 = in-process)")
    scheduler: str | None = Field(None, description="existing Dask scheduler address")
    overwrite: bool = Field(True, description="stages replace their own earlier outputs, so the pipeline runs again "
                                              "(a stage's own overwrite or resume wins)")
    stages: list[Stage] = Field(min_length=1)

    def steps(self) -> list[tuple[str, Request]]:
        """``(stage key, request)`` of every stage, with the pipeline's ``overwrite`` where the stage says nothing."""
        out = []
        for stage in self.stages:
            name, req = stage.step()
            fields = type(req).model_fields
            if "overwrite" in fields and not ({"overwrite", "resume"} & req.model_fields_set):
                req = req.model_copy(update={"overwrite": self.overwrite})
            out.append((name, req))
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
    return PipelineSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def validate_pipeline_file(path: Path) -> Iterator[Problem]:
    """One problem per invalid field of a pipeline file."""
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
            yield Problem("error", str(path), location(tuple(err["loc"])), _message(err), f"pipeline.{err['type']}")
    workdir = data.get("workdir")
    why = workdir_problem(path, workdir) if isinstance(workdir, str) else None
    if why:
        yield Problem("error", str(path), "workdir", why, "pipeline.workdir")
    elif spec is not None:  # outputs outside the work folder are refused by `run` (see run.py): flagged here too
        base = (path.parent / spec.workdir if spec.workdir else path.parent).resolve()
        for i, (name, step) in enumerate(spec.steps()):
            for key, rel in stage_outputs(step):
                target = rel if rel.is_absolute() else base / rel
                if not is_within(base, target):
                    yield Problem("error", str(path), f"stages[{i}].{name}.{key}",
                                  f"output {str(rel)!r} is outside the work folder {base}; `segpipe run` refuses it",
                                  "pipeline.output")


def _message(err: Any) -> str:
    """A stage's problem in the words the command line uses; an unknown key names the command's keys."""
    loc = tuple(err.get("loc") or ())
    if err.get("type") == "extra_forbidden" and len(loc) == 4 and loc[0] == "stages":
        model = Stage.model_fields[str(loc[2]).replace("-", "_")].annotation
        for m in getattr(model, "__args__", ()):
            if isinstance(m, type) and issubclass(m, Request):
                return f"not a key of {loc[2]} stages (known: {', '.join(m.keys())})"
    return describe(err)


def stage_outputs(step: Request) -> list[tuple[str, Path]]:
    """``(key, path)`` of every output a stage names (fields marked :attr:`PathRole.OUTPUT`)."""
    return [(step.key_of(name), v) for name in type(step).model_fields
            if step.role(name) is PathRole.OUTPUT and isinstance(v := getattr(step, name), Path)]


def stage_inputs(step: Request) -> list[str | Path]:
    """Every path a stage reads (fields marked :attr:`PathRole.INPUT` or ``MODEL``), as written in the file."""
    found: list[str | Path] = []
    for name in type(step).model_fields:
        v = getattr(step, name)
        if step.role(name) in (PathRole.INPUT, PathRole.MODEL) and v is not None:
            found.extend(v if isinstance(v, tuple) else [v])
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
    if ".." in Path(workdir).parts or not is_within(path.parent, path.parent / workdir):
        return f"{workdir!r} leaves the file's folder: a pipeline's workdir must be a folder inside it"
    return None
