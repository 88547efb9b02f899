"""Reading Label Studio exports: JSON (``labelstudio``), JSON_MIN (``labelstudio_min``) and the brush folders
(``labelstudio_brush_png``, ``labelstudio_brush_numpy``). Label Studio's COCO exports are COCO (``coco``).

Layouts (``path`` is the export file or the folder holding it):

* **JSON**: a list of tasks ``{"id", "data": {"image": URL, ...}, "annotations": [{"result": [...], ...}],
  "predictions": [...]}`` (``completions`` is the old name of ``annotations``). segpipe's own ``tasks.json``
  is read the same way (its ``data.image_id``/``data.file_name`` keep image ids and names), and so is what
  ``segpipe pull labelstudio`` writes: Label Studio 1.23's export, whose ``predictions`` are prediction
  *ids* (references to predictions the export does not hold: nothing to read, nothing lost; a task with
  only those and no annotation has no objects, with a warning), beside ``segpipe_pull.json`` (ignored).
  Image sizes come from the results' ``original_width``/``original_height`` when the images are absent.
* **JSON_MIN**: a list of flat records, one per annotation: the task's data keys, ``id`` (the task),
  one key per control tag holding that tag's region values (``original_width``/``original_height``
  inside each), ``annotator``, ``annotation_id``, ``created_at`` ...
* **BRUSH_TO_PNG / BRUSH_TO_NUMPY**: a folder of ``task-<task>-annotation-<annotation>-by-<user>-<tag>-
  <label>-<n>.png`` (or ``.npy``) files, as label-studio-sdk's ``brush.save_brush_images_from_annotation``
  names them: one file per brush region, its alpha layer (non-zero = foreground).

A folder may hold ``label_config.xml`` (the project's labeling config, :mod:`.config`): category names and
colours come from it (labels of ``BrushLabels``, ``PolygonLabels`` and ``RectangleLabels`` in document
order; one keypoint category per ``KeyPointLabels`` tag, named after the tag, its keypoints ordered by
``model_index``), and results must name its control tags. Without it the categories are the labels used,
sorted. A ``segpipe_meta.json`` (what segpipe's writer leaves beside ``tasks.json``) gives category ids,
colours and supercategories by name; else the config's ``category="<id>"`` label attributes (segpipe's
writer and ``segpipe push`` write them, Label Studio keeps them), used only when every class label has one
and they agree; otherwise ids are 1, 2, ... in category order. So a pushed store's project, pulled back,
has the store's class ids and its images the store's ids and names (``data.image_id``/``file_name``):
``segpipe evaluate PULLED STORE`` pairs them.

**Which result is read, per task** (``source``): ``auto`` (default) reads the latest non-cancelled
annotation (``was_cancelled``/``skipped`` false; latest by ``created_at``, then ``id``, as the sdk's
converter orders them) and, for a task without one, its latest prediction (by ``created_at``, then
``id``); ``annotations`` reads annotations only; ``predictions`` predictions only. JSON_MIN holds
annotations only (the first record of a task: the sdk writes the newest first); a brush folder
holds every annotation's files (the highest annotation id of a task is read).

Geometry: :mod:`.regions`. Objects keep their result order (z-order). Brush regions are instance masks
(overlaps kept), polygons and rotated rectangles polygon objects, rectangles boxes, and a task's
keypoints one keypoint object per ``KeyPointLabels`` tag (visibility 2; a name given twice keeps the first).

Accounted for, never silently dropped:

* losses (``reader.losses``; the conversion report adds them and ``--strict`` fails on them):
  ``annotations_not_read`` (other non-cancelled annotations of a task: another annotator's work),
  ``regions_not_read`` (result types segpipe does not read, per type: choices, text, ellipses, relations ...
  and regions without a label), ``extra_labels_dropped`` (a region with several labels keeps the first),
  ``duplicate_keypoints_dropped``, ``files_not_read`` (other files in a brush folder), ``keys_not_read``
  (per key: task keys, and keys of the annotation or prediction read, that are neither read nor Label
  Studio's known bookkeeping, :data:`TASK_BOOKKEEPING` and :data:`RESULT_BOOKKEEPING`: counts, timestamps,
  users, ids, comments, the snapshot of the prediction an annotation started from);
* warnings (``reader.problems``, summarised beyond 20 of a kind): predictions superseded by an
  annotation, prediction ids without their predictions, cancelled annotations, drafts, labels missing
  from the config, config category ids not used, images not found (one line for all).

Kept as image attributes: the task's other ``data`` keys and ``ls_task_id``, ``ls_source``
(``annotation``/``prediction``), ``ls_annotation_id``/``ls_prediction_id``, ``ls_completed_by``,
``ls_model_version``, ``ls_score``, ``ls_reviews`` and the task's ``meta`` (``ls_meta``) where present.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    Sample,
    Segmentation,
)
from segpipe.errors import ConfigError, FormatError, InputError, SegpipeError
from segpipe.formats.coco.convert import parse_category
from segpipe.formats.labelstudio.config import CONFIG_NAME, LabelConfig, read_label_config
from segpipe.formats.labelstudio.regions import Region, RegionError, parse_region
from segpipe.formats.perimage import materialize_shapes
from segpipe.storage.images import check_pixel_count, image_size, read_label_map
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import check_relative_name, safe_join

SOURCES = ("auto", "annotations", "predictions")
#: Files segpipe writes beside an export, or its own bookkeeping: never dataset content.
OWN_FILES = ("conversion_report.json", ".segpipe-output", "segpipe_meta.json", "segpipe_pull.json", CONFIG_NAME)
SIDECAR = "segpipe_meta.json"
#: Largest config ``category`` id used: segpipe's label maps are uint8/uint16 with 65535 as void, and every id
#: segpipe writes into a config is a store's class id.
MAX_CONFIG_ID = 65534
MAX_LISTED = 20
_PEEK = 1 << 16
#: JSON_MIN bookkeeping keys (label-studio-sdk ``convert_to_json_min``).
MIN_KEYS = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"})
#: The brush folder file name (``brush.save_brush_images_from_annotation``; the user is sanitised to
#: letters, digits, ``@`` and ``.``, so the first ``-`` after it starts the tag).
BRUSH_FILE = re.compile(r"^task-(?P<task>\d+)-annotation-(?P<ann>[^-]+)-by-(?P<user>[^-]*)-(?P<rest>.+)-(?P<n>\d+)"
                        r"\.(?P<ext>png|npy)$")
_TASK_RE = re.compile(rb'"(annotations|predictions|completions)"\s*:\s*\[')
_MIN_RE = re.compile(rb'"(brushlabels|polygonlabels|rectanglelabels|keypointlabels)"\s*:\s*\[')

LOSS_NOTES = {
    "annotations_not_read": "a task's other non-cancelled annotations (one result per task is read: the latest)",
    "regions_not_read": "Label Studio results of a type segpipe does not read (counted per type), and regions "
    "without a label",
    "extra_labels_dropped": "a region with several labels became an object of its first label",
    "duplicate_keypoints_dropped": "a keypoint name given twice in one task keeps its first point",
    "files_not_read": "files in a brush export folder that are no brush layer of the annotation read",
    "keys_not_read": "keys of a task, or of the annotation or prediction read, that are neither read nor known "
    "Label Studio bookkeeping (counted per key)",
}
#: Task keys read (``meta``, when not empty, becomes the ``ls_meta`` attribute).
TASK_KEYS = frozenset({"id", "data", "annotations", "completions", "predictions", "drafts", "meta"})
#: Task keys Label Studio adds as bookkeeping (1.23's ``Task`` model and its JSON export; older versions
#: and the tasks API): counts, timestamps, users, comments, storage. Nothing of the annotation is in them.
TASK_BOOKKEEPING = frozenset({
    "project", "created_at", "updated_at", "updated_by", "is_labeled", "allow_skip", "overlap", "file_upload",
    "inner_id", "total_annotations", "cancelled_annotations", "total_predictions", "precomputed_agreement",
    "comment_count", "unresolved_comment_count", "comment_authors", "last_comment_updated_at", "state",
    "annotators", "annotators_count", "storage_filename", "draft_exists", "completed_at", "avg_lead_time",
    "annotations_ids", "predictions_model_versions", "predictions_score", "agreement", "file_upload_id",
})
#: Keys of the annotation or prediction read (besides ``result``) that are read.
RESULT_KEYS = frozenset({"id", "result", "was_cancelled", "skipped", "created_at", "completed_by", "model_version",
                         "score", "reviews"})
#: Their bookkeeping (1.23's ``Annotation`` and ``Prediction`` models): ``prediction`` is a snapshot of the
#: prediction the annotator started from, ``parent_*`` and ``task``/``project`` are ids, the rest timings,
#: users, counters and Label Studio's own analysis of predictions (``cluster``, ``neighbors``, ``mislabeling``).
RESULT_BOOKKEEPING = frozenset({
    "task", "project", "updated_by", "ground_truth", "updated_at", "draft_created_at", "lead_time", "prediction",
    "result_count", "parent_prediction", "parent_annotation", "unique_id", "import_id", "last_action",
    "last_created_by", "bulk_created", "state", "created_username", "created_ago", "history", "model", "model_run",
    "cluster", "neighbors", "mislabeling",
})


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, LOSS_NOTES[kind])


# ------------------------------------------------------------------------------------------ detect


def _head(path: Path) -> tuple[bytes, int] | None:
    try:
        if path.suffix.lower() != ".json" or not path.is_file() or path.stat().st_size == 0:
            return None
        with open(path, "rb") as f:
            return f.read(_PEEK).lstrip(), path.stat().st_size
    except OSError:
        return None


def _file_contains(path: Path, needle: bytes) -> bool:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(needle) >= 0
    except (OSError, ValueError):
        return False


def peek_kind(path: Path) -> str | None:
    """``json`` (a list of tasks), ``min`` (JSON_MIN records) or None, from the bytes (no parsing).

    A task list has ``"annotations": [`` (or ``predictions``/``completions``) in its first task and a
    ``"data"`` key; JSON_MIN records have a ``"<type>labels": [`` value, ``original_width`` and no ``data``
    key but the sdk's ``annotation_id``/``annotator``. COCO results (a list of ``image_id``/``category_id``
    objects) have neither.
    """
    got = _head(path)
    if got is None:
        return None
    head, _ = got
    if not head.startswith(b"[") or not head[1:].lstrip().startswith(b"{"):
        return None
    if _TASK_RE.search(head) and (b'"data"' in head or _file_contains(path, b'"data"')):
        return "json"
    if b'"data"' in head or not (_file_contains(path, b'"annotation_id"') or _file_contains(path, b'"annotator"')):
        return None
    try:  # the first region may follow a large brush RLE: search the whole file (one sequential scan)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if _MIN_RE.search(mm) and mm.find(b'"original_width"') >= 0:  # type: ignore[call-overload]
                return "min"
    except (OSError, ValueError):
        pass
    return None


def _export_files(folder: Path, kind: str) -> list[Path]:
    out = []
    for p in sorted(folder.glob("*.json")):
        if p.name not in OWN_FILES and peek_kind(p) == kind:
            out.append(p)
    return out


def find_export(path: str | Path, kind: str) -> Path:
    """The export file of ``path`` (the file itself, or the one export of that kind in the folder).

    Raises:
        InputError: no such path, no export of that kind, or several (naming them: one must be chosen).
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise InputError("no such file or folder", path=p)
    files = _export_files(p, kind)
    what = "Label Studio JSON export (a list of tasks)" if kind == "json" else "Label Studio JSON_MIN export"
    if not files:
        raise InputError(f"no {what} in this folder", path=p)
    if len(files) > 1:
        raise InputError(f"several {what}s in this folder: {', '.join(f.name for f in files[:5])}", path=p,
                         hint="pass the file to read")
    return files[0]


def detect_labelstudio(path: str | Path) -> bool:
    """True for a Label Studio JSON export (a list of tasks), or a folder holding exactly one."""
    p = Path(path)
    if p.is_file():
        return peek_kind(p) == "json"
    return p.is_dir() and len(_export_files(p, "json")) == 1


def detect_labelstudio_min(path: str | Path) -> bool:
    """True for a Label Studio JSON_MIN export, or a folder holding exactly one."""
    p = Path(path)
    if p.is_file():
        return peek_kind(p) == "min"
    return p.is_dir() and len(_export_files(p, "min")) == 1


def _brush_files(folder: Path, ext: str) -> list[str]:
    return sorted(f.name for f in folder.iterdir() if f.is_file() and (m := BRUSH_FILE.match(f.name))
                  and m["ext"] == ext)


def _detect_brush(path: str | Path, ext: str) -> bool:
    p = Path(path)
    if not p.is_dir():
        return False
    names = [f.name for f in p.iterdir() if f.is_file() and f.name not in OWN_FILES]
    ours = [n for n in names if (m := BRUSH_FILE.match(n)) and m["ext"] == ext]
    # Confident: brush layers are most of the folder (an export zip holds nothing else).
    return bool(ours) and len(ours) * 2 > len(names)


def detect_labelstudio_brush_png(path: str | Path) -> bool:
    """True for a folder of Label Studio BRUSH_TO_PNG layers."""
    return _detect_brush(path, "png")


def detect_labelstudio_brush_numpy(path: str | Path) -> bool:
    """True for a folder of Label Studio BRUSH_TO_NUMPY layers."""
    return _detect_brush(path, "npy")


# ------------------------------------------------------------------------------------------ index


class _Collector:
    """Raises the first error (reading) or lists every error (validating); summarises repeated warnings."""

    def __init__(self, raise_errors: bool, problems: list[Problem]) -> None:
        self.raise_errors = raise_errors
        self.problems = problems
        self.warnings: dict[str, int] = {}

    def error(self, file: Path, where: str, message: str, code: str) -> None:
        if self.raise_errors:
            raise FormatError(message, path=file, where=where or None)
        self.problems.append(Problem("error", str(file), where, message, code))

    def failed(self, err: SegpipeError, code: str) -> None:
        if self.raise_errors:
            raise err
        self.problems.append(Problem("error", err.path or "", err.where or "", err.message, code))

    def warn(self, file: Path | str, where: str, message: str, code: str) -> None:
        n = self.warnings[code] = self.warnings.get(code, 0) + 1
        if n <= MAX_LISTED:
            self.problems.append(Problem("warning", str(file), where, message, code))

    def summarise(self, root: Path) -> None:
        for code, n in sorted(self.warnings.items()):
            if n > MAX_LISTED:
                self.problems.append(Problem("warning", str(root), "", f"{n - MAX_LISTED} more warnings of this kind",
                                             code))


@dataclass
class _Task:
    """One task (one image) with the regions read from its chosen result."""

    task_id: int | None
    data: dict[str, Any]
    where: str
    regions: list[Region] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    size_where: str = ""


@dataclass
class Index:
    """A parsed Label Studio export.

    Attributes:
        root: The folder of the export (images and ``label_config.xml`` are looked up there).
        source: The export file, or the brush folder.
        config: The labeling config, when present.
        tasks: One per task, in file order.
        problems: Warnings (and, when validating, errors).
        losses: What was not read.
    """

    root: Path
    source: Path
    config: LabelConfig | None
    tasks: list[_Task] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    losses: LossCounter = field(default_factory=LossCounter)


def _read_config(root: Path, col: _Collector) -> LabelConfig | None:
    path = root / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return read_label_config(path)
    except SegpipeError as e:
        col.failed(e, "labelstudio.config")
        return None


def _load_list(path: Path) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(f"a Label Studio export is a JSON list of tasks, got {type(data).__name__}", path=path,
                          where="$", hint="export the project as JSON (or JSON_MIN) from Label Studio")
    return data


def _key(d: dict[str, Any]) -> tuple[str, int]:
    """Order of annotations and predictions: ``created_at`` (ISO text sorts by time), then ``id``."""
    c = d.get("created_at")
    i = d.get("id")
    return (c if isinstance(c, str) else "", i if isinstance(i, int) and not isinstance(i, bool) else -1)


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _choose(task: dict[str, Any], where: str, source: str, file: Path, col: _Collector,
            losses: LossCounter) -> tuple[dict[str, Any] | None, str, str]:
    """The annotation or prediction read for a task: ``(it, "annotation"|"prediction", its JSON path)``."""
    key = "annotations" if "annotations" in task else ("completions" if "completions" in task else "annotations")
    anns = task.get(key) or []
    preds = task.get("predictions") or []
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        col.error(file, f"{where}.{key}", f"{key} must be a list of objects", "labelstudio.task")
        return None, "", ""
    if not isinstance(preds, list) or not all(isinstance(a, dict) or _is_id(a) for a in preds):
        col.error(file, f"{where}.predictions", "predictions must be a list of objects (or of prediction ids)",
                  "labelstudio.task")
        return None, "", ""
    # Label Studio 1.23's JSON export lists a task's predictions by id only: references to predictions the
    # export does not hold, so nothing is there to read (or to lose).
    preds_i = [(k, a) for k, a in enumerate(preds) if isinstance(a, dict)]
    refs = len(preds) - len(preds_i)
    preds = [a for _, a in preds_i]
    valid = [(k, a) for k, a in enumerate(anns) if not (a.get("was_cancelled") or a.get("skipped"))]
    cancelled = len(anns) - len(valid)
    if cancelled:
        col.warn(file, f"{where}.{key}", f"{cancelled} cancelled annotation(s) not read", "labelstudio.cancelled")
    if valid and source in ("auto", "annotations"):
        k, ann = max(valid, key=lambda t: _key(t[1]))
        others = len(valid) - 1
        _lose(losses, "annotations_not_read", others)
        if preds and source == "auto":
            col.warn(file, f"{where}.predictions", f"{len(preds)} prediction(s) superseded by annotation "
                     f"{ann.get('id')} not read", "labelstudio.predictions_superseded")
        return ann, "annotation", f"{where}.{key}[{k}]"
    if preds_i and source in ("auto", "predictions"):
        k, pred = max(preds_i, key=lambda t: _key(t[1]))
        if len(preds) > 1:
            col.warn(file, f"{where}.predictions", f"{len(preds) - 1} older prediction(s) not read",
                     "labelstudio.older_predictions")
        if valid:  # source == "predictions"
            col.warn(file, f"{where}.{key}", f"{len(valid)} annotation(s) not read (source predictions)",
                     "labelstudio.annotations_skipped")
        return pred, "prediction", f"{where}.predictions[{k}]"
    if refs and source in ("auto", "predictions"):
        col.warn(file, f"{where}.predictions", f"{refs} prediction(s) listed by id only (the export does not hold "
                 "their results): export with predictions expanded to read them", "labelstudio.prediction_ids")
    if valid:
        col.warn(file, f"{where}.{key}", f"{len(valid)} annotation(s) not read (source predictions)",
                 "labelstudio.annotations_skipped")
    return None, "", ""


def _check_from_name(reg: Region, config: LabelConfig | None) -> None:
    if config is None:
        return
    tag = config.controls.get(reg.from_name)
    if tag is None:
        known = ", ".join(n for n, t in config.controls.items() if t.read) or "none"
        raise RegionError(f"from_name {reg.from_name!r} is not a control tag of {CONFIG_NAME} (known: {known})",
                          "from_name")
    if tag.type != reg.type:
        raise RegionError(f"from_name {reg.from_name!r} is a <{tag.tag}> tag, but the result is {reg.type}", "type")


def _add_results(t: _Task, results: Any, rwhere: str, file: Path, config: LabelConfig | None, col: _Collector,
                 losses: LossCounter) -> bool:
    """Parses a result list into ``t.regions``; False after an error (validating)."""
    if not isinstance(results, list):
        col.error(file, rwhere, "result must be a list", "labelstudio.result")
        return False
    ok = True
    for k, r in enumerate(results):
        w = f"{rwhere}[{k}]"
        try:
            reg = parse_region(r)
            if isinstance(reg, str):
                _lose(losses, "regions_not_read", 1, reg)
                continue
            _check_from_name(reg, config)
        except RegionError as e:
            col.error(file, f"{w}.{e.where}" if e.where else w, e.message, "labelstudio.region")
            ok = False
            continue
        if t.width and (reg.width, reg.height) != (t.width, t.height):
            col.error(file, f"{w}.original_width", f"original size {reg.width}x{reg.height} differs from "
                      f"{t.width}x{t.height} given at {t.size_where}", "labelstudio.size")
            ok = False
            continue
        if not t.width:
            t.width, t.height, t.size_where = reg.width, reg.height, f"{w}.original_width"
        if reg.mask is not None:  # compressed at once: an export of many brushes never holds their masks
            reg.rle = rle_ops.encode(reg.mask)
            reg.mask = None
        _lose(losses, "extra_labels_dropped", len(reg.extra_labels), reg.label)
        t.regions.append(reg)
    return ok


def _count_keys(d: dict[str, Any], read: frozenset[str], bookkeeping: frozenset[str], what: str,
                losses: LossCounter) -> None:
    """Counts the keys of ``d`` that are neither read nor known bookkeeping (``keys_not_read``, per key)."""
    for k in d:
        if k not in read and k not in bookkeeping:
            _lose(losses, "keys_not_read", 1, f"{what}.{k}")


def _completed_by(v: Any) -> Any:
    return v.get("email", v.get("id")) if isinstance(v, dict) else v


def _open_export(path: str | Path, kind: str, raise_errors: bool) -> tuple[Path, Index, _Collector, list[Any] | None]:
    """The export file of ``path``, its index with the label config read, the problem collector, and the
    export's list (None when it cannot be read: the collector has the problem).
    """
    file = find_export(path, kind)
    idx = Index(file.parent.resolve(), file, None)
    col = _Collector(raise_errors, idx.problems)
    idx.config = _read_config(idx.root, col)
    try:
        return file, idx, col, _load_list(file)
    except SegpipeError as e:
        col.failed(e, "labelstudio.json")
        return file, idx, col, None



def index_json(path: str | Path, *, source: str = "auto", raise_errors: bool = True) -> Index:
    """Parses a Label Studio JSON export (see the module docstring).

    Raises:
        InputError, FormatError: (with ``raise_errors``) naming the file and the JSON path.
    """
    if source not in SOURCES:
        raise ConfigError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    file, idx, col, tasks = _open_export(path, "json", raise_errors)
    if tasks is None:
        return idx
    for i, task in enumerate(tasks):
        where = f"[{i}]"
        if not isinstance(task, dict):
            col.error(file, where, f"a task must be an object, got {type(task).__name__}", "labelstudio.task")
            continue
        data = task.get("data")
        if not isinstance(data, dict):
            col.error(file, f"{where}.data", "data must be an object (the task's image URL and fields)",
                      "labelstudio.task")
            continue
        tid = task.get("id")
        t = _Task(tid if isinstance(tid, int) and not isinstance(tid, bool) else None, data, where)
        if t.task_id is not None:
            t.attributes["ls_task_id"] = t.task_id
        if task.get("drafts"):
            col.warn(file, f"{where}.drafts", "drafts are not read", "labelstudio.drafts")
        if task.get("meta"):
            t.attributes["ls_meta"] = task["meta"]
        _count_keys(task, TASK_KEYS, TASK_BOOKKEEPING, "task", idx.losses)
        chosen, kind, cwhere = _choose(task, where, source, file, col, idx.losses)
        if chosen is not None:
            _count_keys(chosen, RESULT_KEYS, RESULT_BOOKKEEPING, kind, idx.losses)
            t.attributes["ls_source"] = kind
            if chosen.get("id") is not None:
                t.attributes[f"ls_{kind}_id"] = chosen["id"]
            for key, attr in (("completed_by", "ls_completed_by"), ("model_version", "ls_model_version"),
                              ("score", "ls_score"), ("reviews", "ls_reviews")):
                if chosen.get(key) is not None and chosen[key] != []:
                    t.attributes[attr] = _completed_by(chosen[key])
            if not _add_results(t, chosen.get("result", []), f"{cwhere}.result", file, idx.config, col, idx.losses):
                continue
        idx.tasks.append(t)
    col.summarise(idx.root)
    return idx


def _min_type(key: str, values: list[Any], config: LabelConfig | None) -> str | None:
    """The result type of a JSON_MIN key's values, or None for a data key."""
    if config is not None:
        tag = config.controls.get(key)
        return tag.type if tag is not None else None
    if not values or not all(isinstance(v, dict) for v in values):
        return None
    for t in ("brushlabels", "polygonlabels", "rectanglelabels", "keypointlabels"):
        if t in values[0]:
            return t
    return None


def index_min(path: str | Path, *, raise_errors: bool = True) -> Index:
    """Parses a Label Studio JSON_MIN export (see the module docstring).

    Without a label config, a key is a control tag when its value is a list of region values (objects with
    ``brushlabels``, ``polygonlabels``, ``rectanglelabels`` or ``keypointlabels``); every other key is data.

    Raises:
        InputError, FormatError: (with ``raise_errors``) naming the file and the JSON path.
    """
    file, idx, col, records = _open_export(path, "min", raise_errors)
    if records is None:
        return idx
    seen: set[Any] = set()
    for i, rec in enumerate(records):
        where = f"[{i}]"
        if not isinstance(rec, dict):
            col.error(file, where, f"a record must be an object, got {type(rec).__name__}", "labelstudio.task")
            continue
        tid = rec.get("id")
        if tid is not None and not isinstance(tid, (int, str)):  # the task id; a list or object cannot be one
            col.error(file, f"{where}.id", f"id must be the task's integer id, got {type(tid).__name__}",
                      "labelstudio.task")
            continue
        if tid is not None and tid in seen:
            _lose(idx.losses, "annotations_not_read")  # the sdk writes a task's newest annotation first
            continue
        seen.add(tid)
        t = _Task(tid if isinstance(tid, int) and not isinstance(tid, bool) else None, {}, where)
        if t.task_id is not None:
            t.attributes["ls_task_id"] = t.task_id
        t.attributes["ls_source"] = "annotation"
        if rec.get("annotation_id") is not None:
            t.attributes["ls_annotation_id"] = rec["annotation_id"]
        if rec.get("annotator") is not None:
            t.attributes["ls_completed_by"] = rec["annotator"]
        if _add_min_fields(t, rec, file, idx, col):
            idx.tasks.append(t)
    col.summarise(idx.root)
    return idx


def _add_min_fields(t: _Task, rec: dict[str, Any], file: Path, idx: Index, col: _Collector) -> bool:
    """Adds the fields of a JSON_MIN record to its task: control tags' regions, the rest as data.

    Returns:
        False after an error (collected).
    """
    ok = True
    for key, val in rec.items():
        if key in MIN_KEYS:
            continue
        vals = val if isinstance(val, list) else [val]
        rtype = _min_type(key, vals, idx.config)
        if rtype is None:
            t.data[key] = val
            continue
        if rtype not in ("brushlabels", "polygonlabels", "rectanglelabels", "keypointlabels"):
            _lose(idx.losses, "regions_not_read", len(vals), rtype)
            continue
        if not isinstance(val, list):
            col.error(file, f"{t.where}.{key}", "the regions of a control tag must be a list", "labelstudio.result")
            ok = False
            continue
        results = [{"type": rtype, "from_name": key, "value": v, "original_width": v.get("original_width"),
                    "original_height": v.get("original_height")} if isinstance(v, dict) else v for v in val]
        if not _add_results(t, results, f"{t.where}.{key}", file, idx.config, col, idx.losses):
            ok = False
    return ok


def _split_tag_label(rest: str, config: LabelConfig | None) -> tuple[str, list[str]]:
    """``<tag>-<label>[-<label>...]`` of a brush file name → ``(tag, labels)``.

    With a config the longest brush tag name that prefixes ``rest`` is the tag and a configured label the
    label (labels and tags may hold ``-``); without one the first ``-`` separates them.
    """
    if config is not None:
        tags = sorted((n for n, t in config.controls.items() if t.type == "brushlabels"), key=len, reverse=True)
        for name in tags:
            safe = name.replace("/", "-").replace("\\", "-")
            if rest.startswith(safe + "-"):
                label = rest[len(safe) + 1:]
                known = {lab.value.replace("/", "-").replace("\\", "-"): lab.value
                         for lab in config.controls[name].labels}
                if label in known:
                    return name, [known[label]]
                return name, [label]
    tag, _, label = rest.partition("-")
    return tag, [label]


def _load_layer(path: Path) -> np.ndarray:
    """A brush layer file as ``(H, W) bool`` (non-zero = foreground).

    Raises:
        FormatError: not a 2-D image / array, or unreadable.
    """
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise FormatError(f"not a NumPy array file ({str(e)[:80]})", path=path) from None
        if arr.ndim != 2 or arr.dtype.kind not in "biu":
            raise FormatError(f"a brush layer is a 2-D integer array, got {arr.ndim}-D {arr.dtype}", path=path)
        check_pixel_count(arr.shape[1], arr.shape[0], path=path)
        return np.asarray(arr != 0)
    arr = np.asarray(read_label_map(path))
    if arr.ndim != 2:
        raise FormatError(f"a brush layer is a single-channel PNG, got shape {arr.shape}", path=path)
    return arr != 0


def index_brush(path: str | Path, ext: str, *, raise_errors: bool = True) -> Index:
    """Parses a BRUSH_TO_PNG (``ext="png"``) or BRUSH_TO_NUMPY (``"npy"``) folder (see the module docstring).

    Raises:
        InputError, FormatError: (with ``raise_errors``) naming the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError("a Label Studio brush export is a folder of layer files", path=folder)
    idx = Index(folder.resolve(), folder, None)
    col = _Collector(raise_errors, idx.problems)
    idx.config = _read_config(idx.root, col)
    layers: dict[int, dict[str, list[tuple[int, str, re.Match[str]]]]] = {}
    others = 0
    for f in sorted(p.name for p in folder.iterdir() if p.is_file()):
        m = BRUSH_FILE.match(f)
        if f in OWN_FILES:
            continue
        if m is None or m["ext"] != ext:
            others += 1
            col.warn(folder / f, "", f"not a brush layer of this export (task-<id>-annotation-<id>-by-<user>-<tag>-"
                     f"<label>-<n>.{ext}): not read", "labelstudio.file_not_read")
            continue
        layers.setdefault(int(m["task"]), {}).setdefault(m["ann"], []).append((int(m["n"]), f, m))
    _lose(idx.losses, "files_not_read", others)
    if not layers and not any(p.severity == "error" for p in idx.problems):
        raise InputError(f"no Label Studio brush layer (task-<id>-annotation-<id>-...-<n>.{ext}) in this folder",
                         path=folder)
    for task_id in sorted(layers):
        t = _brush_task(task_id, layers[task_id], folder, idx, col)
        if t is not None:
            idx.tasks.append(t)
    col.summarise(idx.root)
    return idx


def _brush_task(task_id: int, anns: dict[str, list[tuple[int, str, re.Match[str]]]], folder: Path, idx: Index,
                col: _Collector) -> _Task | None:
    """The task of one task id's brush layers (its latest annotation's); None after an error (collected).

    Args:
        task_id: The task id.
        anns: Annotation id → ``(layer number, file name, its name's match)`` of each layer file.
        folder: The export folder.
        idx: The index (config, losses).
        col: Where errors go.
    """
    # Annotation ids grow with creation: the highest is the latest (non-numeric ids sort first).
    chosen = max(anns, key=lambda a: (a.isdigit(), int(a) if a.isdigit() else 0, a))
    for a, files in anns.items():
        if a != chosen:
            _lose(idx.losses, "annotations_not_read")
            _lose(idx.losses, "files_not_read", len(files))
    t = _Task(task_id, {}, f"task {task_id}")
    t.attributes.update({"ls_task_id": task_id, "ls_source": "annotation"})
    if chosen.isdigit():
        t.attributes["ls_annotation_id"] = int(chosen)
    ok = True
    # The sdk numbers layers per (tag, labels) in result order: sorting by name then number keeps it.
    for _n, f, m in sorted(anns[chosen], key=lambda x: (x[2]["rest"], x[0])):
        if m["user"]:
            t.attributes["ls_completed_by"] = m["user"]
        tag, labels = _split_tag_label(m["rest"], idx.config)
        try:
            mask = _load_layer(folder / f)
        except SegpipeError as e:
            col.failed(e, "labelstudio.layer")
            ok = False
            continue
        h, w = mask.shape
        if t.width and (w, h) != (t.width, t.height):
            col.error(folder / f, "", f"layer is {w}x{h} but {t.size_where} is {t.width}x{t.height}",
                      "labelstudio.size")
            ok = False
            continue
        if not t.width:
            t.width, t.height, t.size_where = w, h, f
        reg = Region("brushlabels", tag, labels[0], w, h, rle=rle_ops.encode(mask))
        if idx.config is not None and tag not in idx.config.controls:
            col.error(folder / f, "", f"tag {tag!r} is not a control tag of {CONFIG_NAME}", "labelstudio.region")
            ok = False
            continue
        t.regions.append(reg)
    return t if ok else None


# ------------------------------------------------------------------------------------------ samples


def _image_value(t: _Task, config: LabelConfig | None) -> Any:
    key = config.image_key() if config is not None else None
    if key is not None and key in t.data:
        return t.data[key]
    if "image" in t.data:
        return t.data["image"]
    return next((v for v in t.data.values() if isinstance(v, str)), None)


def file_name_from_url(url: str) -> str:
    """A relative file name for a task's image URL.

    ``/data/local-files/?d=images/a.png`` → ``images/a.png``; ``/data/upload/3/ab12-a.png`` → ``ab12-a.png``;
    ``s3://bucket/dir/a.png`` and ``https://host/dir/a.png`` → ``dir/a.png``; a relative path stays as it is.
    Anything unsafe (``..``, absolute) falls back to its last component; a name with NUL or control characters
    gives ``""`` (the image is then named after its task).
    """
    u = urlsplit(url)
    if u.scheme == "data":
        return ""
    if u.path.startswith("/data/local-files") and "d" in parse_qs(u.query):
        name = parse_qs(u.query)["d"][0]
    elif u.path.startswith("/data/upload/"):
        name = posixpath.basename(unquote(u.path))
    elif u.scheme or u.netloc:
        name = unquote(u.path).lstrip("/")
    else:
        name = unquote(url)
    name = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if name in ("", ".") or name.startswith(("/", "../")) or name == ".." or re.match(r"^[a-zA-Z]:", name):
        name = posixpath.basename(name) if name not in ("..", ".") else ""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):  # NUL and control characters name no file
        return ""
    return name


def _find_image(root: Path, image_root: Path | None, name: str) -> str | None:
    if not name:
        return None
    roots = ([image_root] if image_root is not None else []) + [root, root / "images"]
    for r in roots:
        for n in (name, posixpath.basename(name)):
            try:
                p = safe_join(r, n)
            except SegpipeError:
                continue
            if p.is_file():
                return str(p)
    return None


_Class = tuple[str, tuple[int, int, int] | None]  # (name, colour)


def _categories(idx: Index, col: _Collector) -> tuple[list[Category], dict[tuple[str, str], int]]:
    """The categories and ``{(kind, label or tag): id}`` (kind ``c`` class, ``k`` keypoint tag)."""
    cfg = idx.config
    classes, kp_tags = _config_classes(cfg)
    used = _labels_used(idx, col, {n for n, _ in classes}, kp_tags)
    if cfg is not None:
        for lab in sorted(used):
            col.warn(idx.source, "", f"label {lab!r} is used but not in {CONFIG_NAME}", "labelstudio.unknown_label")
    seen: set[str] = set()
    ordered: list[tuple[str, tuple[int, int, int] | None, tuple[str, ...]]] = []
    for n, c in classes + [(u, None) for u in sorted(used)]:
        if n not in seen:
            seen.add(n)
            ordered.append((n, c, ()))
    for kp_tag, names in kp_tags.items():
        if cfg is None:
            names.sort()
        ordered.append((kp_tag, None, tuple(names)))
    side = _sidecar(idx.root / SIDECAR) if idx.source.parent.resolve() == idx.root else {}
    cats = _numbered(ordered, side, _config_ids(idx, col))
    ids: dict[tuple[str, str], int] = {}
    for name, _c, kps in ordered:
        ids[("k" if kps else "c", name)] = next(c.id for c in cats if c.name == name)
    return cats, ids


def _config_classes(cfg: LabelConfig | None) -> tuple[list[_Class], dict[str, list[str]]]:
    """``(classes of the read tags, {keypoint tag: its point names})`` in config order (points in model order
    when every one has a ``model_index``).
    """
    classes: list[_Class] = []
    kp_tags: dict[str, list[str]] = {}
    if cfg is None:
        return classes, kp_tags
    for name, tag in cfg.controls.items():
        if tag.type == "keypointlabels":
            labs = list(tag.labels)
            if all(lab.model_index is not None for lab in labs):
                labs.sort(key=lambda lab: lab.model_index or 0)
            kp_tags[name] = [lab.value for lab in labs]
        elif tag.read:
            classes += [(lab.value, lab.color) for lab in tag.labels]
    return classes, kp_tags


def _labels_used(idx: Index, col: _Collector, known: set[str], kp_tags: dict[str, list[str]]) -> set[str]:
    """The class labels the regions use that are not ``known``; keypoint labels are added to their tag's list
    (with a warning when the config does not have them).
    """
    used: set[str] = set()
    for t in idx.tasks:
        for r in t.regions:
            if r.type == "keypointlabels":
                names = kp_tags.setdefault(r.from_name, [])
                if r.label not in names:
                    if idx.config is not None:
                        col.warn(idx.source, f"{t.where}", f"keypoint {r.label!r} is not a label of {r.from_name!r} "
                                 f"in {CONFIG_NAME}", "labelstudio.unknown_label")
                    names.append(r.label)
            elif r.label not in known:
                used.add(r.label)
    return used


def _numbered(ordered: list[tuple[str, tuple[int, int, int] | None, tuple[str, ...]]], side: dict[str, Category],
              given: dict[str, int]) -> list[Category]:
    """One category per name of ``ordered`` (``(name, colour, keypoint names)``): the sidecar's, else with the
    config's id, else numbered after the largest id of either.
    """
    next_id = max([c.id for c in side.values()] + list(given.values()) + [0]) + 1
    cats: list[Category] = []
    for name, color, kps in ordered:
        s = side.get(name)
        if s is not None:
            cat = Category(s.id, name, s.supercategory, s.isthing, s.color or color, kps or s.keypoints, s.skeleton)
        elif not kps and name in given:
            cat = Category(given[name], name, color=color)
        else:
            cat = Category(next_id, name, color=color, keypoints=kps)
            next_id += 1
        same = next((j for j, c in enumerate(cats) if c.name == name), None)
        if same is not None:
            # A keypoint tag named like a class: one category, which takes the tag's keypoint names (without
            # them the task's points would have no slot and be dropped without a word).
            if kps and not cats[same].keypoints:
                cats[same] = dataclasses.replace(cats[same], keypoints=kps)
            continue
        cats.append(cat)
    return cats


def _config_ids(idx: Index, col: _Collector) -> dict[str, int]:
    """``{class name: id}`` from the config's ``category`` attributes (what segpipe's writer records).

    Used only when every class label of the read tags has one, a name always the same id and no two names
    one id; a partial or inconsistent set is ignored with a warning (ids are then numbered).
    """
    cfg = idx.config
    if cfg is None:
        return {}
    labels = [lab for tag in cfg.controls.values() if tag.read and tag.type != "keypointlabels" for lab in tag.labels]
    if not any(lab.category is not None for lab in labels):
        return {}
    out: dict[str, int] = {}
    why = ""
    for lab in labels:
        if lab.category is None or not 0 <= lab.category <= MAX_CONFIG_ID:
            why = f"label {lab.value!r} has none" if lab.category is None else \
                f"label {lab.value!r} has {lab.category}, outside 0..{MAX_CONFIG_ID}"
        elif out.setdefault(lab.value, lab.category) != lab.category:
            why = f"label {lab.value!r} has two ({out[lab.value]} and {lab.category})"
        if why:
            break
    if not why and len(set(out.values())) < len(out):
        why = "two labels share one"
    if why:
        col.warn(idx.root / CONFIG_NAME, "", f"category ids of the labels not used ({why}): classes are numbered "
                 "1, 2, ... in config order", "labelstudio.category_ids")
        return {}
    return out


def _sidecar(path: Path) -> dict[str, Category]:
    """Categories of segpipe's ``segpipe_meta.json`` by name ({} when absent or unusable)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {c.name: c for c in (parse_category(d, source=path)[0] for d in data.get("categories", []))}
    except (OSError, ValueError, SegpipeError, AttributeError):
        return {}  # a damaged sidecar only loses ids and colours; names come from the export itself


