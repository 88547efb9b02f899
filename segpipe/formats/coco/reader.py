"""Reading COCO datasets, panoptic datasets and results lists; materialising their samples.

Readers run on the driver; ``materialize_*`` functions on workers.

Layouts accepted (``path`` may be the JSON file or a folder):

* ``coco``: a JSON file; a folder holding ``annotations.json`` (images in ``images/``); or Datumaro's
  layout ``annotations/instances_<split>.json`` + ``images/<split>/`` (``person_keypoints_<split>`` and
  ``stuff_<split>`` when there is no ``instances_*``), every split read, image ids unique across splits.
  Every other JSON file of ``annotations/`` (captions, another task) is named in a warning and counted
  (``reader.losses``: ``task_files_not_read``), so ``--strict`` fails on it.
* ``coco_panoptic``: a JSON file whose PNG folder defaults to the JSON path without ``.json`` (as
  panopticapi does); a folder with ``panoptic.json`` + ``panoptic/``; or ``annotations/panoptic_<split>.json``
  + ``annotations/panoptic_<split>/``.
* ``coco_results``: a JSON list of predictions (``loadRes`` input), or a folder with ``results.json``.

Image files are looked up, in order, in: the explicit ``image_root``; ``DIR/images/<split>/`` (Datumaro);
``json_dir/images``; ``json_dir``; ``json_dir/../images``. The first of these holding one of the first
images wins. Every file name goes through :func:`safe_join` before anything is opened: names that
escape the root raise :class:`UnsafePathError`. A missing image file is a problem (warning), not an
error: annotations still convert.

The reader parses the JSON once, indexes annotation positions per image and converts one image's
annotations at a time while streaming, so there is never a second full copy of the annotations.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.panoptic import rgb2id
from segpipe.core.problems import Problem
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    InstanceMask,
    Materialized,
    PanopticSegment,
    Sample,
)
from segpipe.errors import FormatError, InputError
from segpipe.formats.coco.convert import (
    PANOPTIC_EXTRA,
    SEMANTIC_KEY,
    index_annotations,
    parse_annotation,
    parse_image,
    parse_meta,
    parse_segment,
)
from segpipe.storage.images import read_label_map, read_rgb_png
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import check_relative_name, safe_join

DATASET_PREFIXES = ("instances", "person_keypoints", "stuff")
PANOPTIC_PREFIXES = ("panoptic",)
#: Loss notes of what the readers do not consume.
LOSS_NOTES = {
    "task_files_not_read": "JSON files of other COCO tasks (captions, keypoints, panoptic ...) beside the task read: "
    "one task is read at a time (each file is named in a warning; convert it with its own --from)",
}
#: How many leading bytes the detectors look at to tell a results list from a dataset.
_PEEK = 1 << 16

# ------------------------------------------------------------------------------------------ detect


def peek_shape(path: Path) -> str | None:
    """Tells the shape of a COCO-like JSON file without parsing it.

    Returns:
        ``dataset``, ``panoptic``, ``results`` or None (not COCO-like). Searches the bytes through a
        memory map, so even a multi-gigabyte file costs one sequential scan at most.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        head = bytes(mm[:_PEEK]).lstrip()
        if head.startswith(b"["):
            rest = head[1:].lstrip()
            if rest.startswith(b"]"):
                return "results"
            # A result names its image and its category. A Label Studio export is a list too, and names
            # image_id where segpipe wrote it (data.image_id), but never category_id.
            return "results" if b'"image_id"' in head and mm.find(b'"category_id"') >= 0 else None
        if not head.startswith(b"{"):
            return None
        if mm.find(b'"segments_info"') >= 0:
            return "panoptic"
        if mm.find(b'"images"') >= 0 and mm.find(b'"annotations"') >= 0:
            return "dataset"
    return None


def _split_files(folder: Path, prefixes: Sequence[str]) -> list[tuple[Path, str | None]]:
    ann = folder / "annotations"
    if not ann.is_dir():
        return []
    for prefix in prefixes:
        files = sorted(p for p in ann.glob(f"{prefix}_*.json") if p.is_file())
        if files:
            return [(f, f.stem[len(prefix) + 1 :]) for f in files]
    return []


