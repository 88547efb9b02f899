"""Rendering kernels of the viewer: thumbnails and transparent overlay layers (numpy and Pillow only).

Every layer is an RGBA image of the same size as its photo's thumbnail, so the page stacks them and
toggles each on its own: the pre-label or ground-truth classes (filled, with crisp class boundaries),
the error map (pixels where the two disagree), instances (mask, box, class and score) and keypoints
(points and skeleton). Label maps are resized by nearest neighbour (a class never blends into
another); photos by area averaging.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "InstanceDraw",
    "boundaries",
    "class_lut",
    "colorize",
    "encode_jpeg",
    "encode_png",
    "error_layer",
    "fit_size",
    "font",
    "instances_layer",
    "keypoints_layer",
    "panoptic_layer",
    "placeholder",
    "resize_image",
    "resize_labels",
]

RGB = tuple[int, int, int]
#: Opacity of class fills; boundaries are drawn opaque. The page's opacity slider scales both.
FILL_ALPHA = 150
ERROR_RGBA = (255, 0, 40, 230)
#: Scored pixels that are right are darkened, so the wrong ones stand out whatever the photo's colours
#: (a red car under a red error mark would not).
RIGHT_RGBA = (0, 0, 0, 150)
#: Names of classes that are not drawn (their pixels stay transparent): what is not an object or region.
UNDRAWN = frozenset({"background", "_background_", "bg", "unlabeled", "unlabelled", "void"})


def fit_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """``(h, w)`` scaled to fit ``max_side`` (never enlarged; at least 1 pixel each)."""
    s = min(1.0, max_side / max(1, height, width))
    return max(1, round(height * s)), max(1, round(width * s))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A photo resized by area averaging.

    Args:
        image: ``(H, W, 3) uint8`` (or ``(H, W)`` grey).
        size: ``(h, w)``.

    Returns:
        ``(h, w, 3) uint8``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = np.ascontiguousarray(arr[..., :3].astype(np.uint8, copy=False))
    if arr.shape[:2] == size:
        return arr
    im = Image.fromarray(arr, mode="RGB").resize((size[1], size[0]), Image.Resampling.BOX)
    return np.asarray(im)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map resized by nearest neighbour (pixel centres).

    Args:
        labels: ``(H, W)`` integers.
        size: ``(h, w)``.

    Returns:
        ``(h, w)`` of the same dtype.
    """
    lab = np.asarray(labels)
    h, w = lab.shape[:2]
    if (h, w) == size:
        return lab
    ys = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return lab[ys[:, None], xs[None, :]]