def _instances(t: _Task, image_id: int, ids: dict[tuple[str, str], int], cats: dict[int, Category], next_ann: int,
               losses: LossCounter) -> list[Instance]:
    out: list[Instance] = []
    kps: dict[str, dict[str, tuple[float, float]]] = {}
    for r in t.regions:
        attrs = dict(r.attributes)
        if r.type == "keypointlabels":
            pts = kps.setdefault(r.from_name, {})
            if r.label in pts:
                _lose(losses, "duplicate_keypoints_dropped", 1, r.from_name)
            elif r.point is not None:
                pts[r.label] = r.point
            continue
        cid = ids[("c", r.label)]
        if r.rle is not None:
            seg = Segmentation.from_rle(r.rle)
            inst = Instance(next_ann, image_id, cid, seg, rle_ops.to_bbox(r.rle), float(rle_ops.area(r.rle)),
                            score=r.score, attributes=attrs)
        elif r.polygon is not None:
            area = float(rle_ops.area(rle_ops.polygons_to_rle([r.polygon], r.height, r.width)))
            inst = Instance(next_ann, image_id, cid, Segmentation.from_polygons([r.polygon]),
                            rle_ops.polygons_bbox([r.polygon]), area, score=r.score, attributes=attrs)
        else:
            assert r.bbox is not None
            inst = Instance(next_ann, image_id, cid, None, r.bbox, r.bbox[2] * r.bbox[3], score=r.score,
                            attributes=attrs)
        out.append(inst)
        next_ann += 1
    for tag, pts in kps.items():
        cid = ids[("k", tag)]
        flat: list[float] = []
        for name in cats[cid].keypoints:
            p = pts.get(name)
            flat += [p[0], p[1], 2.0] if p is not None else [0.0, 0.0, 0.0]
        xs = [p[0] for p in pts.values()]
        ys = [p[1] for p in pts.values()]
        bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        out.append(Instance(next_ann, image_id, cid, None, bbox, bbox[2] * bbox[3], keypoints=tuple(flat),
                            num_keypoints=len(pts)))
        next_ann += 1
    return out


