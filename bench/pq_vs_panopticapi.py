"""Panoptic quality: segpipe vs panopticapi(-lite) ``pq_compute`` on generated COCO panoptic pairs.

Generates ``--n`` (default 500) ground-truth / prediction pairs of 1024×2048 PNGs with COCO panoptic
JSONs (~60 segments per image over 20 thing and 13 stuff categories, VOID and crowd regions; the
prediction shifts, drops, splits and relabels segments), then evaluates them with both tools in one
run, each in its own subprocess using 2 processes (panopticapi: its multiprocessing pool of
``cpu_count()`` workers; segpipe: 2 shards on a ``ProcessPoolExecutor``), prints wall time and peak
RSS, and checks PQ/SQ/RQ (all, things, stuff) agree to 1e-9.

    python bench/pq_vs_panopticapi.py [--n 500] [--height 1024] [--width 2048]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import run_measured  # noqa: E402

THINGS = list(range(1, 21))
STUFF = list(range(101, 114))


def id2rgb(ids: np.ndarray) -> np.ndarray:
    a = ids.astype(np.uint32)
    return np.stack([a & 255, (a >> 8) & 255, (a >> 16) & 255], axis=-1).astype(np.uint8)


def make_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list, np.ndarray, list]:
    gt = np.zeros((h, w), np.uint32)
    segs: list[dict] = []
    used: set[int] = {0}

    def new_id() -> int:
        while True:
            i = int(rng.integers(1, 1 << 24))
            if i not in used:
                used.add(i)
                return i

    # stuff: horizontal bands of random heights
    y = 0
    while y < h:
        hh = int(rng.integers(h // 8, h // 3))
        sid = new_id()
        gt[y : y + hh] = sid
        segs.append({"id": sid, "category_id": int(rng.choice(STUFF)), "iscrowd": 0})
        y += hh
    # things: rectangles and ellipses
    yy, xx = np.ogrid[:h, :w]
    for k in range(int(rng.integers(30, 60))):
        bh, bw = int(rng.integers(16, h // 4)), int(rng.integers(16, w // 5))
        y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        sid = new_id()
        if k % 2:
            cy, cx = y0 + bh / 2, x0 + bw / 2
            m = ((yy[y0 : y0 + bh] - cy) / (bh / 2)) ** 2 + ((xx[:, x0 : x0 + bw] - cx) / (bw / 2)) ** 2 <= 1
            gt[y0 : y0 + bh, x0 : x0 + bw][m] = sid
        else:
            gt[y0 : y0 + bh, x0 : x0 + bw] = sid
        segs.append({"id": sid, "category_id": int(rng.choice(THINGS)), "iscrowd": int(rng.random() < 0.03)})
    # VOID strips
    for _ in range(3):
        x0 = int(rng.integers(0, w - 20))
        gt[:, x0 : x0 + int(rng.integers(2, 20))] = 0
    ids, counts = np.unique(gt, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    segs = [dict(s, area=area[s["id"]]) for s in segs if s["id"] in area]

    # prediction: shift, drop some, split some, relabel some
    pred = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-10, 11))), axis=(0, 1)).copy()
    psegs = []
    for s in segs:
        r = rng.random()
        if r < 0.08:
            pred[pred == s["id"]] = 0
            continue
        cat = s["category_id"]
        if r < 0.16:
            cat = int(rng.choice(THINGS if cat in THINGS else STUFF))
        psegs.append({"id": s["id"], "category_id": cat})
        if 0.16 <= r < 0.24:  # split off the right half as a new segment
            ys, xs = np.nonzero(pred == s["id"])
            if xs.size:
                sid = new_id()
                cut = (np.median(xs)).astype(int)
                sel = xs > cut
                pred[ys[sel], xs[sel]] = sid
                psegs.append({"id": sid, "category_id": cat})
    for _ in range(int(rng.integers(3, 10))):  # false positives
        bh, bw = int(rng.integers(8, 80)), int(rng.integers(8, 80))
        y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        sid = new_id()
        pred[y0 : y0 + bh, x0 : x0 + bw] = sid
        psegs.append({"id": sid, "category_id": int(rng.choice(THINGS))})
    present = set(np.unique(pred).tolist())
    psegs = [s for s in psegs if s["id"] in present]
    return gt, segs, pred, psegs


def generate(root: Path, n: int, h: int, w: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir()
    (root / "pred").mkdir()
    cats = [{"id": c, "name": f"thing{c}", "isthing": 1} for c in THINGS]
    cats += [{"id": c, "name": f"stuff{c}", "isthing": 0} for c in STUFF]
    gt_json = {"images": [], "annotations": [], "categories": cats}
    pred_json = {"annotations": []}
    for i in range(n):
        gt, segs, pred, psegs = make_pair(rng, h, w)
        name = f"{i:06d}.png"
        Image.fromarray(id2rgb(gt)).save(root / "gt" / name, compress_level=1)
        Image.fromarray(id2rgb(pred)).save(root / "pred" / name, compress_level=1)
        gt_json["images"].append({"id": i, "file_name": f"{i:06d}.jpg", "height": h, "width": w})
        gt_json["annotations"].append({"image_id": i, "file_name": name, "segments_info": segs})
        pred_json["annotations"].append({"image_id": i, "file_name": name, "segments_info": psegs})
    (root / "gt.json").write_text(json.dumps(gt_json))
    (root / "pred.json").write_text(json.dumps(pred_json))
    return root / "gt.json", root / "pred.json"


def run_tool(tool: str, gt: str, pred: str) -> None:
    if tool == "panopticapi":
        from panopticapi.evaluation import pq_compute

        with contextlib.redirect_stdout(io.StringIO()):
            r = pq_compute(gt, pred)
        out = {k.lower(): {m: float(r[k][m]) for m in ("pq", "sq", "rq", "n")} for k in ("All", "Things", "Stuff")}
    else:
        from concurrent.futures import ProcessPoolExecutor

        from segpipe.evaluation.panoptic import evaluate_panoptic_files

        with ProcessPoolExecutor(2) as pool:
            r = evaluate_panoptic_files(gt, pred, shards=2, client=pool)
        out = {"all": r.all, "things": r.things, "stuff": r.stuff}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--gt", help=argparse.SUPPRESS)
    ap.add_argument("--pred", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        return run_tool(args.run, args.gt, args.pred)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        gt, pred = generate(Path(tmp), args.n, args.height, args.width)
        print(
            f"generated {args.n} pairs of {args.height}x{args.width} in {time.perf_counter() - t0:.0f} s; "
            f"machine: {platform.machine()}, {os.cpu_count()} cores, no GPU"
        )
        res = {}
        for tool in ("segpipe", "panopticapi"):
            m = run_measured([sys.executable, __file__, "--run", tool, "--gt", str(gt), "--pred", str(pred)])
            res[tool] = (m, json.loads(m["output"].strip().splitlines()[-1]))  # type: ignore[union-attr]
            print(
                f"{tool:12} wall {m['wall_s']:7.1f} s  ({args.n / m['wall_s']:.1f} pairs/s)  "
                f"tree peak RSS {m['peak_rss_mb']:6.0f} MiB   all {res[tool][1]['all']}"
            )
        (ms, rs), (mp, rp) = res["segpipe"], res["panopticapi"]
        for group in ("all", "things", "stuff"):
            assert rs[group]["n"] == rp[group]["n"]
            for k in ("pq", "sq", "rq"):
                assert abs(rs[group][k] - rp[group][k]) <= 1e-9, (group, k, rs[group][k], rp[group][k])
        print(
            f"PQ/SQ/RQ equal to 1e-9: True; segpipe x{mp['wall_s'] / ms['wall_s']:.2f} faster, "
            f"peak RSS x{ms['peak_rss_mb'] / mp['peak_rss_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
