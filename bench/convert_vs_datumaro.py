"""COCO instances → Pascal VOC: segpipe vs Datumaro's `datum convert`, side by side in one run.

Generates a COCO instances dataset (default 2,000 images of 640×480, about 20 objects each, polygons
and RLE mixed, no image files), converts it with both tools, and prints the throughput ratio, the
peak-RSS ratio (whole process trees, sampled) and how many class PNGs are identical where both tools
represent the same thing (pixels compared by class name through each tool's labelmap).

    python bench/convert_vs_datumaro.py --datum /path/to/peer-venv/bin/datum [--images 2000]

Datumaro needs its own environment: ``python3 -m venv .venv-peers && .venv-peers/bin/pip install 'datumaro[cli]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from pycocotools import mask as mu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402

NAMES = ["person", "car", "bicycle", "dog", "tree", "bus", "sign", "bench"]


def generate(root: Path, n: int, per_image: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    yy, xx = np.mgrid[:h, :w]
    cats = [{"id": i + 1, "name": nm, "supercategory": ""} for i, nm in enumerate(NAMES)]
    images, anns = [], []
    aid = 1
    for i in range(n):
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
        for k in range(per_image):
            cat = int(rng.integers(1, len(NAMES) + 1))
            if k % 2 == 0:  # polygon: a random convex-ish star
                cx, cy = rng.uniform(30, w - 30), rng.uniform(30, h - 30)
                r = rng.uniform(8, 30, size=8)
                ang = np.sort(rng.uniform(0, 2 * np.pi, size=8))
                poly = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).ravel().round(2).tolist()
                rle = mu.merge(mu.frPyObjects([poly], h, w))
                seg = [poly]
            else:  # RLE: an ellipse
                cx, cy = rng.uniform(30, w - 30), rng.uniform(30, h - 30)
                rx, ry = rng.uniform(6, 30, size=2)
                x0, x1 = int(max(cx - rx - 1, 0)), int(min(cx + rx + 2, w))
                y0, y1 = int(max(cy - ry - 1, 0)), int(min(cy + ry + 2, h))
                m = np.zeros((h, w), np.uint8)
                m[y0:y1, x0:x1] = ((yy[y0:y1, x0:x1] - cy) / ry) ** 2 + ((xx[y0:y1, x0:x1] - cx) / rx) ** 2 <= 1
                rle = mu.encode(np.asfortranarray(m))
                seg = {"size": [h, w], "counts": rle["counts"].decode()}
            anns.append({"id": aid, "image_id": i + 1, "category_id": cat, "segmentation": seg, "iscrowd": 0,
                         "area": float(mu.area(rle)), "bbox": [float(v) for v in mu.toBbox(rle)]})
            aid += 1
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images" / "default").mkdir(parents=True, exist_ok=True)  # Datumaro insists on the folder
    path = root / "annotations" / "instances_default.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def labelmap_names(root: Path) -> list[str]:
    lines = (root / "labelmap.txt").read_text().splitlines()
    return [ln.split(":")[0] for ln in lines if ln.strip() and not ln.startswith("#")]


def _indices(path: Path) -> np.ndarray:
    """Class indices of a VOC class PNG: palette indices, or RGB mapped back through the VOC colormap."""
    from PIL import Image

    from segpipe.core.labelmap import voc_colormap

    im = Image.open(path)
    if im.mode == "P":
        return np.asarray(im)
    rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    cmap = voc_colormap(256).astype(np.int64)
    lut = {int(r) << 16 | int(g) << 8 | int(b): i for i, (r, g, b) in enumerate(cmap)}
    keys = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    uniq, inv = np.unique(keys, return_inverse=True)
    return np.array([lut.get(int(k), 0) for k in uniq], dtype=np.uint8)[inv].reshape(keys.shape)


def compare(a: Path, b: Path, src_json: Path, limit: int = 200) -> dict[str, float]:
    """Both tools' class PNGs against pycocotools' own rasterisation painted in annotation order.

    Returns the fraction of images where segpipe is pixel-identical to that reference, the fraction of
    object pixels each tool keeps (labelled with their class), and the agreement of the two tools on
    the pixels both label.
    """
    data = json.loads(src_json.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_img: dict[int, list] = {}
    for ann in data["annotations"]:
        by_img.setdefault(ann["image_id"], []).append(ann)
    na, nb = labelmap_names(a), labelmap_names(b)
    ta = np.array([*na, *["?"] * (256 - len(na))], dtype=object)
    tb = np.array([*nb, *["?"] * (256 - len(nb))], dtype=object)
    seg_exact = n = 0
    obj = kept_a = kept_b = both = agree = 0
    for img in data["images"][:limit]:
        stem = Path(img["file_name"]).stem
        pa, pb = a / "SegmentationClass" / f"{stem}.png", b / "SegmentationClass" / f"{stem}.png"
        if not pa.exists() or not pb.exists():
            continue
        h, w = img["height"], img["width"]
        ref = np.full((h, w), "", dtype=object)
        for ann in by_img.get(img["id"], []):
            seg = ann["segmentation"]
            r = mu.merge(mu.frPyObjects(seg, h, w)) if isinstance(seg, list) else \
                {"size": seg["size"], "counts": seg["counts"].encode()}
            ref[mu.decode(r).astype(bool)] = names[ann["category_id"]]
        la, lb = ta[_indices(pa)], tb[_indices(pb)]
        la[la == "background"] = ""
        lb[lb == "background"] = ""
        n += 1
        seg_exact += bool((la == ref).all())
        objm = ref != ""
        obj += int(objm.sum())
        kept_a += int((la == ref)[objm].sum())
        kept_b += int((lb == ref)[objm].sum())
        lab = (la != "") & (lb != "")
        both += int(lab.sum())
        agree += int((la == lb)[lab].sum())
    return {"images": n, "segpipe_identical_images": seg_exact / max(n, 1),
            "segpipe_object_pixels_kept": kept_a / max(obj, 1), "datumaro_object_pixels_kept": kept_b / max(obj, 1),
            "agreement_where_both_label": agree / max(both, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--datum", default=shutil.which("datum") or ".venv-peers/bin/datum")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-bench-convert-"))
    src = tmp / "coco"
    print(f"generating {args.images} images × {args.objects} objects in {src} ...", flush=True)
    generate(src, args.images, args.objects)
    env = dict(os.environ, CI="1")
    seg = run_measured([sys.executable, "-m", "segpipe", "-q", "convert", str(src), str(tmp / "seg_voc"),
                        "--to", "voc", "--images", "none", "-w", str(args.workers)], env=env)
    print(f"segpipe : {seg['wall_s']:.2f} s wall, {seg['cpu_s']:.2f} s CPU, peak RSS {seg['peak_rss_mb']:.0f} MiB")
    dat = run_measured([args.datum, "convert", "-i", str(src), "-if", "coco_instances", "-f", "voc_segmentation",
                        "-o", str(tmp / "dm_voc"), "--", "--label-map", "source"], env=env)
    print(f"datumaro: {dat['wall_s']:.2f} s wall, {dat['cpu_s']:.2f} s CPU, peak RSS {dat['peak_rss_mb']:.0f} MiB")
    if args.workers:
        one = run_measured([sys.executable, "-m", "segpipe", "-q", "convert", str(src), str(tmp / "seg_voc0"),
                            "--to", "voc", "--images", "none", "-w", "0"], env=env)
        print(f"segpipe in-process (-w 0): {one['wall_s']:.2f} s wall, {one['cpu_s']:.2f} s CPU, "
              f"peak RSS {one['peak_rss_mb']:.0f} MiB")
    cmp = compare(tmp / "seg_voc", tmp / "dm_voc", src / "annotations" / "instances_default.json")
    print(f"throughput ratio (segpipe / datumaro): {dat['wall_s'] / seg['wall_s']:.1f}x wall, "
          f"{dat['cpu_s'] / seg['cpu_s']:.1f}x per CPU second")
    print(f"peak RSS ratio   (segpipe / datumaro): {seg['peak_rss_mb'] / dat['peak_rss_mb']:.2f}x")
    print(f"class PNGs vs pycocotools' own rasterisation ({cmp['images']} images): segpipe identical on "
          f"{cmp['segpipe_identical_images']:.1%} of images, keeps {cmp['segpipe_object_pixels_kept']:.2%} of object "
          f"pixels; datumaro keeps {cmp['datumaro_object_pixels_kept']:.2%}; where both label a pixel they agree on "
          f"{cmp['agreement_where_both_label']:.2%}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
