"""How the store names, fills and vouches for its arrays: axis names, label-map fill value and attributes, digests.

Shared by the per-image groups (:mod:`segpipe.storage.zarrstore`), the stacks
(:mod:`segpipe.storage.stacks`) and their checks (:mod:`segpipe.storage.verify`), which sit above it;
:mod:`segpipe.storage.zarrstore` re-exports every name. numpy and xxhash only: no zarr.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import xxhash

#: Axis names of each array (by name and rank); a stacked array adds ``slot`` in front.
DIMENSIONS: dict[tuple[str, int], tuple[str, ...]] = {
    ("labels", 2): ("y", "x"),
    ("probs", 3): ("class", "y", "x"),
    ("panoptic", 2): ("y", "x"),
    ("heatmaps", 3): ("landmark", "y", "x"),
    ("keypoints", 3): ("object", "landmark", "xyc"),
    # instances/ subgroup
    ("rle", 1): ("instance",),
    ("boxes", 2): ("instance", "xywh"),
    ("scores", 1): ("instance",),
    ("labels", 1): ("instance",),
}


def dimension_names(name: str, ndim: int, *, stacked: bool = False) -> tuple[str, ...]:
    """The ``dimension_names`` of array ``name`` with ``ndim`` axes (``dim_0`` ... for one not listed).

    Args:
        name: The array's name in its group (``labels``, ``probs``, ``boxes`` ...).
        ndim: Its rank (a stacked array's, with the slot axis).
        stacked: The array stacks images along axis 0 (:mod:`segpipe.storage.stacks`).
    """
    lead = ("slot",) if stacked else ()
    rest = DIMENSIONS.get((name, ndim - len(lead)))
    if rest is None:
        return (*lead, *(f"{name}_{i}" for i in range(ndim - len(lead))))
    return (*lead, *rest)


def label_fill(dtype: Any) -> int:
    """The fill value of a label map of ``dtype``: its void value (the dtype's largest value, never a class)."""
    dt = np.dtype(dtype)
    return int(np.iinfo(dt).max) if dt.kind in "iu" else 0


def is_label_map(name: str, ndim: int) -> bool:
    """Whether array ``name`` of rank ``ndim`` (unstacked) is a label map (category id per pixel)."""
    return name == "labels" and ndim == 2


def label_attributes(categories: Any, void: int | None = None) -> dict[str, Any]:
    """Attributes of a label map naming its classes where xarray and napari users look.

    ``flag_values`` / ``flag_meanings`` are CF's way of naming the values of a categorical variable
    (xarray shows them with the array; blanks in names become ``_``, as CF wants one word each);
    ``image-label`` is OME-Zarr 0.4's (colours and class of each label value), which napari's
    OME-Zarr reader follows. segpipe's full records stay in the root's (and a stack group's)
    ``categories`` attribute, not repeated in every image's array.

    Args:
        categories: ``[{"id", "name", "color"?}]`` (the store's ``segpipe.categories``).
        void: The void value (unwritten and unlabelled pixels).
    """
    cats = [c for c in (categories or []) if isinstance(c, Mapping) and "id" in c]
    out: dict[str, Any] = {
        "long_name": "category id per pixel",
        "flag_values": [int(c["id"]) for c in cats],
        "flag_meanings": " ".join("_".join(str(c.get("name", c["id"])).split()) or str(c["id"]) for c in cats),
    }
    colors = [{"label-value": int(c["id"]), "rgba": [*(int(v) for v in c["color"][:3]), 255]}
              for c in cats if isinstance(c.get("color"), (list, tuple)) and len(c["color"]) >= 3]
    out["image-label"] = {"version": "0.4", "colors": colors,
                          "properties": [{"label-value": int(c["id"]), "class": str(c.get("name", ""))} for c in cats]}
    if void is not None:
        out["void_value"] = int(void)
    return out


#: Prefix of output digests. Receipts from before it carry a bare sha256 hex, still verified.
DIGEST_SCHEME = "xxh3-128:"


class ArrayDigest:
    """Streaming digest of an array's dtype, shape and C-order bytes (receipts record, fsck checks).

    xxh3-128, not sha256: it guards outputs against corruption and truncation, not against an
    adversary (task keys, which must not collide by construction, stay sha256). sha256 cost 0.58 ms
    per MiB here, half the zstd cost of the label map it vouches for; xxh3 costs 0.02 ms.

    Args:
        dtype: The array's dtype.
        shape: The array's shape.
        legacy: Compute the bare sha256 hex of receipts written before :data:`DIGEST_SCHEME`.
    """

    def __init__(self, dtype: Any, shape: tuple[int, ...], *, legacy: bool = False) -> None:
        self._h: Any = hashlib.sha256() if legacy else xxhash.xxh3_128()
        self._legacy = legacy
        self._h.update(f"{np.dtype(dtype).str}{tuple(int(s) for s in shape)}".encode())

    def update(self, part: np.ndarray) -> None:
        """Adds the next rows (leading-axis slices, in order) of the array."""
        part = np.ascontiguousarray(part)
        if part.size:
            self._h.update(part.reshape(-1).view(np.uint8).data)  # no copy of the bytes

    def hexdigest(self) -> str:
        """The digest string (scheme prefix + hex)."""
        return self._h.hexdigest() if self._legacy else DIGEST_SCHEME + self._h.hexdigest()


def array_digest(arr: np.ndarray, *, legacy: bool = False) -> str:
    """Digest of an array's dtype, shape and C-order bytes (see :class:`ArrayDigest`)."""
    d = ArrayDigest(arr.dtype, arr.shape, legacy=legacy)
    d.update(arr)
    return d.hexdigest()


def digest_matches(arr: np.ndarray, digest: str) -> bool:
    """Whether ``arr`` has ``digest``, in whichever scheme the receipt was written."""
    return array_digest(arr, legacy=not digest.startswith(DIGEST_SCHEME)) == digest
