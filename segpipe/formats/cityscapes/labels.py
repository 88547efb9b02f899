"""The official Cityscapes label table and the mapping of a dataset's categories onto it (pure).

The 34 labels with a non-negative id of cityscapesScripts' ``helpers/labels.py`` (``license plate``,
id -1, is not a pixel label of the released ground truth and is left out).

Mapping rule (:func:`plan_labels`):

* **official**: when *every* category's name matches a Cityscapes label (case, ``_`` and ``-``
  ignored; ``background`` counts as ``unlabeled``) and no two categories match the same label, the
  written label ids are the official ids, the train ids the official train ids, and "has instances"
  the official flag (person, rider, car, truck, bus, caravan, trailer, train, motorcycle, bicycle).
* **custom** otherwise: label id = category id (so the ids must lie in 0..65534), train id = the
  official train id of a category whose name matches a Cityscapes label and 255 for the others, and
  "has instances" = the category's ``isthing``; label 0 is ``unlabeled`` (train id 255) unless a
  category has id 0. ``labelTrainIds`` PNGs are written only when at least one category has a train id
  other than 255.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from segpipe.core.records import Category
from segpipe.errors import FormatError

#: Train id of classes outside the 19 evaluated ones.
IGNORE_TRAIN_ID = 255


@dataclass(frozen=True, slots=True)
class CityscapesLabel:
    """One row of the official table.

    Attributes:
        name: Label name.
        id: Label id (the ``labelIds`` pixel value).
        train_id: Train id (0..18, or 255 when not evaluated).
        category: Category group (``flat``, ``vehicle`` ...).
        has_instances: Whether ``instanceIds`` holds per-object ids for this class.
        ignore_in_eval: Whether the official evaluation ignores it.
        color: RGB colour of ``_gtFine_color.png``.
    """

    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


def _L(name: str, i: int, t: int, cat: str, inst: bool, ign: bool, c: tuple[int, int, int]) -> CityscapesLabel:
    return CityscapesLabel(name, i, t, cat, inst, ign, c)


#: The official table, ordered by id (row ``i`` has id ``i``).
LABELS: tuple[CityscapesLabel, ...] = (
    _L("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    _L("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    _L("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    _L("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    _L("static", 4, 255, "void", False, True, (0, 0, 0)),
    _L("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    _L("ground", 6, 255, "void", False, True, (81, 0, 81)),
    _L("road", 7, 0, "flat", False, False, (128, 64, 128)),
    _L("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    _L("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    _L("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    _L("building", 11, 2, "construction", False, False, (70, 70, 70)),
    _L("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    _L("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    _L("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    _L("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    _L("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    _L("pole", 17, 5, "object", False, False, (153, 153, 153)),
    _L("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    _L("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    _L("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    _L("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    _L("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    _L("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    _L("person", 24, 11, "human", True, False, (220, 20, 60)),
    _L("rider", 25, 12, "human", True, False, (255, 0, 0)),
    _L("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    _L("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    _L("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    _L("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    _L("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    _L("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    _L("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    _L("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
)

#: Names that mean a Cityscapes label under another spelling.
_ALIASES = {"background": "unlabeled", "motorbike": "motorcycle", "void": "unlabeled"}
_BY_NAME = {lab.name: lab for lab in LABELS}

#: Largest label id whose instance ids (``id × 1000 + 999``) still fit in a 16-bit PNG.
MAX_INSTANCE_LABEL = 65


def normalise_name(name: str) -> str:
    """Lower case, ``_``/``-`` as spaces, single spaces, aliases resolved."""
    n = " ".join(name.lower().replace("_", " ").replace("-", " ").split())
    return _ALIASES.get(n, n)


def official_label(name: str) -> CityscapesLabel | None:
    """The official label a category name stands for, or None."""
    return _BY_NAME.get(normalise_name(name))


@dataclass(frozen=True)
class LabelPlan:
    """How categories become Cityscapes label ids.

    Attributes:
        official: True when the official ids are used (see the module docstring).
        label_of: ``{category id: label id}``.
        rows: The written label table, one dict per label id: ``id``, ``name``, ``trainId``,
            ``hasInstances``, ``color`` and ``category_id`` (None for official labels no category maps to).
    """

    official: bool
    label_of: dict[int, int]
    rows: tuple[dict[str, Any], ...]

    @property
    def train_of(self) -> dict[int, int]:
        """``{label id: train id}``."""
        return {int(r["id"]): int(r["trainId"]) for r in self.rows}

    @property
    def things(self) -> frozenset[int]:
        """Label ids that hold per-object instance ids."""
        return frozenset(int(r["id"]) for r in self.rows if r["hasInstances"])

    @property
    def has_train_ids(self) -> bool:
        """Whether any label has a train id (then ``labelTrainIds`` PNGs are written)."""
        return any(int(r["trainId"]) != IGNORE_TRAIN_ID for r in self.rows)

    @property
    def category_of(self) -> dict[int, int]:
        """``{label id: category id}`` for the labels a category maps to."""
        return {int(r["id"]): int(r["category_id"]) for r in self.rows if r.get("category_id") is not None}


def _row(lab: CityscapesLabel, category_id: int | None) -> dict[str, Any]:
    return {"id": lab.id, "name": lab.name, "trainId": lab.train_id, "hasInstances": lab.has_instances,
            "color": list(lab.color), "category_id": category_id}


def official_rows() -> tuple[dict[str, Any], ...]:
    """The official table as rows, each label standing for the category of the same id."""
    return tuple(_row(lab, lab.id) for lab in LABELS)


def plan_labels(categories: Iterable[Category]) -> LabelPlan:
    """Maps ``categories`` to Cityscapes label ids (the rule is in the module docstring).

    Raises:
        FormatError: custom mode and a category id outside 0..65534.
    """
    cats = list(categories)
    matched = {c.id: official_label(c.name) for c in cats}
    ids = [lab.id for lab in matched.values() if lab is not None]
    if cats and all(lab is not None for lab in matched.values()) and len(set(ids)) == len(ids):
        by_label = {lab.id: cid for cid, lab in matched.items() if lab is not None}
        rows = tuple(_row(lab, by_label.get(lab.id)) for lab in LABELS)
        return LabelPlan(True, {cid: lab.id for cid, lab in matched.items() if lab is not None}, rows)
    out: list[dict[str, Any]] = []
    for c in cats:
        if not 0 <= c.id <= 65534:
            raise FormatError(
                f"category {c.name!r} has id {c.id}; Cityscapes label maps hold ids 0..65534",
                hint="re-id the categories with a category map (--categories, `ids:`)",
            )
        lab = matched[c.id]
        out.append({"id": c.id, "name": c.name, "trainId": lab.train_id if lab is not None else IGNORE_TRAIN_ID,
                    "hasInstances": bool(c.isthing), "color": list(c.color) if c.color is not None else None,
                    "category_id": c.id})
    if all(c.id != 0 for c in cats):  # unannotated and void pixels are written as 0: name it
        out.append(_row(LABELS[0], None))
    return LabelPlan(False, {c.id: c.id for c in cats}, tuple(sorted(out, key=lambda r: r["id"])))


def rows_from_json(rows: Any) -> tuple[dict[str, Any], ...]:
    """Validates the ``labels`` rows of a sidecar (ids and train ids integers, names strings).

    Raises:
        FormatError: a malformed row (the caller adds the file).
    """
    if not isinstance(rows, list):
        raise FormatError("'labels' must be a list", where="labels")
    out: list[dict[str, Any]] = []
    for k, r in enumerate(rows):
        if not (isinstance(r, Mapping) and isinstance(r.get("id"), int) and isinstance(r.get("name"), str)
                and isinstance(r.get("trainId", IGNORE_TRAIN_ID), int)):
            raise FormatError("label rows need an integer 'id', a 'name' and an integer 'trainId'",
                              where=f"labels[{k}]")
        cid = r.get("category_id")
        out.append({"id": int(r["id"]), "name": str(r["name"]), "trainId": int(r.get("trainId", IGNORE_TRAIN_ID)),
                    "hasInstances": bool(r.get("hasInstances", False)), "color": r.get("color"),
                    "category_id": int(cid) if isinstance(cid, int) else None})
    return tuple(out)


#: Datumaro's custom label table beside ``gtFine/`` (``r g b name`` per line; label id = line position).
LABEL_COLORS = "label_colors.txt"
_BY_COMPACT = {lab.name.replace(" ", ""): lab for lab in LABELS}


def _official_compact(name: str) -> CityscapesLabel | None:
    """The official label of a name written with or without spaces (Datumaro writes ``trafficlight``)."""
    return official_label(name) or _BY_COMPACT.get(normalise_name(name).replace(" ", ""))


def rows_from_label_colors(text: str) -> tuple[dict[str, Any], ...]:
    """The label table of a Datumaro ``label_colors.txt``, with Datumaro's ids.

    Each non-empty line not starting with ``#`` is ``r g b name`` (or a bare ``name``); a name may hold
    spaces. Label ids follow Datumaro's ``make_cityscapes_categories``: the labels in file order, with
    ``background`` (black) put first when no label is black. "Has instances" and the train id are the
    official ones of a label whose name is a Cityscapes label, else False and 255: the file does not
    say, and values ≥ 1000 in ``instanceIds`` are objects either way.

    Raises:
        FormatError: a malformed line or a name given twice (``where`` is ``line N``; the caller adds
            the file).
    """
    entries: dict[str, tuple[int, int, int] | None] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        color: tuple[int, int, int] | None = None
        if len(parts) >= 4 and all(v.isdigit() for v in parts[:3]):
            r, g, b = (int(v) for v in parts[:3])
            if max(r, g, b) > 255:
                raise FormatError(f"colour {r} {g} {b} is outside 0..255", where=f"line {n}")
            color, name = (r, g, b), " ".join(parts[3:])
        elif parts[0].isdigit():
            raise FormatError(f"expected 'r g b name' or 'name', got {line!r}", where=f"line {n}")
        else:
            name = line
        if name in entries:
            raise FormatError(f"label {name!r} is defined twice", where=f"line {n}")
        entries[name] = color
    if not entries:
        raise FormatError("no labels", where="line 1")
    names = list(entries)
    if not any(c == (0, 0, 0) for c in entries.values()):
        has_colors = any(c is not None for c in entries.values())
        bg = "background"
        if bg not in entries:
            entries[bg] = (0, 0, 0) if has_colors else None
        names = [bg] + [x for x in names if x != bg]
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        lab = _official_compact(name)
        color = entries[name]
        rows.append({"id": i, "name": name, "trainId": lab.train_id if lab is not None else IGNORE_TRAIN_ID,
                     "hasInstances": bool(lab.has_instances) if lab is not None else False,
                     "color": list(color) if color is not None else None, "category_id": i})
    return tuple(rows)
