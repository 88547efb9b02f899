"""What ``segpipe evaluate`` was asked to do: the typed request (:mod:`segpipe.pipeline.requests`).

The request is declared once, in :mod:`segpipe.pipeline.requests` (:class:`EvaluateRequest`); its task is
the user-facing name (``landmarks``), which the workflow evaluates and reports under the evaluation
library's name (:func:`~segpipe.pipeline.requests.evaluation_task`: ``keypoints``).
"""

from __future__ import annotations

from segpipe.pipeline.requests import EvaluateRequest, evaluation_task

#: The tasks as the metric engines and the report name them.
TASKS = ("semantic", "instance", "panoptic", "keypoints")

__all__ = ["TASKS", "EvaluateRequest", "evaluation_task"]
