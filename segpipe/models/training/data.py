"""Training data: the synth dataset layout, the validation split and the per-image training targets.

A dataset folder holds ``images/`` (photos), ``masks/`` (label-map PNGs paired with the photos by
stem; 255 is ignored), ``annotations.json`` (COCO: instance masks and keypoints) and ``labelmap.txt``
(``name:r,g,b::`` per class, background first). Semantic models learn from the masks, instance and
landmark models from the COCO annotations. Every mask reaches pycocotools through the validated path
of :mod:`segpipe.core.rle` (a malformed polygon or RLE is an :class:`~segpipe.errors.InputError`
naming its JSON path, never a crash or a garbage mask). Everything here is numpy; the tensors of a
step are made in :mod:`segpipe.models.training.batches`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.errors import InputError
from segpipe.models.training.augment import scale_crop
from segpipe.models.training.coco_checks import check_categories, check_images_and_annotations
from segpipe.storage.images import image_size, read_image, read_label_map

#: Mask value that marks pixels without a label: no loss, no metric.
IGNORE = 255

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: One image's targets (see :func:`coco_targets`).
Target = dict[str, Any]


@dataclass
class DatasetInfo:
    """A dataset folder in the synth layout."""

    root: Path
    images: list[Path]
    masks: list[Path | None]
    categories: list[dict[str, Any]]  # per model index, background first
    coco: dict[str, Any] | None


def read_labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Parses VOC-style ``name:r,g,b::`` lines (comments and blanks skipped).

    Raises:
        InputError: the file is not UTF-8, a line has no name, a malformed colour or a name an
            earlier line has (model classes are the lines in order: a repeated name would be two
            classes of one name), naming the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"is not UTF-8 text (byte {e.start})", path=path) from None
    out: list[tuple[str, tuple[int, int, int]]] = []
    seen: dict[str, int] = {}
    for no, ln in enumerate(text.splitlines(), 1):
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        name, _, rest = ln.partition(":")
        rgb = rest.split(":")[0]
        try:
            r, g, b = (int(v) for v in rgb.split(","))
        except ValueError:
            raise InputError(f"malformed labelmap line {ln!r} (expected name:r,g,b::)", path=path,
                             where=f"line {no}") from None
        if not name.strip():
            raise InputError(f"labelmap line {ln!r} has no class name", path=path, where=f"line {no}")
        if name in seen:
            raise InputError(f"class {name!r} is also named on line {seen[name]}", path=path, where=f"line {no}")
        seen[name] = no
        out.append((name, (r, g, b)))
    return out


def read_dataset(root: str | Path) -> DatasetInfo:
    """Reads a dataset folder (see the module docstring).

    Raises:
        InputError: no images, neither masks nor annotations, an ``annotations.json`` that is not
            a JSON object, or a malformed category in it.
    """
    root = Path(root)
    images = _list_images(root)
    for name in ("annotations.json", "labelmap.txt"):
        if (root / name).exists() and not (root / name).is_file():
            # Read as absent, it would silently train on the other file's classes.
            raise InputError("is not a file", path=root / name)
    masks = [root / "masks" / f"{p.stem}.png" for p in images]
    masks_or_none: list[Path | None] = [m if m.is_file() else None for m in masks]
    coco = _read_coco(root / "annotations.json")
    cats: list[dict[str, Any]] = []
    if (root / "labelmap.txt").is_file():
        cats = _labelmap_categories(root / "labelmap.txt", coco)
        if not cats:
            raise InputError("names no classes (one name:r,g,b:: line per class, background first)",
                             path=root / "labelmap.txt")
    elif coco is not None:
        cats = _coco_categories(coco)
    if not cats:
        raise InputError("dataset has neither labelmap.txt nor annotations.json", path=root)
    return DatasetInfo(root, images, masks_or_none, cats, coco)


def _list_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError("does not exist" if not root.exists() else "is not a folder", path=root,
                         hint="a dataset is a folder holding images/ and masks/ or annotations.json")
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise InputError("dataset has no images/ folder", path=root)
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError("images/ is empty", path=img_dir)
    return images


def _read_coco(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"is not UTF-8 text (byte {e.start})", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", path=path) from None
    if not isinstance(coco, dict):
        raise InputError(f"must be a COCO JSON object, got a JSON {type(coco).__name__}", path=path)
    check_categories(coco, path)  # every task reads them (labelmap.txt takes ids and thing flags from them)
    return coco


def _labelmap_categories(path: Path, coco: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Model classes in ``labelmap.txt`` order; ids and thing flags from the COCO categories of the same name."""
    coco_cats = {c["name"]: c for c in (coco or {}).get("categories", [])}
    cats = []
    for i, (name, rgb) in enumerate(read_labelmap(path)):
        cc = coco_cats.get(name, {})
        cats.append(
            {
                "index": i,
                "id": int(cc.get("id", i)),
                "name": name,
                "color": list(rgb),
                "isthing": bool(cc.get("isthing", i > 0)),
            }
        )
    return cats