def find_files(path: str | Path, kind: str) -> list[tuple[Path, str | None]]:
    """The JSON file(s) of a dataset and their split names.

    Args:
        path: A JSON file or a dataset folder.
        kind: ``dataset``, ``panoptic`` or ``results``.

    Raises:
        InputError: nothing of that kind is found.
    """
    p = Path(path)
    if p.is_file():
        return [(p, None)]
    if not p.is_dir():
        raise InputError("no such file or folder", path=p)
    single = {"dataset": "annotations.json", "panoptic": "panoptic.json", "results": "results.json"}[kind]
    if (p / single).is_file():
        return [(p / single, None)]
    if kind != "results":
        found = _split_files(p, DATASET_PREFIXES if kind == "dataset" else PANOPTIC_PREFIXES)
        if found:
            return found
    raise InputError(
        f"no COCO {kind} JSON found",
        path=p,
        hint=f"expected {single} or annotations/<kind>_<split>.json"
        if kind != "results"
        else f"expected {single}",
    )


def unread_task_files(path: str | Path, files: Sequence[tuple[Path, str | None]]) -> list[Path]:
    """The JSON files of ``path/annotations/`` that ``files`` (the ones read) leaves out, sorted.

    A COCO folder in Datumaro's layout often holds several tasks (``instances_*``,
    ``person_keypoints_*``, ``captions_*``, ``panoptic_*`` ...); one task is read, and every other
    file is named so that nothing is skipped without a word.
    """
    p = Path(path)
    ann = p / "annotations"
    if not p.is_dir() or not ann.is_dir():
        return []
    read = {f.resolve() for f, _ in files}
    return sorted(f for f in ann.glob("*.json") if f.is_file() and f.resolve() not in read)


def _detect(path: str | Path, kind: str) -> bool:
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".json" and peek_shape(p) == kind
    try:
        files = find_files(p, kind)
    except InputError:
        return False
    return peek_shape(files[0][0]) == kind


def detect_coco(path: str | Path) -> bool:
    """True for a COCO instances/keypoints JSON or a folder laid out as described in the module doc."""
    return _detect(path, "dataset")


def detect_coco_panoptic(path: str | Path) -> bool:
    """True for a COCO panoptic JSON (``segments_info``) or a panoptic dataset folder."""
    return _detect(path, "panoptic")


def detect_coco_results(path: str | Path) -> bool:
    """True for a JSON list of COCO predictions."""
    return _detect(path, "results")


def stuff_objects(data: Mapping[str, Any]) -> list[tuple[int, str, int, int]]:
    """Stuff categories (``isthing: 0``) that some image holds several segments of.

    panopticapi turns only ``isthing: 1`` categories into instances; several segments of a stuff class
    in one image usually mean objects marked as stuff by mistake (they merge in a label map).

    Returns:
        ``(category id, name, images with several segments, first such image id)`` per category, sorted.
    """
    cats = data.get("categories")
    anns = data.get("annotations")
    if not isinstance(cats, list) or not isinstance(anns, list):
        return []
    stuff = {c.get("id"): str(c.get("name")) for c in cats if isinstance(c, dict) and c.get("isthing", 1) == 0}
    if not stuff:
        return []
    found: dict[int, list[int]] = {}
    for a in anns:
        segs = a.get("segments_info") if isinstance(a, dict) else None
        if not isinstance(segs, list):
            continue
        per: dict[int, int] = {}
        for sg in segs:
            cid = sg.get("category_id") if isinstance(sg, dict) else None
            if isinstance(cid, int) and cid in stuff:
                per[cid] = per.get(cid, 0) + 1
        for cid, n in per.items():
            if n > 1:
                found.setdefault(cid, []).append(a.get("image_id"))
    return [(cid, stuff[cid], len(ims), ims[0]) for cid, ims in sorted(found.items())]


def stuff_object_problems(data: Mapping[str, Any], file: Path) -> list[Problem]:
    """One warning per category of :func:`stuff_objects` (shared by the reader and ``validate``)."""
    return [
        Problem("warning", str(file), "categories", f"category {name!r} (id {cid}) has isthing 0 but {n} images "
                f"hold several segments of it (image {first} first): read as stuff, as panopticapi does (one "
                "label-map region per image, no instances); set isthing 1 if they are objects",
                "panoptic.stuff_objects")
        for cid, name, n, first in stuff_objects(data)
    ]


