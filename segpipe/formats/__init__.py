"""Format adapters, one package per format, in a registry; plus autodetection."""

from __future__ import annotations

import importlib
from pathlib import Path

from segpipe.errors import InputError
from segpipe.formats.base import FormatSpec
from segpipe.formats.registry import FORMATS

#: Built-in adapter modules, imported on first use. Detection tries formats in this order.
_BUILTIN = (
    "segpipe.formats.coco",
    "segpipe.formats.voc",
    "segpipe.formats.maskdir",
    "segpipe.formats.zarrstore",
    "segpipe.formats.labelstudio",
    "segpipe.formats.geo",
    "segpipe.formats.medical",
    "segpipe.formats.cityscapes",
    "segpipe.formats.yolo",
    "segpipe.formats.labelme",
    "segpipe.formats.cvat",
    "segpipe.formats.labelpngs",  # never auto-detected (a folder of greyscale photos looks the same)
)
#: Detection order: the most specific shapes first.
# yolo before voc: Datumaro's loose YOLO layout has an ``Annotations/`` folder (of .txt files), which VOC's
# detection takes as its marker; YOLO's own markers (data.yaml with names, obj.data, obj.names) are specific.
# labelme before voc: a LabelMe XML folder has VOC's marker ``Annotations/``; labelme's detector refuses it.
# labelstudio before the COCO family: a Label Studio JSON export is a list, like COCO results.
# labelstudio_brush_* before maskdir: a BRUSH_TO_PNG folder is a folder of PNGs (its names are specific).
DETECT_ORDER = ("segpipe_zarr", "labelstudio", "labelstudio_min", "labelstudio_brush_png", "labelstudio_brush_numpy",
                "coco_panoptic", "coco_results", "coco", "cvat", "yolo", "labelme", "voc", "maskdir")
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # an adapter package not written yet must not break the others
            if e.name != mod:
                raise


def get_format(name: str) -> FormatSpec:
    """Returns the registered format ``name`` (raises with the known names)."""
    _load()
    return FORMATS.get(name)


def all_formats() -> list[FormatSpec]:
    """Every registered format, sorted by name."""
    _load()
    return [FORMATS.get(n) for n in FORMATS.names()]


#: Deliberate preferences: when the key matches, the formats it names are not candidates. Each is a
#: layout the key's reader reads whole while the other's detector also fires on one of its markers.
SHADOWS: dict[str, frozenset[str]] = {
    # Datumaro's loose YOLO layout has an ``Annotations/`` folder (of .txt files): VOC's marker.
    "yolo": frozenset({"voc"}),
    # A LabelMe XML folder has ``Annotations/`` too (VOC's detector refuses it; kept for safety).
    "labelme": frozenset({"voc"}),
    # A Label Studio JSON export is a list, like COCO results.
    "labelstudio": frozenset({"coco_results", "coco", "coco_panoptic"}),
    # ``annotations.json`` + ``masks/`` (what ``segpipe synth`` writes): the COCO reader reads the
    # ``masks/`` label maps beside the JSON as its semantic maps, so it holds everything maskdir would.
    "coco": frozenset({"maskdir"}),
}

#: Layouts segpipe does not read whose markers could be taken for one it reads: ``(name, test)``.
_FOREIGN: tuple[tuple[str, str], ...] = (
    ("an Open Images export (annotations/*.csv)", "annotations/*.csv"),
)


def _matches(p: Path, order: list[str]) -> list[str]:
    """The formats of ``order`` whose detector accepts ``p``, in that order."""
    hits: list[str] = []
    for name in order:
        spec = FORMATS.get(name)
        try:
            if spec.detect(p):
                hits.append(name)
        except InputError:
            raise
        except Exception:  # a detector that cannot parse the input simply does not match
            continue
    return hits


def detect_format(path: str | Path, prefer: tuple[str, ...] = ()) -> str:
    """Names the format of ``path`` (a file or folder), or refuses: never a guess.

    Every detector runs. One match (after the deliberate preferences of :data:`SHADOWS`) is the
    answer; several are refused with the candidates, since reading the wrong one loses data without
    a word (a COCO folder with instances and panoptic files, say).

    Args:
        path: The dataset.
        prefer: Formats that win when they match. A folder can be valid in several formats (a
            synthetic dataset has both a COCO ``annotations.json`` of its objects and ``masks/`` label
            maps of every class); semantic evaluation prefers the label maps, for instance.

    Raises:
        InputError: the path is missing, matches no registered format (the message says what was
            looked for), or matches several (the message lists them).
    """
    _load()
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    base = [n for n in DETECT_ORDER if n in FORMATS] + [n for n in FORMATS.names() if n not in DETECT_ORDER]
    hits = _matches(p, base)
    for name in prefer:
        if name in hits:
            return name
    shadowed = {s for h in hits for s in SHADOWS.get(h, ())}
    hits = [h for h in hits if h not in shadowed]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InputError(
            f"matches several formats: {', '.join(hits)}",
            path=p,
            hint=f"name the one to read with --from (validate: --format), e.g. --from {hits[0]}",
        )
    readable = [n for n in base if FORMATS.get(n).reader is not None]
    if p.is_dir():
        for what, pattern in _FOREIGN:
            if next(iter(p.glob(pattern)), None) is not None:
                raise InputError(f"looks like {what}, which segpipe does not read", path=p,
                                 hint=f"segpipe reads: {', '.join(readable)}")
    hint = f"pass --from with one of: {', '.join(readable)}; `segpipe formats` says what each looks like"
    if p.is_dir():
        # A folder of several annotation files (exports side by side) is no dataset: name them.
        files = sorted(f.name for f in p.iterdir() if f.suffix.lower() in (".json", ".xml", ".yaml", ".yml"))
        if len(files) > 1:
            shown = ", ".join(files[:6]) + (f" and {len(files) - 6} more" if len(files) > 6 else "")
            raise InputError(f"cannot tell the dataset format: the folder holds several annotation files ({shown})",
                             path=p, hint="pass one of the files, with --from if needed")
    raise InputError("cannot tell the dataset format: it matches none of the formats segpipe reads", path=p,
                     hint=hint)
