"""Safe image and mask decoding with Pillow.

Policies (documented in the README, applied the same way everywhere):

* **Decompression bombs**: an image with more than :func:`max_pixels` pixels (default
  :data:`MAX_PIXELS`) is an error, never a warning (override with ``SEGPIPE_MAX_PIXELS`` or the
  ``max_pixels`` argument). The same ceiling bounds the sizes datasets *record* (a JSON width and
  height), which are checked before any mask of that size is allocated (:func:`check_pixel_count`).
  Scenes read window by window have their own, larger ceiling (:func:`max_scene_pixels`,
  ``SEGPIPE_MAX_SCENE_PIXELS``), checked from the header before any block is planned.
* **Truncated files** are errors; ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never turned on.
* **Masks** are read as stored: palette PNGs give their indices (never converted to RGB or L),
  16-bit PNGs stay 16-bit. RGB is accepted only where a format stores colour-coded ids (COCO panoptic).
* **EXIF orientation** (the "upright" policy): photos are decoded with their EXIF orientation applied,
  as viewers and annotation tools show them; recorded widths and heights are the upright ones; masks
  and exports are in upright pixel coordinates. Label-map PNGs carry no orientation and are never
  transposed.
* **Object storage**: a path may be an ``s3://``, ``gs://``, ``az://`` or ``https://`` URL of one image
  (:mod:`segpipe.storage.urls`); its bytes are read whole by the process that decodes it and decoded
  exactly as the same local file would be.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from segpipe.errors import ImageDecodeError, InputError, PixelLimitError
from segpipe.storage.atomic import atomic_open
from segpipe.storage.limits import (
    MAX_PIXELS,
    MAX_SCENE_PIXELS,
    check_limits,
    check_pixel_count,
    max_pixels,
    max_scene_pixels,
)
from segpipe.storage.urls import is_url, read_url

__all__ = ["MAX_PIXELS", "MAX_SCENE_PIXELS", "check_limits", "check_pixel_count", "max_pixels",
           "max_scene_pixels"]

ImageFile.LOAD_TRUNCATED_IMAGES = False

#: EXIF tag of the orientation field.
_ORIENTATION = 0x0112


def _open(path: str | Path, limit_arg: int | None, data: bytes | None = None) -> Image.Image:
    limit = max_pixels() if limit_arg is None else limit_arg
    # A URL is named as given (a Path would make of s3://b/k "s3:/b/k"); its bytes are read whole, as
    # decoding reads a local file whole too.
    p: str | Path = str(path) if is_url(path) else Path(path)
    source: Path | io.BytesIO
    if data is not None:
        source = io.BytesIO(data)
    elif isinstance(p, str):
        source = io.BytesIO(read_url(p))
    else:
        source = p
    old = Image.MAX_IMAGE_PIXELS
    # Pillow's own bomb check warns between its limit and twice that and names no size: it is off while
    # the header is parsed (nothing is decoded yet), and the header's size is checked here, exactly.
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(source)
    except FileNotFoundError:
        raise InputError("file not found", path=p) from None
    except IsADirectoryError:
        raise InputError("expected an image file, got a folder", path=p) from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image file", path=p) from None
    except OSError as e:
        raise ImageDecodeError(f"cannot open image: {e}", path=p) from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    try:
        check_pixel_count(im.size[0], im.size[1], path=p, limit=limit, what="image")
    except PixelLimitError as e:
        im.close()
        raise PixelLimitError(e.message + " (decompression bomb?)", path=p,
                              hint="raise SEGPIPE_MAX_PIXELS if the image is genuine") from None
    return im


def _load(im: Image.Image, path: str | Path) -> None:
    try:
        im.load()
    except OSError as e:
        raise ImageDecodeError(f"corrupt or truncated image: {e}", path=path) from None
    except (ValueError, SyntaxError, EOFError) as e:  # Pillow raises these on malformed headers/chunks
        raise ImageDecodeError(f"corrupt image: {e}", path=path) from None


def exif_orientation(im: Image.Image) -> int:
    """Returns the EXIF orientation (1..8; 1 when absent or invalid)."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not fail the decode; it means "no orientation"
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def image_mode(path: str | Path, *, max_pixels: int | None = None) -> str:
    """The PIL mode of an image from its header (``P``, ``L``, ``RGB``, ``I;16`` ...), under the ceiling."""
    with _open(path, max_pixels) as im:
        return str(im.mode)


