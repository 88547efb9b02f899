"""Label Studio labeling configs (``label_config.xml``): the control tags segpipe reads and their labels.

A config is an XML ``<View>`` of object tags (``<Image name="image" value="$image"/>``) and control tags
that name the result types of a task (``<BrushLabels name="brush" toName="image">`` with ``<Label
value="car" background="#4685a0"/>`` children; segpipe's own configs add ``category="<class id>"``).
Results refer to a control tag by ``from_name`` and to an object tag by ``to_name``. segpipe reads four
control tags; the others (``Choices``, ``TextArea``, ``EllipseLabels`` ...) are parsed only to name what is
not read.

Parsing goes through :func:`segpipe.formats.voc.xml.parse_xml_bytes` (defusedxml: no entities, no
external references, bounded depth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import ImageColor

from segpipe.errors import FormatError, InputError
from segpipe.formats.voc.xml import parse_xml_bytes

#: Control tags read, by XML tag (Label Studio's spelling) → result ``type``.
READ_TAGS = {
    "BrushLabels": "brushlabels",
    "PolygonLabels": "polygonlabels",
    "RectangleLabels": "rectanglelabels",
    "KeyPointLabels": "keypointlabels",
}
#: Object tags whose ``value="$key"`` names the task's image.
IMAGE_TAGS = ("Image",)
CONFIG_NAME = "label_config.xml"
#: Largest config read (a config lists labels: real ones are a few kB).
MAX_CONFIG_BYTES = 8 << 20


@dataclass(frozen=True)
class LabelDef:
    """One ``<Label>`` of a control tag.

    Attributes:
        value: The label (a class name, or a keypoint name under ``KeyPointLabels``).
        color: Its ``background`` as RGB, or None when absent or not a colour.
        model_index: ``model_index`` (keypoint order in Label Studio's COCO/YOLO exports), or None.
        category: ``category``: the class id segpipe's writer (and ``segpipe push``) records for the label,
            so a pulled project keeps the store's class ids; None when absent or not an integer.
    """

    value: str
    color: tuple[int, int, int] | None = None
    model_index: int | None = None
    category: int | None = None


@dataclass(frozen=True)
class ControlTag:
    """One control tag of the config.

    Attributes:
        name: Its ``name`` (results' ``from_name``).
        tag: The XML tag (``BrushLabels``).
        type: The result type it produces (``brushlabels``), lower case.
        to_name: Its ``toName``.
        labels: Its ``<Label>`` children in order.
    """

    name: str
    tag: str
    type: str
    to_name: str
    labels: tuple[LabelDef, ...] = ()

    @property
    def read(self) -> bool:
        """Whether segpipe reads this tag's results."""
        return self.tag in READ_TAGS


@dataclass
class LabelConfig:
    """A parsed labeling config.

    Attributes:
        controls: ``{name: tag}`` of every control tag (a tag with ``toName``), in document order.
        image_keys: ``{object tag name: data key}`` of the ``<Image>`` tags (``value="$image"`` → ``image``).
    """

    controls: dict[str, ControlTag] = field(default_factory=dict)
    image_keys: dict[str, str] = field(default_factory=dict)

    def image_key(self) -> str | None:
        """The data key of the first ``<Image>`` tag, or None."""
        return next(iter(self.image_keys.values()), None)


def parse_color(text: str | None) -> tuple[int, int, int] | None:
    """A CSS colour (``#4685a0``, ``#fff``, ``red``, ``rgba(218, 1, 238, 1)``) as RGB, or None."""
    if not text:
        return None

    try:
        rgb = ImageColor.getrgb(text.strip())
    except ValueError:
        return None
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _int(text: str | None) -> int | None:
    # ASCII digits only: str.isdigit() also takes "²" and other digits that int() refuses.
    t = (text or "").strip()
    return int(t) if re.fullmatch(r"-?[0-9]{1,18}", t) else None


def parse_label_config(data: bytes | str, *, source: str | Path | None = None) -> LabelConfig:
    """Parses a labeling config.

    Args:
        data: The XML.
        source: The file (for messages).

    Raises:
        FormatError: malformed or unsafe XML; a control tag without ``name``; two control tags of one name.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    root = parse_xml_bytes(raw, source=source)
    cfg = LabelConfig()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        name = el.get("name")
        if el.tag in IMAGE_TAGS:
            value = el.get("value") or ""
            if name and value.startswith("$"):
                cfg.image_keys[name] = value[1:]
            continue
        to_name = el.get("toName")
        if to_name is None:
            continue  # not a control tag (View, Header, Label ...)
        if not name:
            raise FormatError(f"<{el.tag}> has no name", path=source, where=f"<{el.tag} toName={to_name!r}>")
        if name in cfg.controls:
            raise FormatError(f"two control tags are named {name!r}", path=source, where=f"<{el.tag} name={name!r}>")
        labels: list[LabelDef] = []
        for lab in el:
            if not isinstance(lab.tag, str) or lab.tag != "Label" or lab.get("value") is None:
                continue
            labels.append(LabelDef(str(lab.get("value")), parse_color(lab.get("background")),
                                   _int(lab.get("model_index")), _int(lab.get("category"))))
        cfg.controls[name] = ControlTag(name, el.tag, READ_TAGS.get(el.tag, el.tag.lower()), to_name, tuple(labels))
    return cfg


def read_label_config(path: Path) -> LabelConfig:
    """Reads and parses ``path``.

    Raises:
        InputError: unreadable. FormatError: too large, or see :func:`parse_label_config`.
    """
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise FormatError(f"file is {size} bytes, more than the {MAX_CONFIG_BYTES} accepted", path=path)
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None
    return parse_label_config(data, source=path)
