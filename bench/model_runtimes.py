"""One model, three runtimes, side by side on the CPU; and the prompted path with the embedding reused or not.

.venv/bin/python bench/model_runtimes.py [--threads N] [--seconds S] [--size PX] [--boxes K] [--json OUT]

Part 1: for LR-ASPP (``lraspp_mobilenet_v3_large``) and U-Net (``unet``), registered segpipe
architectures built with random weights (21 classes), images/s of one ``(1, 3, PX, PX)`` input through

* torch eager (``model(x)`` under ``inference_mode``),
* TorchScript (``torch.jit.trace`` then ``torch.jit.freeze``: what a user's ``torch.jit.save`` file runs as),
* ONNX Runtime (``torch.onnx.export``, opset 17, then an ``InferenceSession`` on the CPU provider with
  ``intra_op_num_threads`` = ``--threads``: what segpipe's ONNX source runs),

each timed for ``--seconds`` after one warm-up pass, with the same torch / ORT thread count, and the
ratios against eager. The largest absolute difference of each runtime's logits from eager's is printed
so a fast-but-wrong export shows.

Part 2: SAM box prompts through segpipe's own prompted predictor
(:class:`segpipe.models.predictors.prompted.PromptedPredictor`), masks/s for ``--boxes`` boxes on one
``PX × PX`` image: the image embedding computed once and reused for every box (what ``prelabel
--prompts`` does), against the embedding recomputed for each box (what a loop over
``SamModel(pixel_values, input_boxes=[box])`` does). The SAM is random-weight, built from its config at
SAM's real input resolution (1024) with a reduced ViT (``--sam-hidden``, ``--sam-layers``; 768 and 12 are
ViT-B), so its encoder cost is real in shape but not in size: the ratio grows with the encoder.

The machine may be shared: the 1-minute load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.models.registry import build_model

MODELS = ["lraspp_mobilenet_v3_large", "unet"]


def timed(fn: Callable[[], Any], seconds: float, min_calls: int = 2) -> float:
    """Calls per second of ``fn`` over at least ``seconds`` (and at least ``min_calls`` calls)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= min_calls:
            return n / el


def interleaved(fns: dict[str, Callable[[], Any]], seconds: float, rounds: int, *, warm: bool = True,
                min_calls: int = 2) -> dict[str, float]:
    """Calls per second of each of ``fns``: the median of ``rounds`` rounds, the runtimes taking turns.

    On a shared machine the load drifts; taking turns in short rounds gives each runtime the same share
    of it, where timing one runtime after the other would hand one of them the quiet minute.
    """
    for fn in fns.values() if warm else ():
        fn()  # warm-up (allocator, oneDNN kernels, ORT's first run)
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            runs[k].append(timed(fn, seconds / rounds, min_calls))
    return {k: float(np.median(v)) for k, v in runs.items()}


def runtimes(name: str, size: int, seconds: float, threads: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """Images/s of ``name`` under eager, TorchScript and ONNX Runtime, and each one's max |Δ| from eager."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(name, 21).eval()
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        ref = model(x).numpy()
    out: dict[str, Any] = {"model": name, "input": [1, 3, size, size]}
    with torch.no_grad():
        script = torch.jit.freeze(torch.jit.trace(model, x).eval())
        out["torchscript_max_abs_diff"] = float(np.abs(script(x).numpy() - ref).max())
    path = tmp / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    out["onnxruntime_max_abs_diff"] = float(np.abs(sess.run(None, {"input": xn})[0] - ref).max())

    def eager() -> None:
        with torch.inference_mode():
            model(x)

    def scripted() -> None:
        with torch.no_grad():
            script(x)

    out.update(interleaved({"eager": eager, "torchscript": scripted,
                            "onnxruntime": lambda: sess.run(None, {"input": xn})}, seconds, rounds))
    return out


def build_sam(folder: Path, hidden: int, layers: int) -> None:
    """A random-weight SAM at SAM's input resolution (1024) with a ``layers``-deep, ``hidden``-wide ViT."""
    from transformers import SamConfig, SamModel, SamProcessor, SamVisionConfig

    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    glob = [i for i in range(layers) if i % 3 == 2] or [layers - 1]  # ViT-B: global attention every 3rd block
    vision = SamVisionConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             mlp_dim=4 * hidden, global_attn_indexes=glob)
    SamModel(SamConfig(vision_config=vision.to_dict())).eval().save_pretrained(folder)
    from transformers import SamImageProcessor

    SamProcessor(image_processor=SamImageProcessor()).save_pretrained(folder)


