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
)
#: Detection order: the most specific shapes first.
# yolo before voc: Datumaro's loose YOLO layout has an ``Annotations/`` folder (of .txt files), which VOC's
# detection takes as its marker; YOLO's own markers (data.yaml with names, obj.data, obj.names) are specific.
# labelme before voc: a LabelMe XML folder has VOC's marker ``Annotations/``; labelme's detector refuses it.
DETECT_ORDER = ("segpipe_zarr", "coco_panoptic", "coco_results", "coco", "yolo", "labelme", "voc", "maskdir")
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


def detect_format(path: str | Path, prefer: tuple[str, ...] = ()) -> str:
    """Names the format of ``path`` (a file or folder).

    Args:
        path: The dataset.
        prefer: Formats to try first. A folder can be valid in several formats (a synthetic dataset
            has both a COCO ``annotations.json`` of its objects and ``masks/`` label maps of every
            class); semantic evaluation prefers the label maps, for instance.

    Raises:
        InputError: the path is missing or matches no registered format.
    """
    _load()
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    base = [n for n in DETECT_ORDER if n in FORMATS] + [n for n in FORMATS.names() if n not in DETECT_ORDER]
    order = [n for n in prefer if n in FORMATS] + [n for n in base if n not in prefer]
    for name in order:
        spec = FORMATS.get(name)
        try:
            if spec.detect(p):
                return name
        except InputError:
            raise
        except Exception:  # a detector that cannot parse the input simply does not match
            continue
    raise InputError(
        "cannot tell the dataset format",
        path=p,
        hint=f"pass --from with one of: {', '.join(FORMATS.names())}",
    )