# ------------------------------------------------------------------------------------------ paths


def image_root_candidates(json_path: Path, split: str | None, image_root: str | Path | None) -> list[Path]:
    """Folders where the images of ``json_path`` may be, in the order they are tried."""
    d = json_path.parent
    out: list[Path] = []
    if image_root is not None:
        out.append(Path(image_root))
    if split is not None:
        out.append(d.parent / "images" / split)
    out += [d / "images", d, d.parent / "images"]
    return out


def _pick_root(candidates: list[Path], names: list[str]) -> Path:
    """The first candidate that holds one of the first few (already checked) names."""
    if len(candidates) == 1:
        return candidates[0]
    probe = names[:5]
    for c in candidates:
        if c.is_dir() and any((c / n).is_file() for n in probe):
            return c
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


# ----------------------------------------------------------------------------------------- readers


class _Part:
    """One parsed JSON file (one split) with its indexes."""

    def __init__(self, json_path: Path, split: str | None, data: Any) -> None:
        self.json_path = json_path
        self.split = split
        self.data = data
        self.images: dict[int, tuple[int, ImageInfo]] = {}
        self.index: dict[int, list[int]] = {}
        self.image_paths: dict[int, str | None] = {}
        self.semantic_dir: Path | None = None


class _BaseReader:
    """Common machinery of the three readers."""

    format_name: ClassVar[str] = ""
    _kind: ClassVar[str] = "dataset"

    meta: DatasetMeta
    problems: list[Problem]
    repairs: list[Problem]

    def __init__(self, path: str | Path, *, image_root: str | Path | None = None) -> None:
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else None
        self.problems = []
        self.repairs = []
        #: What was not read (other tasks' files), for the conversion report.
        self.losses = LossCounter()
        self._parts: list[_Part] = []
        self._order: list[tuple[int, int]] = []  # (image_id, part index), sorted by image id

    def __len__(self) -> int:
        return len(self._order)

    # ---- shared steps

    def _load_dict(self, json_path: Path, split: str | None) -> _Part:
        data = read_json(json_path)
        if not isinstance(data, dict):
            raise FormatError(
                f"expected a COCO object at the top level, got {type(data).__name__}",
                path=json_path,
                where="$",
                hint="a JSON list is a results file: use --from coco_results",
            )
        for key in ("images", "annotations"):
            if key in data and not isinstance(data[key], list):
                raise FormatError(f"{key} must be a list", path=json_path, where=key)
        if "images" not in data:
            raise FormatError("missing required key 'images'", path=json_path, where="$")
        return _Part(json_path, split, data)

    def _index_images(self, part: _Part) -> None:
        names: list[str] = []
        for i, raw in enumerate(part.data["images"]):
            info = parse_image(raw, source=part.json_path, where=f"images[{i}]")
            # Unsafe names are refused before any file system access.
            names.append(
                check_relative_name(info.file_name, source=part.json_path, where=f"images[{i}].file_name")
            )
            if info.id in part.images:
                raise FormatError(
                    f"duplicate image id {info.id} (also images[{part.images[info.id][0]}])",
                    path=part.json_path,
                    where=f"images[{i}].id",
                )
            if part.split is not None and info.split is None:
                info = ImageInfo(
                    info.id, info.file_name, info.width, info.height, part.split, info.attributes
                )
            part.images[info.id] = (i, info)
        root = _pick_root(image_root_candidates(part.json_path, part.split, self.image_root), names)
        for iid, (i, info) in part.images.items():
            target = safe_join(root, info.file_name, source=part.json_path, where=f"images[{i}].file_name")
            if target.is_file():
                part.image_paths[iid] = str(target)
            else:
                part.image_paths[iid] = None
                self.problems.append(
                    Problem(
                        "warning",
                        str(part.json_path),
                        f"images[{i}].file_name",
                        f"image file not found: {info.file_name} (looked in {root})",
                        "image.missing",
                    )
                )
        # Label maps of every class beside the JSON: ``semantic/`` (what segpipe writes) or ``masks/`` (what
        # `segpipe synth` and most mask datasets use). Without them a COCO JSON of objects would silently
        # lose every stuff class on the way to a label-map format. segpipe's split layout names its folder
        # (``segpipe_semantic.folder``: ``semantic_<split>``), looked at first.
        sem = part.data.get(SEMANTIC_KEY) if isinstance(part.data, dict) else None
        named = sem.get("folder") if isinstance(sem, dict) else None
        folders = [part.json_path.parent / "semantic", part.json_path.parent / "masks"]
        if isinstance(named, str) and named:
            folders.insert(0, safe_join(part.json_path.parent, named, source=part.json_path,
                                        where=f"{SEMANTIC_KEY}.folder"))
        part.semantic_dir = next((d for d in folders if d.is_dir()), None)

    def _find(self) -> list[tuple[Path, str | None]]:
        """The JSON files of this reader's kind; every other task file beside them is counted."""
        files = find_files(self.path, self._kind)
        unread = unread_task_files(self.path, files)
        for f in unread:
            self.problems.append(Problem("warning", str(f), "", f"COCO task file not read (reading "
                                         f"{', '.join(x.name for x, _ in files)})", "coco.task_file_not_read"))
        self.losses.lose("task_files_not_read", len(unread), note=LOSS_NOTES["task_files_not_read"])
        return files

    def _merge_meta(self, metas: list[DatasetMeta]) -> DatasetMeta:
        first = metas[0]
        for part, m in zip(self._parts[1:], metas[1:], strict=True):
            if m.categories != first.categories:
                raise FormatError(
                    "categories differ from those of the first split",
                    path=part.json_path,
                    where="categories",
                    hint="convert the splits one JSON file at a time",
                )
        return first

    def _build_order(self) -> None:
        seen: dict[int, Path] = {}
        for k, part in enumerate(self._parts):
            for iid in part.images:
                if iid in seen:
                    raise FormatError(
                        f"image id {iid} appears in two splits ({seen[iid].name} too)",
                        path=part.json_path,
                        where="images",
                        hint="convert the splits one JSON file at a time",
                    )
                seen[iid] = part.json_path
                self._order.append((iid, k))
        self._order.sort()

    def _semantic_file(self, part: _Part, info: ImageInfo) -> str | None:
        if part.semantic_dir is None:
            return None
        stem = str(Path(info.file_name).with_suffix(""))
        p = safe_join(part.semantic_dir, stem + ".png", source=part.json_path, where=f"image {info.id}")
        return str(p) if p.is_file() else None


