"""The evaluation report: built as the typed model, written as its JSON.

:func:`build_report` turns a run's results into a :class:`~segpipe.pipeline.eval_specs.EvaluationReport`
(the model ``schemas/evaluation_report.schema.json`` is generated from); :func:`write_outputs` writes
it to ``--report-dir`` (with the summary, CSV, plots and overlays of
:func:`segpipe.evaluation.report.write_report`) and ``--json``.

A figure that is undefined (NaN) is ``None`` in the model and ``null`` in the JSON. Optional parts
(``classes``, the sections of other tasks, ``overlay``) are left unset when absent, and the JSON holds
the fields that are set (:meth:`~segpipe.pipeline.eval_specs.EvaluationReport.to_json`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from segpipe import __version__
from segpipe.evaluation.cocoeval import CocoResult
from segpipe.evaluation.panoptic import PanopticResult
from segpipe.evaluation.report import write_report
from segpipe.evaluation.semantic import SemanticResult
from segpipe.pipeline.eval_specs import (
    ClassesSection,
    CocoClass,
    DetectionSection,
    EvaluationReport,
    ImageCounts,
    InstanceSection,
    KeypointsSection,
    PanopticClass,
    PanopticSection,
    PQGroup,
    SemanticClass,
    SemanticSection,
    Source,
    WorstImage,
)
from segpipe.pipeline.evaluate.driver import TaskOutcome
from segpipe.pipeline.evaluate.inputs import Sources, Tally
from segpipe.pipeline.specs import ProblemModel
from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.outputs import OutputPlan, begin_staging, discard, install


def num(value: Any) -> float | None:
    """A figure as the report holds it: a float, or None where it is undefined (NaN, infinite)."""
    f = float(value)
    return f if math.isfinite(f) else None


# ------------------------------------------------------------------------------------- sections


def semantic_section(r: SemanticResult) -> SemanticSection:
    """The ``semantic`` section: FCN metrics, per class, and the confusion matrix."""
    return SemanticSection(
        pixel_accuracy=num(r.pixel_accuracy),
        mean_accuracy=num(r.mean_accuracy),
        mean_iou=num(r.mean_iou),
        fw_iou=num(r.fw_iou),
        per_class=[SemanticClass(id=int(c["id"]), name=str(c["name"]), iou=num(c["iou"]), accuracy=num(c["accuracy"]),
                                 dice=num(c["dice"])) for c in r.per_class()],
        confusion=[[int(v) for v in row] for row in r.confusion],
    )


def _coco_classes(rows: Sequence[Mapping[str, Any]]) -> list[CocoClass]:
    return [CocoClass(id=int(c["id"]), name=str(c["name"]), ap=num(c["ap"]), ap50=num(c["ap50"]), ap75=num(c["ap75"]))
            for c in rows]


def _stats(r: CocoResult) -> dict[str, Any]:
    return {"stats": [float(v) for v in r.stats], **{k: float(v) for k, v in r.named.items()}}


def instance_section(results: Mapping[str, CocoResult]) -> InstanceSection:
    """The ``instance`` section: pycocotools' figures per iou type, in the order evaluated."""
    sections: dict[str, DetectionSection | KeypointsSection] = {}
    for iou_type, r in results.items():
        model = KeypointsSection if iou_type == "keypoints" else DetectionSection
        sections[iou_type] = model.model_validate({**_stats(r), "per_class": _coco_classes(r.per_class)})
    return InstanceSection.model_validate(sections)


def _pq_group(g: Mapping[str, Any]) -> PQGroup:
    return PQGroup(pq=num(g["pq"]), sq=num(g["sq"]), rq=num(g["rq"]), n=int(g["n"]))


def panoptic_section(r: PanopticResult) -> PanopticSection:
    """The ``panoptic`` section: PQ / SQ / RQ overall, for things and stuff, and per class."""
    return PanopticSection(
        all=_pq_group(r.all),
        things=_pq_group(r.things),
        stuff=_pq_group(r.stuff),
        per_class=[PanopticClass(id=int(c["id"]), name=str(c["name"]), isthing=bool(c["isthing"]), pq=num(c["pq"]),
                                 sq=num(c["sq"]), rq=num(c["rq"]), tp=int(c["tp"]), fp=int(c["fp"]), fn=int(c["fn"]))
                   for c in r.per_class],
    )


