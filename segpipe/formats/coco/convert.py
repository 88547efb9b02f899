"""Pure converters between COCO JSON structures and segpipe records (house rule 2).

No file IO here: dicts in, records out, and back. Every untrusted value is checked before it is
stored, so that nothing malformed ever reaches pycocotools (polygons with :func:`check_polygon`, RLE
with :func:`check_rle`). Malformed content raises :class:`~segpipe.errors.FormatError` naming the
source file and the JSON path (``annotations[17].segmentation[0]``).

Round trip. ``records_to_coco_dict(*coco_dict_to_records(d))`` equals ``d`` up to this documented
normalisation, and nothing else:

* **key order** inside objects and at the top level follows the writer's order (``info``,
  ``licenses``, ``categories``, ``images``, ``annotations``, then other top-level keys; extra keys of an
  object come after its standard keys, in source order);
* **annotation order**: annotations are grouped by image, in image order (readers stream images sorted
  by id), keeping their source order within an image;
* **numbers**: boxes, areas, polygon coordinates, keypoints and scores are floats (``2`` → ``2.0``,
  equal as numbers); ``iscrowd`` given as ``true``/``false`` becomes ``1``/``0``;
* **repairs**, each reported in the ``repairs`` list: a flat polygon list (Solaris) is wrapped in a
  list; a dataset annotation without ``iscrowd`` gets ``iscrowd: 0``; a missing ``area``/``bbox`` is
  computed from the mask by the writers (the pure converters leave it absent).

What maps where. ``images[]`` standard keys → :class:`ImageInfo` (a string ``split`` key → ``split``),
the rest → ``ImageInfo.attributes``. ``annotations[]`` standard keys (``id image_id category_id
segmentation area bbox iscrowd score keypoints num_keypoints``) → :class:`Instance`, the rest →
``Instance.attributes``. ``categories[]`` → :class:`Category`; which optional keys were present and any
extra keys go to ``DatasetMeta.extra[CATEGORY_EXTRA]`` so that categories round-trip exactly.
``info`` and ``licenses`` → :class:`DatasetMeta`; other top-level keys → ``DatasetMeta.extra``.
Panoptic ``annotations[]`` (one per image) keep their ``file_name`` and extra keys in
``ImageInfo.attributes[PANOPTIC_EXTRA]``; ``segments_info[]`` → :class:`PanopticSegment`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from segpipe.core.problems import Problem
from segpipe.core.records import (
    READING_EXTRA,
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    PanopticSegment,
    Segmentation,
)
from segpipe.core.rle import check_polygon, check_rle
from segpipe.errors import FormatError

#: ``DatasetMeta.extra`` key holding per-category presence of optional keys and extra keys:
#: ``{category_id: {"keys": [present optional keys], "extra": {key: value}}}``. Never written out.
CATEGORY_EXTRA = "_coco_category_extra"
#: ``ImageInfo.attributes`` key holding a panoptic annotation's ``file_name`` and extra keys.
PANOPTIC_EXTRA = "_coco_panoptic_annotation"
#: Top-level key our COCO writer adds when it writes ``semantic/<stem>.png`` label maps:
#: ``{"folder": "semantic", "void_value": 255}`` (read back into ``DatasetMeta.void_value``).
SEMANTIC_KEY = "segpipe_semantic"
#: Attribute keys that are bookkeeping, never written as COCO keys of an image.
_RESERVED_IMAGE_KEYS = frozenset({PANOPTIC_EXTRA})

_TOP_KEYS = ("info", "licenses", "categories", "images", "annotations")
_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANN_KEYS = (
    "id",
    "image_id",
    "category_id",
    "segmentation",
    "area",
    "bbox",
    "iscrowd",
    "score",
    "keypoints",
    "num_keypoints",
)
_CAT_OPTIONAL = ("supercategory", "isthing", "color", "keypoints", "skeleton")
_SEG_KEYS = ("id", "category_id", "iscrowd", "area", "bbox")


def _fail(message: str, source: str | Path | None, where: str) -> FormatError:
    return FormatError(message, path=source, where=where)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(d: Mapping[str, Any], key: str, source: str | Path | None, where: str) -> int:
    if key not in d:
        raise _fail(f"missing required key {key!r}", source, where)
    v = d[key]
    if not _is_int(v):
        raise _fail(f"{key} must be an integer, got {v!r}", source, f"{where}.{key}")
    return int(v)


def _repair(
    repairs: list[Problem] | None, source: str | Path | None, where: str, message: str, code: str
) -> None:
    if repairs is not None:
        repairs.append(Problem("warning", str(source or ""), where, message, f"repair.{code}"))


# --------------------------------------------------------------------------------------------- read


def hex_color(text: str) -> tuple[int, int, int] | None:
    """``#rrggbb`` or ``#rgb`` (case-insensitive) as ``(r, g, b)``; None for anything else."""
    h = text.strip()
    if not h.startswith("#") or len(h) not in (4, 7):
        return None
    digits = h[1:] if len(h) == 7 else "".join(ch * 2 for ch in h[1:])
    if not all(ch in "0123456789abcdefABCDEF" for ch in digits):  # int() would take "+", "_" and spaces
        return None
    v = int(digits, 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def parse_category(
    d: Any,
    *,
    source: str | Path | None = None,
    where: str = "categories[?]",
    repairs: list[Problem] | None = None,
) -> tuple[Category, dict[str, Any]]:
    """Converts one ``categories[]`` entry.

    A numeric name (Solaris writes ``1.0``) is repaired to its JSON text (``"1.0"``).

    Returns:
        ``(category, bookkeeping)`` where bookkeeping is ``{"keys": [...], "extra": {...}}`` for
        :data:`CATEGORY_EXTRA`.
    """
    if not isinstance(d, dict):
        raise _fail(f"category must be an object, got {type(d).__name__}", source, where)
    cid = _int(d, "id", source, where)
    name = d.get("name")
    if _is_num(name):
        _repair(
            repairs,
            source,
            f"{where}.name",
            f"numeric category name {name!r} taken as a string",
            "name_number",
        )
        name = str(name)
    if not isinstance(name, str):
        raise _fail(f"category name must be a string, got {name!r}", source, f"{where}.name")
    sup = d.get("supercategory", "")
    if sup is None:  # Label Studio and others write null for "no supercategory"
        sup = ""
    if not isinstance(sup, str):
        raise _fail(f"supercategory must be a string, got {sup!r}", source, f"{where}.supercategory")
    isthing = d.get("isthing", 1)
    if isthing not in (0, 1) or isinstance(isthing, float):
        raise _fail(f"isthing must be 0 or 1, got {isthing!r}", source, f"{where}.isthing")
    color = d.get("color")
    if isinstance(color, str):  # Label Studio's COCO export writes "#4685a0"
        rgb = hex_color(color)
        if rgb is None:
            raise _fail(f"color must be [r, g, b] in 0..255 or '#rrggbb', got {color!r}", source, f"{where}.color")
        color = list(rgb)
    if color is not None and (
        not isinstance(color, list) or len(color) != 3 or not all(_is_int(c) and 0 <= c <= 255 for c in color)
    ):
        raise _fail(f"color must be [r, g, b] in 0..255 or '#rrggbb', got {color!r}", source, f"{where}.color")
    kps = d.get("keypoints", [])
    if not isinstance(kps, list) or not all(isinstance(k, str) for k in kps):
        raise _fail("keypoints must be a list of names", source, f"{where}.keypoints")
    skel = d.get("skeleton", [])
    if not isinstance(skel, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_int(v) for v in p) for p in skel
    ):
        raise _fail("skeleton must be a list of [i, j] integer pairs", source, f"{where}.skeleton")
    cat = Category(
        id=cid,
        name=name,
        supercategory=sup,
        isthing=bool(isthing),
        color=(int(color[0]), int(color[1]), int(color[2])) if color is not None else None,
        keypoints=tuple(kps),
        skeleton=tuple((int(a), int(b)) for a, b in skel),
    )
    book = {
        "keys": [k for k in _CAT_OPTIONAL if k in d],
        "extra": {k: v for k, v in d.items() if k not in _CAT_OPTIONAL and k not in ("id", "name")},
    }
    return cat, book