def _coco_categories(coco: dict[str, Any]) -> list[dict[str, Any]]:
    """Background, then the COCO categories by id."""
    cats: list[dict[str, Any]] = [
        {"index": 0, "id": 0, "name": "background", "color": [0, 0, 0], "isthing": False}
    ]
    for i, c in enumerate(sorted(coco.get("categories", []), key=lambda c: c["id"])):
        cats.append(
            {
                "index": i + 1,
                "id": int(c["id"]),
                "name": c["name"],
                "color": c.get("color"),
                "isthing": bool(c.get("isthing", True)),
                "keypoints": c.get("keypoints", []),
            }
        )
    return cats


def split_for_validation(ds: DatasetInfo, val_dir: str | Path | None, seed: int) -> tuple[DatasetInfo, DatasetInfo]:
    """The training and validation sets: ``ds`` and ``val_dir``, or ``ds`` split.

    Without ``val_dir``, 10 % of the images (at least one; drawn with ``seed``) are held out; a
    one-image dataset validates on its training image.
    """
    if val_dir is not None:
        return ds, read_dataset(val_dir)
    n_val = max(1, len(ds.images) // 10) if len(ds.images) > 1 else 0
    perm = np.random.default_rng(seed).permutation(len(ds.images))
    val_idx, train_idx = sorted(perm[:n_val].tolist()), sorted(perm[n_val:].tolist())
    val = DatasetInfo(
        ds.root,
        [ds.images[i] for i in val_idx] or ds.images,
        [ds.masks[i] for i in val_idx] or ds.masks,
        ds.categories,
        ds.coco,
    )
    train = DatasetInfo(
        ds.root, [ds.images[i] for i in train_idx], [ds.masks[i] for i in train_idx], ds.categories, ds.coco
    )
    return train, val


def first_size(ds: DatasetInfo) -> tuple[int, int]:
    """``(height, width)`` of the first image, from its header."""
    w, h = image_size(ds.images[0])
    return h, w


def label_space(task: str, ds: DatasetInfo) -> tuple[int, list[str]]:
    """The model's ``num_classes`` and keypoint names for ``task``.

    Semantic and instance models have one output per category (background included); a landmark
    model has one per keypoint of the first COCO category that names keypoints.

    Raises:
        InputError: landmark training on a dataset without COCO keypoint categories.
    """
    if task != "landmarks":
        return len(ds.categories), []
    kcats = [c for c in (ds.coco or {}).get("categories", []) if c.get("keypoints")]
    if not kcats:
        raise InputError("landmark training needs COCO keypoint categories", path=ds.root / "annotations.json")
    names = list(kcats[0]["keypoints"])
    return len(names), names


# -- semantic: images and label maps ------------------------------------------------------------------


class SemanticSet:
    """The image/label-map pairs of a dataset, decoded once.

    Args:
        ds: The dataset; images without a mask are left out.
        crop: Training crop ``(h, w)``, with ``augment``.
        augment: :meth:`sample` scales, flips and crops at random.
        num_classes: Valid labels are ``0 .. num_classes-1`` and :data:`IGNORE`.

    Raises:
        InputError: no image has a mask, a mask's size differs from its image's, or a mask holds a
            label that is no class.
    """

    def __init__(self, ds: DatasetInfo, crop: tuple[int, int] | None, augment: bool, num_classes: int) -> None:
        pairs = [(i, m) for i, m in zip(ds.images, ds.masks, strict=True) if m is not None]
        if not pairs:
            raise InputError("no image has a mask in masks/ (paired by stem)", path=ds.root)
        # Decoded once: synth datasets are small, and decoding dominates CPU training otherwise.
        self.items = [_read_pair(i, m, num_classes) for i, m in pairs]
        self.crop = crop
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3) uint8`` image and ``(H, W) uint8`` labels, as stored."""
        return self.items[i]

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` for a training step: augmented with ``rng`` when the set augments."""
        img, mask = self.items[i]
        if self.augment and self.crop is not None:
            return scale_crop(img, mask, rng, self.crop, (0.75, 1.25), fill=IGNORE)
        return img, mask


