"""Finding and parsing CVAT for images 1.1 XML: detection, the XML files of a folder, the XML itself, image files.

Layouts read (what CVAT and Datumaro write)::

    export_task/                          export_project/                    Datumaro's ``cvat`` export
      annotations.xml  (<meta><task>)       annotations.xml (<meta><project>)  <subset>.xml, one per subset
      images/<name>                         images/<subset>/<name>             images/<name>

A folder may hold several CVAT XML files (Datumaro writes one per subset); each is read. The split of an image
is, in this order: its ``subset`` attribute (project exports), the subset of the task its ``task_id`` names,
the task's ``<subset>``, the XML file's stem (Datumaro's convention) unless it is ``annotations``; Datumaro's
``default`` means no split. An image file is ``images/<subset>/<name>``, ``images/<name>`` or ``<name>``
beside the XML (the first that exists); none of them leaves the dataset folder.

Parsing is streamed through ``defusedxml`` (entity declarations, DTDs and external references refused, so a
billion-laughs file is one error line), under :data:`MAX_XML_BYTES` and :data:`MAX_XML_DEPTH`; every error
names the XML file and the element (``image 3 (a.jpg) > polygon[2] > points``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from segpipe.errors import FormatError, InputError, UnsafePathError
from segpipe.formats.cvat.shapes import ShapeError, parse_int, parse_number, parse_points
from segpipe.storage.paths import check_relative_name, is_within

#: Largest XML read (a CVAT task of 100k images with masks is a few hundred MiB).
MAX_XML_BYTES = 1 << 30
#: Deepest nesting accepted; CVAT nests 8 levels (annotations > meta > project > tasks > task > segments ...).
MAX_XML_DEPTH = 64
#: Shapes CVAT for images has (``tag`` is image-level and separate).
SHAPE_TAGS = ("box", "polygon", "polyline", "points", "mask", "skeleton", "ellipse", "cuboid")
#: Stems of XML files that name no split.
NO_SPLIT = ("annotations", "default", "")
IMAGES_DIR = "images"
OWN_FILES = ("conversion_report.json", ".segpipe-output")
_PEEK = 1 << 16
_ROOT = re.compile(rb"<annotations[\s>]")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class Label:
    """One ``<meta> ... <labels><label>``.

    Attributes:
        name: Its name. color: ``(r, g, b)`` or None. type: CVAT's label type (``any``, ``skeleton`` ...).
        attributes: Its attribute specs, each ``{name, mutable, input_type, default_value, values}`` as text.
        parent: The skeleton label of a skeleton point (CVAT's ``<parent>``), else None.
        svg: A skeleton label's template (its edges), else None.
    """

    name: str
    color: tuple[int, int, int] | None = None
    type: str = "any"
    attributes: list[dict[str, str]] = field(default_factory=list)
    parent: str | None = None
    svg: str | None = None


@dataclass
class Shape:
    """One shape of an image, as written (checked, not yet rasterised).

    Attributes:
        kind: Its tag (``box``, ``polygon`` ...). index: Position among the image's shapes (document order).
        label: Its label (``""``: unlabelled). z_order / group / occluded / outside / source: as written.
        attributes: ``<attribute name>`` values as text. points: Flat coordinates (``box``: xtl, ytl, xbr, ybr).
        rotation: A box's rotation in degrees. mask: ``(rle, left, top, width, height)`` of a ``mask``.
        elements: A skeleton's points. where: The element, for messages.
    """

    kind: str
    index: int
    label: str
    where: str
    z_order: int = 0
    group: int = 0
    occluded: bool = False
    outside: bool = False
    source: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    points: list[float] = field(default_factory=list)
    rotation: float = 0.0
    mask: tuple[str, int, int, int, int] | None = None
    elements: list[Shape] = field(default_factory=list)


@dataclass
class Image:
    """One ``<image>``.

    Attributes:
        xml: The XML file (relative to the dataset folder). frame: Its ``id``. name: Its ``name``.
        width, height: Its recorded size. subset: Its split, or None. shapes: Its shapes in document order.
        tags: Image-level ``<tag>`` labels. where: The element, for messages.
    """

    xml: str
    frame: int
    name: str
    width: int
    height: int
    subset: str | None
    where: str
    shapes: list[Shape] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


@dataclass
class Document:
    """One parsed CVAT XML file.

    Attributes:
        rel: Its path relative to the dataset folder. kind: ``task`` or ``project``.
        labels: Meta labels in order. images: Its images in document order.
        tracks: Shapes inside ``<track>`` elements (CVAT for video), not read. unknown: Elements not read.
    """

    rel: str
    kind: str
    labels: list[Label] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    tracks: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_PEEK)
    except OSError:
        return b""


def peek_cvat(path: Path) -> bool:
    """Whether a file looks like CVAT XML: an ``<annotations>`` root with ``<version>`` or ``<meta>``, cheaply.

    Pascal VOC's root is ``<annotation>`` (singular); LabelMe XML's too.
    """
    if path.suffix.lower() != ".xml" or not path.is_file():
        return False
    head = _head(path)
    m = _ROOT.search(head)
    if m is None:
        return False
    # A DOCTYPE is no CVAT content, but is detected as CVAT so that the reader refuses it (XML bombs) by name.
    before = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", b"", head[: m.start()], flags=re.S).strip()
    return before in (b"", b"\xef\xbb\xbf") and (b"<meta" in head or b"<version" in head)


def xml_files(root: Path) -> list[str]:
    """The CVAT XML files at the top of a dataset folder, sorted."""
    return sorted(p.name for p in root.iterdir() if p.name not in OWN_FILES and peek_cvat(p))


def detect_cvat(path: str | Path) -> bool:
    """True for a CVAT XML file, or a folder holding one at its top."""
    p = Path(path)
    if p.is_file():
        return peek_cvat(p)
    return p.is_dir() and bool(xml_files(p))


def _fail(source: Path, where: str, message: str) -> FormatError:
    return FormatError(message, path=source, where=where or None)


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _labels(owner: ET.Element, source: Path) -> list[Label]:
    labels_el = owner.find("labels")
    if labels_el is None:
        raise _fail(source, f"meta > {owner.tag} > labels", "no <labels> in the meta: shapes name labels it must list")
    out: list[Label] = []
    for k, el in enumerate(labels_el.findall("label")):
        where = f"meta > {owner.tag} > labels > label[{k}]"
        name = _text(el.find("name"))
        if not name:
            raise _fail(source, f"{where} > name", "a label needs a non-empty <name>")
        color = None
        c = _text(el.find("color"))
        if c:
            if not _COLOR.match(c):
                raise _fail(source, f"{where} > color", f"color must be #rrggbb, got {c[:40]!r}")
            color = (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16))
        attrs: list[dict[str, str]] = []
        attrs_el = el.find("attributes")
        for a in (attrs_el.findall("attribute") if attrs_el is not None else []):
            spec = {ch.tag: (ch.text or "") for ch in a if isinstance(ch.tag, str)}
            if not spec.get("name", "").strip():
                raise _fail(source, f"{where} > attributes", "an attribute needs a non-empty <name>")
            attrs.append(spec)
        parent = _text(el.find("parent")) or None
        svg_el = el.find("svg")
        out.append(Label(name, color, _text(el.find("type")) or "any", attrs, parent,
                         svg_el.text if svg_el is not None and svg_el.text else None))
    seen: set[tuple[str | None, str]] = set()
    for lb in out:
        key = (lb.parent, lb.name)
        if key in seen:
            raise _fail(source, f"meta > {owner.tag} > labels", f"label {lb.name!r} is listed twice")
        seen.add(key)
    return out


def _meta(meta: ET.Element, source: Path, doc: Document) -> tuple[dict[str, str], str | None]:
    """Reads the meta into ``doc``; returns ``({task id: subset}, the task's own subset)``."""
    project, task = meta.find("project"), meta.find("task")
    if project is not None:
        doc.kind = "project"
        doc.labels = _labels(project, source)
        subsets: dict[str, str] = {}
        tasks = project.find("tasks")
        for t in (tasks.findall("task") if tasks is not None else []):
            tid, sub = _text(t.find("id")), _text(t.find("subset"))
            if tid and sub:
                subsets[tid] = sub
        return subsets, None
    if task is not None:
        doc.kind = "task"
        doc.labels = _labels(task, source)
        return {}, _text(task.find("subset")) or None
    raise _fail(source, "meta", "the meta has neither <task> nor <project>")


def _common(el: ET.Element, shape: Shape) -> None:
    shape.z_order = parse_int(el.get("z_order", "0"), "z_order", minimum=-(10**9))
    shape.group = parse_int(el.get("group_id", "0"), "group_id")
    shape.occluded = el.get("occluded", "0").strip().lower() in ("1", "true")
    shape.outside = el.get("outside", "0").strip().lower() in ("1", "true")
    shape.source = el.get("source")


def _attributes(el: ET.Element, shape: Shape, unknown: Counter[str], allowed: tuple[str, ...] = ()) -> None:
    for k, ch in enumerate(el):
        if not isinstance(ch.tag, str):
            continue
        if ch.tag == "attribute":
            name = ch.get("name")
            if not name:
                raise ShapeError("an <attribute> needs a name", f"attribute[{k}]")
            shape.attributes[name] = ch.text or ""
        elif ch.tag not in allowed:
            unknown[f"<{ch.tag}> in <{el.tag}>"] += 1


def _shape(el: ET.Element, index: int, where: str, unknown: Counter[str]) -> Shape:
    label = el.get("label")
    if label is None:
        raise ShapeError("a shape needs a label attribute", "label")
    s = Shape(el.tag, index, label.strip(), where)
    _common(el, s)
    kind = el.tag
    if kind == "box":
        s.points = [parse_number(el.get(k), k) for k in ("xtl", "ytl", "xbr", "ybr")]
        if s.points[2] < s.points[0] or s.points[3] < s.points[1]:
            bad = "xbr" if s.points[2] < s.points[0] else "ybr"
            raise ShapeError("xbr/ybr must not be left of / above xtl/ytl", bad)
        if el.get("rotation") is not None:
            s.rotation = parse_number(el.get("rotation"), "rotation")
    elif kind == "mask":
        rle = el.get("rle")
        if rle is None or not rle.strip():
            raise ShapeError("a mask needs its rle", "rle")
        s.mask = (rle, parse_int(el.get("left"), "left"), parse_int(el.get("top"), "top"),
                  parse_int(el.get("width"), "width", minimum=1), parse_int(el.get("height"), "height", minimum=1))
    elif kind in ("polygon", "polyline", "points"):
        s.points = parse_points(el.get("points"))
        need = {"polygon": 3, "polyline": 2, "points": 1}[kind]
        if len(s.points) < 2 * need:
            raise ShapeError(f"a {kind} needs at least {need} point{'s' if need > 1 else ''}", "points")
    if kind == "skeleton":
        for k, ch in enumerate(el):
            if ch.tag != "points":
                continue
            e = _shape(ch, k, f"{where} > points[{k}]", unknown)
            if len(e.points) != 2:
                raise ShapeError("a skeleton point has one point 'x,y'", f"points[{k}] > points")
            s.elements.append(e)
        _attributes(el, s, unknown, allowed=("points",))
    else:
        _attributes(el, s, unknown)
    return s


def _image(el: ET.Element, rel: str, source: Path, position: int, task_subsets: dict[str, str],
           task_subset: str | None, unknown: Counter[str]) -> Image:
    name = el.get("name")
    where = f"image {el.get('id', '?')} ({name})" if name else f"image[{position}]"
    try:
        frame = parse_int(el.get("id"), "id")
        width = parse_int(el.get("width"), "width", minimum=1)
        height = parse_int(el.get("height"), "height", minimum=1)
    except ShapeError as e:
        raise _fail(source, f"{where} > {e.where}", e.message) from None
    if not name:
        raise _fail(source, f"{where} > name", "an image needs a name")
    name = check_relative_name(name, source=source, where=f"{where} > name")
    subset = el.get("subset") or task_subsets.get(el.get("task_id", "")) or task_subset
    if subset is None:
        stem = Path(rel).stem
        subset = None if stem in NO_SPLIT else stem
    if subset is not None and subset.strip() in NO_SPLIT:
        subset = None
    if subset is not None:
        # A split becomes a folder name in every writer (images/<subset>/): one safe path component, checked here
        # so that the error names this file rather than a writer's output.
        subset = check_relative_name(subset, source=source, where=f"{where} > subset")
        if "/" in subset or subset == ".":
            raise _fail(source, f"{where} > subset", f"a subset is one name, not a path: {subset[:40]!r}")
    img = Image(rel, frame, name, width, height, subset, where)
    counts: Counter[str] = Counter()
    for ch in el:
        if not isinstance(ch.tag, str):
            continue
        k = counts[ch.tag]
        counts[ch.tag] += 1
        if ch.tag == "tag":
            img.tags.append(ch.get("label") or "")
        elif ch.tag in SHAPE_TAGS:
            sw = f"{where} > {ch.tag}[{k}]"
            try:
                img.shapes.append(_shape(ch, len(img.shapes), sw, unknown))
            except ShapeError as e:
                raise _fail(source, f"{sw} > {e.where}" if e.where else sw, e.message) from None
        else:
            unknown[f"<{ch.tag}> in <image>"] += 1
    return img


class _TopLevel:
    """Takes the children of ``<annotations>`` one at a time, whole: what ``<meta>`` said, images so far."""

    def __init__(self, source: Path, doc: Document) -> None:
        self.source = source
        self.doc = doc
        self.task_subsets: dict[str, str] = {}
        self.task_subset: str | None = None
        self.seen_meta = False
        self.position = 0

    def element(self, el: ET.Element) -> None:
        """One child of ``<annotations>``: ``<meta>``, ``<image>``, ``<track>`` (counted), ``<version>``.

        Raises:
            FormatError: an ``<image>`` before ``<meta>``, or a wrong field (naming element and attribute).
        """
        doc = self.doc
        if el.tag == "meta":
            self.task_subsets, self.task_subset = _meta(el, self.source, doc)
            self.seen_meta = True
        elif el.tag == "image":
            if not self.seen_meta:
                raise _fail(self.source, "meta", "no <meta> with the labels before the first <image>")
            doc.images.append(_image(el, doc.rel, self.source, self.position, self.task_subsets, self.task_subset,
                                     doc.unknown))
            self.position += 1
        elif el.tag == "track":
            for sh in el:
                if sh.tag in SHAPE_TAGS:
                    doc.tracks[el.get("label") or ""] += 1
        elif el.tag != "version":
            doc.unknown[f"<{el.tag}> in <annotations>"] += 1


def parse_document(root: Path, rel: str) -> Document:
    """Parses one CVAT XML file, streaming (one image in memory as XML at a time).

    Raises:
        FormatError: too large, malformed, unsafe (entities, DTD), nested too deeply, or a field that is
            wrong (naming the element and the attribute).
    """
    source = root / rel
    try:
        size = source.stat().st_size
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=source) from None
    if size > MAX_XML_BYTES:
        raise FormatError(f"file is {size} bytes, more than the {MAX_XML_BYTES} accepted", path=source)
    doc = Document(rel, "task")
    top_level = _TopLevel(source, doc)
    depth = 0
    top: ET.Element | None = None
    try:
        for event, el in DET.iterparse(str(source), events=("start", "end"), forbid_dtd=True,
                                       forbid_entities=True, forbid_external=True):
            if event == "start":
                depth += 1
                if depth > MAX_XML_DEPTH:
                    raise _fail(source, "", f"XML nested deeper than {MAX_XML_DEPTH} elements (refused)")
                if depth == 1:
                    top = el
                    if el.tag != "annotations":
                        raise _fail(source, el.tag, "not CVAT XML: the root element must be <annotations>")
                continue
            depth -= 1
            if depth != 1:  # children of <annotations> are handled whole, when they end
                continue
            top_level.element(el)
            el.clear()  # keeps memory bounded by one image's XML
            if top is not None:
                top.clear()
    except DefusedXmlException as e:
        raise FormatError(f"unsafe XML refused ({type(e).__name__}: DTDs, entity declarations and external "
                          "references are not allowed)", path=source) from None
    except ET.ParseError as e:
        line, col = getattr(e, "position", (0, 0))
        raise FormatError(f"malformed XML at line {line} column {col}", path=source) from None
    if not top_level.seen_meta:
        raise _fail(source, "meta", "no <meta> (CVAT XML lists its labels there)")
    return doc


def image_file(root: Path, xml_rel: str, img: Image) -> Path | None:
    """The image file of ``img`` (see the module docstring), or None when absent.

    Raises:
        UnsafePathError: the name resolves outside the dataset folder (a symlink).
    """
    base = (root / xml_rel).parent
    cands = []
    if img.subset:
        cands.append(base / IMAGES_DIR / img.subset / img.name)
    cands += [base / IMAGES_DIR / img.name, base / img.name]
    for c in cands:
        if c.is_file():
            if not is_within(root, c):
                raise UnsafePathError(f"image {img.name!r} resolves outside the dataset folder (symlink?)",
                                      path=root / xml_rel, where=f"{img.where} > name")
            return c
    return None


def dataset_root(path: str | Path) -> tuple[Path, list[str]]:
    """``(dataset folder, CVAT XML files in it)`` for a folder or one XML file.

    Raises:
        InputError: no such path, or no CVAT XML file in the folder.
    """
    p = Path(path)
    if p.is_file():
        return p.parent.resolve(), [p.name]
    if not p.is_dir():
        raise InputError("no such file or folder", path=p)
    root = p.resolve()
    files = xml_files(root)
    if not files:
        raise InputError("no CVAT XML file in this folder (an <annotations> root with <meta>)", path=p)
    return root, files


def attribute_value(text: str) -> Any:
    """An ``<attribute>`` value as kept: the text as written (CVAT stores every value as text)."""
    return text
