"""Evaluation engines over shards of images, and their reports.

Each engine pairs a pure, mergeable accumulator from :mod:`segpipe.core.metrics` (or pycocotools'
``COCOeval`` for AP) with a shard function that can run in-process or on any executor with ``submit``.
Modules are imported lazily by callers: ``segpipe.evaluation.semantic``, ``.cocoeval``, ``.panoptic``,
``.keypoints`` and ``.report``.
"""
