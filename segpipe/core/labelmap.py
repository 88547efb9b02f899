"""Label maps: the Pascal VOC colormap and class names, and Datumaro/CVAT ``labelmap.txt`` files.

Pure: text in, records out. A ``labelmap.txt`` has one label per line, in label-index order::

    # label:color_rgb:parts:actions
    background:0,0,0::
    aeroplane:128,0,0::
    person:192,128,128:head,hand:jumping,running

The label's index in a class map (a palette PNG) is its position among the non-comment lines.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segpipe.errors import FormatError

#: The 21 Pascal VOC classes, background first (index = label value in ``SegmentationClass``).
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

#: VOC's void / object-boundary label value.
VOC_VOID = 255

LABELMAP_HEADER = "# label:color_rgb:parts:actions"


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard Pascal VOC colormap (a fresh copy of a cached table: writers call this per image).

    See :func:`_voc_colormap`.
    """
    return _voc_colormap(n).copy()


@functools.lru_cache(maxsize=8)
def _voc_colormap(n: int) -> np.ndarray:
    """The standard Pascal VOC colormap (the devkit's ``labelcolormap``).

    Bits of the label index are interleaved into the high bits of R, G and B: bit 0 of each 3-bit
    group goes to R, bit 1 to G, bit 2 to B, most significant output bit first.

    Args:
        n: Number of colours (256 covers every uint8 label; ``255`` is ``(224, 224, 192)``).

    Returns:
        ``(n, 3) uint8``.
    """
    idx = np.arange(n, dtype=np.int64)
    cmap = np.zeros((n, 3), dtype=np.int64)
    c = idx.copy()
    for j in range(8):
        shift = 7 - j
        cmap[:, 0] |= (c & 1) << shift
        cmap[:, 1] |= ((c >> 1) & 1) << shift
        cmap[:, 2] |= ((c >> 2) & 1) << shift
        c >>= 3
    return cmap.astype(np.uint8)


@dataclass(frozen=True, slots=True)
class LabelEntry:
    """One line of a ``labelmap.txt``.

    Attributes:
        name: Label name (no ``:``).
        color: RGB colour, or None when the line leaves it empty.
        parts: Part names (VOC layout), possibly empty.
        actions: Action names (VOC action), possibly empty.
    """

    name: str
    color: tuple[int, int, int] | None = None
    parts: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()


def _names(field: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in field.split(",") if s.strip())


def parse_labelmap_txt(text: str, *, source: str | Path | None = None) -> list[LabelEntry]:
    """Parses a Datumaro/CVAT ``labelmap.txt``.

    Blank lines and ``#`` comments are skipped. A line has 1 to 4 ``:``-separated fields:
    ``name[:r,g,b[:parts[:actions]]]``; the colour may be empty.

    Args:
        text: File content.
        source: The file (for error messages).

    Returns:
        Entries in file order (label index = position).

    Raises:
        FormatError: on a malformed line (naming the line number), a colour that is not three
            integers in 0..255, or a duplicate name.
    """
    entries: list[LabelEntry] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        where = f"line {lineno}"
        if len(fields) > 4:
            raise FormatError(
                f"expected 'name:r,g,b:parts:actions', got {len(fields)} ':'-separated fields",
                path=source,
                where=where,
            )
        name = fields[0].strip()
        if not name:
            raise FormatError("label name is empty", path=source, where=where)
        if name in seen:
            raise FormatError(
                f"duplicate label {name!r} (first on line {seen[name]})", path=source, where=where
            )
        seen[name] = lineno
        color: tuple[int, int, int] | None = None
        if len(fields) > 1 and fields[1].strip():
            parts = [p.strip() for p in fields[1].split(",")]
            try:
                vals = [int(p) for p in parts]
            except ValueError:
                raise FormatError(
                    f"colour of {name!r} must be three integers 'r,g,b', got {fields[1]!r}",
                    path=source,
                    where=where,
                ) from None
            if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
                raise FormatError(
                    f"colour of {name!r} must be three integers in 0..255, got {fields[1]!r}",
                    path=source,
                    where=where,
                )
            color = (vals[0], vals[1], vals[2])
        entries.append(
            LabelEntry(
                name=name,
                color=color,
                parts=_names(fields[2]) if len(fields) > 2 else (),
                actions=_names(fields[3]) if len(fields) > 3 else (),
            )
        )
    return entries


def format_labelmap_txt(entries: Sequence[LabelEntry]) -> str:
    """Formats entries as a ``labelmap.txt`` (header comment first, one label a line).

    Raises:
        ValueError: a name contains ``:``, ``,`` or a line break (it could not be read back).
    """
    lines = [LABELMAP_HEADER]
    for e in entries:
        if not e.name or any(ch in e.name for ch in ":\n\r") or e.name.startswith("#"):
            raise ValueError(f"label name {e.name!r} cannot be written to labelmap.txt")
        for sub in (*e.parts, *e.actions):
            if any(ch in sub for ch in ":,\n\r"):
                raise ValueError(f"part/action name {sub!r} cannot be written to labelmap.txt")
        color = ",".join(str(int(v)) for v in e.color) if e.color is not None else ""
        lines.append(f"{e.name}:{color}:{','.join(e.parts)}:{','.join(e.actions)}")
    return "\n".join(lines) + "\n"