def prompted(size: int, boxes: int, threads: int, hidden: int, layers: int, seconds: float, rounds: int,
             tmp: Path) -> dict[str, Any]:
    """Masks/s of ``boxes`` boxes on one image: embedding reused for all of them vs recomputed for each."""
    from segpipe.models.predictors.prompted import PromptedPredictor

    folder = tmp / "sam"
    build_sam(folder, hidden, layers)
    pred = PromptedPredictor(folder, device="cpu", threads=threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    x0 = rng.uniform(0, size * 0.6, (boxes, 2))
    wh = rng.uniform(16, size * 0.4, (boxes, 2))
    bxs = np.concatenate([x0, x0 + wh], 1)

    def reused() -> None:
        pred.segment(pred.embed(image), bxs)

    def recomputed() -> None:
        for b in bxs:
            pred.segment(pred.embed(image), b[None])

    pred.segment(pred.embed(image), bxs[:1])  # warm-up
    # one call of each per round: a recomputed call is `boxes` encoder passes already
    rates = interleaved({"reused": reused, "recomputed": recomputed}, 0.0, rounds, warm=False, min_calls=1)
    passes = {}
    for k, fn in (("reused", reused), ("recomputed", recomputed)):
        n0 = pred.encoder_passes
        fn()
        passes[k] = pred.encoder_passes - n0
    # the same masks up to float rounding at their edges (a decoder pass of 16 boxes vs one of 1 box)
    m1, _ = pred.segment(pred.embed(image), bxs)
    m2 = np.concatenate([pred.segment(pred.embed(image), b[None])[0] for b in bxs])
    return {"image": [size, size], "boxes": boxes, "vit": {"hidden": hidden, "layers": layers, "input": 1024},
            "reused_masks_s": boxes * rates["reused"], "recomputed_masks_s": boxes * rates["recomputed"],
            "encoder_passes": passes,
            "masks_equal_fraction": float((m1 == m2).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seconds", type=float, default=6.0, help="per runtime, split over --rounds")
    ap.add_argument("--rounds", type=int, default=3, help="rounds the runtimes take turns in (median kept)")
    ap.add_argument("--size", type=int, default=512, help="input side of part 1 and the image side of part 2")
    ap.add_argument("--boxes", type=int, default=16, help="boxes on the image (part 2)")
    ap.add_argument("--sam-hidden", type=int, default=256)
    ap.add_argument("--sam-layers", type=int, default=4)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"{args.threads} threads, torch {torch.__version__}; load average {load0[0]:.2f} {load0[1]:.2f} "
          f"{load0[2]:.2f}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = [runtimes(name, args.size, args.seconds, args.threads, args.rounds, tmp) for name in MODELS]
        print(f"\n| model ({args.size}², batch 1) | eager img/s | TorchScript img/s | ONNX Runtime img/s | "
              "TorchScript / eager | ORT / eager | max abs Δ TS, ORT |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['eager']:.2f} | {r['torchscript']:.2f} | {r['onnxruntime']:.2f} | "
                  f"{r['torchscript'] / r['eager']:.2f}× | {r['onnxruntime'] / r['eager']:.2f}× | "
                  f"{r['torchscript_max_abs_diff']:.1e}, {r['onnxruntime_max_abs_diff']:.1e} |")
        p = prompted(args.size, args.boxes, args.threads, args.sam_hidden, args.sam_layers, args.seconds,
                     args.rounds, tmp)
    print(f"\n| SAM box prompts ({args.boxes} boxes, {args.size}² image, ViT {args.sam_layers}×{args.sam_hidden} "
          "at 1024) | masks/s | encoder passes |")
    print("|---|---|---|")
    print(f"| embedding reused (segpipe) | {p['reused_masks_s']:.2f} | {p['encoder_passes']['reused']} |")
    print(f"| embedding recomputed per box | {p['recomputed_masks_s']:.2f} | {p['encoder_passes']['recomputed']} |")
    print(f"\nreused / recomputed: {p['reused_masks_s'] / p['recomputed_masks_s']:.1f}×; "
          f"mask pixels equal between the two: {p['masks_equal_fraction']:.6f}")
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runtimes": rows, "prompted": p, "load_before": load0,
                                         "load_after": load1, "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
