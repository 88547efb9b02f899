"""Which prediction class is which ground-truth class (``segpipe evaluate --match-classes id|name``).

Semantic evaluation compares label values. When the two sides number their classes differently
(one calls 3 ``car``, the other ``road``) comparing by id gives a meaningless mIoU, so the classes
are always compared by name as well:

* ``id`` (the default): values are compared as they are; every disagreement is reported, one warning
  line per kind (ids named differently, classes one side lacks), and recorded in the report.
* ``name``: each prediction id is mapped to the ground-truth id of the class with the same name
  (names compared case-insensitively, surrounding blanks ignored). Classes found on one side only
  stay in the evaluation: a ground-truth class the prediction lacks is never predicted (IoU 0 where
  present), a prediction class the ground truth lacks becomes a class of its own (every pixel
  predicted as it is wrong). Refused when a side has no class names (only values) or when a name
  is ambiguous (two classes of one side share it).

Background: a side without category 0 gets ``background`` as 0, as
:func:`~segpipe.pipeline.evaluate.semantic_classes` does for the ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segpipe.errors import ConfigError

MODES = ("id", "name")
#: Entries shown per warning line; the report lists them all.
SHOWN = 6


def norm(name: str) -> str:
    """The form names are compared in: case-folded, blanks around removed."""
    return str(name).strip().casefold()


@dataclass(frozen=True)
class ClassMatch:
    """The classes of a semantic evaluation and how prediction ids map onto them.

    Attributes:
        class_ids: ``C`` ids reported for the classes (ground-truth ids first, then any class only
            the prediction has, under its own id, or a free id if the ground truth uses it).
        names: ``C`` class names.
        n_gt: The first ``n_gt`` classes are the ground truth's (the values its label maps hold).
        pred_map: Prediction category id → reported class id (``name`` mode); None compares ids.
        report: The report's ``classes`` section (mode, warnings, one-side-only and renamed classes).
    """

    class_ids: tuple[int, ...]
    names: tuple[str, ...]
    n_gt: int
    pred_map: tuple[tuple[int, int], ...] | None = None
    report: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def warnings(self) -> list[str]:
        """One line per kind of disagreement (without the ``warning:`` prefix)."""
        return list(self.report.get("warnings", []))


def _with_background(names: Mapping[int, str]) -> dict[int, str]:
    out = dict(names)
    if out and 0 not in out:
        out = {0: "background", **out}
    return out


def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _ambiguous(names: Mapping[int, str], side: str) -> None:
    seen: dict[str, int] = {}
    for i, n in sorted(names.items()):
        k = norm(n)
        if k in seen:
            raise ConfigError(
                f"--match-classes name: {side} names two classes {n!r} ({seen[k]} and {i}); names must be unique",
                hint="fix the class names, or compare ids with --match-classes id",
            )
        seen[k] = i


def match_classes(
    gt_ids: Sequence[int],
    gt_names: Sequence[str],
    pred_names: Mapping[int, str],
    *,
    mode: str = "id",
    gt_named: bool = True,
    pred_named: bool = True,
) -> ClassMatch:
    """Compares the two sides' classes and builds the class list of the evaluation.

    Args:
        gt_ids: The ground truth's class ids (:func:`~segpipe.pipeline.evaluate.semantic_classes`).
        gt_names: Their names.
        pred_names: The prediction's categories, id → name (``background`` is added as 0 if absent).
        mode: ``id`` or ``name``.
        gt_named: False when the ground truth's names were made up from its values (``class_<v>``).
        pred_named: Same for the prediction.

    Returns:
        The :class:`ClassMatch`.

    Raises:
        ConfigError: unknown ``mode``; in ``name`` mode, a side without names or an ambiguous name.
    """
    if mode not in MODES:
        raise ConfigError(f"--match-classes must be id or name, got {mode!r}")
    gt = dict(zip((int(i) for i in gt_ids), (str(n) for n in gt_names), strict=True))
    pred = _with_background({int(k): str(v) for k, v in pred_names.items()})
    report: dict[str, Any] = {"match": mode, "warnings": [], "renamed": [], "gt_only": [], "pred_only": [],
                              "remapped": []}
    warnings: list[str] = report["warnings"]
    if mode == "id":
        if gt_named and pred_named:
            renamed = [(i, gt[i], pred[i]) for i in sorted(gt) if i in pred and norm(gt[i]) != norm(pred[i])]
            report["renamed"] = [{"id": i, "gt": a, "pred": b} for i, a, b in renamed]
            if renamed:
                what = (f"class {renamed[0][0]} differently ({renamed[0][1]} vs {renamed[0][2]})" if len(renamed) == 1
                        else f"{len(renamed)} classes differently: "
                        + _listing([f"{i} ({a} vs {b})" for i, a, b in renamed]))
                warnings.append(f"GT and PRED name {what}; pass --match-classes name")
            gt_only = [i for i in sorted(gt) if i not in pred]
            report["gt_only"] = [{"id": i, "name": gt[i]} for i in gt_only]
            if gt_only:
                warnings.append(f"PRED has no class {_listing([f'{i} ({gt[i]})' for i in gt_only])} of GT "
                                "(never predicted: IoU 0 where present)")
        pred_only = [i for i in sorted(pred) if i not in gt]
        report["pred_only"] = [{"pred_id": i, "name": pred[i]} for i in pred_only]
        if pred_only and pred_named:
            warnings.append(f"GT has no class {_listing([f'{i} ({pred[i]})' for i in pred_only])} of PRED "
                            "(images where PRED uses it on evaluated pixels cannot be evaluated)")
        return ClassMatch(tuple(gt), tuple(gt.values()), len(gt), None, report)
    for named, side in ((gt_named, "GT"), (pred_named, "PRED")):
        if not named:
            raise ConfigError(
                f"--match-classes name: {side} names no classes (its label values only)",
                hint="name them with --categories (label-PNG folders) or a labelmap.txt, or use --match-classes id",
            )
    _ambiguous(gt, "GT")
    _ambiguous(pred, "PRED")
    by_name = {norm(n): i for i, n in gt.items()}
    ids, names = list(gt), list(gt.values())
    pred_map: dict[int, int] = {}
    used = set(ids)
    for pid, pname in sorted(pred.items()):
        gid = by_name.get(norm(pname))
        if gid is not None:
            pred_map[pid] = gid
            if gid != pid:
                report["remapped"].append({"pred_id": pid, "id": gid, "name": gt[gid]})
            continue
        new = pid if pid not in used else max(used) + 1
        used.add(new)
        ids.append(new)
        names.append(pname)
        pred_map[pid] = new
        report["pred_only"].append({"pred_id": pid, "id": new, "name": pname})
    matched = set(pred_map.values())
    report["gt_only"] = [{"id": i, "name": gt[i]} for i in gt if i not in matched]
    if report["pred_only"]:
        listed = _listing([f"{d['name']} (PRED {d['pred_id']})" for d in report["pred_only"]])
        warnings.append(f"GT has no class {listed} of PRED (counted: every pixel predicted as it is wrong)")
    if report["gt_only"]:
        warnings.append("PRED has no class " + _listing([f"{d['name']} ({d['id']})" for d in report["gt_only"]])
                        + " of GT (counted: never predicted)")
    return ClassMatch(tuple(ids), tuple(names), len(gt), tuple(sorted(pred_map.items())), report)
