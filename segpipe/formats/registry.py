"""The format registry. Adapters register a :class:`FormatSpec` at import time."""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.registry import Registry

FORMATS: Registry[FormatSpec] = Registry("format")


def register_format(spec: FormatSpec) -> FormatSpec:
    """Registers ``spec`` under ``spec.name``; raises on a duplicate."""
    FORMATS.add(spec.name, spec)
    return spec