def parse_meta(
    d: Mapping[str, Any],
    *,
    source: str | Path | None = None,
    format_name: str = "coco",
    repairs: list[Problem] | None = None,
) -> DatasetMeta:
    """Builds the dataset metadata (categories, info, licenses, other top-level keys).

    Raises:
        FormatError: malformed or duplicate categories.
    """
    cats_raw = d.get("categories", [])
    if not isinstance(cats_raw, list):
        raise _fail("categories must be a list", source, "categories")
    cats: list[Category] = []
    books: dict[int, dict[str, Any]] = {}
    for i, c in enumerate(cats_raw):
        cat, book = parse_category(c, source=source, where=f"categories[{i}]", repairs=repairs)
        if cat.id in books:
            raise _fail(f"duplicate category id {cat.id}", source, f"categories[{i}].id")
        books[cat.id] = book
        cats.append(cat)
    info = d.get("info", {})
    if not isinstance(info, dict):
        raise _fail("info must be an object", source, "info")
    licenses = d.get("licenses", [])
    if not isinstance(licenses, list):
        raise _fail("licenses must be a list", source, "licenses")
    extra: dict[str, Any] = {k: v for k, v in d.items() if k not in _TOP_KEYS}
    extra[CATEGORY_EXTRA] = books
    # Which of info/licenses were present, so that writing them back does not invent keys.
    extra["_coco_top_keys"] = [k for k in ("info", "licenses") if k in d]
    sem = d.get(SEMANTIC_KEY)
    void = sem.get("void_value") if isinstance(sem, dict) else None
    return DatasetMeta(
        format=format_name,
        categories=tuple(cats),
        info=dict(info),
        licenses=tuple(licenses),
        void_value=void if _is_int(void) else None,
        extra=extra,
    )


