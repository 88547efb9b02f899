"""Training on the synth layout (images/ + masks/ + annotations.json + labelmap.txt): the public names.

Semantic models learn from ``masks/`` (label-map PNGs paired with the photos by stem; 255 is ignored),
instance models from the COCO ``annotations.json``, the stacked hourglass from COCO keypoints
(Gaussian heatmaps, sigma 2 output pixels). Every epoch writes ``OUT/epoch_NNN.ckpt`` (with optimizer
state, for ``--resume``), appends a line to ``OUT/metrics.jsonl`` (``mean_iou`` for semantic, COCO mask
``ap`` for instance, ``pck`` for landmarks) and refreshes ``OUT/best.ckpt`` when the validation metric
improves or ties (the later epoch wins a tie). ``max_minutes`` stops training at the budget (mid-epoch
if need be: that epoch is still validated and saved).

The code lives in :mod:`segpipe.models.training`, one module per concept (data, augmentation, step
batches, metrics, the loop, the output checks); this module keeps the names callers import.
"""

from __future__ import annotations

from segpipe.models.training.data import IGNORE, DatasetInfo, read_dataset, read_labelmap
from segpipe.models.training.loop import train
from segpipe.models.training.out_dir import TRAIN_ENTRIES
from segpipe.models.training.result import TrainResult

__all__ = ["IGNORE", "TRAIN_ENTRIES", "DatasetInfo", "TrainResult", "read_dataset", "read_labelmap", "train"]
