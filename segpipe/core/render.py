"""Rendering instances into label maps and back: the pixel core of VOC and mask-directory conversion.

Pure numpy + ``pycocotools.mask``. Conventions (Pascal VOC's):

* A **class map** holds one label per pixel: ``background`` (0) where nothing is, ``void_value``
  (255) for void / ignore / crowd regions, else the instance's class label.
* An **object map** (VOC ``SegmentationObject``) holds the 1-based index of the instance that owns a
  pixel, in the order the instances are given (VOC: the order of ``<object>`` elements in the XML),
  0 for background and ``void_value`` for void.
* Instances are painted in order: a later instance covers an earlier one (z-order). Every pixel that
  a format cannot keep is counted in a :class:`~segpipe.core.losses.LossCounter`, once.

Speed matters (conversions stream millions of masks): masks are painted run by run straight from
their RLE counts (never decoded to full-image masks), and label maps are turned into masks with one
``bincount`` pass and one pycocotools ``encode`` of a Fortran ``(H, W, N)`` stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.core.losses import LossCounter
from segpipe.core.records import RLE, InstanceMask
from segpipe.core.rle import foreground_indices

#: Bytes of decoded masks held at once (bounds memory for many instances on a large image).
_CHUNK_BYTES = 64 * 1024 * 1024

NOTES = {
    "overlap_flattened_pixels": "pixels of an instance covered by a later instance are lost in a "
    "label map, which holds one owner per pixel (counted per category of the hidden instance)",
    "crowd_to_void": "crowd regions have no class in a label map and become void (255); counted in "
    "pixels per category",
    "instance_fully_occluded": "instances entirely covered by later instances leave no pixel in the map",
    "box_only_no_mask": "instances without a mask (box only) cannot be drawn into a label map",
    "object_index_overflow": "instances beyond the largest object index the map can hold (254 for "
    "8-bit VOC maps, 255 being void) are void in the object map; counted in pixels",
}


def _c_rle(rle: RLE) -> dict[str, Any]:
    counts = rle["counts"]
    h, w = int(rle["size"][0]), int(rle["size"][1])
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)  # type: ignore[no-any-return]
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts.encode("ascii")}
    return {"size": [h, w], "counts": counts}


def _str_rle(r: dict[str, Any]) -> RLE:
    c = r["counts"]
    return {
        "size": [int(r["size"][0]), int(r["size"][1])],
        "counts": c.decode("ascii") if isinstance(c, bytes) else c,
    }


def _fit_dtype(top: int) -> type[np.unsignedinteger[Any]]:
    if top <= 255:
        return np.uint8
    if top <= 65535:
        return np.uint16
    raise ValueError(f"label value {top} does not fit in 16 bits")


def render_maps(
    instances: Sequence[InstanceMask],
    height: int,
    width: int,
    *,
    label_of: Mapping[int, int] | None = None,
    void_value: int = 255,
    background: int = 0,
    max_object_index: int = 254,
    names: Mapping[int, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, LossCounter]:
    """Paints instances into a class map and an object map, counting what the maps cannot hold.

    Args:
        instances: In z-order (later on top). Instance ``k`` (0-based) gets object index ``k + 1``
            whether or not it has a mask, so object index ``i`` is the ``i``-th instance (the ``i``-th
            VOC XML object).
        height: Image height.
        width: Image width.
        label_of: ``{category_id: class value}``; default: the category id itself.
        void_value: Value of void / crowd pixels in both maps.
        background: Value of unlabelled pixels in the class map (the object map uses 0).
        max_object_index: Largest object index the object map may hold; instances beyond it are void
            in the object map (counted ``object_index_overflow``, in pixels). It must be below
            ``void_value``: to render more than 254 objects pass e.g. ``void_value=65535`` and
            ``max_object_index=65534`` (the maps are then uint16).
        names: ``{category_id: name}`` for the loss counts (default: the id as text).

    Returns:
        ``(class_map, object_map, losses)``: ``(H, W)`` arrays, uint8 when every value fits, else
        uint16. Losses (per category name): ``overlap_flattened_pixels`` (hidden pixels of covered
        non-crowd and crowd instances), ``crowd_to_void`` (visible crowd pixels), ``instance_fully_occluded``
        (instances with pixels but none visible), ``box_only_no_mask`` (instances without mask),
        ``object_index_overflow``.

    Raises:
        ValueError: a class value equals ``void_value``, a mask's size differs from ``height × width``,
            or ``max_object_index >= void_value``.
    """
    if max_object_index >= void_value:
        raise ValueError(f"max_object_index {max_object_index} must be below void_value {void_value}")
    losses = LossCounter()

    def cname(cid: int) -> str:
        return names.get(cid, str(cid)) if names is not None else str(cid)

    painted: list[int] = []  # positions k of instances that have a mask
    cls_vals: list[int] = []
    obj_vals: list[int] = []
    for k, im in enumerate(instances):
        inst = im.instance
        if im.rle is None:
            losses.lose("box_only_no_mask", 1, cname(inst.category_id), NOTES["box_only_no_mask"])
            continue
        size = [int(v) for v in im.rle["size"]]
        if size != [height, width]:
            raise ValueError(
                f"instance {inst.id}: mask size {size[0]}x{size[1]} differs from image {height}x{width}"
            )
        painted.append(k)
        if inst.iscrowd:
            cls_vals.append(void_value)
            obj_vals.append(void_value)
            continue
        v = int(label_of[inst.category_id]) if label_of is not None else int(inst.category_id)
        if v == void_value:
            raise ValueError(
                f"category {inst.category_id} maps to class value {v}, the void value; remap the labels"
            )
        if v < 0:
            raise ValueError(f"category {inst.category_id} maps to a negative class value {v}")
        cls_vals.append(v)
        obj_vals.append(k + 1 if k + 1 <= max_object_index else void_value)

    # Paint by runs: O(object area) per instance instead of decoding full-image masks (pycocotools'
    # decode costs O(H × W) per instance). RLE runs are column-major; their indices are converted to
    # row-major so that the maps come out C-contiguous without a full-image transpose.
    owner = np.full((height, width), -1, dtype=np.int32)  # position in ``painted``; -1 = nothing
    flat = owner.reshape(-1)
    areas = np.zeros(len(painted), dtype=np.int64)
    for p, k in enumerate(painted):
        idx = foreground_indices(instances[k].rle)  # type: ignore[arg-type]
        areas[p] = idx.size
        if idx.size:
            x, y = np.divmod(idx, height)
            flat[y * width + x] = p

    visible = np.bincount(flat[flat >= 0], minlength=len(painted)) if painted else areas
    top_cls = max([background, *cls_vals])
    top_obj = max([0, *obj_vals])
    cls_lut = np.asarray([*cls_vals, background], dtype=np.int64).astype(_fit_dtype(top_cls))
    obj_lut = np.asarray([*obj_vals, 0], dtype=np.int64).astype(_fit_dtype(top_obj))
    # owner == -1 indexes the last LUT entry: background / 0.
    class_map = cls_lut[owner]
    object_map = obj_lut[owner]

    for p, k in enumerate(painted):
        inst = instances[k].instance
        name = cname(inst.category_id)
        area = int(areas[p])
        vis = int(visible[p])
        hidden = area - vis
        losses.lose("overlap_flattened_pixels", hidden, name, NOTES["overlap_flattened_pixels"])
        if inst.iscrowd:
            losses.lose("crowd_to_void", vis, name, NOTES["crowd_to_void"])
            continue
        if area > 0 and vis == 0:
            losses.lose("instance_fully_occluded", 1, name, NOTES["instance_fully_occluded"])
        if k + 1 > max_object_index:
            losses.lose("object_index_overflow", vis, name, NOTES["object_index_overflow"])
    return class_map, object_map, losses


class ObjectRegion(NamedTuple):
    """One region recovered from label maps.

    Attributes:
        category: Class value (majority class of the object's pixels when an object map is given).
        rle: Compressed RLE of the region (all pixels of the object, whatever their class).
        object_index: The object-map value (1-based), or the 1-based position among the class regions
            when there is no object map.
        pixels: Pixels of the region.
        mixed_pixels: Pixels of the object whose class is another real class (not the majority, not
            background, not void): non-zero means the object map and the class map disagree.
    """

    category: int
    rle: RLE
    object_index: int
    pixels: int
    mixed_pixels: int


def _dense_ids(values: np.ndarray, exclude: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finds the distinct values of an integer map in one pass.

    Returns:
        ``(ids, pos, counts)``: sorted distinct values not in ``exclude`` ``(N,) int64``; ``(H, W)
        int64`` position of each pixel's value in ``ids`` (-1 for excluded values); pixel count per id.
    """
    flat = values.ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64), np.full(values.shape, -1, np.int64), np.zeros(0, np.int64)
    if values.dtype.kind not in "ui" or values.dtype.itemsize > 2 or int(flat.min()) < 0:
        uniq, inv, cnt = np.unique(flat, return_inverse=True, return_counts=True)
        keep = ~np.isin(uniq, np.asarray(exclude, dtype=uniq.dtype))
        remap = np.full(len(uniq), -1, np.int64)
        remap[keep] = np.arange(int(keep.sum()))
        return uniq[keep].astype(np.int64), remap[inv].reshape(values.shape), cnt[keep].astype(np.int64)
    counts = np.bincount(flat)
    for e in exclude:
        if 0 <= e < len(counts):
            counts[e] = 0
    ids = np.flatnonzero(counts)
    lut = np.full(len(counts), -1, dtype=np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    return ids.astype(np.int64), lut[values], counts[ids].astype(np.int64)


def _encode_positions(pos: np.ndarray, n: int) -> list[RLE]:
    """Encodes ``pos == i`` for ``i in range(n)`` with one pycocotools call per memory chunk.

    Args:
        pos: ``(H, W)`` integer positions, -1 where no region.
        n: Number of regions.
    """
    if n == 0:
        return []
    h, w = pos.shape
    per_chunk = max(1, _CHUNK_BYTES // max(1, h * w))
    out: list[RLE] = []
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        # One vectorised comparison per chunk builds the (H, W, c) one-hot stack; pycocotools wants
        # it Fortran-ordered, which ``np.asfortranarray`` gives with one copy.
        onehot = pos[:, :, None] == np.arange(start, stop, dtype=pos.dtype)[None, None, :]
        stack = np.asfortranarray(onehot.view(np.uint8))
        out.extend(_str_rle(r) for r in mask_utils.encode(stack))
    return out


def instances_from_maps_detailed(
    class_map: np.ndarray,
    object_map: np.ndarray | None,
    *,
    void_value: int = 255,
    background: int = 0,
) -> list[ObjectRegion]:
    """Recovers instance regions from a class map and (optionally) an object map.

    With an object map, each object index (not 0, not ``void_value``) becomes one region covering all
    of its pixels; its class is the most frequent class value under it, ignoring background and void
    unless nothing else is there (ties: the smallest value). Without one, each class value (not
    background, not void) becomes one region, numbered 1.. in value order.

    Args:
        class_map: ``(H, W)`` uint8/uint16 class values.
        object_map: ``(H, W)`` uint8/uint16 object indices, or None.
        void_value: Void in both maps.
        background: Unlabelled class value.

    Returns:
        Regions sorted by object index.
    """
    if object_map is None:
        return [
            ObjectRegion(v, r, i + 1, n, 0)
            for i, (v, r, n) in enumerate(_class_regions(class_map, void_value, background))
        ]
    if object_map.shape != class_map.shape:
        raise ValueError(f"object map {object_map.shape} and class map {class_map.shape} differ in size")
    ids, pos, counts = _dense_ids(object_map, (0, void_value))
    n = len(ids)
    if n == 0:
        return []
    sel = pos >= 0
    p = pos[sel]
    c = class_map[sel]
    if c.dtype.kind == "u" and c.dtype.itemsize <= 2:
        present = np.bincount(c, minlength=1)
        cls_ids = np.flatnonzero(present)
        remap = np.zeros(len(present), dtype=np.int64)
        remap[cls_ids] = np.arange(len(cls_ids))
        cinv = remap[c]
    else:
        cls_ids, cinv = np.unique(c, return_inverse=True)
    k = max(1, len(cls_ids))
    joint = np.bincount(p * k + cinv.ravel(), minlength=n * k).reshape(n, k)
    # Majority over real classes; fall back to background/void only when nothing else is there.
    real = joint.copy()
    for bad in (background, void_value):
        real[:, cls_ids == bad] = 0
    has_real = real.sum(axis=1) > 0
    pick = np.where(has_real, np.argmax(real, axis=1), np.argmax(joint, axis=1))
    mixed = real.sum(axis=1) - real[np.arange(n), pick]
    rles = _encode_positions(pos, n)
    return [
        ObjectRegion(int(cls_ids[pick[i]]), rles[i], int(ids[i]), int(counts[i]), int(mixed[i]))
        for i in range(n)
    ]


def instances_from_maps(
    class_map: np.ndarray,
    object_map: np.ndarray | None,
    *,
    void_value: int = 255,
    background: int = 0,
) -> list[tuple[int, RLE, int]]:
    """``(class value, RLE, object index)`` per region; see :func:`instances_from_maps_detailed`."""
    return [
        (r.category, r.rle, r.object_index)
        for r in instances_from_maps_detailed(
            class_map, object_map, void_value=void_value, background=background
        )
    ]


def _class_regions(class_map: np.ndarray, void_value: int, background: int) -> list[tuple[int, RLE, int]]:
    ids, pos, counts = _dense_ids(class_map, (background, void_value))
    rles = _encode_positions(pos, len(ids))
    return [(int(v), r, int(n)) for v, r, n in zip(ids, rles, counts, strict=True)]


def regions_from_class_map(
    class_map: np.ndarray, *, void_value: int = 255, background: int = 0
) -> list[tuple[int, RLE]]:
    """One region per class value of a label map (background and void excluded).

    Args:
        class_map: ``(H, W)`` integer label map.
        void_value: Excluded value.
        background: Excluded value.

    Returns:
        ``(value, compressed RLE)`` in increasing value order.
    """
    return [(v, r) for v, r, _ in _class_regions(class_map, void_value, background)]
