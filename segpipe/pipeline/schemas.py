"""Generate the JSON Schemas in ``schemas/`` from the typed models (checked in, drift-tested)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from segpipe.errors import OutputError
from segpipe.pipeline import eval_specs, runspec, specs
from segpipe.pipeline.prelabel.report import PrelabelReport
from segpipe.storage.atomic import write_bytes_atomic

#: file name -> model. Other modules add their models here as they land.
SCHEMAS: dict[str, type[BaseModel]] = {
    "category_map.schema.json": specs.CategoryMapSpec,
    "coco.schema.json": specs.CocoShapes,
    "conversion_report.schema.json": specs.ConversionReport,
    "evaluation_report.schema.json": eval_specs.EvaluationReport,
    "leaderboard.schema.json": eval_specs.Leaderboard,
    "pipeline.schema.json": runspec.PipelineSpec,
    "prelabel_report.schema.json": PrelabelReport,
    "validation_report.schema.json": specs.ValidationReport,
    "zarr_layout.schema.json": specs.StoreAttrs,
}


def render(model: type[BaseModel]) -> str:
    """The schema text for ``model`` (stable key order, trailing newline)."""
    schema: dict[str, Any] = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Writes every schema into ``out_dir``; returns the files.

    Each file is written atomically: a symbolic link (or anything else) at its name is replaced, never
    followed, so a link to another file cannot make this write there.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in sorted(SCHEMAS.items()):
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            raise OutputError("is a folder, not a schema file", path=path, hint="move it away")
        write_bytes_atomic(path, render(model).encode("utf-8"))
        written.append(path)
    return written


def drifted(out_dir: Path) -> list[str]:
    """Names of schemas whose checked-in file differs from the code (or is missing)."""
    bad = []
    for name, model in sorted(SCHEMAS.items()):
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(model):
            bad.append(name)
    return bad
