"""Typed models of the evaluation reports: ``segpipe evaluate``'s ``report.json`` / ``--json`` and the
``leaderboard.json`` of ``segpipe evaluate-checkpoints``.

The workflows build these models and write their JSON (:meth:`EvaluationReport.to_json`,
:meth:`Leaderboard.to_json`); ``schemas/evaluation_report.schema.json`` and
``schemas/leaderboard.schema.json`` are generated from them and drift-tested. Fractions lie in
``[0, 1]``; a figure that is undefined (NaN: no ground truth and no prediction for a class, or nothing
to average) is ``None`` here and ``null`` in the JSON. pycocotools' ``-1`` ("no ground truth in this area
range") is kept as is in ``stats`` and the named COCO figures, exactly as ``COCOeval.stats`` has it.

Optional parts are left unset when absent, and the JSON holds the fields that are set: a report of
one task has that task's section only, a worst image drawn nowhere has no ``overlay``.
"""

from __future__ import annotations

from typing import Any, Literal

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

    # pred_id first: the prediction's id, then the class id it is evaluated as (the JSON's order)
    pred_id: int | None = Field(None, description="its id in the prediction")
    id: int | None = Field(None, description="its class id in the evaluation (absent: not evaluated as a class)")
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

    def header_json(self) -> dict[str, Any]:
        """What was evaluated and how it went (the fields before the sections), as JSON."""
        return self.model_dump(mode="json", exclude_unset=True, include=_HEADER)

    def to_json(self) -> dict[str, Any]:
        """The report as written: the fields that are set, then the task section's keys at the top level."""
        out = self.model_dump(mode="json", exclude_unset=True)
        section = out.get("semantic") or out.get("instance") or out.get("panoptic") or {}
        out.update({k: v for k, v in section.items() if k not in out})
        return out

    @property
    def failed(self) -> bool:
        """True when some image could not be evaluated (an error among the problems)."""
        return any(p.severity == "error" for p in self.problems)


_HEADER = {"segpipe_version", "task", "gt", "pred", "images", "problems", "elapsed_s", "classes"}


# ---------------------------------------------------------------- leaderboard (evaluate-checkpoints)


class LeaderboardRow(_Strict):
    """One checkpoint: its speed and the task's headline metrics (``leaderboard.csv`` has the same columns).

    A row holds the metric columns of its task only: ``mIoU``, ``pixel acc``, ``mean acc``, ``fw IoU``
    (semantic); ``mask AP``, ``mask AP50``, ``box AP`` (instance); ``PQ``, ``SQ``, ``RQ`` (panoptic);
    ``OKS AP``, ``OKS AP50`` (keypoints). A metric the report lacks is ``null``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    checkpoint: str = Field(description="the checkpoint file, as given")
    name: str = Field(description="its name in stores/ and reports/")
    img_s: float = Field(description="pre-labeling throughput, images per second")
    seconds: float = Field(description="pre-labeling and evaluation time")
    epoch: int | None = Field(description="the epoch in the file name (epoch_12, epoch-3 ...), if any")
    miou: Num = Field(None, alias="mIoU")
    pixel_acc: Num = Field(None, alias="pixel acc")
    mean_acc: Num = Field(None, alias="mean acc")
    fw_iou: Num = Field(None, alias="fw IoU")
    mask_ap: Num = Field(None, alias="mask AP")
    mask_ap50: Num = Field(None, alias="mask AP50")
    box_ap: Num = Field(None, alias="box AP")
    pq: Num = Field(None, alias="PQ")
    sq: Num = Field(None, alias="SQ")
    rq: Num = Field(None, alias="RQ")
    oks_ap: Num = Field(None, alias="OKS AP")
    oks_ap50: Num = Field(None, alias="OKS AP50")

    def to_json(self) -> dict[str, Any]:
        """The row as written: its columns by name, the task's metrics only."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class CheckpointProblem(_Strict):
    """A checkpoint for which some images failed (the command exits 1)."""

    checkpoint: str
    prelabel_failed: int = Field(description="images that failed to pre-label")
    evaluate_errors: int = Field(description="images that could not be evaluated")
    store: str = Field(description="its store (the run reports are in .segpipe/runs)")
    report: str = Field(description="its evaluation report folder")


class Leaderboard(_Strict):
    """``leaderboard.json``, written by ``segpipe evaluate-checkpoints``."""

    model_config = ConfigDict(extra="forbid", title="segpipe evaluate-checkpoints leaderboard")
    task: Literal["semantic", "instance", "panoptic", "keypoints"]
    gt: str = Field(description="the labeled archive")
    metric: str = Field(description="the column that ranks the checkpoints")
    rows: list[LeaderboardRow] = Field(description="one per checkpoint, in the order given")
    best: str | None = Field(description="the best checkpoint by the ranking metric (null: none)")
    problems: list[CheckpointProblem]

    def to_json(self) -> dict[str, Any]:
        """The leaderboard as written."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
