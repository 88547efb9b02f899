"""Checks of a sample against itself, shared by ``convert`` (every source format) and ``validate``.

One mechanism for every reader, so no format can forget them:

* :func:`check_recorded_size` — before anything of the recorded size is allocated: the size a dataset
  records (a COCO ``width``/``height``, a VOC ``<size>``, a store's attributes) is within the pixel
  ceiling and equals the image file's upright size (the EXIF policy of :mod:`segpipe.storage.images`).
  A mask rasterised at a wrong recorded size would be a wrong-size mask, silently.
* :func:`check_class_map` — after a sample is decoded: its label map has the recorded size, and every
  value is a category of the source, background 0 or void. Other values become void and are a loss
  of the conversion report (``unknown_class_pixels_to_void``, pixels per value), so ``--strict``
  refuses them; before, they passed as lossless.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from segpipe.core.labelmap import unknown_values_to_void
from segpipe.core.losses import LossCounter
from segpipe.core.records import DatasetMeta, Materialized, Sample
from segpipe.errors import FormatError, ImageDecodeError, PixelLimitError
from segpipe.storage.images import check_pixel_count, exif_orientation, image_size

#: The loss kind of label values that are no category (the VOC writer counts the same kind).
UNKNOWN_VALUES = "unknown_class_pixels_to_void"
UNKNOWN_NOTE = ("label-map pixels whose value is no category of the source (nor background 0 or void) "
                "are written as void (counted per value)")
#: Image files whose header gives their size cheaply (rasters and volumes have their own readers).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})


def _fields(rw: int, rh: int, fw: int, fh: int) -> str:
    return ", ".join(n for n, bad in (("width", rw != fw), ("height", rh != fh)) if bad)


def check_recorded_size(sample: Sample, source: str | Path | None = None) -> None:
    """Checks the sample's recorded size against the pixel ceiling and against its image file.

    Sizes are upright (EXIF orientation applied), as every reader records them. An image whose header
    cannot be read is left to the image checks (``validate --images``, ``convert --images copy``).

    Args:
        sample: The sample; ``image.width``/``height`` of 0 mean "not recorded" and are not checked.
        source: The dataset file that records the size (named in the error), when known.

    Raises:
        PixelLimitError: the recorded size exceeds ``SEGPIPE_MAX_PIXELS`` (masks of that size would be
            allocated).
        FormatError: the recorded size differs from the image file's (field ``image <id>: width``).
    """
    img = sample.image
    rw, rh = int(img.width), int(img.height)
    where = f"image {img.id} ({img.file_name})"
    if rw > 0 and rh > 0:
        check_pixel_count(rw, rh, path=source, where=f"{where}: width, height", what="recorded size")
    path = sample.image_path
    if sample.size_measured:
        return  # measured on the decoded image when recorded: a second header read per image buys nothing
    if path is None or rw <= 0 or rh <= 0 or Path(path).suffix.lower() not in PHOTO_SUFFIXES:
        return
    try:
        fw, fh = image_size(path)
    except PixelLimitError:
        raise
    except ImageDecodeError:
        return  # unreadable: the integrity checks name it; its size cannot be compared
    if (fw, fh) == (rw, rh):
        return
    hint = None
    if (fh, fw) == (rw, rh):
        with Image.open(path) as im:
            orientation = exif_orientation(im)
        if orientation in (5, 6, 7, 8):
            hint = (f"the record has the stored size; with EXIF orientation {orientation} segpipe records "
                    "sizes upright, as viewers show the photo")
    raise FormatError(
        f"recorded size {rw}x{rh} (width x height), but the image file {path} is {fw}x{fh}; masks would be "
        "made at the wrong size",
        path=source, where=f"{where}: {_fields(rw, rh, fw, fh)}", hint=hint,
    )


def check_class_map(m: Materialized, meta: DatasetMeta, losses: LossCounter) -> Materialized:
    """Checks a decoded sample's label map against its recorded size and the source's categories.

    Args:
        m: The materialized sample (any source format).
        meta: The source dataset's meta (its categories).
        losses: Receives ``unknown_class_pixels_to_void`` per unknown value, including values the reader
            already made void (``m.unknown_values``).

    Returns:
        ``m``, or a copy whose ``(H, W)`` class map has the unknown values as ``m.void_value``.

    Raises:
        FormatError: the label map's size differs from the recorded image size.
    """
    unknown = dict(m.unknown_values)
    cm = m.class_map
    if isinstance(cm, np.ndarray) and cm.ndim == 2:
        img = m.sample.image
        if img.width > 0 and img.height > 0 and cm.shape != (img.height, img.width):
            raise FormatError(
                f"label map is {cm.shape[1]}x{cm.shape[0]}, the image is {img.width}x{img.height}",
                path=m.sample.semantic_file, where=f"image {img.id}",
            )
        cm, found = unknown_values_to_void(cm, {c.id for c in meta.categories}, int(m.void_value))
        for v, n in found.items():
            unknown[v] = unknown.get(v, 0) + n
    for v, n in sorted(unknown.items()):
        losses.lose(UNKNOWN_VALUES, n, str(v), UNKNOWN_NOTE)
    if cm is m.class_map:
        return m
    return replace(m, class_map=cm)