class CocoReader(_BaseReader):
    """Reads a COCO instances / keypoints / stuff dataset.

    Args:
        path: JSON file or dataset folder (see the module docstring).
        image_root: Folder holding the images, when not next to the JSON.

    Attributes:
        meta: Categories, info, licenses and other top-level keys.
        problems: Missing image files (warnings).
        repairs: Repairs applied while streaming (one warning each); complete once ``samples()`` ends.

    Raises:
        InputError: the path holds no COCO JSON or cannot be read.
        FormatError: malformed content (naming file and JSON path).
        UnsafePathError: an image file name escapes the image root.
    """

    format_name: ClassVar[str] = "coco"
    _kind: ClassVar[str] = "dataset"

    def __init__(self, path: str | Path, *, image_root: str | Path | None = None) -> None:
        super().__init__(path, image_root=image_root)
        metas = []
        for json_path, split in self._find():
            part = self._load_dict(json_path, split)
            self._parts.append(part)
            metas.append(
                parse_meta(part.data, source=json_path, format_name=self.format_name, repairs=self.repairs)
            )
            self._index_images(part)
            self._index_annotations(part, metas[-1])
        self.meta = self._merge_meta(metas)
        self._build_order()

    def _index_annotations(self, part: _Part, meta: DatasetMeta) -> None:
        anns = part.data.get("annotations", [])
        part.index = index_annotations(anns, source=part.json_path)
        cat_ids = {c.id for c in meta.categories}
        for iid, positions in part.index.items():
            if iid not in part.images:
                i = positions[0]
                raise FormatError(
                    f"image_id {iid} is not in images",
                    path=part.json_path,
                    where=f"annotations[{i}].image_id",
                )
            for i in positions:
                cid = anns[i].get("category_id")
                if cid not in cat_ids or isinstance(cid, bool):
                    raise FormatError(
                        f"category_id {cid!r} is not in categories",
                        path=part.json_path,
                        where=f"annotations[{i}].category_id",
                    )
        ids = [a.get("id") for a in anns]
        if len(set(map(repr, ids))) != len(ids):
            self.repairs.append(
                Problem(
                    "warning",
                    str(part.json_path),
                    "annotations",
                    "annotation ids are not unique: writers renumber them sequentially",
                    "repair.annotation_ids",
                )
            )

    def samples(self) -> Iterator[Sample]:
        """Streams one sample per image, sorted by image id, converting annotations lazily."""
        for iid, k in self._order:
            part = self._parts[k]
            i, info = part.images[iid]
            anns = part.data.get("annotations", [])
            insts = tuple(
                parse_annotation(
                    anns[j],
                    image=info,
                    source=part.json_path,
                    where=f"annotations[{j}]",
                    repairs=self.repairs,
                )
                for j in part.index.get(iid, ())
            )
            yield Sample(
                image=info,
                image_path=part.image_paths.get(iid),
                instances=insts,
                semantic_file=self._semantic_file(part, info),
            )


