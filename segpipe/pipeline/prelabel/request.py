"""What ``segpipe prelabel`` was asked to do: the typed request, as the CLI, pipeline files and the API build it.

The request is declared once, in :mod:`segpipe.pipeline.requests` (:class:`PrelabelRequest`: its fields,
defaults and checks); the workflow's modules take it from here.
"""

from __future__ import annotations

from segpipe.pipeline.requests import PrelabelRequest

__all__ = ["PrelabelRequest"]
