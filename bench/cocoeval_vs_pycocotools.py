"""COCO segm / bbox AP: segpipe (fast backend) vs pycocotools vs faster-coco-eval, side by side.

Generates a COCO ground truth (default 5,000 images of 640×480, ~7 objects each over 80 categories)
and ~700,000 jittered detections (true positives with geometric noise, confusions and random false
positives), then evaluates it in one run with each tool, each in its own subprocess (JSON loading
included), and prints wall time, CPU time (user + system of the tool's whole process tree), peak RSS
and the ratios to pycocotools. segpipe's 12 stats, precision and recall arrays must be bit-identical
to pycocotools' (asserted); faster-coco-eval's stats are compared and reported.

``--iou-type segm`` (default): ground-truth objects are masks (noisy rotated ellipses; polygons, some
two-part, 15 % compressed RLE, crowds as uncompressed RLE, as in COCO's instances files) and every
detection is a compressed RLE (a jittered copy of a ground-truth polygon, or a random blob),
rasterised with pycocotools' ``frPyObjects``. ``--iou-type bbox``: boxes only (the original set,
same generator and seed). With ``--workdir`` the generated JSON files are kept there (one folder per
iou type, size and seed) and reused by later runs; generating the full segm set takes a few minutes.

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

    python bench/cocoeval_vs_pycocotools.py --workdir /tmp/cocobench                    # segm, full size
    python bench/cocoeval_vs_pycocotools.py --images 500 --dets 70000 --workdir /tmp/cocobench  # reduced
    python bench/cocoeval_vs_pycocotools.py --iou-type bbox                              # the bbox set
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
GEN_VERSION = 1  # bump when a generator changes: the --workdir cache is keyed on it
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


def _ellipse_poly(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int) -> np.ndarray:
    """``(n, 2)`` vertices of a rotated ellipse with a little radial noise (a convex-ish blob)."""
    theta = rng.uniform(0, np.pi)
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi / n)
    r = rng.uniform(0.9, 1.1, n)
    ex, ey = rx * r * np.cos(a), ry * r * np.sin(a)
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([cx + c * ex - s * ey, cy + s * ex + c * ey], axis=1)


def _flat(poly: np.ndarray, w: int, h: int, decimals: int | None = 2) -> list[float]:
    """A COCO polygon ``[x0, y0, x1, y1, ...]`` clipped to the image."""
    p = np.clip(poly, 0, [w, h])
    if decimals is not None:
        p = p.round(decimals)
    return p.reshape(-1).tolist()


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major runs, starting with zeros) of a binary mask."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, change, flat.size]
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] else counts


def generate_segm(root: Path, n_images: int, n_dets: int, seed: int = 0) -> tuple[Path, Path]:
    """COCO instance segmentation ground truth and mask results (compressed RLE), like real COCO:

    * ground-truth objects are rotated, slightly noisy ellipses (6–24 vertices, box sizes as in the
      bbox set); 8 % are two-part objects (two polygons); crowds (1 %) are stored as uncompressed
      RLE (COCO's ``iscrowd=1`` format), 15 % of the other objects as compressed RLE, the rest as
      polygons; ``area`` and ``bbox`` are the mask's;
    * detections are compressed RLEs (string counts, as detectron2 writes them): true positives
      (60 %) rasterise the ground-truth polygons after a random scale, shift and per-vertex jitter
      (10 % with a wrong class); false positives are random ellipses.
    """
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    w, h = 640, 480
    cats = [{"id": c, "name": f"class{c}", "supercategory": ""} for c in range(1, 81)]
    images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h} for i in range(n_images)]
    n_gt = rng.poisson(7, n_images)
    anns = []
    gt_polys: list[list[tuple[int, list[np.ndarray], float, float]]] = []
    for i in range(n_images):
        objs = []
        for _ in range(int(n_gt[i])):
            bw = min(float(np.exp(rng.uniform(np.log(6), np.log(400)))), w - 1)
            bh = min(float(np.exp(rng.uniform(np.log(6), np.log(300)))), h - 1)
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            cat = int(rng.integers(1, 81))
            n = int(np.clip(round(np.sqrt(bw + bh) * 1.2), 6, 24))
            polys = [_ellipse_poly(rng, x + bw / 2, y + bh / 2, bw / 2, bh / 2, n)]
            if rng.random() < 0.08:  # a second part beside the first
                polys.append(
                    _ellipse_poly(rng, x + bw * rng.uniform(0, 1), y + bh * rng.uniform(0, 1), bw / 4, bh / 4, 8)
                )
            segm_poly = [_flat(p, w, h) for p in polys]
            rle = mask_utils.merge(mask_utils.frPyObjects(segm_poly, h, w))
            crowd = int(rng.random() < 0.01)
            if crowd:
                segm: object = {"size": [h, w], "counts": _uncompressed_counts(mask_utils.decode(rle))}
            elif rng.random() < 0.15:
                segm = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            else:
                segm = segm_poly
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat,
                    "segmentation": segm,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                    "iscrowd": crowd,
                }
            )
            objs.append((cat, polys, bw, bh))
        gt_polys.append(objs)
    per_image = rng.multinomial(n_dets, np.full(n_images, 1 / n_images))
    dets = []
    for i in range(n_images):
        objs = gt_polys[i]
        for _ in range(int(per_image[i])):
            r = rng.random()
            if objs and r < 0.6:  # jittered true positive (some with a wrong class)
                cat, polys, bw, bh = objs[int(rng.integers(len(objs)))]
                s = rng.uniform(0.02, 0.3)
                c = polys[0].mean(axis=0)
                scale = np.exp(rng.normal(0, s, 2))
                shift = rng.normal(0, s, 2) * (bw, bh)
                polys = [(p - c) * scale + c + shift + rng.normal(0, 0.15 * s, p.shape) * (bw, bh) for p in polys]
                if rng.random() < 0.1:
                    cat = int(rng.integers(1, 81))
                score = float(np.clip(rng.beta(5, 2) - s, 0.001, 1))
            else:  # random false positive
                cat = int(rng.integers(1, 81))
                bw, bh = rng.uniform(5, 300), rng.uniform(5, 250)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                polys = [_ellipse_poly(rng, x + bw / 2, y + bh / 2, bw / 2, bh / 2, 12)]
                score = float(rng.beta(2, 5))
            rles = mask_utils.frPyObjects([_flat(p, w, h, None) for p in polys], h, w)
            rle = rles[0] if len(rles) == 1 else mask_utils.merge(rles)
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": cat,
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    "score": round(score, 3),
                }
            )
    gt_path, dt_path = root / "gt.json", root / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


def run_tool(tool: str, gt: str, dt: str, out: str, iou_type: str) -> None:
    """Runs one tool end to end (JSON load included) and writes its stats."""
    import contextlib
    import io

    if tool == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(gt)
            d = g.loadRes(dt)
            e = COCOeval(g, d, iou_type)
            e.evaluate()
            e.accumulate()
            e.summarize()
        stats, precision, recall = e.stats, e.eval["precision"], e.eval["recall"]
    elif tool == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(gt)
            d = g.loadRes(dt)
            e = COCOeval_faster(g, d, iou_type, print_function=lambda *a, **k: None)
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
            r = evaluate_coco_files(gt, dt, iou_type, shards=1, backend=backend)[iou_type]
        else:
            import multiprocessing

            # spawn: workers do not inherit (and double-count in the tree peak) the driver's JSON, and
            # as direct children they are reaped here, so RUSAGE_CHILDREN counts their CPU time
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
                r = evaluate_coco_files(gt, dt, iou_type, shards=n, client=pool, backend=backend)[iou_type]
        stats, precision, recall = r.stats, r.precision, r.recall
    else:
        raise SystemExit(f"unknown tool {tool}")
    np.savez(
        out,
        stats=np.asarray(stats, dtype=np.float64),
        precision=np.asarray(precision, dtype=np.float64),
        recall=np.asarray(recall, dtype=np.float64),
    )


def measure(tool: str, gt: str, dt: str, out: str, iou_type: str) -> None:
    """A fresh process that runs the tool as its only child and reports RUSAGE_CHILDREN."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--run", tool, "--gt", gt, "--dt", dt, "--out", out, "--iou-type", iou_type],
        check=True,
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
    ap.add_argument("--iou-type", choices=("bbox", "segm"), default="segm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir",
        default=None,
        help="keep the generated JSON files here (one folder per iou type, size and seed) and reuse them",
    )
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--gt", help=argparse.SUPPRESS)
    ap.add_argument("--dt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        return run_tool(args.run, args.gt, args.dt, args.out, args.iou_type)
    if args.measure:
        return measure(args.measure, args.gt, args.dt, args.out, args.iou_type)

    tools = [t for t in args.tools.split(",") if t]
    if "faster-coco-eval" in tools:
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            tools.remove("faster-coco-eval")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        data = root
        if args.workdir is not None:  # a cache: reruns reuse the generated files
            data = (
                Path(args.workdir)
                / f"coco_{args.iou_type}_{args.images}img_{args.dets}det_seed{args.seed}_v{GEN_VERSION}"
            )
            data.mkdir(parents=True, exist_ok=True)
        gt, dt = data / "gt.json", data / "dt.json"
        t0 = time.perf_counter()
        if gt.exists() and dt.exists():
            how = "reused"
        else:
            gen = generate_segm if args.iou_type == "segm" else generate
            part = data / "part"
            part.mkdir(exist_ok=True)
            g, d = gen(part, args.images, args.dets, args.seed)
            d.replace(dt)
            g.replace(gt)
            part.rmdir()
            how = "generated"
        n_gt = len(json.loads(gt.read_text())["annotations"])
        print(
            f"{how} {args.images} images, {n_gt} GT objects, {args.dets} detections ({args.iou_type}; "
            f"gt {gt.stat().st_size / 2**20:.0f} MiB, results {dt.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - t0:.1f} s: {data}"
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
                + ["--iou-type", args.iou_type]
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
