"""Helpers shared by the modality tests: tiny segpipe stores and in-process conversions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import Conversion, convert
from segpipe.storage.zarrstore import ZarrStore

CATS = [{"id": 1, "name": "vegetation", "color": [50, 120, 40]}, {"id": 2, "name": "water", "color": [30, 70, 160]},
        {"id": 3, "name": "road", "color": [120, 120, 120]}]


def make_store(path: Path, images: list[tuple[np.ndarray, dict[str, Any]]]) -> Path:
    """A store with one group per ``(labels, extra attrs)``, ids from 1."""
    store = ZarrStore.create(path, {"task": "semantic", "categories": CATS})
    for i, (labels, extra) in enumerate(images, start=1):
        h, w = labels.shape
        g = store.image_group(i, {"id": i, "file": extra.pop("file", f"img{i}.tif"), "width": w, "height": h, **extra})
        store.write_array(g, "labels", labels)
    return path


def export(store: Path, dst: Path, to: str) -> dict[str, Any]:
    """Converts a store in this process (no Dask)."""
    return convert(Conversion(src=store, dst=dst, to=to, from_="segpipe_zarr"), ClusterSpec(workers=0))


def blobs(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A label map with a few rectangles and a disc, holes included (values 0..3)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), dtype=np.uint8)
    for k in range(6):
        y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        lab[y0:y0 + int(rng.integers(4, h // 2)), x0:x0 + int(rng.integers(4, w // 2))] = 1 + k % 3
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2
    lab[disc] = 2
    lab[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 10) ** 2] = 0  # a hole
    lab[0:3, 0:3] = 255  # void
    return lab