def parse_image(d: Any, *, source: str | Path | None = None, where: str = "images[?]") -> ImageInfo:
    """Converts one ``images[]`` entry (the file name is checked for safety by the reader)."""
    if not isinstance(d, dict):
        raise _fail(f"image must be an object, got {type(d).__name__}", source, where)
    iid = _int(d, "id", source, where)
    name = d.get("file_name")
    if not isinstance(name, str):
        raise _fail(f"file_name must be a string, got {name!r}", source, f"{where}.file_name")
    w = _int(d, "width", source, where)
    h = _int(d, "height", source, where)
    for key, v in (("width", w), ("height", h)):
        if v <= 0:
            raise _fail(f"{key} must be positive, got {v}", source, f"{where}.{key}")
    split = d.get("split")
    attrs = {
        k: v for k, v in d.items() if k not in _IMAGE_KEYS and not (k == "split" and isinstance(split, str))
    }
    return ImageInfo(
        id=iid,
        file_name=name,
        width=w,
        height=h,
        split=split if isinstance(split, str) else None,
        attributes=attrs,
    )


def parse_segmentation(
    seg: Any,
    *,
    height: int | None,
    width: int | None,
    source: str | Path | None = None,
    where: str = "segmentation",
    repairs: list[Problem] | None = None,
) -> Segmentation:
    """Validates and converts a ``segmentation`` value (polygons, compressed or uncompressed RLE).

    An empty list means "no mask" and is kept as a polygon segmentation with no polygon.

    Raises:
        FormatError: naming the JSON path of the bad polygon or RLE.
    """
    if isinstance(seg, list):
        if seg and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seg):
            # Solaris and others write one polygon as a flat list: unambiguous, so we wrap it.
            why = check_polygon(seg)
            if why:
                raise _fail(why, source, where)
            _repair(repairs, source, where, "flat polygon list wrapped in a list", "flat_polygon")
            return Segmentation.from_polygons([seg])
        for j, poly in enumerate(seg):
            why = check_polygon(poly)
            if why:
                raise _fail(why, source, f"{where}[{j}]")
        return Segmentation.from_polygons(seg)
    if isinstance(seg, dict):
        known = height is not None and width is not None and height > 0 and width > 0
        why = check_rle(seg, height if known else None, width if known else None)
        if why:
            raise _fail(why, source, where)
        rle = {"size": [int(seg["size"][0]), int(seg["size"][1])], "counts": seg["counts"]}
        rle.update({k: v for k, v in seg.items() if k not in ("size", "counts")})
        return Segmentation.from_rle(rle)
    raise _fail(
        f"segmentation must be a list of polygons or an RLE object, got {type(seg).__name__}", source, where
    )


def _floats(v: Any, n: int | None, what: str, source: str | Path | None, where: str) -> tuple[float, ...]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        need = f"a list of {n} numbers" if n is not None else "a list of numbers"
        raise _fail(f"{what} must be {need}, got {v!r}"[:200], source, where)
    for x in v:
        if not _is_num(x):
            raise _fail(f"{what} has a non-finite or non-number value {x!r}", source, where)
    return tuple(float(x) for x in v)


