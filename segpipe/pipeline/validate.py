"""``segpipe validate``: dispatch to the format's validator."""

from __future__ import annotations

import inspect
from pathlib import Path

from segpipe.core.problems import Problem
from segpipe.errors import UnsupportedError
from segpipe.formats import detect_format, get_format


def validate_path(path: Path, fmt: str = "auto", *, image_root: Path | None = None) -> tuple[str, list[Problem]]:
    """Validates a dataset; returns ``(format, problems)``.

    Raises:
        InputError: the path cannot be read at all (exit 2).
    """
    if path.suffix in (".yaml", ".yml") and fmt in ("auto", "pipeline"):
        from segpipe.pipeline.runspec import validate_pipeline_file  # lands with declarative pipelines

        return "pipeline", list(validate_pipeline_file(path))
    name = detect_format(path) if fmt == "auto" else fmt
    spec = get_format(name)
    if spec.validate is None:
        raise UnsupportedError(f"format {name!r} has no validator")
    kwargs = {}
    if image_root is not None and "image_root" in inspect.signature(spec.validate).parameters:
        kwargs["image_root"] = image_root
    return name, list(spec.validate(path, **kwargs))