def class_lut(colors: Mapping[int, RGB], names: Mapping[int, str] | None = None, *, top: int | None = None,
              alpha: int = FILL_ALPHA) -> np.ndarray:
    """A lookup table from class id to RGBA; ids without a colour (void, unknown) are transparent.

    Args:
        colors: ``{class id: (r, g, b)}``.
        names: ``{class id: name}``; classes named as in :data:`UNDRAWN` stay transparent.
        top: Table length (default: the largest id + 1, at least 256).
        alpha: Fill opacity.

    Returns:
        ``(top, 4) uint8``.
    """
    n = max([255, *colors]) + 1 if top is None else int(top)
    lut = np.zeros((n, 4), dtype=np.uint8)
    for cid, rgb in colors.items():
        if 0 <= cid < n and (names is None or str(names.get(cid, "")).lower() not in UNDRAWN):
            lut[cid] = (*rgb, alpha)
    return lut


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another value.

    Args:
        labels: ``(H, W)`` integers.

    Returns:
        ``(H, W) bool``.
    """
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    if lab.shape[0] > 1:
        d = lab[1:] != lab[:-1]
        edge[1:] |= d
        edge[:-1] |= d
    if lab.shape[1] > 1:
        d = lab[:, 1:] != lab[:, :-1]
        edge[:, 1:] |= d
        edge[:, :-1] |= d
    return edge


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """A label map as a transparent overlay: class colours filled, class boundaries opaque.

    Args:
        labels: ``(H, W)`` integer class ids (values beyond the table are transparent).
        lut: ``(N, 4) uint8`` from :func:`class_lut`.

    Returns:
        ``(H, W, 4) uint8``.
    """
    lab = np.asarray(labels).astype(np.int64)
    inside = (lab >= 0) & (lab < len(lut))
    out = lut[np.where(inside, lab, 0)]
    out[~inside] = 0
    edge = boundaries(lab) & (out[..., 3] > 0)
    out[edge, 3] = 255
    return out


def error_layer(gt: np.ndarray, pred: np.ndarray, ignore: Sequence[int] = (255,)) -> tuple[np.ndarray, float | None]:
    """Where a prediction disagrees with the ground truth.

    Args:
        gt: ``(H, W)`` ground-truth class ids.
        pred: ``(H, W)`` predicted class ids (same shape).
        ignore: Ground-truth values not scored (void).

    Returns:
        ``((H, W, 4) uint8`` red where wrong, darkened where right, transparent where not scored; the
        fraction of scored pixels that are wrong, or None when no pixel is scored).
    """
    g, p = np.asarray(gt), np.asarray(pred)
    valid = ~np.isin(g, np.asarray(list(ignore), dtype=np.int64))
    wrong = valid & (g != p)
    out = np.zeros((*g.shape, 4), dtype=np.uint8)
    out[valid & ~wrong] = RIGHT_RGBA
    out[wrong] = ERROR_RGBA
    n = int(valid.sum())
    return out, (float(wrong.sum()) / n if n else None)


def panoptic_layer(ids: np.ndarray, category_of: Mapping[int, int], colors: Mapping[int, RGB],
                   names: Mapping[int, str] | None = None) -> np.ndarray:
    """A panoptic map as an overlay: each segment in its class colour, shaded apart from its neighbours.

    Args:
        ids: ``(H, W)`` segment ids (0 = void).
        category_of: ``{segment id: category id}``.
        colors: ``{category id: (r, g, b)}``.
        names: ``{category id: name}`` (classes in :data:`UNDRAWN` stay transparent).

    Returns:
        ``(H, W, 4) uint8``.
    """
    seg = np.asarray(ids).astype(np.int64)
    out = np.zeros((*seg.shape, 4), dtype=np.uint8)
    for k, sid in enumerate(np.unique(seg)):
        if sid == 0 or int(sid) not in category_of:
            continue
        cid = category_of[int(sid)]
        if cid not in colors or (names and str(names.get(cid, "")).lower() in UNDRAWN):
            continue
        shade = 0.75 + 0.25 * ((k * 7) % 5) / 4  # segments of one class in shades of its colour
        rgb = tuple(min(255, int(v * shade)) for v in colors[cid])
        out[seg == sid] = (*rgb, FILL_ALPHA)
    edge = boundaries(seg) & (out[..., 3] > 0)
    out[edge, 3] = 255
    return out


@dataclass(frozen=True)
class InstanceDraw:
    """One object to draw on an instance layer.

    Attributes:
        category_id: Its class.
        box: ``(x, y, w, h)`` in pixels of the full image, or None.
        mask: ``(H, W) bool`` at the full image size, or None.
        score: Confidence, or None (ground truth).
        keypoints: ``(K, 3)`` ``x, y, v`` (v > 0: located), or None.
    """

    category_id: int
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    score: float | None = None
    keypoints: np.ndarray | None = None


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (the bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font, one size
        return ImageFont.load_default()


def instances_layer(objects: Sequence[InstanceDraw], full: tuple[int, int], size: tuple[int, int],
                    colors: Mapping[int, RGB], names: Mapping[int, str]) -> np.ndarray:
    """Instances as an overlay: mask filled, box outlined, ``class score`` tagged.

    Args:
        objects: What to draw, in z-order.
        full: ``(H, W)`` of the image the coordinates refer to.
        size: ``(h, w)`` of the layer.
        colors: ``{category id: (r, g, b)}``.
        names: ``{category id: name}``.

    Returns:
        ``(h, w, 4) uint8``.
    """
    sy, sx = size[0] / max(1, full[0]), size[1] / max(1, full[1])
    canvas = np.zeros((*size, 4), dtype=np.uint8)
    for o in objects:
        if o.mask is not None:
            small = resize_labels(np.asarray(o.mask, dtype=np.uint8), size).astype(bool)
            rgb = colors.get(o.category_id, (255, 255, 255))
            canvas[small] = (*rgb, 110)
            canvas[boundaries(small) & small] = (*rgb, 255)
    im = Image.fromarray(canvas, mode="RGBA")
    draw = ImageDraw.Draw(im)
    fnt = font(max(10, min(14, size[1] // 30)))
    for o in objects:
        if o.box is None:
            continue
        rgb = colors.get(o.category_id, (255, 255, 255))
        x, y, w, h = o.box
        x0, y0, x1, y1 = x * sx, y * sy, (x + w) * sx, (y + h) * sy
        draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=(*rgb, 255), width=2)
        tag = names.get(o.category_id, str(o.category_id)) + (f" {o.score:.2f}" if o.score is not None else "")
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), tag, font=fnt)
        ty = y0 - (ty1 - ty0) - 3 if y0 - (ty1 - ty0) - 3 >= 0 else y0
        draw.rectangle((x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 3), fill=(*rgb, 220))
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        draw.text((x0 + 2, ty + 1 - (ty0 - y0)), tag, font=fnt,
                  fill=(0, 0, 0, 255) if luminance > 150 else (255, 255, 255, 255))
    return np.asarray(im)


def keypoints_layer(objects: Sequence[InstanceDraw], skeleton: Sequence[tuple[int, int]], full: tuple[int, int],
                    size: tuple[int, int], colors: Mapping[int, RGB]) -> np.ndarray:
    """Keypoints as an overlay: skeleton lines, then points (numbered when there is room).

    Args:
        objects: Objects with ``keypoints``.
        skeleton: 1-based keypoint index pairs (COCO's convention).
        full: ``(H, W)`` of the image the coordinates refer to.
        size: ``(h, w)`` of the layer.
        colors: ``{category id: (r, g, b)}``.

    Returns:
        ``(h, w, 4) uint8``.
    """
    sy, sx = size[0] / max(1, full[0]), size[1] / max(1, full[1])
    im = Image.new("RGBA", (size[1], size[0]), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    r = max(2.0, min(size) / 80)
    fnt = font(max(9, int(2.6 * r)))
    for o in objects:
        if o.keypoints is None:
            continue
        kp = np.asarray(o.keypoints, dtype=np.float64).reshape(-1, 3)
        rgb = colors.get(o.category_id, (255, 255, 255))
        pts = [(x * sx, y * sy) if v > 0 else None for x, y, v in kp]
        for a, b in skeleton:
            pa = pts[a - 1] if 1 <= a <= len(pts) else None
            pb = pts[b - 1] if 1 <= b <= len(pts) else None
            if pa is not None and pb is not None:
                draw.line((pa, pb), fill=(*rgb, 255), width=max(1, int(r * 0.7)))
        for k, p in enumerate(pts):
            if p is None:
                continue
            draw.ellipse((p[0] - r, p[1] - r, p[0] + r, p[1] + r), fill=(255, 255, 255, 255), outline=(*rgb, 255),
                         width=max(1, int(r / 2)))
            if r >= 3:
                draw.text((p[0] + r + 1, p[1] - r), str(k + 1), font=fnt, fill=(255, 255, 255, 255),
                          stroke_width=1, stroke_fill=(0, 0, 0, 255))
    return np.asarray(im)


def placeholder(size: tuple[int, int], text: str) -> np.ndarray:
    """A grey panel that says why there is no photo.

    Args:
        size: ``(h, w)``.
        text: One short line (wrapped to the width).

    Returns:
        ``(h, w, 3) uint8``.
    """
    im = Image.new("RGB", (size[1], size[0]), (96, 96, 96))
    draw = ImageDraw.Draw(im)
    fnt = font(max(10, min(16, size[1] // 18)))
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if draw.textlength(trial, font=fnt) > size[1] - 12 and cur:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    lines.append(cur)
    y = max(4, size[0] // 2 - 10 * len(lines))
    for line in lines:
        draw.text((6, y), line, font=fnt, fill=(235, 235, 235))
        y += int(fnt.size * 1.3) if hasattr(fnt, "size") else 14
    return np.asarray(im)


def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an RGB or RGBA image (fast compression: these are many small files)."""
    arr = np.ascontiguousarray(rgba)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGBA" if arr.shape[-1] == 4 else "RGB").save(buf, format="PNG", compress_level=3,
                                                                           optimize=False)
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[..., :3]), mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
