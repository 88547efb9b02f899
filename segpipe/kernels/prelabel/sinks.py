"""Band sinks the predictors stream their outputs into, and the label-map values they write.

A predictor hands over finished row bands (``sink[y0:y1] = labels_band``, ``sink[:, y0:y1] =
probs_band``: see :mod:`segpipe.models.predict`); these sinks map, quantise or buffer them on their
way into the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from segpipe.storage import zarrfast
from segpipe.storage.zarrstore import ArrayDigest, local_folder, quantise_probs


def category_lut(predictor: Any) -> np.ndarray:
    """Model class index → category id, in the smallest label-map dtype (uint8, or uint16 above 254).

    Returns:
        ``(C,)`` uint8 or uint16.
    """
    ids = np.asarray(predictor.category_ids, dtype=np.int64)
    return ids.astype(np.uint16 if int(ids.max(initial=0)) > 254 else np.uint8)


def label_void(dtype: Any) -> int:
    """The void (nodata) value of a label map of ``dtype``: 255 for uint8 (as VOC), 65535 for uint16."""
    return int(np.iinfo(np.dtype(dtype)).max)


class QuantSink:
    """Band sink writing float16 probabilities ``(C, h, W)`` into a uint8 array (``p = value / 255``)."""

    def __init__(self, arr: Any) -> None:
        self.arr = arr

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.arr[key] = quantise_probs(value.astype(np.float32))


class LabelSink:
    """Band sink mapping model label indices ``(h, W)`` to category ids through ``lut``."""

    def __init__(self, arr: Any, lut: np.ndarray) -> None:
        self.arr = arr
        self.lut = lut

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.arr[key] = self.lut[value]


class WindowView:
    """A window ``[ya:yb, xa:xb]`` of a raster source, addressed from its own origin (2-D slicing only)."""

    def __init__(self, src: Any, ya: int, yb: int, xa: int, xb: int) -> None:
        self.src, self.ya, self.xa = src, ya, xa
        self.shape = (yb - ya, xb - xa, 3)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        sy, sx = key
        y0, y1, _ = sy.indices(self.shape[0])
        x0, x1, _ = sx.indices(self.shape[1])
        return np.asarray(self.src[self.ya + y0 : self.ya + y1, self.xa + x0 : self.xa + x1])


class CoreSink:
    """Collects the rows of a block's prediction that fall in its core region.

    The predictor hands over finished row bands of the whole window (core + context margin); the core
    ``[y0:y1, x0:x1]`` is buffered (bounded by the block size: ``(y1 - y0, x1 - x0)``, or
    ``(C, y1 - y0, x1 - x0)`` with ``channels``) and written once with :meth:`flush`, so each chunk is
    compressed once rather than read-modified-written once per band.

    Args:
        ya: Top row of the window in the scene.
        xa: Left column of the window in the scene.
        core: ``[y0, y1, x0, x1]`` in the scene.
        transform: Applied to each band before it is buffered (label lookup, quantisation).
        channels: Channels of the buffer, or None for a 2-D label map.
        dtype: The buffer's dtype.
    """

    def __init__(self, ya: int, xa: int, core: list[int], transform: Callable[[np.ndarray], np.ndarray],
                 channels: int | None, dtype: Any) -> None:
        self.ya, self.xa, self.core, self.transform, self.channels = ya, xa, core, transform, channels
        y0, y1, x0, x1 = core
        shape = (y1 - y0, x1 - x0) if channels is None else (channels, y1 - y0, x1 - x0)
        self.buf = np.zeros(shape, dtype=dtype)

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        rows = key[1] if self.channels is not None else key
        r0, r1 = rows.start + self.ya, rows.stop + self.ya
        y0, y1, x0, x1 = self.core
        a, b = max(r0, y0), min(r1, y1)
        if a >= b:
            return
        band = self.transform(value[..., a - r0 : b - r0, x0 - self.xa : x1 - self.xa])
        self.buf[..., a - y0 : b - y0, :] = band

    def flush(self, arr: Any) -> np.ndarray:
        """Writes the core into ``arr`` (whole chunks owned by this task); returns what was written."""
        y0, y1, x0, x1 = self.core
        folder = local_folder(arr)
        origin = ([0] if self.channels is not None else []) + [y0, x0]
        if folder is None or not zarrfast.write_region(folder, self.buf, origin):
            arr[..., y0:y1, x0:x1] = self.buf
        return self.buf


def digest_stream(arr: Any) -> str:
    """Digest of a large 2-D array read back band by band (same value as array_digest of the whole)."""
    h = ArrayDigest(arr.dtype, tuple(arr.shape))
    step = 1024
    for y in range(0, arr.shape[0], step):
        h.update(np.asarray(arr[y : y + step]))
    return h.hexdigest()
