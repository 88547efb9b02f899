"""Pascal VOC ``Annotations/*.xml``: pure converters between XML bytes and plain records.

Box convention. VOC boxes are 1-based *inclusive pixel indices*: ``xmin = 1`` is the first column and
``xmax`` is the last column covered. COCO boxes are continuous ``(x, y, w, h)`` with the first pixel
spanning ``[0, 1)``. The lossless, invertible conversion used everywhere in segpipe (and by
Detectron2) is::

    x = xmin - 1        w = xmax - xmin + 1
    y = ymin - 1        h = ymax - ymin + 1
    xmin = x + 1        xmax = x + w          (writing back)

so that the box of a mask computed by pycocotools (``toBbox``) and the VOC box of the same pixels
describe the same pixels. Datumaro instead keeps ``x = xmin, w = xmax - xmin`` (one pixel shifted and
one narrower); the conformance tests state the difference.

Parsing goes through ``defusedxml``: entity declarations (billion laughs) and external entities are
refused with a one-line :class:`~segpipe.errors.FormatError` naming the file.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as _xml_escape

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from segpipe.core.records import BBox
from segpipe.errors import FormatError

#: Object fields with a meaning of their own; everything else goes to ``attributes`` as parsed.
_FLAG_FIELDS = ("truncated", "difficult", "occluded")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass
class VocObject:
    """One ``<object>``.

    Attributes:
        name: Class name.
        box: ``(xmin, ymin, xmax, ymax)`` as written (VOC 1-based inclusive), or None without ``<bndbox>``.
        polygons: The object's ``<polygon>`` outlines (CVAT/Roboflow ``<x1><y1>...`` or LabelMe-style
            ``<pt><x><y>``) as flat coordinate lists, kept as written (continuous pixel coordinates,
            like COCO polygons).
        attributes: ``pose`` (str), ``truncated``/``difficult``/``occluded`` (int when numeric), and
            every other child element as parsed by :func:`element_to_value` (``part``, ``actions`` ...).
    """

    name: str
    box: tuple[float, float, float, float] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Outlines from ``<polygon>`` elements (``[x1, y1, x2, y2, ...]`` each, as written).
    polygons: list[list[float]] = field(default_factory=list)


@dataclass
class VocAnnotation:
    """One annotation file.

    Attributes:
        filename: ``<filename>``, or None.
        width: ``<size><width>``, or None when absent or not positive.
        height: ``<size><height>``, or None.
        depth: ``<size><depth>``, or None.
        attributes: Every other top-level element (``folder``, ``source``, ``segmented``, ``owner`` ...).
        objects: The objects in file order (object index ``i`` in SegmentationObject = ``objects[i-1]``).
    """

    filename: str | None
    width: int | None
    height: int | None
    depth: int | None
    attributes: dict[str, Any]
    objects: list[VocObject]
    #: What the parse did not keep, one path each (``object[0]@id``: an XML attribute;
    #: ``size.resolution``: a child of ``<size>``/``<bndbox>`` beyond the known ones; ``source#text``:
    #: text beside child elements).
    unread: list[str] = field(default_factory=list)


def _unread_in(el: ET.Element, path: str, out: list[str]) -> None:
    """Adds to ``out`` what :func:`element_to_value` drops below ``el``: XML attributes, mixed text."""
    out.extend(f"{path}@{k}" for k in el.attrib)
    children = [ch for ch in el if isinstance(ch.tag, str)]
    if children and (el.text or "").strip():
        out.append(f"{path}#text")
    for ch in children:
        _unread_in(ch, f"{path}.{ch.tag}", out)


def element_to_value(el: ET.Element) -> Any:
    """A leaf becomes its stripped text; an element with children a dict (repeated tags: a list)."""
    children = [ch for ch in el if isinstance(ch.tag, str)]
    if not children:
        return (el.text or "").strip()
    grouped: dict[str, list[Any]] = {}
    for ch in children:
        grouped.setdefault(ch.tag, []).append(element_to_value(ch))
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


def parse_xml_bytes(data: bytes, *, source: str | Path | None = None) -> ET.Element:
    """Parses untrusted XML safely.

    Raises:
        FormatError: malformed XML, or entity declarations / external references (XML bombs).
    """
    try:
        root: ET.Element = DET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        _check_depth(root, source)
        return root
    except DefusedXmlException as e:
        raise FormatError(
            f"unsafe XML refused ({type(e).__name__}: entity declarations and external references "
            "are not allowed)",
            path=source,
        ) from None
    except ET.ParseError as e:
        line, col = getattr(e, "position", (0, 0))
        raise FormatError(f"malformed XML at line {line} column {col}", path=source) from None
    except RecursionError:
        raise FormatError("XML nested too deeply", path=source) from None


#: Deepest element nesting accepted. VOC and CVAT annotations nest 4-6 levels; expat parses any depth
#: without recursion, but every reader of the tree (:func:`element_to_value`, ElementTree's own
#: iteration and serialisation) recurses, and 50000 levels exhausted Python's stack.
MAX_XML_DEPTH = 256


def _check_depth(root: ET.Element, source: str | Path | None) -> None:
    """Refuses a tree nested deeper than :data:`MAX_XML_DEPTH`, without recursing.

    Raises:
        FormatError: naming the file.
    """
    stack: list[tuple[ET.Element, int]] = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise FormatError(f"XML nested deeper than {MAX_XML_DEPTH} elements (refused)", path=source)
        stack.extend((ch, depth + 1) for ch in el)


def _num(text: str | None, *, source: str | Path | None, where: str) -> float:
    if text is None or not text.strip():
        raise FormatError("missing number", path=source, where=where)
    try:
        v = float(text.strip())
    except ValueError:
        raise FormatError(f"not a number: {text.strip()!r}", path=source, where=where) from None
    if not math.isfinite(v):
        raise FormatError(f"not a finite number: {text.strip()!r}", path=source, where=where)
    return v


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        v = float(text.strip())
    except ValueError:
        return None
    return int(v) if math.isfinite(v) and v == int(v) and v > 0 else None


def _flag(text: str) -> Any:
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v == int(v) else v


def parse_voc_xml(data: bytes, *, source: str | Path | None = None) -> VocAnnotation:
    """Parses one VOC annotation file.

    Raises:
        FormatError: unsafe or malformed XML, a root other than ``<annotation>``, an object without
            ``<name>``, or a box coordinate that is missing or not a finite number (naming
            ``object[i].bndbox.xmin`` etc.).
    """
    root = parse_xml_bytes(data, source=source)
    if root.tag != "annotation":
        raise FormatError(f"root element is <{root.tag}>, expected <annotation>", path=source)
    filename: str | None = None
    width = height = depth = None
    attrs: dict[str, Any] = {}
    objects: list[VocObject] = []
    unread: list[str] = [f"annotation@{k}" for k in root.attrib]
    for child in root:
        tag = child.tag
        if not isinstance(tag, str):  # comments / processing instructions
            continue
        if tag == "filename":
            filename = (child.text or "").strip() or None
            _unread_in(child, tag, unread)
        elif tag == "size":
            width = _int_or_none(child.findtext("width"))
            height = _int_or_none(child.findtext("height"))
            depth = _int_or_none(child.findtext("depth"))
            unread.extend(f"size@{k}" for k in child.attrib)
            for ch in child:
                if isinstance(ch.tag, str):
                    if ch.tag in ("width", "height", "depth"):
                        _unread_in(ch, f"size.{ch.tag}", unread)
                    else:
                        unread.append(f"size.{ch.tag}")
        elif tag == "object":
            objects.append(_parse_object(child, len(objects), source, unread))
        else:
            _unread_in(child, tag, unread)
            v = element_to_value(child)
            if tag in attrs:
                prev = attrs[tag]
                attrs[tag] = [*prev, v] if isinstance(prev, list) else [prev, v]
            else:
                attrs[tag] = v
    return VocAnnotation(filename, width, height, depth, attrs, objects, unread)


def _parse_polygon(el: ET.Element, where: str, source: str | Path | None) -> list[float]:
    """One ``<polygon>``: ``<x1><y1><x2><y2>...`` (CVAT, Roboflow) or ``<pt><x><y></pt>...`` (LabelMe).

    Raises:
        FormatError: a coordinate that is not a finite number, an unpaired coordinate, other children,
            or fewer than 3 points (naming ``object[i].polygon``).
    """
    children = [ch for ch in el if isinstance(ch.tag, str)]
    coords: list[float] = []
    if children and all(ch.tag == "pt" for ch in children):
        for k, pt in enumerate(children):
            coords.append(_num(pt.findtext("x"), source=source, where=f"{where}.pt[{k}].x"))
            coords.append(_num(pt.findtext("y"), source=source, where=f"{where}.pt[{k}].y"))
    else:
        xs: dict[int, float] = {}
        ys: dict[int, float] = {}
        for ch in children:
            m = re.fullmatch(r"([xy])(\d+)", ch.tag)
            if m is None:
                raise FormatError(f"unknown polygon element <{ch.tag}> (expected <x1><y1>... or <pt>)",
                                  path=source, where=where)
            (xs if m.group(1) == "x" else ys)[int(m.group(2))] = _num(ch.text, source=source,
                                                                       where=f"{where}.{ch.tag}")
        if set(xs) != set(ys):
            raise FormatError("polygon coordinates are not paired (every <xN> needs its <yN>)",
                              path=source, where=where)
        for k in sorted(xs):
            coords += [xs[k], ys[k]]
    if len(coords) < 6:
        raise FormatError(f"a polygon needs at least 3 points, got {len(coords) // 2}", path=source, where=where)
    return coords


def _parse_object(el: ET.Element, i: int, source: str | Path | None, unread: list[str] | None = None) -> VocObject:
    name = (el.findtext("name") or "").strip()
    if not name:
        raise FormatError("object has no <name>", path=source, where=f"object[{i}].name")
    lost: list[str] = unread if unread is not None else []
    box = None
    attrs: dict[str, Any] = {}
    polygons: list[list[float]] = []
    lost.extend(f"object[{i}]@{k}" for k in el.attrib)
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        path = f"object[{i}].{tag}"
        if tag == "name":
            _unread_in(child, path, lost)
            continue
        if tag == "bndbox":
            vals = tuple(
                _num(child.findtext(k), source=source, where=f"object[{i}].bndbox.{k}")
                for k in ("xmin", "ymin", "xmax", "ymax")
            )
            box = (vals[0], vals[1], vals[2], vals[3])
            lost.extend(f"{path}@{k}" for k in child.attrib)
            lost.extend(f"{path}.{ch.tag}" for ch in child
                        if isinstance(ch.tag, str) and ch.tag not in ("xmin", "ymin", "xmax", "ymax"))
        elif tag == "polygon":
            polygons.append(_parse_polygon(child, f"object[{i}].polygon", source))
        elif tag in _FLAG_FIELDS:
            attrs[tag] = _flag((child.text or "").strip())
            _unread_in(child, path, lost)
        else:
            _unread_in(child, path, lost)
            v = element_to_value(child)
            if tag in attrs:
                prev = attrs[tag]
                attrs[tag] = [*prev, v] if isinstance(prev, list) else [prev, v]
            else:
                attrs[tag] = v
    return VocObject(name, box, attrs, polygons)


def voc_box_to_coco(box: Sequence[float]) -> BBox:
    """``(xmin, ymin, xmax, ymax)`` VOC 1-based inclusive → COCO ``(x, y, w, h)`` (see module doc)."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return (xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0)


