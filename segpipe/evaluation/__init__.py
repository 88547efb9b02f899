"""Evaluation engines over shards of images, and their reports.

Each engine pairs a pure, mergeable accumulator from :mod:`segpipe.core.metrics` (or pycocotools'
``COCOeval`` for AP) with a shard function; who runs the shards is the caller's choice
(:mod:`segpipe.evaluation.shards`: the caller's driver, an executor with ``submit``, or this process).
Modules are imported lazily by callers: ``segpipe.evaluation.semantic``, ``.cocoeval`` (``.cocoref``,
``.cocofast``), ``.panoptic``, ``.keypoints`` and ``.report``.
"""