def _read_pair(image: Path, mask: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3) uint8`` image and ``(H, W) uint8`` labels, once every label is a class or :data:`IGNORE`.

    Raises:
        InputError: a label is no class (a 16-bit value would otherwise wrap in uint8 and train on
            the wrong class), or the mask's size differs from the image's.
    """
    img = read_image(image)
    labels = read_label_map(mask)
    bad = labels[(labels >= num_classes) & (labels != IGNORE)]
    if bad.size:
        raise InputError(
            f"label {int(bad.max())} is not a class (the dataset has {num_classes}; {IGNORE} means unlabelled)",
            path=mask,
        )
    if labels.shape != img.shape[:2]:
        (h, w), (ih, iw) = labels.shape, img.shape[:2]
        raise InputError(f"mask is {w}x{h} pixels, its image {image.name} is {iw}x{ih}", path=mask)
    return img, labels.astype(np.uint8)


# -- instances and keypoints: COCO annotations ---------------------------------------------------------


def coco_targets(ds: DatasetInfo) -> list[Target]:
    """Per image (in ``ds.images`` order): boxes xyxy, model labels, masks, keypoints, size.

    Each target holds ``boxes (N, 4) float32`` (xyxy), ``labels (N,) int64`` (model indices),
    ``masks (N, H, W) uint8`` (None for an image that ``annotations.json`` does not list), ``kps (N, K, 3) float32``
    (x, y, visibility; None without keypoints), ``hw`` ``(H, W)`` as the COCO image says (None, like
    ``where``, the image's JSON path, for an image that is not in ``annotations.json``).
    Crowds, unknown categories and empty masks are left out.

    Raises:
        InputError: a missing or mistyped field, a dangling reference (see
            :func:`~segpipe.models.training.coco_checks.check_images_and_annotations`), or a polygon,
            RLE or keypoint list that is malformed, naming its JSON path.
    """
    coco = ds.coco or {}
    path = ds.root / "annotations.json"
    # Only here, not in read_dataset: semantic training never reads images or annotations.
    check_images_and_annotations(coco, path)
    id_to_index = {c["id"]: c["index"] for c in ds.categories if c["index"] > 0}
    by_name = {Path(im["file_name"]).name: (i, im) for i, im in enumerate(coco.get("images", []))}
    anns: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for j, a in enumerate(coco.get("annotations", [])):
        anns.setdefault(a["image_id"], []).append((j, a))
    out = []
    for p in ds.images:
        if p.name not in by_name:
            out.append(_no_target())
            continue
        i, im = by_name[p.name]
        out.append({**_image_target(im, anns.get(im["id"], []), id_to_index, path), "where": f"images[{i}]"})
    return out


def _no_target() -> Target:
    return {
        "boxes": np.zeros((0, 4), np.float32),
        "labels": np.zeros(0, np.int64),
        "masks": None,
        "kps": None,
        "hw": None,
    }


def _image_target(
    im: dict[str, Any], anns: list[tuple[int, dict[str, Any]]], id_to_index: dict[int, int], path: Path
) -> Target:
    h, w = im["height"], im["width"]
    boxes, labels, masks, kps = [], [], [], []
    for j, a in anns:
        if a.get("iscrowd") or a["category_id"] not in id_to_index:
            continue
        m = instance_mask(a.get("segmentation"), h, w, path, f"annotations[{j}].segmentation")
        if m is None or m.sum() == 0:
            continue
        x, y, bw, bh = a["bbox"]
        boxes.append([x, y, x + max(bw, 1), y + max(bh, 1)])
        labels.append(id_to_index[a["category_id"]])
        masks.append(m)
        if a.get("keypoints"):
            kps.append(_keypoints(a["keypoints"], path, f"annotations[{j}].keypoints"))
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "masks": np.stack(masks) if masks else np.zeros((0, h, w), np.uint8),
        "kps": np.stack(kps) if kps else None,
        "hw": (h, w),
    }


def instance_mask(seg: Any, h: int, w: int, path: Path, where: str) -> np.ndarray | None:
    """Decodes a COCO ``segmentation`` (polygons, RLE or uncompressed RLE) to ``(h, w) uint8``.

    Returns:
        The mask, or None when ``seg`` is neither a list nor an object (no mask to learn from).

    Raises:
        InputError: a polygon or RLE that :mod:`segpipe.core.rle` rejects (bad numbers, wrong size,
            counts that do not sum to ``h × w``), naming ``where`` in ``path``.
    """
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            why = rle_ops.check_polygon(poly)
            if why:
                raise InputError(why, path=path, where=f"{where}[{k}]")
        return rle_ops.decode(rle_ops.polygons_to_rle(seg, h, w))
    if isinstance(seg, dict):
        why = rle_ops.check_rle(seg, h, w)
        if why:
            raise InputError(why, path=path, where=where)
        return rle_ops.decode(seg)
    return None


def _keypoints(value: Any, path: Path, where: str) -> np.ndarray:
    """``(K, 3) float32`` from a COCO ``keypoints`` list ``[x1, y1, v1, ...]``."""
    ok = isinstance(value, list) and len(value) % 3 == 0
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise InputError("keypoints must be a list of numbers x, y, visibility per keypoint", path=path, where=where)
    return np.asarray(value, np.float32).reshape(-1, 3)


def heatmaps(kps: np.ndarray, h: int, w: int, k: int, sigma: float = 2.0) -> np.ndarray:
    """Gaussian heatmap targets at stride 4, the maximum over instances.

    Args:
        kps: ``(N, K', 3)`` keypoints (x, y, visibility) in input pixels; the first ``k`` are used.
        h: Heatmap height (input height / 4, rounded up).
        w: Heatmap width.
        k: Number of keypoints.
        sigma: Gaussian sigma in heatmap pixels.

    Returns:
        ``(k, h, w) float32``.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((k, h, w), np.float32)
    for inst in kps:
        for j, (x, y, v) in enumerate(inst[:k]):
            if v > 0:
                g = np.exp(-((xx - (x / 4 - 0.5)) ** 2 + (yy - (y / 4 - 0.5)) ** 2) / (2 * sigma**2))
                out[j] = np.maximum(out[j], g)
    return out
