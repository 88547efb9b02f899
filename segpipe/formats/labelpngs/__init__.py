"""Flat folders of single-channel label PNGs, one per image, named by the image's file stem.

What most prediction dumps look like (``pred/00001.png``, ``pred/00002.png`` ...)::

    folder/
      <stem>.png          palette, L or 16-bit label map: the pixel value is the category id
      labelmap.txt        optional: category names by line position (Datumaro/CVAT style)
      dataset_meta.json   optional alternative (Datumaro ``common_semantic_segmentation`` meta)

Images are numbered 1..N in stem order; evaluation pairs two such folders by file stem (see
:class:`~segpipe.pipeline.evaluate.Pairing`). Categories come, in this order, from the ``categories``
the reader is given (``segpipe evaluate --categories``), from a label-map file in the folder, or from
one scan of the PNGs: every value found is a class named ``class_<v>`` (``meta.extra["generated_names"]``
is then True, so that name checks know the names say nothing). Void is 255, or 65535 when an id
exceeds 254.

The folder is never auto-detected by :func:`~segpipe.formats.detect_format`: a folder of greyscale
PNG photos looks the same, and ``prelabel`` must keep reading it as images. ``evaluate`` tries
:func:`looks_like_labelpngs` itself when no other format matches; elsewhere name the format.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from PIL import Image

from segpipe.core.labelmap import voc_colormap
from segpipe.core.problems import Problem
from segpipe.core.records import Category, DatasetMeta, ImageInfo, Materialized, Sample
from segpipe.errors import ConfigError, InputError, SegpipeError
from segpipe.formats.base import FormatSpec
from segpipe.formats.maskdir import read_label_entries
from segpipe.formats.registry import register_format
from segpipe.formats.voc.reader import read_labelmap_file
from segpipe.storage.images import image_size, read_label_map

FORMAT = "labelpngs"
#: Files besides the PNGs that a label-PNG folder may hold (label maps naming the classes).
SIDE_FILES = ("labelmap.txt", "dataset_meta.json")
#: PIL modes of single-channel label maps (what :func:`~segpipe.storage.images.read_label_map` decodes).
LABEL_MODES = frozenset({"P", "L", "1", "I;16", "I;16B", "I;16L", "I", "PA"})


def _pngs(root: Path) -> list[str]:
    """Names of the ``*.png`` files directly in ``root``, sorted."""
    return sorted(e.name for e in os.scandir(root) if e.is_file() and e.name.lower().endswith(".png"))


def is_label_png(path: str | Path) -> bool:
    """Whether ``path`` is a PNG with one channel (palette, L or 16-bit); reads the header only."""
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.mode in LABEL_MODES
    except Exception:  # not an image at all
        return False


def looks_like_labelpngs(path: str | Path) -> bool:
    """True for a folder holding single-channel PNGs and nothing else (besides :data:`SIDE_FILES`).

    Sub-folders, photos or other files make it something else; the first PNG's header is checked.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    pngs: list[str] = []
    for e in os.scandir(p):
        if e.name.startswith("."):
            continue
        if e.is_dir():
            return False
        if e.name.lower().endswith(".png"):
            pngs.append(e.name)
        elif e.name not in SIDE_FILES:
            return False
    return bool(pngs) and is_label_png(p / min(pngs))


def _detect(path: Path) -> bool:
    return False  # never guessed: see the module docstring


def load_class_names(path: str | Path) -> dict[int, str]:
    """Reads a class-name file: YAML/JSON ``{id: name}`` or ``[name, ...]`` (id = position), or a
    ``labelmap.txt`` (Datumaro/CVAT: ``name:r,g,b::`` per line, id = line position).

    Raises:
        ConfigError: the file cannot be read or is not such a document (naming the file and entry).
    """
    p = Path(path)
    if p.name.endswith(".txt"):
        return {i: e.name for i, e in enumerate(read_labelmap_file(p))}

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read the class names: {e.strerror}", path=p) from None
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"not a YAML/JSON document ({type(e).__name__})", path=p) from None
    if isinstance(data, list):
        data = dict(enumerate(data))
    if not isinstance(data, dict) or not data:
        raise ConfigError("class names must be a mapping {id: name} or a list of names", path=p)
    out: dict[int, str] = {}
    for k, v in data.items():
        try:
            i = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"key {k!r} is not a class id (an integer)", path=p, where=str(k)) from None
        if not 0 <= i <= 65534:
            raise ConfigError(f"class id {i} is outside 0..65534", path=p, where=str(k))
        if not isinstance(v, str) or not v.strip():
            raise ConfigError("a class name must be a non-empty string", path=p, where=str(k))
        out[i] = v.strip()
    names = list(out.values())
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"class name {dup[0]!r} is given to several ids", path=p)
    return out