class CocoPanopticReader(_BaseReader):
    """Reads a COCO panoptic dataset (JSON with ``segments_info`` + a folder of PNGs).

    Args:
        path: JSON file or dataset folder (see the module docstring).
        image_root: Folder holding the photos.
        png_root: Folder holding the panoptic PNGs; defaults to the JSON path without ``.json``.
    """

    format_name: ClassVar[str] = "coco_panoptic"
    _kind: ClassVar[str] = "panoptic"

    def __init__(
        self, path: str | Path, *, image_root: str | Path | None = None, png_root: str | Path | None = None
    ) -> None:
        super().__init__(path, image_root=image_root)
        self.png_root = Path(png_root) if png_root is not None else None
        metas = []
        for json_path, split in self._find():
            part = self._load_dict(json_path, split)
            self._parts.append(part)
            metas.append(
                parse_meta(part.data, source=json_path, format_name=self.format_name, repairs=self.repairs)
            )
            self._index_images(part)
            self._index_panoptic(part)
            self.problems.extend(stuff_object_problems(part.data, json_path))
        self.meta = self._merge_meta(metas)
        self._build_order()

    def png_dir(self, part: _Part) -> Path:
        """The PNG folder of one JSON file."""
        if self.png_root is not None:
            return self.png_root
        return part.json_path.with_suffix("")

    def _index_panoptic(self, part: _Part) -> None:
        anns = part.data.get("annotations", [])
        part.index = index_annotations(anns, source=part.json_path)
        for iid, positions in part.index.items():
            if iid not in part.images:
                raise FormatError(
                    f"image_id {iid} is not in images",
                    path=part.json_path,
                    where=f"annotations[{positions[0]}].image_id",
                )
            if len(positions) > 1:
                raise FormatError(
                    f"image {iid} has {len(positions)} panoptic annotations, expected one",
                    path=part.json_path,
                    where=f"annotations[{positions[1]}]",
                )

    def samples(self) -> Iterator[Sample]:
        """Streams one sample per image, sorted by image id."""
        cat_ids = {c.id for c in self.meta.categories}
        for iid, k in self._order:
            part = self._parts[k]
            i, info = part.images[iid]
            positions = part.index.get(iid)
            png: str | None = None
            segs: tuple[PanopticSegment, ...] = ()
            if positions:
                j = positions[0]
                ann = part.data["annotations"][j]
                where = f"annotations[{j}]"
                raw_segs = ann.get("segments_info", [])
                if not isinstance(raw_segs, list):
                    raise FormatError(
                        "segments_info must be a list", path=part.json_path, where=f"{where}.segments_info"
                    )
                parsed = []
                seen: set[int] = set()
                for s_i, s in enumerate(raw_segs):
                    sw = f"{where}.segments_info[{s_i}]"
                    seg = parse_segment(s, source=part.json_path, where=sw)
                    if seg.category_id not in cat_ids:
                        raise FormatError(
                            f"category_id {seg.category_id} is not in categories",
                            path=part.json_path,
                            where=f"{sw}.category_id",
                        )
                    if seg.id in seen:
                        raise FormatError(
                            f"duplicate segment id {seg.id}", path=part.json_path, where=f"{sw}.id"
                        )
                    seen.add(seg.id)
                    parsed.append(seg)
                segs = tuple(parsed)
                name = ann.get("file_name")
                if not isinstance(name, str):
                    raise FormatError(
                        "file_name must be a string", path=part.json_path, where=f"{where}.file_name"
                    )
                target = safe_join(
                    self.png_dir(part), name, source=part.json_path, where=f"{where}.file_name"
                )
                if target.is_file():
                    png = str(target)
                else:
                    self.problems.append(
                        Problem(
                            "error",
                            str(part.json_path),
                            f"{where}.file_name",
                            f"panoptic PNG not found: {name} (looked in {self.png_dir(part)})",
                            "panoptic.png_missing",
                        )
                    )
                extra = {kk: v for kk, v in ann.items() if kk not in ("image_id", "segments_info")}
                info = ImageInfo(
                    info.id,
                    info.file_name,
                    info.width,
                    info.height,
                    info.split,
                    {**info.attributes, PANOPTIC_EXTRA: extra},
                )
            yield Sample(
                image=info,
                image_path=part.image_paths.get(iid),
                panoptic_file=png,
                panoptic_segments=segs,
            )