def parse_annotation(
    d: Any,
    *,
    image: ImageInfo | None,
    source: str | Path | None = None,
    where: str = "annotations[?]",
    results: bool = False,
    repairs: list[Problem] | None = None,
) -> Instance:
    """Converts one ``annotations[]`` entry (or one result of a results list).

    Args:
        d: The JSON object.
        image: Its image, for the RLE size check (None when unknown, e.g. results without GT).
        source: The file, for messages.
        where: Its JSON path.
        results: A detection result: ``id`` and ``iscrowd`` are optional, ``score`` expected.
        repairs: Receives one warning per repair applied.

    Raises:
        FormatError: naming the JSON path.
    """
    if not isinstance(d, dict):
        raise _fail(f"annotation must be an object, got {type(d).__name__}", source, where)
    ann_id = _int(d, "id", source, where) if (not results or "id" in d) else 0
    image_id = _int(d, "image_id", source, where)
    cat_id = _int(d, "category_id", source, where)
    seg = None
    if "segmentation" in d and d["segmentation"] is not None:
        seg = parse_segmentation(
            d["segmentation"],
            height=image.height if image else None,
            width=image.width if image else None,
            source=source,
            where=f"{where}.segmentation",
            repairs=repairs,
        )
    bbox = None
    if "bbox" in d and d["bbox"] is not None:
        b = _floats(d["bbox"], 4, "bbox", source, f"{where}.bbox")
        if b[2] < 0 or b[3] < 0:
            raise _fail(f"bbox width and height must be >= 0, got {b[2]:g}x{b[3]:g}", source, f"{where}.bbox")
        bbox = (b[0], b[1], b[2], b[3])
    area = None
    if "area" in d and d["area"] is not None:
        a = d["area"]
        if not _is_num(a) or a < 0:
            raise _fail(f"area must be a finite number >= 0, got {a!r}", source, f"{where}.area")
        area = float(a)
    crowd = d.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise _fail(f"iscrowd must be 0 or 1, got {crowd!r}", source, f"{where}.iscrowd")
    if "iscrowd" not in d and not results:
        _repair(repairs, source, f"{where}.iscrowd", "missing iscrowd taken as 0", "iscrowd_missing")
    score = None
    if "score" in d and d["score"] is not None:
        if not _is_num(d["score"]):
            raise _fail(f"score must be a finite number, got {d['score']!r}", source, f"{where}.score")
        score = float(d["score"])
    kps = None
    if "keypoints" in d and d["keypoints"] is not None:
        kps = _floats(d["keypoints"], None, "keypoints", source, f"{where}.keypoints")
        if len(kps) % 3:
            raise _fail(
                f"keypoints length must be a multiple of 3 (x, y, v), got {len(kps)}",
                source,
                f"{where}.keypoints",
            )
    nk = None
    if "num_keypoints" in d and d["num_keypoints"] is not None:
        nk = _int(d, "num_keypoints", source, where)
    attrs = {k: v for k, v in d.items() if k not in _ANN_KEYS}
    # Keep an explicit null for a standard key (rare) as an attribute so it is not lost.
    attrs.update({k: None for k in _ANN_KEYS if k in d and d[k] is None})
    return Instance(
        id=ann_id,
        image_id=image_id,
        category_id=cat_id,
        segmentation=seg,
        bbox=bbox,
        area=area,
        iscrowd=bool(crowd),
        score=score,
        keypoints=kps,
        num_keypoints=nk,
        attributes=attrs,
    )


def parse_segment(
    d: Any, *, source: str | Path | None = None, where: str = "segments_info[?]"
) -> PanopticSegment:
    """Converts one panoptic ``segments_info[]`` entry."""
    if not isinstance(d, dict):
        raise _fail(f"segment must be an object, got {type(d).__name__}", source, where)
    sid = _int(d, "id", source, where)
    if not 0 < sid < 256**3:
        raise _fail(f"segment id must be in 1..{256**3 - 1}, got {sid}", source, f"{where}.id")
    cat = _int(d, "category_id", source, where)
    crowd = d.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise _fail(f"iscrowd must be 0 or 1, got {crowd!r}", source, f"{where}.iscrowd")
    area = None
    if d.get("area") is not None:
        a = d["area"]
        if not _is_num(a) or a < 0 or float(a) != int(a):
            raise _fail(f"area must be a pixel count, got {a!r}", source, f"{where}.area")
        area = int(a)
    bbox = None
    if d.get("bbox") is not None:
        b = _floats(d["bbox"], 4, "bbox", source, f"{where}.bbox")
        bbox = (b[0], b[1], b[2], b[3])
    attrs = {k: v for k, v in d.items() if k not in _SEG_KEYS}
    return PanopticSegment(
        id=sid, category_id=cat, iscrowd=bool(crowd), area=area, bbox=bbox, attributes=attrs
    )


