"""Forward throughput (images/s) of a few semantic models at 512² on this machine's CPU.

.venv/bin/python bench/model_throughput.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from segpipe.models.registry import build_model

MODELS = ["lraspp_mobilenet_v3_large", "deeplabv3_resnet50", "unet"]


def bench(name: str, batch: int, seconds: float) -> float:
    model = build_model(name, 21).eval()
    x = torch.randn(batch, 3, 512, 512)
    with torch.inference_mode():
        model(x)  # warm-up (allocator, oneDNN kernels)
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += 1
            el = time.perf_counter() - t0
            if el >= seconds and n >= 2:
                break
    return n * batch / el


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    print("| model | batch 1 img/s | batch 4 img/s |")
    print("|---|---|---|")
    for name in MODELS:
        r1, r4 = bench(name, 1, args.seconds), bench(name, 4, args.seconds)
        print(f"| {name} | {r1:.2f} | {r4:.2f} |", flush=True)


if __name__ == "__main__":
    main()
