"""Pure pixel converters between segpipe records and Cityscapes ``gtFine`` maps (numpy + pycocotools only).

* :func:`encode_maps`: a class map of label ids and instances → ``labelIds``, ``instanceIds`` (and the
  losses of the encoding).
* :func:`decode_instance_ids`: an ``instanceIds`` map → a class map of label ids and instance regions.

``instanceIds`` convention (cityscapesScripts ``json2instanceImg``): a pixel of an object of a class
that has instances holds ``label id × 1000 + k`` with ``k`` the 0-based index of the object among the
objects of its class in the image; every other pixel (stuff, and groups / crowd regions of thing
classes) holds the label id alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.records import RLE, InstanceMask
from segpipe.core.render import NOTES as RENDER_NOTES
from segpipe.core.render import render_maps

#: Objects one class can number in one image (``k`` in ``id × 1000 + k``).
MAX_OBJECTS_PER_CLASS = 1000
#: Largest value of a 16-bit ``instanceIds`` PNG.
MAX_INSTANCE_VALUE = 65535

NOTES = {
    "crowd_to_group": "crowd regions are written as their class's group region (instanceIds = label id): "
    "several crowd annotations of one class in one image merge into one (counted per merged annotation)",
    "instance_index_overflow": "an image holds at most 1000 objects per class in instanceIds (k = 0..999); "
    "further objects are written as the class's group region (counted per object)",
    "instance_id_out_of_range": "label id × 1000 + k must fit in a 16-bit instanceIds PNG (label ids up to 65): "
    "objects of higher label ids are written as the class's group region (counted per object)",
    "instance_identity_dropped": "objects of a class without instances (stuff) have no ids in instanceIds and merge",
}


def encode_maps(
    labels: np.ndarray | None,
    instances: Sequence[InstanceMask],
    height: int,
    width: int,
    *,
    label_of: Mapping[int, int],
    things: frozenset[int],
    names: Mapping[int, str],
) -> tuple[np.ndarray | None, np.ndarray | None, LossCounter]:
    """Encodes one image's annotations as Cityscapes ``labelIds`` and ``instanceIds``.

    Args:
        labels: ``(H, W)`` label ids from the source's own class map (exact, so it wins over the
            instances' rendering), or None to render the instances.
        instances: In z-order (later on top), categories already known to ``label_of``; crowd ones are
            written as group regions.
        height: Image height (used when ``labels`` is None).
        width: Image width.
        label_of: ``{category id: label id}``.
        things: Label ids that hold per-object ids.
        names: ``{category id: name}`` for the loss counts.

    Returns:
        ``(label_ids, instance_ids, losses)``: ``(H, W) uint8`` (uint16 beyond 255) and
        ``(H, W) uint16``, or ``(None, None, losses)`` when there is no pixel annotation. Losses:
        ``overlap_flattened_pixels``, ``instance_fully_occluded``, ``box_only_no_mask`` (from the
        renderer), ``crowd_to_group``, ``instance_index_overflow``, ``instance_id_out_of_range``,
        ``instance_identity_dropped``.
    """
    losses = LossCounter()
    with_masks = [im for im in instances if im.rle is not None]
    if labels is None and not with_masks:
        for im in instances:  # box-only: nothing to draw
            losses.lose("box_only_no_mask", 1, names.get(im.instance.category_id, ""), _render_note())
        return None, None, losses
    h, w = (labels.shape if labels is not None else (height, width))
    object_map = None
    painted_label: np.ndarray | None = None
    if instances:
        # Crowd instances are painted as ordinary owners (a group keeps its class in labelIds, unlike the
        # VOC void convention) and turned into group values below.
        plain = [replace(im, instance=replace(im.instance, iscrowd=False)) for im in instances]
        painted_label, object_map, rl = render_maps(
            plain, h, w, label_of=label_of, void_value=65535, max_object_index=65534, names=names
        )
        losses.merge(rl)
    if labels is None:
        assert painted_label is not None
        labels = painted_label
    top = int(labels.max()) if labels.size else 0
    label_ids = labels.astype(np.uint8 if top <= 255 else np.uint16, copy=False)
    instance_ids = label_ids.astype(np.uint16)
    if object_map is None:
        return label_ids, instance_ids, losses
    lut = np.zeros(len(instances) + 2, dtype=np.int64)  # object index -> instanceIds value; 0 = keep label
    per_class: dict[int, int] = {}
    crowd_seen: set[int] = set()
    for k, im in enumerate(instances):
        inst = im.instance
        name = names.get(inst.category_id, str(inst.category_id))
        lab = int(label_of[inst.category_id])
        if im.rle is None:
            continue
        losses.counts_out[name] += 1
        value = lab
        if lab not in things:
            losses.lose("instance_identity_dropped", 1, name, NOTES["instance_identity_dropped"])
        elif inst.iscrowd:
            if lab in crowd_seen:  # a second group of the class in this image: indistinguishable from the first
                losses.lose("crowd_to_group", 1, name, NOTES["crowd_to_group"])
            crowd_seen.add(lab)
        elif lab * MAX_OBJECTS_PER_CLASS + MAX_OBJECTS_PER_CLASS - 1 > MAX_INSTANCE_VALUE:
            losses.lose("instance_id_out_of_range", 1, name, NOTES["instance_id_out_of_range"])
        else:
            n = per_class.get(lab, 0)
            per_class[lab] = n + 1
            if n >= MAX_OBJECTS_PER_CLASS:
                losses.lose("instance_index_overflow", 1, name, NOTES["instance_index_overflow"])
            else:
                value = lab * MAX_OBJECTS_PER_CLASS + n
        if k + 1 < len(lut):
            lut[k + 1] = value
    obj = np.asarray(object_map).astype(np.int64)
    obj[obj >= len(lut)] = 0  # void (more than 65534 objects) keeps the label
    vals = lut[obj]
    # Pixels owned by an object take its value; group values of a class equal its label id anyway.
    owned = vals > 0
    instance_ids[owned] = vals[owned].astype(np.uint16)
    return label_ids, instance_ids, losses


def _render_note() -> str:
    return RENDER_NOTES["box_only_no_mask"]


def decode_instance_ids(
    ids: np.ndarray, things: frozenset[int]
) -> tuple[np.ndarray, list[tuple[int, int, bool, RLE]]]:
    """Splits an ``instanceIds`` map into label ids and instance regions.

    Args:
        ids: ``(H, W)`` integer ``instanceIds`` values.
        things: Label ids whose values below 1000 are group (crowd) regions; values below 1000 of other
            labels are stuff and give no region.

    Returns:
        ``(labels, regions)``: ``(H, W) uint16`` label ids, and per region ``(value, label id, iscrowd,
        rle)`` sorted by value: every value ≥ 1000 is one object (``iscrowd`` False), every thing label
        below 1000 a crowd group.
    """
    ids = np.asarray(ids).astype(np.int64, copy=False)
    labels = np.where(ids >= MAX_OBJECTS_PER_CLASS, ids // MAX_OBJECTS_PER_CLASS, ids).astype(np.uint16)
    values = [int(v) for v in np.unique(ids)]
    keep = [v for v in values if v >= MAX_OBJECTS_PER_CLASS or (v in things and v != 0)]
    rles = rle_ops.encode_labels(ids, keep) if keep else []
    regions = [
        (v, v // MAX_OBJECTS_PER_CLASS if v >= MAX_OBJECTS_PER_CLASS else v, v < MAX_OBJECTS_PER_CLASS, r)
        for v, r in zip(keep, rles, strict=True)
    ]
    return labels, regions