def coco_box_to_voc(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """COCO ``(x, y, w, h)`` → VOC ``(xmin, ymin, xmax, ymax)``, the inverse of :func:`voc_box_to_coco`."""
    x, y, w, h = (float(v) for v in bbox)
    return (x + 1.0, y + 1.0, x + w, y + h)


def format_number(v: float) -> str:
    """Integers without a decimal point (VOC's style), other values at most 10 significant digits."""
    f = float(v)
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return format(f, ".10g")


def _xml_safe(v: Any) -> bool:
    if isinstance(v, (str, int, float, bool)):
        return True
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _XML_NAME.match(k) and _xml_safe(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(not isinstance(x, (list, tuple)) and _xml_safe(x) for x in v)
    return False


def _append_value(parent: ET.Element, tag: str, v: Any) -> None:
    if isinstance(v, (list, tuple)):
        for x in v:
            _append_value(parent, tag, x)
        return
    el = ET.SubElement(parent, tag)
    if isinstance(v, Mapping):
        for k, x in v.items():
            _append_value(el, k, x)
    elif isinstance(v, bool):
        el.text = "1" if v else "0"
    elif isinstance(v, float):
        el.text = format_number(v)
    else:
        el.text = str(v)


def xml_attributes(attrs: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """The attributes that can be written as XML elements (valid tag names, scalar/dict/list values)."""
    return {
        k: v
        for k, v in attrs.items()
        if k not in skip and not k.startswith("voc_") and _XML_NAME.match(k) and _xml_safe(v)
    }


def _emit(out: list[str], tag: str, v: Any, depth: int) -> None:
    """Appends the lines of one element exactly as ElementTree + ``ET.indent`` would write them."""
    if isinstance(v, (list, tuple)):
        for x in v:
            _emit(out, tag, x, depth)
        return
    pad = "  " * depth
    if isinstance(v, Mapping):
        inner: list[str] = []
        for k, x in v.items():
            _emit(inner, k, x, depth + 1)
        if not inner:  # no child elements (e.g. only empty lists): ElementTree's short form
            out.append(f"{pad}<{tag} />")
            return
        out.append(f"{pad}<{tag}>")
        out.extend(inner)
        out.append(f"{pad}</{tag}>")
        return
    if isinstance(v, bool):
        text = "1" if v else "0"
    elif isinstance(v, float):
        text = format_number(v)
    else:
        text = str(v)
    out.append(f"{pad}<{tag}>{_xml_escape(text)}</{tag}>" if text else f"{pad}<{tag} />")


def format_voc_xml(ann: VocAnnotation) -> bytes:
    """Writes one annotation file (UTF-8, indented).

    Element order: ``folder``, ``filename``, other image attributes, ``size``, then the objects
    (``name``, ``pose``, ``truncated``, ``difficult``, ``occluded``, other attributes, ``bndbox``).
    Written as text directly (byte-identical to ElementTree's output, 5-10× faster): conversion
    writes one file per image.
    """
    out = ["<annotation>"]
    attrs = xml_attributes(ann.attributes, skip=("filename", "size", "object"))
    if "folder" in attrs:
        _emit(out, "folder", attrs.pop("folder"), 1)
    if ann.filename is not None:
        _emit(out, "filename", ann.filename, 1)
    for k, v in attrs.items():
        _emit(out, k, v, 1)
    if ann.width is not None and ann.height is not None:
        _emit(out, "size", {"width": str(ann.width), "height": str(ann.height),
                            "depth": str(ann.depth if ann.depth is not None else 3)}, 1)
    for obj in ann.objects:
        out.append("  <object>")
        _emit(out, "name", obj.name, 2)
        oattrs = xml_attributes(obj.attributes, skip=("name", "bndbox"))
        _emit(out, "pose", str(oattrs.pop("pose", "Unspecified")), 2)
        for k in _FLAG_FIELDS:
            _emit(out, k, oattrs.pop(k, 0), 2)
        for k, v in oattrs.items():
            _emit(out, k, v, 2)
        if obj.box is not None:
            out.append("    <bndbox>")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), obj.box, strict=True):
                out.append(f"      <{k}>{_xml_escape(format_number(v))}</{k}>")
            out.append("    </bndbox>")
        out.append("  </object>")
    out.append("</annotation>")
    if len(out) == 2:
        return b"<annotation />\n"
    return ("\n".join(out) + "\n").encode("utf-8")


def _format_voc_xml_et(ann: VocAnnotation) -> bytes:
    """Reference implementation with ElementTree (kept for tests: :func:`format_voc_xml` must match it).

    Element order: ``folder``, ``filename``, other image attributes, ``size``, then the objects
    (``name``, ``pose``, ``truncated``, ``difficult``, ``occluded``, other attributes, ``bndbox``).
    """
    root = ET.Element("annotation")
    attrs = xml_attributes(ann.attributes, skip=("filename", "size", "object"))
    if "folder" in attrs:
        _append_value(root, "folder", attrs.pop("folder"))
    if ann.filename is not None:
        ET.SubElement(root, "filename").text = ann.filename
    for k, v in attrs.items():
        _append_value(root, k, v)
    if ann.width is not None and ann.height is not None:
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(ann.width)
        ET.SubElement(size, "height").text = str(ann.height)
        ET.SubElement(size, "depth").text = str(ann.depth if ann.depth is not None else 3)
    for obj in ann.objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = obj.name
        oattrs = xml_attributes(obj.attributes, skip=("name", "bndbox"))
        ET.SubElement(o, "pose").text = str(oattrs.pop("pose", "Unspecified"))
        for k in _FLAG_FIELDS:
            _append_value(o, k, oattrs.pop(k, 0))
        for k, v in oattrs.items():
            _append_value(o, k, v)
        if obj.box is not None:
            b = ET.SubElement(o, "bndbox")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), obj.box, strict=True):
                ET.SubElement(b, k).text = format_number(v)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"