def worst_images(worst: Sequence[tuple[Any, float]], overlays: Sequence[str | None] = ()) -> list[WorstImage]:
    """The ``worst`` entries of one section, worst first, with their overlay files where drawn."""
    out = []
    for k, (key, score) in enumerate(worst):
        image = key if isinstance(key, (int, str)) else list(key)
        overlay = overlays[k] if k < len(overlays) else None
        drawn = {} if overlay is None else {"overlay": overlay}  # unset, not null, where none was drawn
        out.append(WorstImage.model_validate({"image": image, "score": float(score), **drawn}))
    return out


# ------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Header:
    """What was evaluated and how it went: the report's first fields.

    Attributes:
        task: The evaluation task.
        sources: Both sides and their formats.
        tally: Image counts and problems.
        elapsed_s: Seconds the evaluation took.
    """

    task: str
    sources: Sources
    tally: Tally
    elapsed_s: float


def build_report(header: Header, outcome: TaskOutcome,
                 overlays: Mapping[str, Sequence[str | None]] | None = None) -> EvaluationReport:
    """The typed report of one evaluation.

    Args:
        header: What was evaluated, the counts and problems.
        outcome: The task's results.
        overlays: Section → the worst images' overlay files, where they were drawn.
    """
    t, s = header.tally, header.sources
    fields: dict[str, Any] = {
        "segpipe_version": __version__,
        "task": header.task,
        "gt": Source(path=str(s.gt), format=s.gt_spec.name),
        "pred": Source(path=str(s.pred), format=s.pred_spec.name),
        "images": ImageCounts(gt=t.gt, pred=t.pred, evaluated=t.evaluated, failed=t.failed,
                              unmatched_gt=t.unmatched_gt, unmatched_pred=t.unmatched_pred),
        "problems": [ProblemModel.model_validate(p.to_dict()) for p in t.problems],
        "elapsed_s": header.elapsed_s,
    }
    if outcome.classes is not None:
        fields["classes"] = ClassesSection.model_validate(outcome.classes.report)
    if outcome.semantic is not None:
        fields["semantic"] = semantic_section(outcome.semantic)
    if outcome.instance:
        fields["instance"] = instance_section(outcome.instance)
    if outcome.panoptic is not None:
        fields["panoptic"] = panoptic_section(outcome.panoptic)
    worst = {name: worst_images(r.worst, (overlays or {}).get(name, ()))
             for name, r in (("semantic", outcome.semantic), ("panoptic", outcome.panoptic))
             if r is not None and r.worst}
    if worst:
        fields["worst"] = worst
    return EvaluationReport(**fields)


# ------------------------------------------------------------------------------------- files


def write_outputs(header: Header, outcome: TaskOutcome, json_plan: OutputPlan | None,
                  report_plan: OutputPlan | None) -> EvaluationReport:
    """Builds the report and writes it to ``--report-dir`` and ``--json``; returns it as written.

    The report folder is built beside its place and swapped in whole once ``report.json`` is written:
    an earlier report stays until then, and none of its overlays survive next to the new ones.
    """
    report = build_report(header, outcome)
    if report_plan is not None:
        staging = begin_staging(report_plan)
        try:
            written = write_report(
                staging,
                semantic=outcome.semantic,
                instance=outcome.instance,
                panoptic=outcome.panoptic,
                semantic_loader=outcome.semantic_loader,
                panoptic_loader=outcome.panoptic_loader,
                ignore_index=outcome.void,
                header=report.header_json(),
                categories=outcome.categories,
            )
            # write_report names the overlay files it draws; the report records them
            overlays = {name: [e.get("overlay") for e in entries] for name, entries in written.get("worst", {}).items()}
            report = build_report(header, outcome, overlays)
            write_json_atomic(staging / "report.json", report.to_json())
        except BaseException:
            discard(staging)
            raise
        install(staging, report_plan)
    if json_plan is not None:
        write_json_atomic(json_plan.given, report.to_json())
    return report
