"""How unsure the model was about one pre-labeled image, measured on the worker from what it stored.

The record (JSON-ready; kept in the image's receipt, and in its group's ``doubt`` attribute when the
image has a group of its own) lets exports put the images that need a person first
(``review_order.csv``, Label Studio's prediction ``score = 1 - doubt``):

* **semantic** (when probabilities are stored): the means of :mod:`segpipe.core.doubt` over the stored
  ``probs (C, H, W) uint8``: ``entropy`` (the image's ``doubt``), ``margin``, ``low_margin`` (fraction of
  pixels whose top-two margin is under 0.2); and **regions**: each 8-connected component of each
  category of the stored label map, with its box, area and mean entropy / margin inside, the
  :data:`MAX_REGIONS` most doubtful kept (``regions_total`` counts them all). Specks (regions under
  :func:`speck_pixels`) rank after every larger region: a 1-pixel island is nearly always doubtful and
  is not where an annotator should start. An image above
  :data:`REGION_PIXELS` (a streamed one) gets its means, read in row bands, and no regions.
* **instance**: ``doubt = 1 - min score`` of the stored instances (the least sure one decides), with
  ``mean_score`` and ``doubt_mean = 1 - mean score``; an image without instances has no doubt (None).

Computed from the stored (quantised) arrays, so it equals :func:`segpipe.core.doubt.image_doubt` of the
store's ``probs`` exactly, whatever produced them (a plain model, ``--tta``, an ``--ensemble``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segpipe.core.doubt import DoubtAccumulator, doubt_maps

#: Most doubtful regions kept per image.
MAX_REGIONS = 32
#: A region under this many pixels (or 0.1% of the image, whichever is smaller) is a speck.
SPECK_PIXELS = 64
#: Images above this many pixels get their means only (no connected components over the whole map).
REGION_PIXELS = 4096 * 4096
#: A pixel whose top-two margin is below this counts in ``low_margin``.
LOW_MARGIN = 0.2
#: Rows per band when an image's probabilities are read in bands.
BAND_ROWS = 1024


def speck_pixels(pixels: int) -> int:
    """Regions of fewer pixels than this rank after the others (64, or 0.1% of a small image; at least 2)."""
    return max(2, min(SPECK_PIXELS, pixels // 1000))


def _round(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def semantic_doubt(labels: np.ndarray, probs: np.ndarray, *, void: int | None = None) -> dict[str, Any]:
    """The doubt record of a semantic image held in memory.

    Args:
        labels: ``(H, W)`` category ids as stored.
        probs: ``(C, H, W)`` uint8 stored probabilities (``p = value / 255``).
        void: The label maps' void value (its pixels form no region), or None.

    Returns:
        ``{"kind": "semantic", "doubt", "entropy", "margin", "low_margin", "pixels", "regions",
        "regions_total"}``; each region ``{"category_id", "bbox" [x, y, w, h], "area", "doubt",
        "entropy", "margin"}``, the most doubtful first (specks last).
    """
    from scipy import ndimage  # lazy: the driver imports the kernels to submit them; workers alone label

    ent_map, mar_map, valid = doubt_maps(probs)  # one normalisation for the means and the regions
    summary = DoubtAccumulator(LOW_MARGIN).add_maps(ent_map, mar_map, valid).compute()
    eight = np.ones((3, 3), dtype=bool)
    # Every component's sums at once (a noisy map has 10^5 of them); dicts only for the kept ones. Sums
    # over each class's own pixels only, so the work is one pass over the image, not one per class.
    cids, ks, areas, e_sums, m_sums, boxes = [], [], [], [], [], {}
    for cid in np.unique(labels).tolist():
        if void is not None and cid == void:
            continue
        inside = labels == cid
        comp, n = ndimage.label(inside, structure=eight)
        if n == 0:
            continue
        idx = comp[inside]
        cids.append(np.full(n, cid, dtype=np.int64))
        ks.append(np.arange(n, dtype=np.int64))
        areas.append(np.bincount(idx, minlength=n + 1)[1:])
        e_sums.append(np.bincount(idx, weights=ent_map[inside].astype(np.float64), minlength=n + 1)[1:])
        m_sums.append(np.bincount(idx, weights=mar_map[inside].astype(np.float64), minlength=n + 1)[1:])
        boxes[cid] = ndimage.find_objects(comp)
    regions: list[dict[str, Any]] = []
    total = 0
    if cids:
        cid_a, k_a, area_a = np.concatenate(cids), np.concatenate(ks), np.concatenate(areas)
        doubt_a = np.concatenate(e_sums) / area_a
        margin_a = np.concatenate(m_sums) / area_a
        total = len(area_a)
        # most doubtful first, specks after every larger region; larger first among equals, then by
        # class and raster order: a fixed order
        speck = area_a < speck_pixels(labels.size)
        order = np.lexsort((k_a, cid_a, -area_a, -doubt_a, speck))[:MAX_REGIONS]
        for i in order.tolist():
            ys, xs = boxes[int(cid_a[i])][int(k_a[i])]
            regions.append({"category_id": int(cid_a[i]),
                            "bbox": [int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)],
                            "area": int(area_a[i]), "doubt": _round(doubt_a[i]), "entropy": _round(doubt_a[i]),
                            "margin": _round(margin_a[i])})
    d = summary.to_dict()
    return {"kind": "semantic", "doubt": d["entropy"], **d, "regions": regions, "regions_total": total}


def banded_doubt(probs: Any) -> dict[str, Any]:
    """The means of a large image's stored probabilities, read ``BAND_ROWS`` rows at a time (no regions).

    Args:
        probs: ``(C, H, W)`` uint8 array-like (a zarr array).
    """
    acc = DoubtAccumulator(LOW_MARGIN)
    for y in range(0, int(probs.shape[1]), BAND_ROWS):
        acc.update(np.asarray(probs[:, y : y + BAND_ROWS]))
    d = acc.compute().to_dict()
    return {"kind": "semantic", "doubt": d["entropy"], **d, "regions": [], "regions_total": None}


def instance_doubt(scores: np.ndarray) -> dict[str, Any]:
    """The doubt record of an instance image from its stored scores ``(K,)`` (K may be 0)."""
    s = np.asarray(scores, dtype=np.float64)
    if not len(s):
        return {"kind": "instance", "doubt": None, "instances": 0, "min_score": None, "mean_score": None,
                "doubt_mean": None}
    return {"kind": "instance", "doubt": _round(1.0 - s.min()), "instances": len(s),
            "min_score": _round(s.min()), "mean_score": _round(s.mean()), "doubt_mean": _round(1.0 - s.mean())}


def _array(group: Any, name: str) -> Any:
    """Array ``name`` of an image's group, or of a stacked image's pending slot, or None."""
    held = getattr(group, "arrays", None)  # a PendingSlot keeps its arrays until its shard is written
    if isinstance(held, dict):
        return held.get(name)
    try:
        node = group
        for part in name.split("/"):
            node = node[part]
        return node
    except KeyError:
        return None


def record_doubt(task: str, group: Any, void: int | None = None) -> dict[str, Any] | None:
    """Measures the doubt of what an image's task just wrote, and keeps it in the group's attributes.

    Args:
        task: The model's task (``semantic``, ``instance``; others have no doubt record).
        group: The image's group, or a stacked image's pending slot (whose doubt the receipt keeps).
        void: The label maps' void value.

    Returns:
        The record (:func:`semantic_doubt`, :func:`banded_doubt`, :func:`instance_doubt`), or None
        (another task, or a semantic run without stored probabilities).
    """
    rec: dict[str, Any] | None = None
    if task == "semantic":
        probs, labels = _array(group, "probs"), _array(group, "labels")
        if probs is None or labels is None:
            return None
        h, w = (int(v) for v in probs.shape[1:])
        if h * w > REGION_PIXELS:
            rec = banded_doubt(probs)
        else:
            rec = semantic_doubt(np.asarray(labels[...]), np.asarray(probs[...]), void=void)
    elif task == "instance":
        scores = _array(group, "instances/scores")
        rec = instance_doubt(np.asarray(scores[...]) if scores is not None else np.zeros(0))
    if rec is not None and not isinstance(getattr(group, "arrays", None), dict):
        group.attrs["doubt"] = rec
    return rec
