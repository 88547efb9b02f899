"""Worker kernels of ``segpipe evaluate``: a shard of pairs or samples in, a small mergeable result out.

* :mod:`.pairs`: the records every kernel shares (both sides' formats, a shard of pairs, its outcome);
* :mod:`.semantic`: :func:`~.semantic.semantic_shard`, label maps into a confusion matrix;
* :mod:`.panoptic`: :func:`~.panoptic.panoptic_shard`, segment maps into a PQ accumulator;
* :mod:`.coco`: :func:`~.coco.coco_shard`, samples into COCO dicts with RLE masks (for AP).

Each takes its settings, then its typed shard record, decodes its own inputs and never returns pixels.
The workflow (:mod:`segpipe.pipeline.evaluate`) plans the shards and merges what comes back.
"""
