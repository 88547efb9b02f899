"""Semantic mIoU throughput: segpipe's ConfusionMatrix vs torchmetrics' MulticlassJaccardIndex (CPU).

Generates label maps (default 200 maps of 1024×2048, 19 classes, Cityscapes-like: blocky regions,
5 % ignore pixels, a prediction with boundary noise), then times in one run:

- segpipe ``ConfusionMatrix.update`` on uint8 maps (numpy, one core);
- torchmetrics ``MulticlassJaccardIndex(19, ignore_index=255, average="macro")`` on int64 tensors
  (converted beforehand, so the conversion is not charged to it), with 1 thread and with all threads,
  with and without ``validate_args``;

checks that both give the same mIoU, and prints Mpx/s and the ratios.

    python bench/semantic_vs_torchmetrics.py [--n 200] [--height 1024] [--width 2048]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def make_pairs(n_distinct: int, h: int, w: int, c: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_distinct):
        coarse = rng.integers(0, c, (h // 64 + 1, w // 64 + 1), dtype=np.uint8)
        gt = np.kron(coarse, np.ones((64, 64), np.uint8))[:h, :w].copy()
        gt[rng.random((h, w)) < 0.05] = 255
        pred = np.roll(gt, 3, axis=1)
        noise = rng.random((h, w)) < 0.05
        pred[noise] = rng.integers(0, c, int(noise.sum()), dtype=np.uint8)
        pred[pred == 255] = 0
        out.append((gt, pred))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--distinct", type=int, default=4, help="distinct pairs generated and cycled through")
    args = ap.parse_args()

    import torch
    from torchmetrics.classification import MulticlassJaccardIndex

    from segpipe.core.metrics import ConfusionMatrix

    c = args.classes
    pairs = make_pairs(args.distinct, args.height, args.width, c)
    mpx = args.n * args.height * args.width / 1e6
    print(
        f"{args.n} maps of {args.height}x{args.width}, {c} classes ({mpx:.0f} Mpx); machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, no GPU; numpy {np.__version__}, torch {torch.__version__}"
    )

    cm = ConfusionMatrix(c, ignore_index=255)
    t0 = time.perf_counter()
    for i in range(args.n):
        g, p = pairs[i % len(pairs)]
        cm.update(g, p)
    ours = cm.compute()
    t_ours = time.perf_counter() - t0
    print(
        f"segpipe ConfusionMatrix (1 core)          {t_ours:7.2f} s  {mpx / t_ours:8.0f} Mpx/s  "
        f"mIoU {ours['mean_iou']:.6f}"
    )

    tensors = [(torch.from_numpy(g.astype(np.int64)), torch.from_numpy(p.astype(np.int64))) for g, p in pairs]
    results = {}
    for threads in (1, os.cpu_count() or 1):
        for validate in (True, False):
            torch.set_num_threads(threads)
            metric = MulticlassJaccardIndex(num_classes=c, ignore_index=255, average="macro", validate_args=validate)
            t0 = time.perf_counter()
            for i in range(args.n):
                g, p = tensors[i % len(tensors)]
                metric.update(p, g)
            value = float(metric.compute())
            dt = time.perf_counter() - t0
            results[(threads, validate)] = dt
            print(
                f"torchmetrics ({threads} thread{'s' if threads > 1 else ''}, validate_args={validate!s:5})"
                f" {dt:7.2f} s  {mpx / dt:8.0f} Mpx/s  mIoU {value:.6f}"
            )
            assert abs(value - ours["mean_iou"]) < 1e-5, "mIoU differs"  # torchmetrics computes in float32
    for (threads, validate), dt in results.items():
        print(f"segpipe (1 core) vs torchmetrics ({threads} thr, validate={validate}): x{dt / t_ours:.2f} faster")
    print(f"segpipe per core: {mpx / t_ours:.0f} Mpx/s")


if __name__ == "__main__":
    main()
