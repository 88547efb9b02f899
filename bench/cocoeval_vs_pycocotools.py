"""COCO bbox AP: segpipe (sharded over 2 processes) vs pycocotools (and faster-coco-eval if installed).

Generates a COCO ground truth (default 5,000 images of 640×480, ~7 objects each over 80 categories)
and ~700,000 jittered detections (true positives with box noise, confusions and random false
positives), then evaluates it in one run with each tool, each in its own subprocess, and prints wall
time, peak RSS and the ratios. segpipe's 12 stats must be bit-identical to pycocotools'.

Peak RSS is reported two ways: ``ru_maxrss`` from ``getrusage(RUSAGE_CHILDREN)`` in a fresh
measuring process (the largest single process of the tool's tree), and the sum over the process tree
sampled every 50 ms (what the machine actually had to hold; segpipe runs a driver plus 2 workers).

    python bench/cocoeval_vs_pycocotools.py                       # full size
    python bench/cocoeval_vs_pycocotools.py --images 500 --dets 70000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _measure import run_measured  # noqa: E402


def generate(root: Path, n_images: int, n_dets: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    w, h = 640, 480
    cats = [{"id": c, "name": f"class{c}", "supercategory": ""} for c in range(1, 81)]
    images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h} for i in range(n_images)]
    n_gt = rng.poisson(7, n_images)
    anns = []
    gt_boxes: list[list[tuple[int, list[float]]]] = []
    for i in range(n_images):
        boxes = []
        for _ in range(int(n_gt[i])):
            bw, bh = (
                float(np.exp(rng.uniform(np.log(6), np.log(400)))),
                float(np.exp(rng.uniform(np.log(6), np.log(300)))),
            )
            bw, bh = min(bw, w - 1), min(bh, h - 1)
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            cat = int(rng.integers(1, 81))
            box = [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(rng.random() < 0.01),
                    "segmentation": [],
                }
            )
            boxes.append((cat, box))
        gt_boxes.append(boxes)
    per_image = rng.multinomial(n_dets, np.full(n_images, 1 / n_images))
    dets = []
    for i in range(n_images):
        boxes = gt_boxes[i]
        for _ in range(int(per_image[i])):
            r = rng.random()
            if boxes and r < 0.6:  # jittered true positive (some with a wrong class)
                cat, (x, y, bw, bh) = boxes[int(rng.integers(len(boxes)))]
                s = rng.uniform(0.02, 0.3)
                x += rng.normal(0, s * bw)
                y += rng.normal(0, s * bh)
                bw *= np.exp(rng.normal(0, s))
                bh *= np.exp(rng.normal(0, s))
                if rng.random() < 0.1:
                    cat = int(rng.integers(1, 81))
                score = float(np.clip(rng.beta(5, 2) - s, 0.001, 1))
            else:  # random false positive
                cat = int(rng.integers(1, 81))
                bw, bh = rng.uniform(5, 300), rng.uniform(5, 250)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                score = float(rng.beta(2, 5))
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": cat,
                    "bbox": [round(float(v), 2) for v in (x, y, bw, bh)],
                    "score": round(score, 3),
                }
            )
    gt_path, dt_path = root / "gt.json", root / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


def run_tool(tool: str, gt: str, dt: str, out: str) -> None:
    """Runs one tool end to end (JSON load included) and writes its stats."""
    import contextlib
    import io

    if tool == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(gt)
            d = g.loadRes(dt)
            e = COCOeval(g, d, "bbox")
            e.evaluate()
            e.accumulate()
            e.summarize()
        stats = e.stats
    elif tool == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(gt)
            d = g.loadRes(dt)
            e = COCOeval_faster(g, d, "bbox", print_function=lambda *a, **k: None)
            e.evaluate()
            e.accumulate()
            e.summarize()
        stats = e.stats
    elif tool.startswith("segpipe"):
        from concurrent.futures import ProcessPoolExecutor

        from segpipe.evaluation.cocoeval import evaluate_coco_files

        n = int(tool.split("-")[1]) if "-" in tool else 2
        if n == 1:
            stats = evaluate_coco_files(gt, dt, "bbox", shards=1)["bbox"].stats
        else:
            with ProcessPoolExecutor(n) as pool:
                stats = evaluate_coco_files(gt, dt, "bbox", shards=n, client=pool)["bbox"].stats
    else:
        raise SystemExit(f"unknown tool {tool}")
    np.save(out, np.asarray(stats, dtype=np.float64))


def measure(tool: str, gt: str, dt: str, out: str) -> None:
    """A fresh process that runs the tool as its only child and reports RUSAGE_CHILDREN."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--run", tool, "--gt", gt, "--dt", dt, "--out", out], check=True
    )
    wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall_s": wall, "ru_maxrss_mb": rss_kb / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=700_000)
    ap.add_argument("--tools", default="segpipe-2,pycocotools,faster-coco-eval")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--gt", help=argparse.SUPPRESS)
    ap.add_argument("--dt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        return run_tool(args.run, args.gt, args.dt, args.out)
    if args.measure:
        return measure(args.measure, args.gt, args.dt, args.out)

    tools = [t for t in args.tools.split(",") if t]
    if "faster-coco-eval" in tools:
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            tools.remove("faster-coco-eval")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        gt, dt = generate(root, args.images, args.dets)
        n_gt = len(json.loads(gt.read_text())["annotations"])
        print(
            f"generated {args.images} images, {n_gt} GT boxes, {args.dets} detections "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
            f"python {platform.python_version()}"
        )
        res = {}
        for tool in tools:
            out = str(root / f"{tool}.npy")
            m = run_measured(
                [sys.executable, __file__, "--measure", tool, "--gt", str(gt), "--dt", str(dt), "--out", out]
            )
            inner = json.loads(m["output"].strip().splitlines()[-1])  # type: ignore[union-attr]
            res[tool] = {
                "wall_s": inner["wall_s"],
                "ru_maxrss_mb": inner["ru_maxrss_mb"],
                "tree_peak_mb": m["peak_rss_mb"],
                "stats": np.load(out),
            }
            print(
                f"{tool:18} wall {inner['wall_s']:8.1f} s   ru_maxrss {inner['ru_maxrss_mb']:8.0f} MiB   "
                f"tree peak {m['peak_rss_mb']:8.0f} MiB"
            )
        ref = res.get("pycocotools")
        if ref is not None:
            for tool, r in res.items():
                if tool == "pycocotools":
                    continue
                same = np.array_equal(r["stats"], ref["stats"])
                diff = float(np.abs(r["stats"] - ref["stats"]).max())
                print(
                    f"{tool:18} vs pycocotools: time x{ref['wall_s'] / r['wall_s']:.2f} faster, "
                    f"ru_maxrss x{r['ru_maxrss_mb'] / ref['ru_maxrss_mb']:.2f}, tree peak "
                    f"x{r['tree_peak_mb'] / ref['tree_peak_mb']:.2f}; stats bit-identical: {same} (max diff {diff:.1e})"
                )
                if tool.startswith("segpipe"):
                    assert same, "segpipe's stats differ from pycocotools'"
        print("stats (pycocotools order):", np.round(next(iter(res.values()))["stats"], 4).tolist())


if __name__ == "__main__":
    main()