def index_annotations(
    anns: Sequence[Any], *, source: str | Path | None = None, key: str = "image_id"
) -> dict[int, list[int]]:
    """Positions of the annotations of each image: ``{image_id: [index, ...]}`` (no copy of the data)."""
    index: dict[int, list[int]] = {}
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise _fail(f"annotation must be an object, got {type(a).__name__}", source, f"annotations[{i}]")
        iid = a.get(key)
        if not _is_int(iid):
            raise _fail(f"{key} must be an integer, got {iid!r}", source, f"annotations[{i}].{key}")
        index.setdefault(int(iid), []).append(i)
    return index


def coco_dict_to_records(
    d: Mapping[str, Any],
    *,
    source: str | Path | None = None,
    format_name: str = "coco",
    repairs: list[Problem] | None = None,
) -> tuple[DatasetMeta, dict[int, tuple[ImageInfo, list[Instance]]]]:
    """Converts a whole COCO instances / keypoints dict (small datasets, tests; readers stream instead).

    Returns:
        ``(meta, {image_id: (image, instances in source order)})`` with images in source order.

    Raises:
        FormatError: malformed content, duplicate image ids, an annotation of an unknown image or
            category.
    """
    if not isinstance(d, Mapping):
        raise _fail(f"top level must be an object, got {type(d).__name__}", source, "$")
    meta = parse_meta(d, source=source, format_name=format_name, repairs=repairs)
    cat_ids = {c.id for c in meta.categories}
    images_raw = d.get("images", [])
    anns_raw = d.get("annotations", [])
    if not isinstance(images_raw, list):
        raise _fail("images must be a list", source, "images")
    if not isinstance(anns_raw, list):
        raise _fail("annotations must be a list", source, "annotations")
    out: dict[int, tuple[ImageInfo, list[Instance]]] = {}
    first: dict[int, int] = {}
    for i, im in enumerate(images_raw):
        info = parse_image(im, source=source, where=f"images[{i}]")
        if info.id in out:
            raise _fail(
                f"duplicate image id {info.id} (also images[{first[info.id]}])", source, f"images[{i}].id"
            )
        out[info.id] = (info, [])
        first[info.id] = i
    for i, a in enumerate(anns_raw):
        where = f"annotations[{i}]"
        iid = a.get("image_id") if isinstance(a, dict) else None
        entry = out.get(iid) if _is_int(iid) else None
        if entry is None and _is_int(iid):
            raise _fail(f"image_id {iid} is not in images", source, f"{where}.image_id")
        inst = parse_annotation(
            a, image=entry[0] if entry else None, source=source, where=where, repairs=repairs
        )
        if inst.category_id not in cat_ids:
            raise _fail(
                f"category_id {inst.category_id} is not in categories", source, f"{where}.category_id"
            )
        assert entry is not None
        entry[1].append(inst)
    return meta, out


# -------------------------------------------------------------------------------------------- write


def _num(v: float) -> float:
    return float(v)


def category_to_coco(
    cat: Category, book: Mapping[str, Any] | None = None, *, panoptic: bool = False
) -> dict[str, Any]:
    """Converts a category to its COCO dict.

    Optional keys are written when the source had them (``book`` from :data:`CATEGORY_EXTRA`); for
    categories from other formats: ``supercategory`` always, ``isthing`` for panoptic output or stuff,
    ``color`` when set, ``keypoints``/``skeleton`` when non-empty.
    """
    keys: Sequence[str]
    if book is not None:
        keys = book.get("keys", [])
    else:
        keys = ["supercategory"]
        if panoptic or not cat.isthing:
            keys.append("isthing")
        if cat.color is not None:
            keys.append("color")
        if cat.keypoints or cat.skeleton:
            keys += ["keypoints", "skeleton"]
    if panoptic and "isthing" not in keys:
        keys = [*keys, "isthing"]
    d: dict[str, Any] = {"id": cat.id, "name": cat.name}
    for k in _CAT_OPTIONAL:
        if k not in keys:
            continue
        if k == "supercategory":
            d[k] = cat.supercategory
        elif k == "isthing":
            d[k] = int(cat.isthing)
        elif k == "color":
            d[k] = list(cat.color) if cat.color is not None else None
        elif k == "keypoints":
            d[k] = list(cat.keypoints)
        elif k == "skeleton":
            d[k] = [list(p) for p in cat.skeleton]
    if book is not None:
        d.update(book.get("extra", {}))
    return d


