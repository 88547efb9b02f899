"""COCO panoptic maps: colour-coded ids, segments, and conversions to and from instances and label maps.

Pure: numpy and ``pycocotools.mask`` (through :mod:`segpipe.core.rle`) only, no file IO.

Conventions:

* A panoptic PNG stores a segment id per pixel as ``id = R + 256 G + 256² B``; id 0 is void
  (unlabelled), exactly as panopticapi's ``rgb2id``.
* :func:`instances_to_panoptic` numbers segments **sequentially from 1** in painting order: first the
  thing instances in their given order, then one stuff segment per stuff category in the order of
  ``categories``. The numbering is deterministic (same input → same ids → same PNG bytes), which is
  what makes re-executed Dask tasks idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.records import RLE, Category, InstanceMask, PanopticSegment

#: Largest id an RGB PNG can hold.
MAX_SEGMENT_ID = 256**3 - 1

_NOTES = {
    "overlap_flattened_pixels": (
        "overlapping instance pixels were given to the later (upper) instance, as a panoptic map "
        "holds one segment per pixel"
    ),
    "instance_fully_occluded": "an instance covered entirely by later instances has no pixel left",
    "stuff_under_thing_pixels": (
        "label-map pixels of a stuff class that an instance also covers were given to the instance"
    ),
    "thing_pixels_without_instance": (
        "label-map pixels of a thing class not covered by any instance became void"
    ),
    "unknown_category_pixels": "label-map pixels of a value that is no known category became void",
}


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Decodes a colour-coded panoptic image.

    Args:
        rgb: ``(H, W, 3) uint8``.

    Returns:
        ``(H, W) int32`` segment ids, ``R + 256 G + 256² B``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    c = rgb.astype(np.int32, copy=False)
    return c[:, :, 0] + 256 * c[:, :, 1] + 65536 * c[:, :, 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Encodes segment ids as colours (the inverse of :func:`rgb2id`).

    Args:
        ids: ``(H, W)`` integer ids in ``0 .. 256³ - 1``.

    Returns:
        ``(H, W, 3) uint8``.
    """
    a = np.asarray(ids)
    if a.size and (int(a.min()) < 0 or int(a.max()) > MAX_SEGMENT_ID):
        raise ValueError(f"segment ids must be in 0..{MAX_SEGMENT_ID}")
    a = a.astype(np.int64, copy=False)
    out = np.empty((*a.shape, 3), dtype=np.uint8)
    out[..., 0] = a % 256
    out[..., 1] = (a // 256) % 256
    out[..., 2] = a // 65536
    return out


def panoptic_to_instances(
    id_map: np.ndarray, segments: Sequence[PanopticSegment]
) -> list[tuple[PanopticSegment, RLE]]:
    """Masks of every listed segment, encoded in one vectorised pass.

    Args:
        id_map: ``(H, W) int32`` segment ids.
        segments: The segments to extract (a segment absent from the map gets an empty mask).

    Returns:
        ``[(segment, compressed RLE)]`` in the order of ``segments``.
    """
    rles = rle_ops.encode_labels(id_map, [int(s.id) for s in segments])
    return list(zip(segments, rles, strict=True))


def _label_dtype(max_value: int) -> type[np.unsignedinteger]:
    return np.uint8 if max_value <= 255 else np.uint16


def panoptic_to_class_map(
    id_map: np.ndarray,
    segments: Sequence[PanopticSegment],
    *,
    void_value: int = 255,
    dtype: type[np.unsignedinteger] | None = None,
) -> np.ndarray:
    """A semantic label map: each pixel gets its segment's category id.

    Args:
        id_map: ``(H, W) int32`` segment ids.
        segments: The segments; pixels of ids not listed (and id 0) become ``void_value``.
        void_value: Value for void pixels.
        dtype: Output dtype; by default uint8 when every category id and ``void_value`` fit in a byte,
            else uint16.

    Returns:
        ``(H, W) uint8|uint16`` category ids.

    Raises:
        ValueError: a category id equals ``void_value`` or does not fit the dtype.
    """
    cats = [int(s.category_id) for s in segments]
    if void_value in cats:
        raise ValueError(f"category id {void_value} collides with the void value")
    top = max([void_value, *cats])
    out_dtype = dtype if dtype is not None else _label_dtype(top)
    if top > np.iinfo(out_dtype).max or min([void_value, *cats]) < 0:
        raise ValueError(f"category ids do not fit in {np.dtype(out_dtype).name}")
    uniq, inverse = np.unique(id_map, return_inverse=True)
    lut = np.full(uniq.shape, void_value, dtype=out_dtype)
    pos = {int(v): i for i, v in enumerate(uniq)}
    for s in segments:
        i = pos.get(int(s.id))
        if i is not None and s.id != 0:
            lut[i] = s.category_id
    return lut[inverse.reshape(id_map.shape)]


def instances_to_panoptic(
    instances: Sequence[InstanceMask],
    class_map: np.ndarray | None,
    categories: Sequence[Category],
    height: int,
    width: int,
    *,
    void_value: int = 255,
) -> tuple[np.ndarray, list[PanopticSegment], LossCounter]:
    """Builds a panoptic map from thing instances and the stuff regions of a label map.

    Things are painted in the given order, so overlapping pixels go to the later instance; the pixels
    an earlier instance loses are counted as ``overlap_flattened_pixels`` under its category. Stuff
    comes from ``class_map`` pixels whose category is not a thing, one segment per category; where an
    instance covers such a pixel the instance wins (``stuff_under_thing_pixels``). Box-only
    instances (``rle`` None) are skipped (the caller counts them). Segment ids are sequential from 1
    (see the module docstring); segment attributes are the instances' attributes.

    Args:
        instances: Thing instances with compressed RLE of size ``height × width``.
        class_map: ``(H, W)`` category ids (``void_value`` = void), or None.
        categories: All categories (``isthing`` tells things from stuff).
        height: Image height.
        width: Image width.
        void_value: The void value of ``class_map``.

    Returns:
        ``(id_map (H, W) int32, segments, losses)``.
    """
    losses = LossCounter()
    names = {c.id: c.name for c in categories}
    id_map = np.zeros((height, width), dtype=np.int32)
    seg_cat: list[int] = [0]  # seg_cat[segment id] = category id
    seg_src: list[InstanceMask | None] = [None]
    _paint_things(instances, id_map, seg_cat, seg_src, names, losses)
    n_things = len(seg_cat) - 1
    if class_map is not None:
        _paint_stuff(class_map, id_map, seg_cat, seg_src, {c.id: c for c in categories}, void_value, losses)
    if len(seg_cat) - 1 > MAX_SEGMENT_ID:
        raise ValueError("too many segments for a panoptic PNG")
    areas = np.bincount(id_map.ravel(), minlength=len(seg_cat))
    present = [sid for sid in range(1, len(seg_cat)) if areas[sid] > 0]
    for sid in range(1, n_things + 1):
        if areas[sid] == 0:
            cat = seg_cat[sid]
            losses.lose(
                "instance_fully_occluded", 1, names.get(cat, str(cat)), _NOTES["instance_fully_occluded"]
            )
    rles = rle_ops.encode_labels(id_map, present)
    segments: list[PanopticSegment] = []
    # Renumber densely so that ids stay sequential from 1 even when occluded instances vanished.
    renumber = np.zeros(len(seg_cat), dtype=np.int32)
    for new_id, (sid, r) in enumerate(zip(present, rles, strict=True), start=1):
        renumber[sid] = new_id
        src = seg_src[sid]
        segments.append(
            PanopticSegment(
                id=new_id,
                category_id=seg_cat[sid],
                iscrowd=bool(src.instance.iscrowd) if src is not None else False,
                area=int(areas[sid]),
                bbox=rle_ops.to_bbox(r),
                attributes=dict(src.instance.attributes) if src is not None else {},
            )
        )
    return renumber[id_map], segments, losses


def _paint_things(
    instances: Sequence[InstanceMask],
    id_map: np.ndarray,
    seg_cat: list[int],
    seg_src: list[InstanceMask | None],
    names: dict[int, str],
    losses: LossCounter,
) -> None:
    """Paints each instance with a new segment id, in order; counts the pixels a later one takes.

    Args:
        instances: Thing instances; box-only ones (``rle`` None) are skipped.
        id_map: ``(H, W) int32`` segment ids, painted in place.
        seg_cat: Category id per segment id; one entry appended per painted instance.
        seg_src: The instance per segment id; appended alongside ``seg_cat``.
        names: Category id → name, for the loss counts.
        losses: Where ``overlap_flattened_pixels`` are counted.

    Raises:
        ValueError: an instance mask is not ``id_map``'s size.
    """
    for im in instances:
        if im.rle is None:
            continue
        mask = rle_ops.decode(im.rle).astype(bool)
        if mask.shape != id_map.shape:
            raise ValueError(f"instance {im.instance.id} mask is {mask.shape}, expected {id_map.shape}")
        covered = id_map[mask]
        taken = covered[covered != 0]
        if taken.size:
            for sid, n in zip(*np.unique(taken, return_counts=True), strict=True):
                cat = seg_cat[int(sid)]
                losses.lose(
                    "overlap_flattened_pixels",
                    int(n),
                    names.get(cat, str(cat)),
                    _NOTES["overlap_flattened_pixels"],
                )
        id_map[mask] = len(seg_cat)
        seg_cat.append(int(im.instance.category_id))
        seg_src.append(im)


def _paint_stuff(
    class_map: np.ndarray,
    id_map: np.ndarray,
    seg_cat: list[int],
    seg_src: list[InstanceMask | None],
    by_id: dict[int, Category],
    void_value: int,
    losses: LossCounter,
) -> None:
    """Paints one segment per stuff category of ``class_map`` where no thing was painted.

    Args:
        class_map: ``(H, W)`` category ids (``void_value`` = void).
        id_map: ``(H, W) int32`` segment ids with the things painted; stuff is painted in place.
        seg_cat: Category id per segment id; one entry appended per stuff segment.
        seg_src: Appended with None per stuff segment (no instance behind it).
        by_id: Category id → category (``isthing`` tells things from stuff).
        void_value: The void value of ``class_map``.
        losses: Where unknown values, thing pixels without instance and stuff under things are counted.

    Raises:
        ValueError: ``class_map`` is not ``id_map``'s size.
    """
    if class_map.shape != id_map.shape:
        raise ValueError(f"class map is {class_map.shape}, expected {id_map.shape}")
    values, counts = np.unique(class_map, return_counts=True)
    thing_cover = id_map != 0
    for v, total in zip(values.tolist(), counts.tolist(), strict=True):
        if v == void_value:
            continue
        cat_obj = by_id.get(int(v))
        region = class_map == v
        if cat_obj is None:
            losses.lose("unknown_category_pixels", int(total), str(v), _NOTES["unknown_category_pixels"])
            continue
        free = region & ~thing_cover
        if cat_obj.isthing:
            losses.lose(
                "thing_pixels_without_instance",
                int(free.sum()),
                cat_obj.name,
                _NOTES["thing_pixels_without_instance"],
            )
            continue
        losses.lose(
            "stuff_under_thing_pixels",
            int(total - free.sum()),
            cat_obj.name,
            _NOTES["stuff_under_thing_pixels"],
        )
        if free.any():
            id_map[free] = len(seg_cat)
            seg_cat.append(int(v))
            seg_src.append(None)