class CocoResultsReader:
    """Reads a list of COCO predictions (what ``COCO.loadRes`` accepts).

    Without ``gt`` the images are known only by id: their size comes from the first RLE of the image
    (0 when there is none, in which case polygon results cannot be rasterised) and categories are
    named after their ids.

    Args:
        path: The results JSON (or a folder holding ``results.json``).
        image_root: Folder holding the images (with ``gt``).
        gt: The ground-truth COCO dataset (file or folder) naming the images and categories.
    """

    format_name: ClassVar[str] = "coco_results"

    def __init__(
        self, path: str | Path, *, image_root: str | Path | None = None, gt: str | Path | None = None
    ) -> None:
        ((json_path, _),) = find_files(path, "results")
        self.json_path = json_path
        self.problems: list[Problem] = []
        self.repairs: list[Problem] = []
        data = read_json(json_path)
        if not isinstance(data, list):
            raise FormatError(
                f"expected a JSON list of results, got {type(data).__name__}", path=json_path, where="$"
            )
        self._data = data
        self._index = index_annotations(data, source=json_path)
        self._images: dict[int, ImageInfo] = {}
        self._image_paths: dict[int, str | None] = {}
        if gt is not None:
            gt_reader = CocoReader(gt, image_root=image_root)
            self.problems.extend(gt_reader.problems)
            self.meta = DatasetMeta(
                format=self.format_name,
                categories=gt_reader.meta.categories,
                info=gt_reader.meta.info,
                licenses=gt_reader.meta.licenses,
                extra=gt_reader.meta.extra,
            )
            for part in gt_reader._parts:
                for iid, (_, info) in part.images.items():
                    self._images[iid] = info
                    self._image_paths[iid] = part.image_paths.get(iid)
            for iid, pos in self._index.items():
                if iid not in self._images:
                    raise FormatError(
                        f"image_id {iid} is not in the ground truth",
                        path=json_path,
                        where=f"[{pos[0]}].image_id",
                    )
        else:
            cats: set[int] = set()
            for iid, pos in self._index.items():
                h = w = 0
                for i in pos:
                    r = data[i]
                    cid = r.get("category_id")
                    if isinstance(cid, int) and not isinstance(cid, bool):
                        cats.add(cid)
                    seg = r.get("segmentation")
                    size = seg.get("size") if isinstance(seg, dict) else None
                    if (
                        not h
                        and isinstance(size, list)
                        and len(size) == 2
                        and all(isinstance(v, int) for v in size)
                    ):
                        h, w = int(size[0]), int(size[1])
                self._images[iid] = ImageInfo(id=iid, file_name="", width=w, height=h)
                self._image_paths[iid] = None
            self.meta = DatasetMeta(
                format=self.format_name, categories=tuple(Category(id=c, name=str(c)) for c in sorted(cats))
            )
        cat_ids = {c.id for c in self.meta.categories}
        for i, r in enumerate(data):
            if r.get("category_id") not in cat_ids:
                raise FormatError(
                    f"category_id {r.get('category_id')!r} is not in categories",
                    path=json_path,
                    where=f"[{i}].category_id",
                )

    def __len__(self) -> int:
        return len(self._images)

    def samples(self) -> Iterator[Sample]:
        """Streams one sample per image that has results (or per GT image), sorted by image id."""
        for iid in sorted(self._images):
            info = self._images[iid]
            known = info if info.width > 0 and info.height > 0 else None
            insts = tuple(
                parse_annotation(
                    self._data[j],
                    image=known,
                    source=self.json_path,
                    where=f"[{j}]",
                    results=True,
                    repairs=self.repairs,
                )
                for j in self._index.get(iid, ())
            )
            yield Sample(image=info, image_path=self._image_paths.get(iid), instances=insts)