def _image_name(t: _Task, image_id: int, url: Any, idx: Index, col: _Collector, names: dict[str, int]) -> str | None:
    """A task's image name: segpipe's own ``data.file_name``, else the name in its image URL, else
    ``task-<id>``; a name already in ``names`` (name → image id, updated) gets the task id. None after an
    error (collected).
    """
    own = t.data.get("file_name")
    if isinstance(own, str) and own:
        # segpipe's own key: a name that leaves the dataset (``../``, absolute, NUL) would be written as it is
        # into every target's annotation file, so it is refused, as every reader refuses one.
        try:
            name = check_relative_name(own, source=idx.source, where=f"{t.where}.data.file_name")
        except SegpipeError as e:
            col.failed(e, "labelstudio.file_name")
            return None
    else:
        name = file_name_from_url(url) if isinstance(url, str) else ""
    if not name:
        name = f"task-{t.task_id if t.task_id is not None else image_id}"
    if name in names:  # two tasks of one name (uploads of one file): the task id tells them apart
        stem, ext = posixpath.splitext(name)
        new = f"{stem}-task{t.task_id if t.task_id is not None else image_id}{ext}"
        col.warn(idx.source, t.where, f"image name {name!r} is also task {names[name]}'s: named {new!r}",
                 "labelstudio.duplicate_name")
        name = new
    names[name] = image_id
    return name