def image_size(path: str | Path, *, exif: bool = True, max_pixels: int | None = None,
               data: bytes | None = None) -> tuple[int, int]:
    """Returns ``(width, height)`` from the header, upright when ``exif`` (orientations 5-8 swap).

    Args:
        path: The image file or URL (named in errors).
        exif: Whether to apply the EXIF orientation.
        max_pixels: The pixel ceiling (default :func:`max_pixels`).
        data: The file's bytes when the caller holds them already (an object read once to be hashed).
    """
    with _open(path, max_pixels, data) as im:
        w, h = im.size
        if exif and exif_orientation(im) in (5, 6, 7, 8):
            w, h = h, w
        return int(w), int(h)


def read_image(path: str | Path, *, exif: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Decodes a photo to RGB.

    Grayscale, palette, RGBA, CMYK and 16-bit inputs are converted to 8-bit RGB (16-bit by scaling
    the full range; alpha is dropped).

    Returns:
        ``(H, W, 3) uint8``, upright when ``exif``.
    """
    with _open(path, max_pixels) as im:
        _load(im, path)
        if exif:
            im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im).astype(np.float64)
            hi = float(arr.max()) if arr.size else 0.0
            scale = 255.0 / (65535.0 if hi > 255 else 255.0)
            g = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(g[..., None], 3, axis=2)
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im)


def read_label_map(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Decodes a single-channel label map exactly as stored.

    Palette (P) PNGs give their palette indices; L gives uint8; 16-bit gives uint16.

    Returns:
        ``(H, W) uint8`` or ``(H, W) uint16``.

    Raises:
        ImageDecodeError: for colour (RGB/RGBA) or other multi-channel images, or corrupt files.
    """
    with _open(path, max_pixels) as im:
        _load(im, path)
        mode = im.mode
        if mode in ("P", "L", "1"):
            arr = np.asarray(im)
            return arr.astype(np.uint8, copy=False)
        if mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.uint16, copy=False)
        if mode == "I":
            arr = np.asarray(im)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise ImageDecodeError("32-bit label map has values outside 0..65535", path=path)
            return arr.astype(np.uint16)
        if mode == "PA":
            return np.asarray(im.getchannel(0)).astype(np.uint8)
        raise ImageDecodeError(
            f"label map must be single-channel (palette, L or 16-bit), got mode {mode}", path=path
        )


def read_palette(path: str | Path) -> np.ndarray | None:
    """Returns the palette of a P-mode image as ``(N, 3) uint8``, or None for other modes."""
    with _open(path, None) as im:
        if im.mode != "P":
            return None
        pal = im.getpalette() or []
        return np.asarray(pal, dtype=np.uint8).reshape(-1, 3)


def read_rgb_png(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Decodes a colour-coded PNG (COCO panoptic) without any orientation change.

    Returns:
        ``(H, W, 3) uint8``.
    """
    with _open(path, max_pixels) as im:
        _load(im, path)
        if im.mode not in ("RGB", "RGBA"):
            raise ImageDecodeError(f"expected an RGB PNG, got mode {im.mode}", path=path)
        return np.asarray(im.convert("RGB") if im.mode == "RGBA" else im)


def write_label_png(path: str | Path, labels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Writes a label map losslessly and atomically.

    Args:
        path: Output file (``.png``).
        labels: ``(H, W)`` integer array; values must fit in uint8 when a palette is given and in
            uint16 otherwise.
        palette: ``(N <= 256, 3) uint8`` colours: writes a palette (P) PNG, as VOC does. Without a
            palette, uint8 data is written as L and wider data as 16-bit.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if palette is not None:
        if labels.size and int(labels.max()) > 255:
            raise ValueError("palette PNGs hold values 0..255 only")
        im = Image.fromarray(labels.astype(np.uint8), mode="P")
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: len(palette)] = palette[:256]
        im.putpalette(pal.reshape(-1).tolist())
    elif labels.dtype == np.uint8 or (labels.size and int(labels.max()) <= 255 and labels.dtype.itemsize == 1):
        im = Image.fromarray(labels.astype(np.uint8), mode="L")
    else:
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 65535):
            raise ValueError("label values must be in 0..65535")
        im = Image.fromarray(labels.astype(np.uint16))
    with atomic_open(path, "wb") as f:
        im.save(f, format="PNG", optimize=False, compress_level=1)


def write_rgb_png(path: str | Path, rgb: np.ndarray) -> None:
    """Writes ``(H, W, 3) uint8`` as an RGB PNG atomically."""
    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    with atomic_open(path, "wb") as f:
        im.save(f, format="PNG", compress_level=1)
