"""Synthetic segmentation datasets, deterministic for a seed.

``synth(kind, out, n, seed, size)`` writes::

    OUT/images/00000.png ...        photos (or .jpg)
    OUT/masks/00000.png ...         palette label maps, paired with the photos by stem
    OUT/annotations.json            COCO: images (width/height), categories (id, name, color, isthing,
                                    keypoints), one annotation per connected thing object with an RLE
                                    segmentation, bbox, area, iscrowd (+ keypoints for landmarks)
    OUT/labelmap.txt                VOC-style ``name:r,g,b::`` lines, background first
    OUT/.segpipe-output             the marker that lets a later ``synth`` replace this folder

Category ids equal label-map indices (background, index 0, is not a COCO category). COCO
``file_name`` is relative to ``OUT/images``. Image ``i`` depends only on ``(seed, i)``, so a larger ``n``
extends a smaller one.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.errors import ConfigError
from segpipe.synth import kinds as _kinds  # noqa: F401  (registers the kinds)
from segpipe.synth.base import KINDS
from segpipe.synth.native import NATIVE_FORMATS, synth_native
from segpipe.synth.writer import SynthResult, synth_output, synth_photos, write_synth

__all__ = ["KINDS", "SynthResult", "kind_names", "parse_size", "synth", "synth_output", "write_synth"]


def kind_names() -> list[str]:
    """Registered kinds, sorted."""
    return KINDS.names()


def parse_size(text: str) -> tuple[int, int]:
    """Parses ``HxW`` (or a single ``N`` for a square).

    Raises:
        ConfigError: malformed or out of range (16..8192).
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"size must be HxW, e.g. 256x512, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(16 <= v <= 8192 for v in vals):
        raise ConfigError(f"size must be HxW with sides in 16..8192, got {text!r}")
    return vals[0], vals[1]


def synth(
    kind: str,
    out: str | Path,
    n: int = 16,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    image_format: str = "png",
    *,
    overwrite: bool = False,
) -> SynthResult:
    """Writes a synthetic dataset.

    Args:
        kind: ``streetview``, ``satellite``, ``medical`` or ``landmarks``.
        out: Output folder: new, empty, or (with ``overwrite``) an earlier ``synth`` output (replaced
            whole, atomically); anything else is refused.
        n: Number of images.
        seed: Random seed; the same seed gives byte-identical files.
        size: ``(H, W)``; the kind's default when None.
        image_format: ``png`` or ``jpg``.
        overwrite: Replace an earlier ``synth`` output at ``out`` (``--overwrite``).

    Returns:
        A :class:`SynthResult`.

    Raises:
        ConfigError: an unknown kind or format, or bad numbers.
        OutputError: ``out`` is a non-empty folder that ``segpipe synth`` did not make, or an earlier
            ``synth`` output and not ``overwrite``.
    """
    KINDS.get(kind)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if image_format in NATIVE_FORMATS:
        return synth_native(kind, out, n=n, seed=seed, size=size, fmt=image_format, overwrite=overwrite)
    if image_format not in ("png", "jpg"):
        raise ConfigError(f"image format must be png, jpg, geotiff, nifti or dicom, got {image_format!r}")
    return synth_photos(kind, out, n=n, seed=seed, size=size, image_format=image_format, overwrite=overwrite)
