"""Reading label-map PNGs that may be palette/grey (indices) or colour-coded RGB (Datumaro's export).

Palette PNGs are read as their indices (never converted to RGB). Colour-coded RGB masks, which some
tools write instead, are mapped back to label indices through the label map's colours; a colour that
is in no label is an error naming the file (it cannot be guessed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segpipe.core.labelmap import color_lut, rgb_to_labels, voc_colormap
from segpipe.errors import FormatError, ImageDecodeError, InputError, PixelLimitError
from segpipe.storage.images import image_mode, read_label_map, read_rgb_png


def mask_mode(path: str | Path) -> str:
    """The PIL mode of an image, from its header only (``P``, ``L``, ``RGB``, ``I;16`` ...)."""
    # One ceiling for every decode (SEGPIPE_MAX_PIXELS, exact), not Pillow's own default.
    try:
        return image_mode(path)
    except PixelLimitError:
        raise
    except InputError as e:
        raise ImageDecodeError(f"cannot open mask: {e.message}", path=path) from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow raises these on malformed headers
        raise ImageDecodeError(f"cannot open mask: {e}", path=path) from None


def read_indexed_mask(
    path: str | Path,
    colors: np.ndarray | None = None,
    *,
    void_value: int = 255,
) -> np.ndarray:
    """Decodes a label map to label indices.

    Args:
        path: PNG file.
        colors: ``(N, 3) uint8`` colour of label ``i`` for RGB masks (default: the VOC colormap).
            ``void_value`` also maps from the VOC void colour ``(224, 224, 192)``.
        void_value: Label index of void.

    Returns:
        ``(H, W) uint8|uint16`` label indices.

    Raises:
        FormatError: an RGB mask has a colour that no label has.
        ImageDecodeError: unreadable or unsupported image.
    """
    if mask_mode(path) not in ("RGB", "RGBA"):
        return read_label_map(path)
    rgb = read_rgb_png(path)
    cols = np.asarray(colors if colors is not None else voc_colormap(256), dtype=np.uint8)
    lut = color_lut(cols)
    if 0 <= void_value:
        vc = voc_colormap(256)[255]
        lut.setdefault(int(vc[0]) << 16 | int(vc[1]) << 8 | int(vc[2]), void_value)
    labels, unknown = rgb_to_labels(rgb, lut)
    if unknown:
        shown = ", ".join(str(c) for c in unknown[:5])
        raise FormatError(
            f"colour-coded mask has colours that are in no label: {shown}",
            path=path,
            hint="add them to labelmap.txt or write the mask as a palette PNG",
        )
    return labels