class LabelPngsReader:
    """Indexes a flat folder of label PNGs (driver side).

    Args:
        path: The folder.
        categories: Class names by id (a mapping, or a file :func:`load_class_names` reads); None
            takes them from a label-map file in the folder, or names every value found ``class_<v>``.
    """

    format_name: ClassVar[str] = FORMAT

    def __init__(self, path: str | Path, *, categories: Mapping[int, str] | str | Path | None = None) -> None:
        root = Path(path)
        if not root.is_dir():
            raise InputError("a label-PNG folder must be a folder", path=root)
        names = _pngs(root)
        if not names:
            raise InputError("no .png file in the folder", path=root, hint="label PNGs lie directly in the folder")
        self.root = root
        self.problems: list[Problem] = []
        self._samples: list[Sample] = []
        stems: dict[str, str] = {}
        for name in names:
            stem = os.path.splitext(name)[0]
            if stem in stems:  # a.png and a.PNG: two files for one stem, which pairing cannot tell apart
                self.problems.append(Problem("error", name, "", f"another file has the stem {stem!r} "
                                             f"({stems[stem]}); it is left out", "labelpngs.duplicate_stem"))
                continue
            stems[stem] = name
        scan = categories is None and not any((root / f).is_file() for f in SIDE_FILES)
        values: set[int] = set()
        for n, (_stem, name) in enumerate(sorted(stems.items()), start=1):
            f = root / name
            try:
                if scan:
                    arr = read_label_map(f)
                    h, w = arr.shape
                    values.update(int(v) for v in np.unique(arr))
                else:
                    if not is_label_png(f):
                        raise InputError("not a single-channel label PNG (palette, L or 16-bit)", path=f)
                    w, h = image_size(f, exif=False)
            except SegpipeError as e:
                self.problems.append(Problem("error", name, "", e.message, "labelpngs.unreadable"))
                continue
            self._samples.append(Sample(ImageInfo(n, name, int(w), int(h)), semantic_file=str(f)))
        generated = False
        if categories is not None:
            by_id = dict(categories) if isinstance(categories, Mapping) else load_class_names(categories)
        elif not scan:
            entries, _ = read_label_entries(root)
            by_id = {i: e.name for i, e in enumerate(entries or [])}
        else:
            top = max(values, default=0)
            void = 255 if top <= 255 else 65535
            by_id = {v: f"class_{v}" for v in sorted(values - {void})}
            generated = True
        void = 255 if max(by_id, default=0) <= 254 else 65535
        cmap = voc_colormap(256)
        self.meta = DatasetMeta(
            format=FORMAT,
            categories=tuple(Category(id=int(i), name=str(nm), isthing=False,
                                      color=tuple(int(c) for c in cmap[int(i) % 256]))  # type: ignore[arg-type]
                             for i, nm in sorted(by_id.items())),
            void_value=void,
            extra={"generated_names": generated},
        )

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> Iterator[Sample]:
        """Streams the samples sorted by image id (= sorted file stem)."""
        yield from self._samples


def materialize_labelpngs(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Decodes the sample's PNG to ``class_map`` (the pixel value is the category id)."""
    void = meta.void_value if meta.void_value is not None else 255
    if sample.semantic_file is None:
        return Materialized(sample=sample, void_value=void)
    return Materialized(sample=sample, class_map=read_label_map(sample.semantic_file), void_value=void)


def names_generated(meta: DatasetMeta, reader: Any = None) -> bool:
    """Whether a dataset's class names were made up from the label values (``class_<v>``), not given.

    True for a label-PNG folder without names, and for a mask directory whose reader scanned its
    masks for want of a label map (it sets ``reader.scanned``).
    """
    if meta.extra.get("generated_names"):
        return True
    return reader is not None and getattr(reader, "scanned", None) is not None


register_format(
    FormatSpec(
        name=FORMAT,
        description="flat folder of single-channel label PNGs paired by file stem (read; not auto-detected)",
        detect=_detect,
        reader=LabelPngsReader,
        materialize=materialize_labelpngs,
        holds=frozenset({"semantic"}),
    )
)
