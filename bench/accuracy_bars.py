"""Accuracy bars of issue 4 on held-out synthetic data, each with the wall time it took.

* ``instance``: Mask R-CNN (MobileNetV3-FPN, light RoI heads, anchors sized for the objects) trained
  from scratch on synth ``landmarks`` quads (one thing class, 128², seed 1) within a CPU budget; the
  best epoch is picked on a validation set (seed 2); it then runs through segpipe's ``Predictor`` on
  a held-out test set (seed 3), written as a COCO results JSON and scored
  with ``segpipe evaluate GT PRED --task instance --iou-types segm``. Bar: mask AP50 >= 0.5 within
  10 CPU minutes of training.
* ``landmarks``: the stacked hourglass trained on synth ``landmarks``; PCK@0.05 on a held-out set
  through :class:`segpipe.evaluation.keypoints.LandmarkAccumulator` (same seeds as above). The images hold 1-3 quads, so
  each ground-truth instance is decoded top-down inside its (GT) box grown by 25 %, the usual
  protocol for single-instance heatmap models; PCK's normalisation length is the image's longer side
  (``pck_image``) and, stricter, the instance's box diagonal (``pck_bbox``). Bar: PCK@0.05 >= 0.8.

    .venv/bin/python bench/accuracy_bars.py                      # both bars, full budgets (9 + 6 min)
    .venv/bin/python bench/accuracy_bars.py --bar instance --minutes 2 --n-train 64 --n-val 16

Prints one JSON line per bar (the last line of output is the summary of all bars run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _synth(kind: str, out: Path, n: int, seed: int, size: tuple[int, int]) -> None:
    from segpipe.synth import synth

    if not (out / "annotations.json").is_file():
        synth(kind, out, n=n, seed=seed, size=size)


def instance_bar(
    work: Path, minutes: float, n_train: int, n_val: int, size: int, epochs: int, batch: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Trains Mask R-CNN and scores it with ``segpipe evaluate``; returns the figures."""
    import torch

    from segpipe.models.predict import Predictor
    from segpipe.models.train import train
    from segpipe.storage.images import read_image

    torch.set_num_threads(2)
    tr, va, te = work / "inst_train", work / "inst_val", work / "inst_test"
    _synth("landmarks", tr, n_train, 1, (size, size))
    _synth("landmarks", va, n_val, 2, (size, size))  # picks the best epoch
    _synth("landmarks", te, n_val, 3, (size, size))  # scored once, at the end
    kw = {
        "min_size": size,
        "max_size": size,
        "anchor_sizes": [16, 32, 64, 128],
        "head_channels": 64,
        "box_batch_size_per_image": 32,
        "rpn_batch_size_per_image": 128,
        "rpn_pre_nms_top_n_train": 300,
        "rpn_post_nms_top_n_train": 100,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 100,
    }
    out = work / "inst_model"
    t0 = time.perf_counter()
    res = train(
        tr,
        "maskrcnn_mobilenet_v3",
        out,
        epochs=epochs,
        max_minutes=minutes,
        val_dir=va,
        seed=seed,
        batch_size=batch,
        lr=1e-3,
        device="cpu",
        progress=False,
        model_kwargs=kw,
        warmup_iters=20,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    train_s = time.perf_counter() - t0
    assert res.best_path is not None
    t1 = time.perf_counter()
    pred = Predictor.from_checkpoint(res.best_path, device="cpu", score_thresh=0.05, threads=2)
    gt = json.loads((te / "annotations.json").read_text())
    results = []
    for im in gt["images"]:
        p = pred.predict_instances(read_image(te / "images" / im["file_name"]))
        for rle, box, sc, cid in zip(p.rles, p.boxes, p.scores, p.category_ids, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": im["id"],
                    "category_id": int(cid),
                    "segmentation": rle,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(sc),
                }
            )
    rpath = work / "inst_results.json"
    rpath.write_text(json.dumps(results))
    predict_s = time.perf_counter() - t1
    report = work / "inst_report.json"
    cmd = [
        str(Path(sys.executable).parent / "segpipe"),
        "evaluate",
        str(te / "annotations.json"),
        str(rpath),
        "--task",
        "instance",
        "--iou-types",
        "segm",
        "--json",
        str(report),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rep = json.loads(report.read_text()) if report.is_file() else {}
    return {
        "bar": "instance",
        "ap50": _find(rep, "AP50"),
        "ap": _find(rep, "AP"),
        "train_val_history": res.history,
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 1),
        "detections": len(results),
        "evaluate_cmd": " ".join(cmd),
        "evaluate_rc": proc.returncode,
        "threshold": 0.5,
    }


