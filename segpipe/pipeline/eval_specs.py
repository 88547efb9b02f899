"""Typed models of the evaluation report (``report.json`` / ``--json``) written by ``segpipe evaluate``.

``schemas/evaluation_report.schema.json`` is generated from :class:`EvaluationReport` and drift-tested.
Fractions lie in ``[0, 1]``; a figure that is undefined (NaN: no ground truth and no prediction for a
class, or nothing to average) is written as ``null``. pycocotools' ``-1`` ("no ground truth in this
area range") is kept as is in ``stats`` and the named COCO figures, exactly as ``COCOeval.stats`` has it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from segpipe.pipeline.specs import ProblemModel

Num = float | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- semantic


class SemanticClass(_Strict):
    """One class of a semantic evaluation."""

    id: int = Field(description="category id (the value in the label maps)")
    name: str
    iou: Num = Field(description="intersection over union; null when the class is absent from both maps")
    accuracy: Num = Field(description="recall of the class; null when absent from the ground truth")
    dice: Num = Field(description="Dice / F1; null when absent from both maps")


class SemanticSection(_Strict):
    """FCN metrics (Long et al.) over every evaluated pixel, from one merged confusion matrix."""

    pixel_accuracy: Num
    mean_accuracy: Num = Field(description="mean over classes present in the ground truth")
    mean_iou: Num = Field(description="mean over classes present in the ground truth or the prediction")
    fw_iou: Num = Field(description="frequency weighted IoU")
    per_class: list[SemanticClass]
    confusion: list[list[int]] = Field(
        description="C x C pixel counts; rows ground truth, columns prediction, in per_class order"
    )


# ---------------------------------------------------------------- instance (COCO AP)


class CocoClass(_Strict):
    """detectron2's per-category AP (precision averaged over recall and IoU, area all, last maxDets)."""

    id: int
    name: str
    ap: Num = Field(description="null when the category has no ground truth in the evaluated images")
    ap50: Num
    ap75: Num


class DetectionSection(_Strict):
    """COCO box or mask AP/AR (``segm`` / ``bbox``), identical to pycocotools ``COCOeval.summarize``."""

    stats: list[float] = Field(min_length=12, max_length=12, description="COCOeval.stats, pycocotools order")
    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR1: float
    AR10: float
    AR100: float
    ARs: float
    ARm: float
    ARl: float
    per_class: list[CocoClass]


class KeypointsSection(_Strict):
    """COCO keypoint (OKS) AP/AR, identical to pycocotools ``COCOeval.summarize`` for keypoints."""

    stats: list[float] = Field(min_length=10, max_length=10, description="COCOeval.stats, pycocotools order")
    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    AR50: float
    AR75: float
    ARm: float
    ARl: float
    per_class: list[CocoClass]


class InstanceSection(_Strict):
    """One entry per evaluated iou type."""

    segm: DetectionSection | None = None
    bbox: DetectionSection | None = None
    keypoints: KeypointsSection | None = None


# ---------------------------------------------------------------- panoptic


class PQGroup(_Strict):
    """Mean PQ / SQ / RQ over the ``n`` categories of a group that occur in the data."""

    pq: Num
    sq: Num
    rq: Num
    n: int


class PanopticClass(_Strict):
    """One category of a panoptic evaluation."""

    id: int
    name: str
    isthing: bool
    pq: Num
    sq: Num
    rq: Num
    tp: int
    fp: int
    fn: int


class PanopticSection(_Strict):
    """panopticapi's ``pq_compute`` figures."""

    all: PQGroup
    things: PQGroup
    stuff: PQGroup
    per_class: list[PanopticClass]


# ---------------------------------------------------------------- report


class Source(_Strict):
    """One input of the evaluation."""

    path: str
    format: str = Field(description="the segpipe format it was read as (see `segpipe formats`)")


class ImageCounts(_Strict):
    """How many images took part."""

    gt: int = Field(description="ground-truth images (after --img-ids)")
    pred: int = Field(description="images in the predictions")
    evaluated: int = Field(description="images whose pair was evaluated")
    failed: int = Field(description="images that could not be evaluated (listed in problems)")
    unmatched_gt: int = Field(description="ground-truth images without a prediction")
    unmatched_pred: int = Field(description="predicted images without ground truth (ignored)")


class RenamedClass(_Strict):
    """A class id the two sides name differently (``--match-classes id``)."""

    id: int
    gt: str = Field(description="the ground truth's name")
    pred: str = Field(description="the prediction's name")


class OneSideClass(_Strict):
    """A class only one side has, or a prediction class mapped to another id."""

    id: int | None = Field(None, description="its class id in the evaluation (absent: not evaluated as a class)")
    pred_id: int | None = Field(None, description="its id in the prediction")
    name: str


class ClassesSection(_Strict):
    """How the classes of the two sides matched (semantic)."""

    match: Literal["id", "name"] = Field(description="--match-classes")
    warnings: list[str] = Field(description="one line per kind of disagreement, as printed on stderr")
    renamed: list[RenamedClass] = Field(description="id mode: ids the two sides name differently")
    gt_only: list[OneSideClass] = Field(description="ground-truth classes the prediction does not have")
    pred_only: list[OneSideClass] = Field(description="prediction classes the ground truth does not have")
    remapped: list[OneSideClass] = Field(description="name mode: prediction ids mapped to another ground-truth id")


class WorstImage(_Strict):
    """One of the lowest-scoring images."""

    image: int | str | list[int | str] = Field(description="[image id, file name] of the ground truth")
    score: float = Field(description="per-image mIoU (semantic) or PQ (panoptic)")
    overlay: str | None = Field(None, description="image | ground truth | prediction PNG, relative to the report")


class EvaluationReport(BaseModel):
    """``report.json`` (``--report-dir``) and ``--json``, written by ``segpipe evaluate``.

    The keys of the task's section are repeated at the top level: ``pixel_accuracy``, ``mean_accuracy``,
    ``mean_iou``, ``fw_iou``, ``per_class``, ``confusion`` (semantic); ``segm``, ``bbox``, ``keypoints``
    (instance); ``all``, ``things``, ``stuff``, ``per_class`` (panoptic).
    """

    model_config = ConfigDict(extra="allow", title="segpipe evaluation report")
    segpipe_version: str
    task: Literal["semantic", "instance", "panoptic", "keypoints"]
    gt: Source
    pred: Source
    images: ImageCounts
    problems: list[ProblemModel]
    elapsed_s: float
    classes: ClassesSection | None = Field(None, description="semantic: how the two sides' classes matched")
    semantic: SemanticSection | None = None
    instance: InstanceSection | None = None
    panoptic: PanopticSection | None = None
    worst: dict[str, list[WorstImage]] | None = Field(
        None, description="section (semantic | panoptic) -> lowest-scoring images, worst first"
    )
