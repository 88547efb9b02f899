"""COCO bbox AP: segpipe (fast backend) vs pycocotools vs faster-coco-eval, side by side.

Generates a COCO ground truth (default 5,000 images of 640×480, ~7 objects each over 80 categories)
and ~700,000 jittered detections (true positives with box noise, confusions and random false
positives), then evaluates it in one run with each tool, each in its own subprocess (JSON loading
included), and prints wall time, CPU time (user + system of the tool's whole process tree), peak RSS
and the ratios to pycocotools. segpipe's 12 stats, precision and recall arrays must be bit-identical
to pycocotools' (asserted); faster-coco-eval's stats are compared and reported.

Tools (``--tools``, comma separated):

* ``segpipe``: ``evaluate_coco_files(..., backend="fast")`` in one process (the default backend);
* ``segpipe-2``: the same with 2 image shards on a ``ProcessPoolExecutor(2)``;
* ``segpipe-pycocotools-2``: the reference backend (pycocotools' ``evaluate()`` on 2 shards);
* ``pycocotools``: plain ``COCO`` + ``loadRes`` + ``COCOeval``;
* ``faster-coco-eval``: ``COCOeval_faster`` (C++), skipped when not installed.

Peak RSS is reported two ways: ``ru_maxrss`` from ``getrusage(RUSAGE_CHILDREN)`` in a fresh
measuring process (the largest single process of the tool's tree), and the sum over the process tree
sampled every 50 ms (what the machine actually had to hold). CPU time comes from the same
``getrusage`` call; on a machine shared with other jobs it is the steadier figure, wall time is not.

    python bench/cocoeval_vs_pycocotools.py                             # full size
    python bench/cocoeval_vs_pycocotools.py --images 1000 --dets 140000  # reduced
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
        stats, precision, recall = e.stats, e.eval["precision"], e.eval["recall"]
    elif tool == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(gt)
            d = g.loadRes(dt)
            e = COCOeval_faster(g, d, "bbox", print_function=lambda *a, **k: None)
            e.evaluate()
            e.accumulate()
            e.summarize()
        stats, precision, recall = e.stats, e.eval["precision"], e.eval["recall"]
    elif tool.startswith("segpipe"):
        from concurrent.futures import ProcessPoolExecutor

        from segpipe.evaluation.cocoeval import evaluate_coco_files

        backend = "pycocotools" if "pycocotools" in tool else "fast"
        n = int(tool.rsplit("-", 1)[1]) if tool[-1].isdigit() else 1
        if n == 1:
            r = evaluate_coco_files(gt, dt, "bbox", shards=1, backend=backend)["bbox"]
        else:
            import multiprocessing

            # spawn: workers do not inherit (and double-count in the tree peak) the driver's JSON, and
            # as direct children they are reaped here, so RUSAGE_CHILDREN counts their CPU time
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
                r = evaluate_coco_files(gt, dt, "bbox", shards=n, client=pool, backend=backend)["bbox"]
        stats, precision, recall = r.stats, r.precision, r.recall
    else:
        raise SystemExit(f"unknown tool {tool}")
    np.savez(
        out,
        stats=np.asarray(stats, dtype=np.float64),
        precision=np.asarray(precision, dtype=np.float64),
        recall=np.asarray(recall, dtype=np.float64),
    )


def measure(tool: str, gt: str, dt: str, out: str) -> None:
    """A fresh process that runs the tool as its only child and reports RUSAGE_CHILDREN."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--run", tool, "--gt", gt, "--dt", dt, "--out", out], check=True
    )
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "user_s": ru.ru_utime,
                "sys_s": ru.ru_stime,
                "ru_maxrss_mb": ru.ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=700_000)
    ap.add_argument("--tools", default="segpipe,segpipe-2,pycocotools,faster-coco-eval")
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
        from importlib.metadata import version

        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
            f"python {platform.python_version()}, numpy {np.__version__}, pycocotools {version('pycocotools')}; "
            f"load average {os.getloadavg()[0]:.1f} (other jobs share the cores: compare cpu times)"
        )
        res = {}
        for tool in tools:
            out = str(root / f"{tool}.npz")
            load0 = os.getloadavg()[0]
            m = run_measured(
                [sys.executable, __file__, "--measure", tool, "--gt", str(gt), "--dt", str(dt), "--out", out]
            )
            load1 = os.getloadavg()[0]
            inner = json.loads(m["output"].strip().splitlines()[-1])  # type: ignore[union-attr]
            with np.load(out) as z:
                arrays = {k: z[k] for k in z.files}
            res[tool] = {**inner, "tree_peak_mb": m["peak_rss_mb"], **arrays}
            cpu = inner["user_s"] + inner["sys_s"]
            print(
                f"{tool:22} wall {inner['wall_s']:7.1f} s  cpu {cpu:7.1f} s (user {inner['user_s']:6.1f})  "
                f"ru_maxrss {inner['ru_maxrss_mb']:6.0f} MiB  tree peak {m['peak_rss_mb']:6.0f} MiB  "
                f"load {load0:.1f}->{load1:.1f}",
                flush=True,
            )
        ref = res.get("pycocotools")
        if ref is not None:
            ref_cpu = ref["user_s"] + ref["sys_s"]
            for tool, r in res.items():
                if tool == "pycocotools":
                    continue
                same = bool(np.array_equal(r["stats"], ref["stats"]))
                same_arrays = bool(
                    np.array_equal(r["precision"], ref["precision"]) and np.array_equal(r["recall"], ref["recall"])
                )
                diff = float(np.abs(r["stats"] - ref["stats"]).max())
                pdiff = float(np.abs(r["precision"] - ref["precision"]).max())
                print(
                    f"{tool:22} vs pycocotools: wall x{ref['wall_s'] / r['wall_s']:.2f} faster, cpu "
                    f"x{ref_cpu / (r['user_s'] + r['sys_s']):.2f} less, ru_maxrss "
                    f"x{r['ru_maxrss_mb'] / ref['ru_maxrss_mb']:.2f}, tree peak "
                    f"x{r['tree_peak_mb'] / ref['tree_peak_mb']:.2f}; stats bit-identical: {same} "
                    f"(max diff {diff:.1e}); precision+recall identical: {same_arrays} (precision max diff {pdiff:.1e})"
                )
                if tool.startswith("segpipe"):
                    assert same and same_arrays, f"{tool}'s results differ from pycocotools'"
        print("stats (pycocotools order):", np.round(next(iter(res.values()))["stats"], 4).tolist())

if __name__ == "__main__":
    main()
