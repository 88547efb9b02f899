"""Validating Cityscapes-style folders: one problem per issue, naming the file and the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segpipe.core.problems import Problem
from segpipe.errors import SegpipeError
from segpipe.formats.cityscapes.convert import MAX_OBJECTS_PER_CLASS
from segpipe.formats.cityscapes.reader import CityscapesReader
from segpipe.storage.images import image_size, read_label_map
from segpipe.storage.paths import safe_join


def validate_cityscapes(path: str | Path) -> Iterator[Problem]:
    """Checks a Cityscapes folder; yields one problem per issue.

    Codes: ``cityscapes.not_cityscapes``, ``cityscapes.sidecar``, ``cityscapes.no_labels`` (warning),
    ``cityscapes.unreadable``, ``cityscapes.size_mismatch``, ``cityscapes.unknown_label`` (a labelIds or
    instanceIds value of no label in the table), ``cityscapes.instance_of_stuff`` (an object id ≥ 1000 of
    a class without instances; not with a ``label_colors.txt`` table, which does not say),
    ``cityscapes.inconsistent`` (labelIds disagrees with instanceIds). A malformed ``label_colors.txt``
    is a ``cityscapes.sidecar`` error naming its line.
    """
    root = Path(path)
    if not (root / "gtFine").is_dir():
        yield Problem("error", str(root), "gtFine/", "no gtFine/ folder", "cityscapes.not_cityscapes")
        return
    try:
        reader = CityscapesReader(root)
    except SegpipeError as e:
        yield Problem("error", e.path or str(root), e.where or "", e.message, "cityscapes.sidecar")
        return
    yield from reader.problems
    rows = reader.meta.extra["cityscapes_labels"]
    known = {int(r["id"]) for r in rows}
    things = {int(r["id"]) for r in rows if r["hasInstances"]}
    # A table that does not say which classes have instances (label_colors.txt) cannot make object ids
    # of a class wrong: the reader takes every value ≥ 1000 as an object.
    things_known = bool(reader.meta.extra.get("cityscapes_instances_known", True))
    for s in reader.samples():
        maps: dict[str, np.ndarray] = {}
        yield from _read_maps(root, (s.object_file, s.semantic_file), maps)
        shapes = {a.shape for a in maps.values()}
        if len(shapes) > 1:
            yield Problem("error", next(iter(maps)), "size", f"labelIds and instanceIds differ in size: {shapes}",
                          "cityscapes.size_mismatch")
            continue
        if s.image_path is not None and shapes:
            yield from _check_image_size(s.image_path, next(iter(maps)), shapes.pop())
        yield from _check_values(maps, known, known - things if things_known else set())


def _read_maps(root: Path, files: tuple[str | None, ...], into: dict[str, np.ndarray]) -> Iterator[Problem]:
    """Reads a sample's label maps into ``into`` (by path relative to ``root``), in the order given.

    Yields:
        ``cityscapes.unreadable`` for a map that cannot be read.
    """
    for f in files:
        if f is None:
            continue
        rel = str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else f
        try:
            into[rel] = read_label_map(safe_join(root, rel) if not Path(rel).is_absolute() else f)
        except SegpipeError as e:
            yield Problem("error", rel, "pixels", e.message, "cityscapes.unreadable")


def _check_image_size(image_path: str, rel: str, shape: tuple[int, ...]) -> Iterator[Problem]:
    """Yields ``cityscapes.size_mismatch`` when the label maps' ``(H, W)`` is not the image's size."""
    try:
        w, h = image_size(image_path)
    except SegpipeError as e:
        yield Problem("error", image_path, "", e.message, "cityscapes.unreadable")
        return
    if shape != (h, w):
        yield Problem("error", rel, "size", f"labels are {shape[1]}x{shape[0]} but the image is {w}x{h}",
                      "cityscapes.size_mismatch")


def _check_values(maps: dict[str, np.ndarray], known: set[int], stuff: set[int]) -> Iterator[Problem]:
    """Checks the values of a sample's ``(H, W)`` maps, instanceIds first (labelIds is checked against it).

    Args:
        maps: Path → map, as :func:`_read_maps` read them.
        known: Label ids of the table.
        stuff: Label ids that cannot have object ids (empty when the table does not say).
    """
    derived = None
    for rel, arr in maps.items():
        vals = [int(v) for v in np.unique(arr)]
        if rel.endswith("_gtFine_instanceIds.png"):
            labs = {v // MAX_OBJECTS_PER_CLASS if v >= MAX_OBJECTS_PER_CLASS else v for v in vals}
            stuff_objects = sorted({v for v in vals if v >= MAX_OBJECTS_PER_CLASS
                                    and v // MAX_OBJECTS_PER_CLASS in stuff})
            if stuff_objects:
                yield Problem("error", rel, "pixel values", f"object ids {stuff_objects[:10]} belong to classes "
                              "without instances", "cityscapes.instance_of_stuff")
            a = arr.astype(np.int64)
            derived = np.where(a >= MAX_OBJECTS_PER_CLASS, a // MAX_OBJECTS_PER_CLASS, a)
        else:
            labs = set(vals)
            if derived is not None and not np.array_equal(derived, arr):
                yield Problem("error", rel, "pixels", "labelIds disagrees with instanceIds // 1000 on "
                              f"{int((derived != arr).sum())} pixels", "cityscapes.inconsistent")
        bad = sorted(labs - known)
        if bad:
            yield Problem("error", rel, "pixel values", f"label ids {bad[:10]} are not in the label table",
                          "cityscapes.unknown_label")
