"""Training (``segpipe train``), by concept.

- :mod:`~segpipe.models.training.data`: the dataset folder (synth layout), the validation split, label
  maps and COCO targets (masks through :mod:`segpipe.core.rle`), heatmap targets; numpy only.
- :mod:`~segpipe.models.training.coco_checks`: the fields of ``annotations.json`` that training reads,
  checked first (one error naming the JSON path instead of a KeyError mid-run).
- :mod:`~segpipe.models.training.augment`: random scale/flip/crop.
- :mod:`~segpipe.models.training.batches`: the tensors and the loss of one step, per task.
- :mod:`~segpipe.models.training.metrics`: the validation metric of each task (the confusion matrix
  of :mod:`segpipe.core.metrics`, COCO mask AP, PCK).
- :mod:`~segpipe.models.training.loop`: :func:`train`, the run and its epochs.
- :mod:`~segpipe.models.training.out_dir`: the output-folder checks around a run.

:mod:`segpipe.models.train` re-exports the public names. Importing this package imports torch:
callers on the CLI's start-up path import it inside the command, not at module level.
"""
