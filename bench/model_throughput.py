"""Forward throughput (images/s) of a few semantic models at 512²: the bound pre-labeling is measured against.

.venv/bin/python bench/model_throughput.py [--threads N] [--seconds S]          # this machine's CPU
python3 bench/model_throughput.py --device cuda [--dtype bf16|fp16|fp32]        # a GPU: channels-last, autocast

On a GPU the timed loop synchronises once at the end (kernels are queued asynchronously) and the
input stays on the device, as segpipe's CUDA path keeps its batches there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import torch

from segpipe.models.registry import build_model

MODELS = ["lraspp_mobilenet_v3_large", "deeplabv3_resnet50", "unet"]


def bench(name: str, batch: int, seconds: float, device: str = "cpu", dtype: str = "fp32") -> float:
    model = build_model(name, 21).eval().to(device)
    x = torch.randn(batch, 3, 512, 512, device=device)
    cuda = device.startswith("cuda")
    if cuda:  # segpipe's CUDA path: channels-last model and input, autocast to bf16/fp16
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    ctx = torch.autocast("cuda", dtype=amp) if cuda and amp is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        for _ in range(3 if cuda else 1):
            model(x)  # warm-up (allocator, oneDNN / cuDNN kernels)
        if cuda:
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += 1
            if n % 8 == 0 or not cuda:
                if cuda:
                    torch.cuda.synchronize()
                el = time.perf_counter() - t0
                if el >= seconds and n >= 2:
                    break
    return n * batch / el


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="autocast dtype on a GPU")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        where = f"{torch.cuda.get_device_name(args.device)}, {args.dtype}"
    else:
        where = f"{platform.processor() or platform.machine()}, {args.threads} threads"
    print(f"# {where}, torch {torch.__version__}")
    print("| model | batch 1 img/s | batch 4 img/s |")
    print("|---|---|---|")
    for name in MODELS:
        r1 = bench(name, 1, args.seconds, args.device, args.dtype)
        r4 = bench(name, 4, args.seconds, args.device, args.dtype)
        print(f"| {name} | {r1:.2f} | {r4:.2f} |", flush=True)


if __name__ == "__main__":
    main()
