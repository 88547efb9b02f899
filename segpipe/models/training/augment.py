"""Training-time augmentation of image/label-map pairs (numpy and PIL; seeded by the caller's generator)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def scale_crop(
    img: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    crop: tuple[int, int],
    scale: tuple[float, float],
    fill: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, horizontal flip and crop of an image and its label map.

    Where the scaled image is smaller than the crop it is padded: the image with 0, the labels with
    ``fill``. Draws from ``rng`` in a fixed order (scale, flip, y, x), so a seed gives the same crops.

    Args:
        img: ``(H, W, 3) uint8``.
        mask: ``(H, W) uint8`` labels.
        rng: The generator to draw from.
        crop: Output ``(h, w)``.
        scale: Range of the scale factor.
        fill: Label of padded pixels (the ignore label).

    Returns:
        ``(h, w, 3) uint8`` image and ``(h, w) uint8`` labels, C-contiguous.
    """
    s = rng.uniform(*scale)
    h, w = mask.shape
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    ch, cw = crop
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=fill)
    y = int(rng.integers(0, img.shape[0] - ch + 1))
    x = int(rng.integers(0, img.shape[1] - cw + 1))
    return np.ascontiguousarray(img[y : y + ch, x : x + cw]), np.ascontiguousarray(mask[y : y + ch, x : x + cw])


def flip_boxes_and_masks(boxes: np.ndarray, masks: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mirrors instance targets left-right in an image ``width`` pixels wide.

    Args:
        boxes: ``(N, 4) float32`` xyxy.
        masks: ``(N, H, W)`` masks.
        width: Image width ``W``.

    Returns:
        New boxes (xyxy again) and a mirrored view of the masks.
    """
    boxes = boxes.copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return boxes, masks[:, :, ::-1]
