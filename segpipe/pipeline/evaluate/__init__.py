"""``segpipe evaluate``: predictions against ground truth, sharded on Dask, one report.

Any two datasets segpipe reads can be compared: COCO, COCO results (image ids and sizes from the
ground truth), COCO panoptic, VOC, mask directories, and a segpipe Zarr store as the prediction. The
flow is the one :mod:`segpipe.pipeline.convert` uses — readers on the driver stream lightweight
samples, workers decode pixels — and the metric engines of :mod:`segpipe.evaluation` merge the
shards' small results. Each task is a module of this package over one driver (:mod:`.driver`),
its worker kernels in :mod:`segpipe.kernels.evaluate`:

* **semantic** (:mod:`.semantic`): shards of ``(gt sample, pred sample)``
  pairs go to the workers; each worker decodes both samples itself (``materialize`` +
  :func:`~segpipe.formats.derive.derive_class_map`), maps category ids to contiguous class indices and
  folds the pair into a :class:`~segpipe.evaluation.semantic.SemanticEvaluator` (a ``C × C`` confusion
  matrix plus the worst-N per-image mIoU). Only that ``O(C² + N_worst)`` object comes back; the driver
  merges them as they complete, so memory does not grow with the number of images, and never holds
  pixels.
* **instance / keypoints** (:mod:`.coco`): the COCO ground-truth dict and
  result list are built (COCO JSON inputs are loaded as they are; other formats are materialised on the
  workers into COCO dicts with RLE masks and scores) and
  :func:`~segpipe.evaluation.cocoeval.evaluate_coco` matches them in image shards on the same client —
  pycocotools' exact numbers.
* **panoptic** (:mod:`.panoptic`): two COCO panoptic JSON files go to
  :func:`~segpipe.evaluation.panoptic.evaluate_panoptic` (PNG folders default to the JSON path
  without ``.json``); any other pair (e.g. a store of panoptic predictions) is materialised on the
  workers (:func:`~segpipe.formats.derive.derive_panoptic`) into
  :class:`~segpipe.evaluation.panoptic.PanopticEvaluator` s that merge like the semantic ones.

The report is the typed :class:`~segpipe.pipeline.eval_specs.EvaluationReport`
(:func:`~.workflow.evaluate_report`); :func:`~.workflow.evaluate` returns its JSON, as written to
``--json`` and ``--report-dir`` (:mod:`.output`). Planning is pure (:mod:`.plan`).

Pairing images. A prediction is paired with the ground-truth image of the **same image id**, unless
both name a file and the two file stems (file names without folders and extension) differ: then the
ids were numbered independently (a mask directory numbers its images 1..N in stem order) and the
prediction with the ground truth's **file stem** is taken instead, if any. When no prediction has the
id, the file stem is tried too. Each prediction is used once.
Ground-truth images left without a prediction are problems (errors for semantic and panoptic: the
image could not be evaluated; for COCO AP an image without detections is simply a miss); predictions
left without ground truth are warnings and are ignored.

Semantic classes. Class ``k`` is the ``k``-th ground-truth category (``background`` with id 0 is put
first when the ground truth has no category 0, as COCO has not: rendered COCO label maps use 0 for
unlabelled pixels). With ``num_classes=N`` the label values ``0 .. N-1`` are the classes directly.
Ground-truth pixels equal to the ground truth's void value (``DatasetMeta.void_value``, 255 by
default) or to ``ignore_index`` are ignored. Every other ground-truth value must be a class, and the
prediction must give a class on every pixel that is not ignored: an image where either is not the
case is reported as a problem (naming the values) and left out, never silently remapped.
The two sides' class names are compared too (:mod:`segpipe.pipeline.class_match`): by default values
are compared as ids and every naming disagreement is a warning in the report's ``classes`` section;
``match_classes="name"`` maps prediction ids to ground-truth ids by name instead.

Two flat folders of label PNGs (``gt/*.png``, ``pred/*.png``) are read as ``labelpngs``
(:mod:`segpipe.formats.labelpngs`) when no other format matches; their images pair by file stem.
"""

from __future__ import annotations

from segpipe.kernels.evaluate.semantic import label_indices
from segpipe.pipeline.evaluate.coco import default_iou_types
from segpipe.pipeline.evaluate.driver import Progress
from segpipe.pipeline.evaluate.inputs import PREFER
from segpipe.pipeline.evaluate.plan import ImageSelection, Pairing
from segpipe.pipeline.evaluate.request import TASKS, EvaluateRequest
from segpipe.pipeline.evaluate.semantic import semantic_classes
from segpipe.pipeline.evaluate.workflow import estimate_evaluate_s, evaluate, evaluate_report, failed

__all__ = [
    "PREFER",
    "TASKS",
    "EvaluateRequest",
    "ImageSelection",
    "Pairing",
    "Progress",
    "default_iou_types",
    "estimate_evaluate_s",
    "evaluate",
    "evaluate_report",
    "failed",
    "label_indices",
    "semantic_classes",
]
