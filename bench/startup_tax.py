"""Right-sized execution (issue 16 point 4): whole processes with default flags, side by side.

1. ``segpipe evaluate GT DT --task instance`` (default flags: segpipe decides in-process or a cluster)
   against a plain pycocotools script (``COCO`` + ``loadRes`` + ``COCOeval`` segm), both on the same
   1,500-image COCO segm set (the generator of ``cocoeval_vs_pycocotools.py``). Goal: >= 1.8x.
2. ``segpipe prelabel`` of 8 small images (default flags) against the model-only floor: a script that
   imports torch, loads the same checkpoint and runs the same 8 forward passes. Goal: within 2 s.
3. ``segpipe fsck`` of the resulting store (never starts a cluster).

Each figure is the median of ``--repeat`` whole-process wall times; the ratios are printed.

    python bench/startup_tax.py --workdir /tmp/startup        # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PYCOCO = """
import sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])
e = COCOeval(gt, dt, "segm"); e.evaluate(); e.accumulate(); e.summarize()
"""

MODEL_ONLY = """
import sys, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
from segpipe.models.checkpoint import load_checkpoint
from segpipe.models.registry import build_model
torch.set_num_threads(1)
ck = load_checkpoint(Path(sys.argv[1])); meta = ck.meta
model = build_model(meta.arch, meta.num_classes, **meta.model_kwargs)
model.load_state_dict({k.removeprefix("net."): v for k, v in ck.state_dict.items()}, strict=False)
model.eval()
mean = torch.tensor(meta.mean).view(1, 3, 1, 1); std = torch.tensor(meta.std).view(1, 3, 1, 1)
with torch.inference_mode():
    for p in sorted(Path(sys.argv[2]).glob("*.png")):
        x = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        model((x - mean) / std).argmax(1)
"""


def make_checkpoint(collection: Path, path: Path) -> None:
    """A small random-weight U-Net whose categories are the collection's (as the test suite makes it)."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    names = [ln.split(":")[0] for ln in (collection / "labelmap.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    torch.manual_seed(0)
    kw = {"base": 8, "depth": 2}
    meta = CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                          tile_size=[128, 128], tile_overlap=0.25, model_kwargs=kw)
    save_checkpoint(path, build_model("unet", len(cats), **kw), meta)


def wall(cmd: list[str], repeat: int, env: dict[str, str]) -> float:
    """Median whole-process wall time of ``cmd`` (raises when it fails)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/segpipe-startup")
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CI="1")
    segpipe = [sys.executable, "-m", "segpipe", "-q"]
    from cocoeval_vs_pycocotools import generate_segm

    coco_dir = work / f"coco-{args.images}"
    if not (coco_dir / "gt.json").exists():
        coco_dir.mkdir(exist_ok=True)
        gt, dt = generate_segm(coco_dir, args.images, args.images * 140)
        gt.rename(coco_dir / "gt.json")
        dt.rename(coco_dir / "dt.json")
    gt, dt = coco_dir / "gt.json", coco_dir / "dt.json"
    print(f"machine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}")

    sp = wall([*segpipe, "evaluate", str(gt), str(dt), "--task", "instance", "--iou-types", "segm"],
              args.repeat, env)
    pc = wall([sys.executable, "-c", PYCOCO, str(gt), str(dt)], args.repeat, env)
    print(f"evaluate {args.images} COCO segm: segpipe {sp:.2f} s, pycocotools {pc:.2f} s, "
          f"x{pc / sp:.2f} (goal >= 1.8)")

    small = work / "small"
    if not (small / "images").exists():
        subprocess.run([*segpipe, "synth", "streetview", str(small), "--n", "8", "--seed", "1"], env=env, check=True)
    ckpt = work / "unet.ckpt"
    if not ckpt.exists():
        make_checkpoint(small, ckpt)
    store = work / "s.zarr"
    pl = wall([*segpipe, "prelabel", str(small / "images"), "-m", str(ckpt), "-o", str(store), "--overwrite"],
              args.repeat, env)
    mo = wall([sys.executable, "-c", MODEL_ONLY, str(ckpt), str(small / "images")], args.repeat, env)
    print(f"prelabel 8 small images: segpipe {pl:.2f} s, model only (torch import + load + 8 forwards) {mo:.2f} s, "
          f"+{pl - mo:.2f} s (goal <= +2 s)")
    fs = wall([*segpipe, "fsck", str(store)], args.repeat, env)
    print(f"fsck of that store: {fs:.2f} s")
    (work / "startup.json").write_text(json.dumps({"evaluate_s": sp, "pycocotools_s": pc, "prelabel_s": pl,
                                                   "model_only_s": mo, "fsck_s": fs}, indent=2))


if __name__ == "__main__":
    main()
