"""Validating Pascal VOC folders: one :class:`~segpipe.core.problems.Problem` per issue.

Problem codes (stable, for tests and reports):

``voc.not_voc``, ``voc.labelmap``, ``voc.unsafe_path``, ``voc.xml_unsafe``, ``voc.xml_malformed``,
``voc.xml_root``, ``voc.missing_field``, ``voc.box_not_numeric``, ``voc.box_inverted``,
``voc.box_outside``, ``voc.unknown_class``, ``voc.mask_unreadable``, ``voc.mask_rgb``,
``voc.mask_size``, ``voc.size_mismatch``, ``voc.unknown_value``, ``voc.object_without_xml``, ``voc.class_mismatch``,
``voc.imageset_missing``.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segpipe.core.labelmap import VOC_VOID, voc_colormap, voc_labelmap
from segpipe.core.problems import Problem
from segpipe.core.render import instances_from_maps_detailed
from segpipe.errors import FormatError, SegpipeError, UnsafePathError
from segpipe.formats.voc.masks import mask_mode, read_indexed_mask
from segpipe.formats.voc.reader import IMAGE_EXTS, LABELMAP, SIDECAR, _listdir, find_voc_root, read_labelmap_file
from segpipe.formats.voc.xml import parse_xml_bytes
from segpipe.storage.images import image_size
from segpipe.storage.paths import check_relative_name, safe_join


def _num(text: str | None) -> float | None:
    try:
        v = float((text or "").strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def validate_voc(path: str | Path) -> Iterator[Problem]:
    """Checks a VOC folder and yields every problem found (files relative to the root).

    Checked: XML well-formedness and safety (entity declarations, external references), required
    fields (``filename``, ``size``, object ``name`` and ``bndbox``), numeric and ordered boxes inside
    the image, class names against the label map, masks (readable, palette rather than RGB, same size
    as the image, values in the label map or 255, objects without XML object, object/class
    disagreement), ImageSets entries that name missing files, and names that escape the root
    (``..``, absolute, symlinks pointing outside).
    """
    root = find_voc_root(path)
    if root is None:
        yield Problem(
            "error",
            str(path),
            "",
            "not a Pascal VOC folder (no Annotations/, SegmentationClass/ or SegmentationObject/)",
            "voc.not_voc",
        )
        return
    try:
        entries = read_labelmap_file(root / LABELMAP) if (root / LABELMAP).is_file() else voc_labelmap()
    except SegpipeError as e:
        yield Problem("error", LABELMAP, e.where or "", e.message, "voc.labelmap")
        return
    names = {e.name: i for i, e in enumerate(entries)}
    region_objects = _writes_region_objects(root)
    cmap = voc_colormap(256)
    colors = np.asarray(
        [e.color if e.color is not None else cmap[i % 256] for i, e in enumerate(entries)][:256],
        dtype=np.uint8,
    )

    files: dict[str, dict[str, str]] = {}
    for d, exts in (
        ("Annotations", (".xml",)),
        ("SegmentationClass", (".png",)),
        ("SegmentationObject", (".png",)),
        ("JPEGImages", IMAGE_EXTS),
    ):
        files[d] = {}
        for n in _listdir(root / d):
            stem, ext = os.path.splitext(n)
            if ext.lower() in exts:
                problem = _unsafe(root, f"{d}/{n}")
                if problem is None:
                    files[d].setdefault(stem, n)
                else:
                    yield problem

    sizes: dict[str, tuple[int, int]] = {}
    xml_objects: dict[str, list[str] | None] = {}
    for stem, n in files["Annotations"].items():
        rel = f"Annotations/{n}"
        yield from _check_xml(root / rel, rel, names, sizes, xml_objects, stem)
    yield from _check_image_sizes(root, files, sizes)

    for stem, n in files["SegmentationClass"].items():
        rel = f"SegmentationClass/{n}"
        yield from _check_mask(root / rel, rel, colors, len(entries), sizes.get(stem), is_object=False)
    for stem, n in files["SegmentationObject"].items():
        rel = f"SegmentationObject/{n}"
        yield from _check_mask(root / rel, rel, cmap, None, sizes.get(stem), is_object=True)
        yield from _check_objects(root, stem, rel, files, colors, entries, xml_objects, stem in sizes,
                                  region_objects=region_objects)

    sets = root / "ImageSets"
    for task in _listdir(sets):
        for fname in _listdir(sets / task):
            if fname.endswith(".txt"):
                yield from _check_imageset(root, task, f"ImageSets/{task}/{fname}", files)


def _unsafe(root: Path, rel: str) -> Problem | None:
    """``voc.unsafe_path`` when ``rel`` leaves ``root`` (``..``, absolute, a symlink pointing outside)."""
    try:
        safe_join(root, rel)
    except UnsafePathError as e:
        return Problem("error", rel, "", e.message, "voc.unsafe_path")
    return None


def _check_image_sizes(root: Path, files: dict[str, dict[str, str]],
                       sizes: dict[str, tuple[int, int]]) -> Iterator[Problem]:
    """Fills ``sizes`` (stem → (width, height)) with the images' sizes where no XML gave one; checks the
    XML's ``<size>`` against the image file elsewhere.

    The image file is upright, as segpipe records sizes: when they disagree, the record is what is wrong,
    and the masks are compared with the image itself (a mask matching its image was once blamed for the
    XML's wrong width).
    """
    for stem, n in files["JPEGImages"].items():
        if stem not in sizes:
            try:
                sizes[stem] = image_size(root / "JPEGImages" / n)
            except SegpipeError as e:
                yield Problem("error", f"JPEGImages/{n}", "", e.message, "voc.image_unreadable")
            continue
        try:
            fw, fh = image_size(root / "JPEGImages" / n)
        except SegpipeError:
            continue  # unreadable: the image checks name it; its size cannot be compared
        rw, rh = sizes[stem]
        if (fw, fh) != (rw, rh):
            fields = ", ".join(f"size.{k}" for k, bad in (("width", rw != fw), ("height", rh != fh)) if bad)
            yield Problem("error", f"Annotations/{files['Annotations'][stem]}", fields,
                          f"recorded size {rw}x{rh} (width x height), but JPEGImages/{n} is {fw}x{fh}",
                          "voc.size_mismatch")
            sizes[stem] = (fw, fh)


def _check_imageset(root: Path, task: str, rel: str, files: dict[str, dict[str, str]]) -> Iterator[Problem]:
    """Checks one ``ImageSets/<task>/*.txt`` list: safe names, each naming a file that exists."""
    problem = _unsafe(root, rel)
    if problem is not None:
        yield problem
        return
    try:
        text = (root / rel).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        yield Problem("error", rel, "", f"cannot read: {e}", "voc.imageset_unreadable")
        return
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        stem = line.split()[0]
        try:
            check_relative_name(stem)
        except UnsafePathError as e:
            yield Problem("error", rel, f"line {lineno}", e.message, "voc.unsafe_path")
            continue
        if task == "Segmentation" and stem not in files["SegmentationClass"]:
            yield Problem(
                "error",
                rel,
                f"line {lineno}",
                f"lists {stem!r} but SegmentationClass/{stem}.png does not exist",
                "voc.imageset_missing",
            )
        elif task != "Segmentation" and stem not in files["Annotations"] and stem not in files["JPEGImages"]:
            yield Problem(
                "error",
                rel,
                f"line {lineno}",
                f"lists {stem!r} but neither Annotations/{stem}.xml nor an image exists",
                "voc.imageset_missing",
            )


def _check_xml(
    f: Path,
    rel: str,
    names: dict[str, int],
    sizes: dict[str, tuple[int, int]],
    xml_objects: dict[str, list[str] | None],
    stem: str,
) -> Iterator[Problem]:
    try:
        root = parse_xml_bytes(f.read_bytes(), source=rel)
    except FormatError as e:
        code = "voc.xml_unsafe" if "unsafe" in e.message else "voc.xml_malformed"
        yield Problem("error", rel, "", e.message, code)
        xml_objects[stem] = None  # unreadable: the object checks have nothing to compare with
        return
    if root.tag != "annotation":
        yield Problem(
            "error", rel, "", f"root element is <{root.tag}>, expected <annotation>", "voc.xml_root"
        )
        xml_objects[stem] = None
        return
    if not (root.findtext("filename") or "").strip():
        yield Problem("warning", rel, "filename", "missing <filename>", "voc.missing_field")
    w = _num(root.findtext("size/width"))
    h = _num(root.findtext("size/height"))
    if root.find("size") is None:
        yield Problem("warning", rel, "size", "missing <size>", "voc.missing_field")
    elif not w or not h or w <= 0 or h <= 0:
        yield Problem(
            "error", rel, "size", "<size> width/height missing or not positive numbers", "voc.missing_field"
        )
    else:
        sizes[stem] = (int(w), int(h))
    objs: list[str] = []
    xml_objects[stem] = objs
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        objs.append(name)
        yield from _check_object(obj, name, f"object[{i}]", rel, names, sizes.get(stem))


def _check_object(obj: ET.Element, name: str, where: str, rel: str, names: dict[str, int],
                  size: tuple[int, int] | None) -> Iterator[Problem]:
    """Checks one ``<object>``: its class against the label map, its box (numbers, ordered, inside the
    ``(width, height)`` image when known).
    """
    if not name:
        yield Problem("error", rel, f"{where}.name", "object has no <name>", "voc.missing_field")
    elif name not in names:
        yield Problem(
            "error", rel, f"{where}.name", f"class {name!r} is not in the label map", "voc.unknown_class"
        )
    box = obj.find("bndbox")
    if box is None:
        yield Problem("warning", rel, f"{where}.bndbox", "object has no <bndbox>", "voc.missing_field")
        return
    vals: dict[str, float] = {}
    for k in ("xmin", "ymin", "xmax", "ymax"):
        text = box.findtext(k)
        v = _num(text)
        if text is None:
            yield Problem("error", rel, f"{where}.bndbox.{k}", f"missing <{k}>", "voc.missing_field")
        elif v is None:
            yield Problem(
                "error",
                rel,
                f"{where}.bndbox.{k}",
                f"not a number: {text.strip()!r}",
                "voc.box_not_numeric",
            )
        else:
            vals[k] = v
    if len(vals) < 4:
        return
    if vals["xmax"] < vals["xmin"] or vals["ymax"] < vals["ymin"]:
        yield Problem(
            "error",
            rel,
            f"{where}.bndbox",
            f"inverted box: xmin {vals['xmin']:g} xmax {vals['xmax']:g} ymin {vals['ymin']:g} "
            f"ymax {vals['ymax']:g}",
            "voc.box_inverted",
        )
    elif size is not None:
        iw, ih = size
        if vals["xmin"] < 1 - 1e-9 or vals["ymin"] < 1 - 1e-9 or vals["xmax"] > iw or vals["ymax"] > ih:
            yield Problem(
                "error",
                rel,
                f"{where}.bndbox",
                f"box ({vals['xmin']:g}, {vals['ymin']:g}, {vals['xmax']:g}, {vals['ymax']:g}) lies "
                f"outside the {iw}x{ih} image (VOC pixels are 1..width, 1..height)",
                "voc.box_outside",
            )


def _check_mask(
    f: Path,
    rel: str,
    colors: np.ndarray,
    n_labels: int | None,
    size: tuple[int, int] | None,
    *,
    is_object: bool,
) -> Iterator[Problem]:
    try:
        mode = mask_mode(f)
        arr = read_indexed_mask(f, colors)
    except SegpipeError as e:
        yield Problem("error", rel, "pixels", e.message, "voc.mask_unreadable")
        return
    if mode in ("RGB", "RGBA"):
        yield Problem(
            "warning", rel, "mode", f"mask is {mode} (colour-coded) instead of a palette PNG", "voc.mask_rgb"
        )
    if size is not None and (arr.shape[1], arr.shape[0]) != size:
        yield Problem(
            "error",
            rel,
            "size",
            f"mask is {arr.shape[1]}x{arr.shape[0]} but the image is {size[0]}x{size[1]}",
            "voc.mask_size",
        )
    if n_labels is not None:
        vals = np.unique(arr)
        bad = [int(v) for v in vals if int(v) >= n_labels and int(v) != VOC_VOID]
        if bad:
            yield Problem(
                "error",
                rel,
                "pixel values",
                f"values {bad[:10]} are not in the label map ({n_labels} labels; 255 = void)",
                "voc.unknown_value",
            )


def _writes_region_objects(root: Path) -> bool:
    """Whether segpipe's sidecar says object indices after the XML objects are class regions."""
    try:
        side = json.loads((root / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no sidecar, or one the reader reports: plain VOC rules
    return isinstance(side, dict) and side.get("region_objects") is True


def _check_objects(
    root: Path,
    stem: str,
    rel: str,
    files: dict[str, dict[str, str]],
    colors: np.ndarray,
    entries: list,  # type: ignore[type-arg]
    xml_objects: dict[str, list[str] | None],
    sized: bool,
    *,
    region_objects: bool = False,
) -> Iterator[Problem]:
    """Object indices without an XML object, and objects whose pixels' class differs from the XML's.

    With ``region_objects`` (segpipe's sidecar says so) indices after the XML objects are class regions
    written on purpose (Datumaro reads masks from SegmentationObject), not a problem.
    """
    try:
        obj = read_indexed_mask(root / rel, voc_colormap(256))
        cls = None
        if stem in files["SegmentationClass"]:
            cls = read_indexed_mask(root / "SegmentationClass" / files["SegmentationClass"][stem], colors)
    except SegpipeError:
        return  # reported by _check_mask
    if cls is not None and cls.shape != obj.shape:
        if sized:
            return  # each map was already compared with the image size
        yield Problem(
            "error",
            rel,
            "size",
            f"object map is {obj.shape[1]}x{obj.shape[0]} but the class map is {cls.shape[1]}x{cls.shape[0]}",
            "voc.mask_size",
        )
        return
    regions = instances_from_maps_detailed(cls if cls is not None else np.zeros_like(obj), obj)
    if stem in xml_objects and xml_objects[stem] is None:
        return  # the XML is broken (reported)
    names = xml_objects.get(stem)
    known = {e.name for e in entries}
    for r in regions:
        if names is None or r.object_index > len(names):
            if region_objects and names is not None:
                continue
            yield Problem(
                "warning",
                rel,
                f"object index {r.object_index}",
                "object has pixels but no <object> in the XML (its class comes from SegmentationClass)",
                "voc.object_without_xml",
            )
            continue
        xml_name = names[r.object_index - 1]
        if cls is None or xml_name not in known or r.category >= len(entries):
            continue  # unknown names / values are reported on their own
        mask_name = entries[r.category].name if r.category < len(entries) else str(r.category)
        if r.category != 0 and xml_name != mask_name:
            yield Problem(
                "warning",
                rel,
                f"object index {r.object_index}",
                f"XML object[{r.object_index - 1}] is {xml_name!r} but its pixels are {mask_name!r} in "
                "SegmentationClass",
                "voc.class_mismatch",
            )
        elif r.mixed_pixels:
            yield Problem(
                "warning",
                rel,
                f"object index {r.object_index}",
                f"{r.mixed_pixels} pixels of the object carry another class in SegmentationClass",
                "voc.class_mismatch",
            )
