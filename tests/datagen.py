"""Tiny COCO datasets made in the tests: polygons, RLE, crowd, overlaps, keypoints, real PNG images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mu


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.uint8)


def make_coco(
    root: Path,
    n_images: int = 6,
    *,
    seed: int = 0,
    objects: int = 4,
    overlaps: bool = True,
    crowd: bool = True,
    images: bool = True,
    size: tuple[int, int] = (48, 64),
    keypoints: bool = True,
) -> Path:
    """Writes ``root/annotations.json`` (+ ``root/images/*.png``); returns the JSON path.

    Objects alternate polygons (rectangles/triangles), compressed RLE (ellipses with a hole) and
    uncompressed RLE; with ``overlaps`` later objects may cover earlier ones.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    cats = [
        {"id": 1, "name": "person", "supercategory": "human", "keypoints": ["a", "b"], "skeleton": [[1, 2]]},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 7, "name": "tree", "supercategory": "plant"},
    ]
    imgs: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    aid = 100
    for i in range(n_images):
        iid = 10 + i * 3
        fname = f"img_{i:03d}.png"
        imgs.append({"id": iid, "file_name": fname, "width": w, "height": h, "license": 1})
        if images:
            (root / "images").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / fname)
        taken = np.zeros((h, w), bool)
        for k in range(objects):
            cat = int(rng.choice([1, 3, 7]))
            kind = k % 3
            if kind == 0:
                x0, y0 = rng.integers(0, w - 12), rng.integers(0, h - 12)
                x1, y1 = x0 + rng.integers(6, 12), y0 + rng.integers(6, 12)
                seg: Any = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
                if rng.random() < 0.5:  # a second part
                    seg.append([float(x0), float(y1 + 1), float(x0 + 3), float(y1 + 1), float(x0), float(y1 + 4)])
                m = mu.decode(mu.merge(mu.frPyObjects(seg, h, w)))
            else:
                m = _ellipse(h, w, rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(3, 8), rng.uniform(3, 8))
                cy, cx = np.argwhere(m).mean(0).round().astype(int)
                m[cy, cx] = 0  # a hole
                r = mu.encode(np.asfortranarray(m))
                if kind == 1:
                    seg = {"size": [h, w], "counts": r["counts"].decode()}
                else:
                    fl = m.flatten(order="F")
                    runs, cur, n = [], 0, 0
                    for v in fl:
                        if v != cur:
                            runs.append(n)
                            cur, n = v, 0
                        n += 1
                    runs.append(n)
                    seg = {"size": [h, w], "counts": [int(x) for x in runs]}
            if not overlaps and (taken & m.astype(bool)).any():
                continue
            taken |= m.astype(bool)
            rle = mu.encode(np.asfortranarray(m))
            ann = {
                "id": aid, "image_id": iid, "category_id": cat, "segmentation": seg,
                "area": float(mu.area(rle)), "bbox": [float(v) for v in mu.toBbox(rle)], "iscrowd": 0,
            }
            if cat == 1 and keypoints:
                ann["keypoints"] = [float(ann["bbox"][0]), float(ann["bbox"][1]), 2, 0, 0, 0]
                ann["num_keypoints"] = 1
            anns.append(ann)
            aid += 1
        if crowd and i % 3 == 0:
            m = _ellipse(h, w, h - 6, 6, 4, 4)
            r = mu.encode(np.asfortranarray(m))
            anns.append({"id": aid, "image_id": iid, "category_id": 1, "iscrowd": 1,
                         "segmentation": {"size": [h, w], "counts": r["counts"].decode()},
                         "area": float(mu.area(r)), "bbox": [float(v) for v in mu.toBbox(r)]})
            aid += 1
    data = {"info": {"description": "segpipe test"}, "licenses": [{"id": 1, "name": "CC0"}],
            "images": imgs, "annotations": anns, "categories": cats}
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path