def build_samples(idx: Index, fmt: str, image_root: Path | None, col: _Collector) -> tuple[DatasetMeta, list[Sample]]:
    """Categories, image ids and names, and samples of a parsed export."""
    cats, ids = _categories(idx, col)
    by_id = {c.id: c for c in cats}
    # Image ids: segpipe's own data.image_id, else the task id, else the position; whichever is unique.
    candidates = [[t.data.get("image_id") for t in idx.tasks], [t.task_id for t in idx.tasks]]
    image_ids = list(range(1, len(idx.tasks) + 1))
    for cand in candidates:
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in cand) and len(set(cand)) == len(cand):
            image_ids = [int(v) for v in cand]  # type: ignore[arg-type]
            break
    names: dict[str, int] = {}
    samples: list[Sample] = []
    next_ann = 1
    not_found: list[str] = []
    for t, image_id in zip(idx.tasks, image_ids, strict=True):
        url = _image_value(t, idx.config)
        name = _image_name(t, image_id, url, idx, col, names)
        if name is None:
            continue
        path = _find_image(idx.root, image_root, name)
        if path is None:
            not_found.append(name)
        w, h = t.width, t.height
        if path is not None and not w:
            try:
                w, h = image_size(path)
            except SegpipeError:
                pass
        if not w:
            col.warn(idx.source, t.where, "image size unknown (no region gives original_width and the image is "
                     "not found)", "labelstudio.size_unknown")
        attrs = dict(t.attributes)
        if isinstance(url, str):
            attrs["ls_image"] = url  # the task's image URL, so a pulled dataset can be matched to its tasks
        for k, v in t.data.items():
            if k not in ("image_id", "file_name", "segpipe_id") and v is not url:
                attrs.setdefault(k, v)
        insts = _instances(t, image_id, ids, by_id, next_ann, idx.losses)
        next_ann += len(insts)
        samples.append(Sample(ImageInfo(image_id, name, w, h, attributes=attrs), image_path=path,
                              instances=tuple(insts)))
    if not_found:  # one line: a pulled project (tasks reference URLs) has none of its images
        shown = ", ".join(not_found[:3]) + (" ..." if len(not_found) > 3 else "")
        col.warn(idx.root, "", f"{len(not_found)} of {len(idx.tasks)} images not found ({shown}) beside the export, "
                 "in images/ or in the image root: sizes come from the results' original_width/original_height",
                 "labelstudio.images_not_found")
    samples.sort(key=lambda s: s.image.id)
    return DatasetMeta(format=fmt, categories=tuple(cats)), samples


