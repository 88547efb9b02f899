"""Sliding-window overhead: segpipe's tiled predictor vs MONAI's sliding_window_inference.

A 4096² RGB image, 512² tiles, 25 % overlap, 21 classes and a stub 1×1-conv predictor (so the model
costs little and the tiling machinery shows). Each implementation runs in its own subprocess so peak
RSS (ru_maxrss) is its own. Overhead = total wall time − time spent inside the predictor.

    .venv/bin/python bench/tiling_vs_monai.py            # runs all variants, prints a Markdown table
    .venv/bin/python bench/tiling_vs_monai.py --repeat 3 # each variant 3 times, interleaved; keeps the fastest
    .venv/bin/python bench/tiling_vs_monai.py --impl monai  # one variant, prints JSON

Variants: ``segpipe-stream`` (labels in memory, float16 probabilities streamed to a null sink),
``segpipe`` (labels + float16 probabilities in memory), ``segpipe-labels`` (labels only, blending
probabilities), ``segpipe-labels-logits`` (labels only, blending logits: ``blend_logits=True``, the
closest to MONAI's work, which blends the raw outputs and returns them as float32), ``monai`` (the
input tensor made as users make it from an HWC image: ``permute`` + ``float``, which keeps channels-last
strides) and ``monai-contiguous`` (the same tensor made NCHW-contiguous first: MONAI's own overhead is
its stub calls are no faster either way) and ``monai-labels`` (then ``argmax(1)`` to a uint8 label map,
the same output as the ``segpipe-labels*`` variants). Imports happen before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

SIZE, TILE, OVERLAP, CLASSES, BATCH = 4096, 512, 0.25, 21, 4
IMPLS = (
    "segpipe-stream",
    "segpipe",
    "segpipe-labels",
    "segpipe-labels-logits",
    "monai",
    "monai-contiguous",
    "monai-labels",
)


class Stub(nn.Module):
    """1×1 conv whose forward time is accumulated in ``self.seconds``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, CLASSES, 1)
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        y = self.conv(x)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return y


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def run(impl: str) -> dict:
    torch.set_num_threads(2)
    img = _image()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stub = Stub().eval()
    # Imports before the clock starts: MONAI's takes seconds, which is not tiling overhead.
    if impl.startswith("monai"):
        from monai.inferers import sliding_window_inference
    else:
        from segpipe.models.checkpoint import CheckpointMeta
        from segpipe.models.predict import Predictor
    t0 = time.perf_counter()
    if impl.startswith("monai"):
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
        x = (x - mean) / std  # keeps the permuted (channels-last) strides of the HWC image
        if impl == "monai-contiguous":
            x = x.contiguous()  # NCHW: MONAI's windows are then copied out contiguously, much faster
        with torch.inference_mode():
            out = sliding_window_inference(x, (TILE, TILE), BATCH, stub, overlap=OVERLAP, mode="gaussian")
            if impl == "monai-labels":  # what a user who wants a label map does next
                out = out.argmax(1).to(torch.uint8)  # type: ignore[union-attr]
        shape = tuple(out.shape)  # type: ignore[union-attr]
    else:
        meta = CheckpointMeta(
            arch="stub", task="semantic", num_classes=CLASSES, tile_size=[TILE, TILE], tile_overlap=OVERLAP
        )
        pred = Predictor(
            stub, meta, device="cpu", batch_size=BATCH, threads=2, blend_logits=impl == "segpipe-labels-logits"
        )
        if impl in ("segpipe-labels", "segpipe-labels-logits"):
            res = pred.predict_semantic(img, keep_probs=False)
            shape = np.shape(res.labels)  # type: ignore[arg-type]
        elif impl == "segpipe-stream":

            class Null:
                def __setitem__(self, key: object, value: np.ndarray) -> None:
                    pass

            res = pred.predict_semantic(img, prob_sink=Null())  # labels in memory, probabilities streamed out
            shape = np.shape(res.labels)  # type: ignore[arg-type]
        else:
            res = pred.predict_semantic(img)  # labels + float16 probabilities in memory
            shape = np.shape(res.probs)  # type: ignore[arg-type]
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "impl": impl,
        "total_s": round(total, 2),
        "predictor_s": round(stub.seconds, 2),
        "overhead_s": round(total - stub.seconds, 2),
        "forward_calls": stub.calls,
        "peak_rss_mb": round(peak / 1024),
        "rss_before_mb": round(base_rss / 1024),
        "output": list(shape),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=IMPLS)
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant (interleaved); the fastest is kept")
    args = ap.parse_args()
    if args.impl:
        print(json.dumps(run(args.impl)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for impl in IMPLS:
            out = subprocess.run([sys.executable, __file__, "--impl", impl], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(r), file=sys.stderr, flush=True)
            if impl not in best or r["total_s"] < best[impl]["total_s"]:
                best[impl] = r
    rows = [best[i] for i in IMPLS]
    monai = best["monai"]["overhead_s"]
    monai_l = best["monai-labels"]["overhead_s"]
    print("| impl | total s | predictor s | overhead s | forward calls | peak RSS MB | RSS before MB | output |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['impl']} | {r['total_s']} | {r['predictor_s']} | {r['overhead_s']} | {r['forward_calls']} | "
            f"{r['peak_rss_mb']} | {r['rss_before_mb']} | {r['output']} |"
        )
    for r in rows[:-3]:
        print(
            f"{r['impl']}: overhead / MONAI's = {r['overhead_s'] / monai:.2f}, / MONAI-labels' = "
            f"{r['overhead_s'] / monai_l:.2f} (target <= 0.33); total / MONAI's total = "
            f"{r['total_s'] / best['monai']['total_s']:.2f}, peak RSS / MONAI's = "
            f"{r['peak_rss_mb'] / best['monai']['peak_rss_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