def _find(rep: Any, key: str) -> float | None:
    """First ``key`` in the (nested) ``segpipe evaluate`` report (segm section)."""
    if isinstance(rep, dict):
        for k in ("segm", "instance", "metrics", "summary"):
            if k in rep:
                v = _find(rep[k], key)
                if v is not None:
                    return v
        if key in rep and isinstance(rep[key], int | float):
            return float(rep[key])
        for v in rep.values():
            f = _find(v, key)
            if f is not None:
                return f
    return None


def landmark_bar(
    work: Path,
    minutes: float,
    n_train: int,
    n_val: int,
    size: int,
    epochs: int,
    channels: int,
    stacks: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Trains the hourglass and measures PCK@0.05 through the tiled predictor."""
    import torch

    from segpipe.evaluation.keypoints import LandmarkAccumulator
    from segpipe.models.predict import Predictor
    from segpipe.models.train import train
    from segpipe.storage.images import read_image

    torch.set_num_threads(2)
    tr, va, te = work / "lm_train", work / "lm_val", work / "lm_test"
    _synth("landmarks", tr, n_train, 1, (size, size))
    _synth("landmarks", va, n_val, 2, (size, size))  # picks the best epoch
    _synth("landmarks", te, n_val, 3, (size, size))  # scored once, at the end
    out = work / "lm_model"
    t0 = time.perf_counter()
    res = train(
        tr,
        "hourglass",
        out,
        epochs=epochs,
        max_minutes=minutes,
        val_dir=va,
        seed=seed,
        batch_size=8,
        lr=2e-3,
        device="cpu",
        progress=False,
        model_kwargs={"channels": channels, "num_stacks": stacks},
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    train_s = time.perf_counter() - t0
    assert res.best_path is not None
    t1 = time.perf_counter()
    pred = Predictor.from_checkpoint(res.best_path, device="cpu", threads=2)
    gt = json.loads((te / "annotations.json").read_text())
    anns: dict[int, list[dict[str, Any]]] = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    k = pred.meta.num_classes
    acc_img, acc_box = LandmarkAccumulator(k, (0.05, 0.1)), LandmarkAccumulator(k, (0.05, 0.1))
    for im in gt["images"]:
        img = read_image(te / "images" / im["file_name"])
        heat = pred.predict_landmarks(img).heatmaps
        assert heat is not None
        h, w = img.shape[:2]
        for a in anns.get(im["id"], []):
            kp = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
            x, y, bw, bh = a["bbox"]
            mx, my = 0.25 * bw, 0.25 * bh
            x0, y0 = int(max(x - mx, 0)), int(max(y - my, 0))
            x1, y1 = int(min(x + bw + mx, w)), int(min(y + bh + my, h))
            crop = heat[:, y0:y1, x0:x1].astype(np.float32).reshape(k, -1)
            idx = crop.argmax(1)
            yy, xx = np.divmod(idx, x1 - x0)
            dec = np.stack([xx + x0 + 0.5, yy + y0 + 0.5], axis=1)
            vis = kp[:, 2] > 0
            acc_img.update(dec[None], kp[None, :, :2], vis[None], [max(h, w)])
            acc_box.update(dec[None], kp[None, :, :2], vis[None], [float(np.hypot(bw, bh))])
    ri, rb = acc_img.compute(), acc_box.compute()
    return {
        "bar": "landmarks",
        "pck_image@0.05": ri["pck"][0.05],
        "pck_image@0.1": ri["pck"][0.1],
        "pck_bbox@0.05": rb["pck"][0.05],
        "pck_bbox@0.1": rb["pck"][0.1],
        "nme_image": ri["nme"],
        "train_val_history": res.history,
        "train_s": round(train_s, 1),
        "predict_s": round(time.perf_counter() - t1, 1),
        "threshold": 0.8,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bar", choices=["instance", "landmarks", "all"], default="all")
    ap.add_argument("--work", type=Path, default=Path("/tmp/segpipe_bars"))
    ap.add_argument("--minutes", type=float, default=None, help="training budget per bar")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-val", type=int, default=24)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--channels", type=int, default=64, help="hourglass width")
    ap.add_argument("--stacks", type=int, default=2, help="hourglass stacks")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.bar in ("instance", "all"):
        r = instance_bar(
            args.work,
            args.minutes or 9.0,
            args.n_train or 192,
            args.n_val,
            args.size or 128,
            args.epochs or 14,
        )
        print(json.dumps(r), flush=True)
        rows.append(r)
    if args.bar in ("landmarks", "all"):
        r = landmark_bar(
            args.work,
            args.minutes or 6.0,
            args.n_train or 192,
            args.n_val,
            args.size or 128,
            args.epochs or 20,
            args.channels,
            args.stacks,
        )
        print(json.dumps(r), flush=True)
        rows.append(r)
    print(json.dumps([{k: v for k, v in r.items() if k != "train_val_history"} for r in rows]))


if __name__ == "__main__":
    main()