# ------------------------------------------------------------------------------------- materialize


def instance_rle(inst: Instance, height: int, width: int) -> dict[str, Any] | None:
    """The compressed RLE of an instance's mask, validated first; None when it has no mask.

    Raises:
        FormatError: a polygon or RLE is malformed or of the wrong size (checked again here because
            samples may be built by code other than the readers).
    """
    seg = inst.segmentation
    if seg is None or (seg.kind == "polygons" and not seg.polygons):
        return None
    where = f"image {inst.image_id} annotation {inst.id}"
    if seg.kind == "polygons":
        if height <= 0 or width <= 0:
            raise FormatError(
                "a polygon needs the image size to be rasterised",
                where=where,
                hint="pass the ground truth (gt)",
            )
        for j, p in enumerate(seg.polygons or ()):
            why = rle_ops.check_polygon(list(p))
            if why:
                raise FormatError(why, where=f"{where} polygon {j}")
        return rle_ops.to_rle(seg, height, width)
    known = height > 0 and width > 0
    why = rle_ops.check_rle(seg.rle, height if known else None, width if known else None)
    if why:
        raise FormatError(why, where=where)
    size = seg.rle["size"] if seg.rle else [height, width]
    return rle_ops.to_rle(seg, int(size[0]), int(size[1]))


def _class_map(sample: Sample) -> np.ndarray | None:
    if sample.semantic_file is None:
        return None
    cm = read_label_map(sample.semantic_file)
    img = sample.image
    if cm.shape != (img.height, img.width):
        raise FormatError(
            f"label map is {cm.shape[1]}x{cm.shape[0]}, image is {img.width}x{img.height}",
            path=sample.semantic_file,
        )
    return cm


def materialize_coco(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Decodes one COCO sample.

    Every mask becomes compressed RLE (polygons rasterised exactly as pycocotools does); the
    ``semantic/`` label map is decoded when the dataset has one.
    """
    img = sample.image
    masks = tuple(InstanceMask(i, instance_rle(i, img.height, img.width)) for i in sample.instances)
    void = meta.void_value if meta.void_value is not None else 255
    return Materialized(sample=sample, instances=masks, class_map=_class_map(sample), void_value=void)


def materialize_panoptic(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Decodes one panoptic sample: the PNG to a ``(H, W) int32`` id map with its segments.

    Raises:
        FormatError: the PNG size differs from the image size.
        ImageDecodeError: the PNG is not an RGB image or is corrupt.
    """
    img = sample.image
    void = meta.void_value if meta.void_value is not None else 255
    if sample.panoptic_file is None:
        return Materialized(sample=sample, class_map=_class_map(sample), void_value=void)
    ids = rgb2id(read_rgb_png(sample.panoptic_file))
    if ids.shape != (img.height, img.width):
        raise FormatError(
            f"panoptic PNG is {ids.shape[1]}x{ids.shape[0]}, image {img.id} is {img.width}x{img.height}",
            path=sample.panoptic_file,
        )
    return Materialized(
        sample=sample,
        panoptic=(ids, list(sample.panoptic_segments)),
        class_map=_class_map(sample),
        void_value=void,
    )


def read_coco_records(
    path: str | Path, *, image_root: str | Path | None = None
) -> tuple[DatasetMeta, list[Sample]]:
    """Convenience for small datasets and tests: the metadata and every sample in a list."""
    r = CocoReader(path, image_root=image_root)
    return r.meta, list(r.samples())


def category_names(meta: DatasetMeta) -> Mapping[int, str]:
    """``{category_id: name}``."""
    return {c.id: c.name for c in meta.categories}