def voc_labelmap() -> list[LabelEntry]:
    """The default VOC label map: the 21 classes with the standard colours."""
    cmap = voc_colormap(len(VOC_CLASSES))
    return [
        LabelEntry(name, (int(c[0]), int(c[1]), int(c[2]))) for name, c in zip(VOC_CLASSES, cmap, strict=True)
    ]


def palette_for(colors: Sequence[tuple[int, int, int] | None], void_value: int = VOC_VOID) -> np.ndarray:
    """A full 256-entry palette: given colours first, the VOC colormap for the rest.

    Args:
        colors: Colour per label index (None: the VOC colormap's colour at that index).
        void_value: Keeps the VOC void colour ``(224, 224, 192)`` at this index.

    Returns:
        ``(256, 3) uint8``.
    """
    pal = voc_colormap(256)
    for i, c in enumerate(colors[:256]):
        if c is not None and i != void_value:
            pal[i] = c
    return pal


def color_lut(colors: np.ndarray) -> dict[int, int]:
    """``{r << 16 | g << 8 | b: index}`` for inverting colour-coded masks (first index wins).

    Args:
        colors: ``(N, 3) uint8`` colours, index = label.
    """
    out: dict[int, int] = {}
    for i, c in enumerate(np.asarray(colors, dtype=np.int64)):
        key = int(c[0]) << 16 | int(c[1]) << 8 | int(c[2])
        out.setdefault(key, i)
    return out


def rgb_to_labels(rgb: np.ndarray, lut: dict[int, int]) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Maps a colour-coded mask to label indices.

    Args:
        rgb: ``(H, W, 3) uint8``.
        lut: From :func:`color_lut`.

    Returns:
        ``((H, W) uint8|uint16 labels, unknown colours)``; pixels of unknown colours are 0.
    """
    flat = (
        rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2].astype(np.int64)
    )
    uniq, inv = np.unique(flat, return_inverse=True)
    vals = np.array([lut.get(int(u), -1) for u in uniq], dtype=np.int64)
    unknown = [
        (int(u) >> 16 & 255, int(u) >> 8 & 255, int(u) & 255)
        for u, v in zip(uniq, vals, strict=True)
        if v < 0
    ]
    vals[vals < 0] = 0
    top = int(vals.max()) if vals.size else 0
    dtype = np.uint8 if top <= 255 else np.uint16
    return vals.astype(dtype)[inv.reshape(flat.shape)], unknown


#: Pixels per bincount pass of :func:`unknown_values_to_void`: bounds the int64 copy bincount makes
#: (32 MiB) however large the label map (a 40k × 40k scene read from a store).
_BINCOUNT_BLOCK = 1 << 22


def unknown_values_to_void(
    class_map: np.ndarray, known: Sequence[int] | set[int] | frozenset[int], void_value: int
) -> tuple[np.ndarray, dict[int, int]]:
    """Finds label-map values that are no category and makes them void, counting their pixels.

    Background 0 and ``void_value`` are always known: class maps of every format use 0 for pixels of
    no class (VOC label 0, Cityscapes ``unlabeled``) and ``void_value`` for pixels to ignore.

    Args:
        class_map: ``(H, W)`` unsigned integer label map of category ids (uint8 or uint16).
        known: The category ids of the dataset.
        void_value: The value meaning void / ignore.

    Returns:
        ``(class_map, unknown)``: the same array when every value is known, else a copy (same dtype)
        with the unknown values set to ``void_value``; ``unknown`` is ``{value: pixels}``.
    """
    cm = np.asarray(class_map)
    if cm.size == 0 or cm.dtype.kind not in "ui":
        return class_map, {}
    flat = cm.reshape(-1)
    counts = np.zeros(0, dtype=np.int64)
    if cm.dtype.kind == "i" and int(flat.min()) < 0:
        raise ValueError("label maps hold non-negative category ids")
    for start in range(0, flat.size, _BINCOUNT_BLOCK):
        part = np.bincount(flat[start : start + _BINCOUNT_BLOCK])
        if len(part) > len(counts):
            part[: len(counts)] += counts
            counts = part
        else:
            counts[: len(part)] += part
    ok = np.zeros(len(counts), dtype=bool)
    for v in (*known, 0, void_value):
        if 0 <= int(v) < len(ok):
            ok[int(v)] = True
    bad = np.flatnonzero((counts > 0) & ~ok)
    if not bad.size:
        return class_map, {}
    unknown = {int(v): int(counts[v]) for v in bad}
    lut = np.arange(len(counts), dtype=np.int64)
    lut[bad] = void_value
    return lut[cm].astype(cm.dtype if void_value <= np.iinfo(cm.dtype).max else np.uint16), unknown
