"""The structure of a training set's ``annotations.json``, checked before training reads it.

Training indexes COCO fields directly (``im["height"]``, ``a["bbox"]``, ``c["id"]``), so a missing key,
a wrong type or a dangling reference would otherwise end in a ``KeyError`` or ``TypeError`` deep in
the loop, or worse, train on a silently wrong target (a ``"keypoints": "abc"`` category read as three
keypoint names). Each check raises one :class:`~segpipe.errors.InputError` naming the file and the
JSON path, e.g. ``ds/annotations.json: images[3].height: missing``.

:func:`segpipe.formats.coco.validate.validate_coco` checks the same fields for ``segpipe validate``, but
``models`` and ``formats`` are sibling layers (``.importlinter``), so training cannot call it; these
checks cover only what training reads, and stop at the first problem.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from segpipe.errors import InputError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    # Python's json accepts NaN and Infinity: a NaN box or keypoint would poison the loss silently.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind(v: Any) -> str:
    """The JSON name of ``v``'s type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    if isinstance(v, (int, float)):
        return f"{v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _list_of_objects(coco: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """``coco[key]`` (an empty list when absent), once it is a list of objects."""
    items = coco.get(key, [])
    if not isinstance(items, list):
        raise InputError(f"must be a list, got {_kind(items)}", path=path, where=key)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"must be an object, got {_kind(item)}", path=path, where=f"{key}[{i}]")
    return items


def _field(obj: dict[str, Any], key: str, where: str, path: Path) -> Any:
    if key not in obj:
        raise InputError("missing", path=path, where=f"{where}.{key}")
    return obj[key]


def _int_id(obj: dict[str, Any], where: str, path: Path, seen: dict[int, int], key: str) -> int:
    """``obj["id"]``, once it is an integer no earlier entry of ``seen`` (in ``coco[key]``) has."""
    v = _field(obj, "id", where, path)
    if not _is_int(v):
        raise InputError(f"must be an integer, got {_kind(v)}", path=path, where=f"{where}.id")
    if v in seen:
        raise InputError(f"duplicate id {v} (also {key}[{seen[v]}])", path=path, where=f"{where}.id")
    return int(v)


def check_categories(coco: dict[str, Any], path: Path) -> None:
    """Checks ``categories``: objects with a unique integer ``id``, a ``name`` and, when present, a
    ``keypoints`` list of names.

    Raises:
        InputError: naming the first bad category field.
    """
    seen: dict[int, int] = {}
    for i, c in enumerate(_list_of_objects(coco, "categories", path)):
        w = f"categories[{i}]"
        seen[_int_id(c, w, path, seen, "categories")] = i
        name = _field(c, "name", w, path)
        if not isinstance(name, str) or not name:
            raise InputError(f"must be a non-empty string, got {_kind(name)}", path=path, where=f"{w}.name")
        kps = c.get("keypoints")
        if kps is not None and not (isinstance(kps, list) and all(isinstance(k, str) for k in kps)):
            raise InputError(f"must be a list of keypoint names, got {_kind(kps)}", path=path, where=f"{w}.keypoints")


def check_images_and_annotations(coco: dict[str, Any], path: Path) -> None:
    """Checks what instance and landmark training read of ``images`` and ``annotations``.

    Images need a unique integer ``id``, a ``file_name`` (its base name unique: images are paired with
    files by it) and positive integer ``height`` and ``width``. Annotations need an ``image_id`` and a
    ``category_id`` that name an image and a category, a ``bbox`` of 4 finite numbers with width and
    height >= 0, a ``segmentation`` (when present) that is a list or an object, an ``iscrowd`` of 0 or
    1, and ``keypoints`` (when present) of 3 finite numbers per keypoint of the category's
    ``keypoints`` list, or, for a category without one, as many as the image's other annotations.
    Call :func:`check_categories` first.

    Raises:
        InputError: naming the first bad field.
    """
    images = _check_images(coco, path)
    cats = {c["id"]: c for c in _list_of_objects(coco, "categories", path)}
    kp_len: dict[int, tuple[int, int]] = {}  # image id -> (keypoint values, first annotation index)
    for j, a in enumerate(_list_of_objects(coco, "annotations", path)):
        w = f"annotations[{j}]"
        iid = _field(a, "image_id", w, path)
        if not _is_int(iid) or iid not in images:
            raise InputError(f"{_kind(iid)} is not the id of an image in images", path=path, where=f"{w}.image_id")
        cid = _field(a, "category_id", w, path)
        if not _is_int(cid) or cid not in cats:
            raise InputError(
                f"{_kind(cid)} is not the id of a category in categories", path=path, where=f"{w}.category_id"
            )
        box = _field(a, "bbox", w, path)
        if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) for v in box)):
            raise InputError(f"must be 4 finite numbers [x, y, w, h], got {_kind(box)}", path=path, where=f"{w}.bbox")
        if box[2] < 0 or box[3] < 0:
            raise InputError(f"width and height must be >= 0, got {box[2]:g}x{box[3]:g}", path=path, where=f"{w}.bbox")
        seg = a.get("segmentation")
        if seg is not None and not isinstance(seg, (list, dict)):
            # Would otherwise be read as "no mask" and the annotation silently left out.
            raise InputError(
                f"must be a list of polygons or an RLE object, got {_kind(seg)}", path=path, where=f"{w}.segmentation"
            )
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or not _is_int(crowd):
            raise InputError(f"must be 0 or 1, got {_kind(crowd)}", path=path, where=f"{w}.iscrowd")
        if a.get("keypoints") is not None:
            n = _check_keypoints(a["keypoints"], cats[cid], f"{w}.keypoints", path)
            first = kp_len.setdefault(iid, (n, j))
            if first[0] != n:
                raise InputError(
                    f"has {n // 3} keypoints, annotations[{first[1]}] of the same image has {first[0] // 3}",
                    path=path,
                    where=f"{w}.keypoints",
                )


def _check_images(coco: dict[str, Any], path: Path) -> set[int]:
    """The image ids, once every image has the fields training reads."""
    seen: dict[int, int] = {}
    names: dict[str, int] = {}
    for i, im in enumerate(_list_of_objects(coco, "images", path)):
        w = f"images[{i}]"
        seen[_int_id(im, w, path, seen, "images")] = i
        name = _field(im, "file_name", w, path)
        if not isinstance(name, str) or not Path(name).name:
            raise InputError(f"must be a file name, got {_kind(name)}", path=path, where=f"{w}.file_name")
        base = Path(name).name
        if base in names:
            raise InputError(
                f"{base} is also the file of images[{names[base]}] (images are paired with files by name)",
                path=path,
                where=f"{w}.file_name",
            )
        names[base] = i
        for key in ("height", "width"):
            v = _field(im, key, w, path)
            if not _is_int(v) or v <= 0:
                raise InputError(f"must be a positive integer, got {_kind(v)}", path=path, where=f"{w}.{key}")
    return set(seen)


def _check_keypoints(kps: Any, cat: dict[str, Any], where: str, path: Path) -> int:
    """The number of values in an annotation's ``keypoints``, once they fit its category."""
    if not (isinstance(kps, list) and all(_is_num(v) for v in kps) and len(kps) % 3 == 0):
        raise InputError("keypoints must be a list of finite numbers x, y, visibility per keypoint",
                         path=path, where=where)
    names = cat.get("keypoints")
    if names and len(kps) != 3 * len(names):
        raise InputError(
            f"has {len(kps) // 3} keypoints, its category {cat['name']!r} names {len(names)}",
            path=path,
            where=where,
        )
    return len(kps)