def categories_to_coco(meta: DatasetMeta, *, panoptic: bool = False) -> list[dict[str, Any]]:
    """All categories of ``meta`` as COCO dicts, in order."""
    books = meta.extra.get(CATEGORY_EXTRA, {}) if isinstance(meta.extra, Mapping) else {}
    return [category_to_coco(c, books.get(c.id), panoptic=panoptic) for c in meta.categories]


def header_to_coco(meta: DatasetMeta, *, panoptic: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parts of the dict that are not images or annotations.

    Returns:
        ``(head, tail)``: ``head`` holds ``info``, ``licenses`` and ``categories`` (written before the
        images), ``tail`` the other top-level keys (written after the annotations).
    """
    present = meta.extra.get("_coco_top_keys")
    head: dict[str, Any] = {}
    if present is None or "info" in present:
        head["info"] = dict(meta.info)
    if present is None or "licenses" in present:
        head["licenses"] = [dict(x) if isinstance(x, Mapping) else x for x in meta.licenses]
    head["categories"] = categories_to_coco(meta, panoptic=panoptic)
    tail = {k: v for k, v in meta.extra.items()
            if k not in (CATEGORY_EXTRA, "_coco_top_keys") and k not in READING_EXTRA}
    return head, tail


def image_to_coco(img: ImageInfo) -> dict[str, Any]:
    """Converts an image record to its COCO dict (``split`` is written as a key when set)."""
    d: dict[str, Any] = {"id": img.id, "file_name": img.file_name, "width": img.width, "height": img.height}
    if img.split is not None:
        d["split"] = img.split
    d.update({k: v for k, v in img.attributes.items() if k not in _RESERVED_IMAGE_KEYS})
    return d


def segmentation_to_coco(seg: Segmentation) -> Any:
    """The JSON value of a segmentation (polygons as lists, RLE dicts as given)."""
    if seg.kind == "polygons":
        return [list(p) for p in (seg.polygons or ())]
    assert seg.rle is not None
    r = dict(seg.rle)
    counts = r["counts"]
    if isinstance(counts, bytes):
        r["counts"] = counts.decode("ascii")
    return r


def instance_to_coco(inst: Instance, *, results: bool = False) -> dict[str, Any]:
    """Converts an instance to its COCO annotation dict.

    Absent values (None) are not written. A dataset annotation always has ``id`` and ``iscrowd``; a
    result has ``id`` only when non-zero and ``iscrowd`` only when true (``loadRes`` assigns both).
    """
    d: dict[str, Any] = {}
    if not results or inst.id:
        d["id"] = inst.id
    d["image_id"] = inst.image_id
    d["category_id"] = inst.category_id
    if inst.segmentation is not None:
        d["segmentation"] = segmentation_to_coco(inst.segmentation)
    if inst.area is not None:
        d["area"] = _num(inst.area)
    if inst.bbox is not None:
        d["bbox"] = [_num(v) for v in inst.bbox]
    if not results or inst.iscrowd:
        d["iscrowd"] = int(inst.iscrowd)
    if inst.score is not None:
        d["score"] = _num(inst.score)
    if inst.keypoints is not None:
        d["keypoints"] = [_num(v) for v in inst.keypoints]
    if inst.num_keypoints is not None:
        d["num_keypoints"] = int(inst.num_keypoints)
    for k, v in inst.attributes.items():
        if k in _ANN_KEYS:
            if k not in d:  # an explicit null in the source
                d[k] = v
            continue
        d[k] = v
    return d


def segment_to_coco(seg: PanopticSegment) -> dict[str, Any]:
    """Converts a panoptic segment to its ``segments_info`` dict."""
    d: dict[str, Any] = {"id": int(seg.id), "category_id": int(seg.category_id), "iscrowd": int(seg.iscrowd)}
    if seg.area is not None:
        d["area"] = int(seg.area)
    if seg.bbox is not None:
        d["bbox"] = [_num(v) for v in seg.bbox]
    d.update(seg.attributes)
    return d


def records_to_coco_dict(
    meta: DatasetMeta, items: Iterable[tuple[ImageInfo, Sequence[Instance]]]
) -> dict[str, Any]:
    """Converts records back to a COCO instances / keypoints dict.

    The inverse of :func:`coco_dict_to_records`, up to the normalisation in the module docstring.
    """
    head, tail = header_to_coco(meta)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for img, insts in items:
        images.append(image_to_coco(img))
        anns.extend(instance_to_coco(i) for i in insts)
    return {**head, "images": images, "annotations": anns, **tail}