class LabelStudioReader:
    """Reads a Label Studio JSON export (driver side; brushes are decoded here, polygons rasterised on workers).

    Args:
        path: The export file, or the folder holding it (with ``label_config.xml``, images in it or ``images/``).
        source: ``auto``, ``annotations`` or ``predictions``: which result of each task is read (module docstring).
        image_root: Where the images are, if not beside the export.

    Attributes:
        meta: Categories (from the label config, else the labels used).
        problems: Warnings naming the file and the JSON path.
        losses: What was not read, counted (the conversion report adds it; ``--strict`` fails on it).

    Raises:
        InputError, FormatError: naming the file and the JSON path.
    """

    format_name: ClassVar[str] = "labelstudio"

    def __init__(self, path: str | Path, *, source: str = "auto", image_root: str | Path | None = None) -> None:
        self._init(index_json(path, source=source), image_root)

    def _init(self, idx: Index, image_root: str | Path | None) -> None:
        col = _Collector(True, idx.problems)
        self.root = idx.root
        self.meta, self._samples = build_samples(idx, self.format_name, Path(image_root) if image_root else None, col)
        col.summarise(idx.root)
        self.problems: list[Problem] = idx.problems
        self.losses: LossCounter = idx.losses

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id."""
        yield from self._samples


class LabelStudioMinReader(LabelStudioReader):
    """Reads a Label Studio JSON_MIN export (as :class:`LabelStudioReader`; annotations only)."""

    format_name: ClassVar[str] = "labelstudio_min"

    def __init__(self, path: str | Path, *, image_root: str | Path | None = None) -> None:
        self._init(index_min(path), image_root)


class LabelStudioBrushPngReader(LabelStudioReader):
    """Reads a Label Studio BRUSH_TO_PNG folder (images are named ``task-<id>``: the export does not name them)."""

    format_name: ClassVar[str] = "labelstudio_brush_png"
    _ext: ClassVar[str] = "png"

    def __init__(self, path: str | Path, *, image_root: str | Path | None = None) -> None:
        self._init(index_brush(path, self._ext), image_root)


class LabelStudioBrushNumpyReader(LabelStudioBrushPngReader):
    """Reads a Label Studio BRUSH_TO_NUMPY folder."""

    format_name: ClassVar[str] = "labelstudio_brush_numpy"
    _ext: ClassVar[str] = "npy"


#: Polygons rasterised as COCO polygons, masks already RLE (shared with the other shape-based readers).
materialize_labelstudio = materialize_shapes


def _validate(index_fn: Any, path: str | Path) -> Iterator[Problem]:
    try:
        idx = index_fn(path, raise_errors=False)
    except SegpipeError as err:
        yield Problem("error", err.path or str(path), err.where or "", err.message, "labelstudio.meta")
        return
    if not any(p.severity == "error" for p in idx.problems):  # what reading adds: categories, names, images
        col = _Collector(False, idx.problems)
        try:
            build_samples(idx, "", None, col)
        except SegpipeError as err:
            idx.problems.append(Problem("error", err.path or str(path), err.where or "", err.message,
                                        "labelstudio.meta"))
        col.summarise(idx.root)
    yield from idx.problems


def validate_labelstudio(path: str | Path) -> Iterator[Problem]:
    """Checks a Label Studio JSON export; one problem per issue, naming the file and the JSON path."""
    yield from _validate(index_json, path)


def validate_labelstudio_min(path: str | Path) -> Iterator[Problem]:
    """Checks a Label Studio JSON_MIN export."""
    yield from _validate(index_min, path)


def validate_labelstudio_brush_png(path: str | Path) -> Iterator[Problem]:
    """Checks a BRUSH_TO_PNG folder."""
    yield from _validate(lambda p, raise_errors: index_brush(p, "png", raise_errors=raise_errors), path)


def validate_labelstudio_brush_numpy(path: str | Path) -> Iterator[Problem]:
    """Checks a BRUSH_TO_NUMPY folder."""
    yield from _validate(lambda p, raise_errors: index_brush(p, "npy", raise_errors=raise_errors), path)
