"""What the geo and medical writers share: finding an image's store attributes and its label map.

Writers get :class:`~segpipe.core.records.Materialized` samples. The attributes a modality writer
needs (``geo`` for scenes, ``volume``/``z``/``affine``/``shape`` for slices) live on the store image
group written by the pre-labeling; they are looked up there when the source is a segpipe store
(``meta.extra["store"]``), else in ``sample.image.attributes`` (a reader that knows them may put them
there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from segpipe.core.losses import LossCounter
from segpipe.core.records import DatasetMeta, Materialized
from segpipe.core.render import render_maps
from segpipe.storage.zarrstore import ZarrStore

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str) -> str:
    """A flat, safe file stem: the name without folders' separators or odd characters.

    ``"a/b c.tif"`` → ``"a__b_c"``; never empty, never starting with a dot.
    """
    stem = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
    stem = "__".join(p for p in re.split(r"[\\/]+", stem) if p not in ("", ".", ".."))
    stem = _SAFE.sub("_", stem).lstrip(".")
    return stem or "image"


def image_attrs(m: Materialized, meta: DatasetMeta) -> dict[str, Any]:
    """The store group attributes of the sample's image (or its ``image.attributes``).

    Returns:
        A plain dict (empty when nothing is known).
    """
    store = meta.extra.get("store") if isinstance(meta.extra, Mapping) else None
    if store:
        try:
            return dict(ZarrStore(store).group(m.sample.image.id).attrs)
        except KeyError:
            return {}
    return dict(m.sample.image.attributes)


def label_map(m: Materialized, meta: DatasetMeta, losses: LossCounter) -> Any:
    """The sample's class map of category ids (void = ``m.void_value``), or None.

    ``m.class_map`` is used as is (any array-like with ``shape`` and 2-D slicing: a numpy array or a
    lazy zarr array, which the writers read window by window); without one, instances with masks are
    painted in z-order (overlaps counted by :func:`~segpipe.core.render.render_maps`).
    """
    if m.class_map is not None:
        return m.class_map
    kept = [im for im in m.instances if im.rle is not None]
    if not kept:
        return None
    names = {c.id: c.name for c in meta.categories}
    cm, _, rl = render_maps(kept, m.sample.image.height, m.sample.image.width, void_value=int(m.void_value),
                            max_object_index=min(254, int(m.void_value) - 1), names=names)
    for key in [k for k in rl.losses if k[0] in ("object_index_overflow", "box_only_no_mask")]:
        del rl.losses[key]  # only the class map is written: object indices and boxes are not at stake
    losses.merge(rl)
    return cm


def label_dtype(max_value: int) -> np.dtype:
    """uint8 up to 255, else uint16."""
    return np.dtype(np.uint8) if max_value <= 255 else np.dtype(np.uint16)
