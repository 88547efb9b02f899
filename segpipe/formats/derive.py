"""Derive one kind of annotation from another, whatever format a sample came from.

Writers call these to get what their format holds (instances, a class map, a panoptic map) from a
:class:`~segpipe.core.records.Materialized` sample, and merge the returned losses into their shard's.
"""

from __future__ import annotations

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.panoptic import instances_to_panoptic, panoptic_to_class_map, panoptic_to_instances
from segpipe.core.records import (
    DatasetMeta,
    Instance,
    InstanceMask,
    Materialized,
    PanopticSegment,
    Segmentation,
)
from segpipe.core.render import regions_from_class_map, render_maps


def _is_thing(meta: DatasetMeta) -> dict[int, bool]:
    return {c.id: c.isthing for c in meta.categories}


def derive_instances(m: Materialized, meta: DatasetMeta) -> tuple[list[InstanceMask], LossCounter]:
    """Instances with RLE masks from whatever ``m`` holds.

    Order of preference: the sample's own instances; the *thing* segments of a panoptic map (stuff
    goes to :func:`derive_class_map`); one region per class of a class map (a semantic dataset written
    as COCO: one annotation per class and image, as COCO-Stuff does).

    Returns:
        ``(instances, losses)``; losses holds notes only (nothing is lost by these derivations).
    """
    losses = LossCounter()
    if m.instances:
        return list(m.instances), losses
    img = m.sample.image
    if m.panoptic is not None:
        id_map, segments = m.panoptic
        things = _is_thing(meta)
        out: list[InstanceMask] = []
        for seg, r in panoptic_to_instances(id_map, [s for s in segments if things.get(s.category_id, True)]):
            out.append(_instance_from_rle(seg.id, img.id, seg.category_id, r, seg.iscrowd, seg.attributes))
        return out, losses
    if m.class_map is not None:
        out = []
        for k, (cat, r) in enumerate(regions_from_class_map(m.class_map, void_value=m.void_value)):
            out.append(_instance_from_rle(k + 1, img.id, int(cat), r, False, {}))
        if out:
            losses.notes["semantic_regions_as_instances"] = (
                "semantic label maps were written as one annotation per class and image (COCO-Stuff style)"
            )
        return out, losses
    return [], losses


def _instance_from_rle(
    ann_id: int, image_id: int, category_id: int, r: dict, iscrowd: bool, attributes: object
) -> InstanceMask:
    inst = Instance(
        id=int(ann_id),
        image_id=image_id,
        category_id=int(category_id),
        segmentation=Segmentation.from_rle(r),
        bbox=rle_ops.to_bbox(r),
        area=float(rle_ops.area(r)),
        iscrowd=bool(iscrowd),
        attributes=dict(attributes) if isinstance(attributes, dict) else {},
    )
    return InstanceMask(inst, r)


#: Note of ``stuff_segments_merged``.
STUFF_MERGED_NOTE = (
    "segments of a stuff category (isthing 0) in one image merge into one label-map region, as panopticapi's "
    "converters do (only isthing 1 categories become instances); counted per segment of such images. If they "
    "are objects, set isthing 1 for their category"
)


def _count_merged_stuff(segments: list[PanopticSegment], meta: DatasetMeta, losses: LossCounter) -> None:
    """Counts the stuff segments of one image that share their category with another segment.

    A label map keeps one region per class: two ``car`` segments of a category marked ``isthing: 0``
    become one region and their identity is gone (things are kept as instances by the writers that
    hold instances, so only stuff is counted here).
    """
    things = _is_thing(meta)
    names = {c.id: c.name for c in meta.categories}
    per_cat: dict[int, int] = {}
    for seg in segments:
        if not things.get(seg.category_id, True):
            per_cat[seg.category_id] = per_cat.get(seg.category_id, 0) + 1
    for cid, n in sorted(per_cat.items()):
        if n > 1:
            losses.lose("stuff_segments_merged", n, names.get(cid, str(cid)), STUFF_MERGED_NOTE)


def derive_class_map(m: Materialized, meta: DatasetMeta) -> tuple[np.ndarray | None, LossCounter]:
    """A ``(H, W)`` label map of category ids (``m.void_value`` = void) from whatever ``m`` holds.

    Preference: the sample's own class map; the panoptic map's categories; instances rendered in
    z-order (later on top; overlaps and crowd regions are counted as losses by the renderer).
    Returns ``(None, losses)`` when the sample has no pixel annotation at all.
    """
    losses = LossCounter()
    if m.class_map is not None:
        return m.class_map, losses
    img = m.sample.image
    if m.panoptic is not None:
        id_map, segments = m.panoptic
        _count_merged_stuff(segments, meta, losses)
        return panoptic_to_class_map(id_map, segments, void_value=m.void_value), losses
    with_masks = [im for im in m.instances if im.rle is not None]
    if not with_masks:
        return None, losses

    class_map, _, render_losses = render_maps(with_masks, img.height, img.width, void_value=m.void_value)
    return class_map, losses.merge(render_losses)


def derive_panoptic(
    m: Materialized, meta: DatasetMeta
) -> tuple[np.ndarray, list[PanopticSegment], LossCounter]:
    """A panoptic ``(H, W) int32`` id map and its segments from whatever ``m`` holds.

    Things come from instances (painted in z-order), stuff from the class map's non-thing classes.
    """
    if m.panoptic is not None:
        id_map, segments = m.panoptic
        return id_map, list(segments), LossCounter()

    img = m.sample.image
    things = _is_thing(meta)
    instances = [im for im in m.instances if im.rle is not None and things.get(im.instance.category_id, True)]
    return instances_to_panoptic(
        instances, m.class_map, list(meta.categories), img.height, img.width, void_value=m.void_value
    )
