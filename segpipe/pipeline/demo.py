"""``segpipe demo``: the README's first command, the whole product end to end on generated data.

1. synthesise a street-view training set and a "new" collection with exact ground truth;
2. train a small U-Net briefly (a fixed number of epochs, so the result does not depend on how busy
   the machine is; a time cap keeps a very slow machine from waiting forever; CPU is fine);
3. pre-label the new collection through the embedded Dask cluster into a Zarr store;
4. export the pre-labels as COCO, Pascal VOC and Label Studio pre-annotations;
5. evaluate them against the ground truth (report folder with plots and worst-image overlays);
6. convert the ground truth COCO → VOC → COCO and validate everything;
and print where everything is with the headline metrics, plus an overlay preview PNG.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import ConvertRequest, convert
from segpipe.pipeline.validate import validate_path

#: What the demo writes into its folder (the marker's entries: anything else blocks a replacement).
DEMO_ENTRIES = ("data", "checkpoints", "prelabels.zarr", "export", "report", "convert", "preview.png", "demo.json",
                ".segpipe-demo")


@dataclass
class DemoResult:
    """Where the demo put things, and its headline figures."""

    out: Path
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, path, summary)
    figures: dict[str, Any] = field(default_factory=dict)


def run_demo(
    out: Path,
    *,
    n_train: int = 32,
    n_new: int = 8,
    seed: int = 0,
    train_epochs: int = 20,
    train_seconds: float = 300.0,
    cluster: ClusterSpec | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Runs the demo into ``out``: a new or empty folder, or an earlier demo (replaced when the new one
    is complete; until then it is set aside beside ``out`` and put back if the demo fails).

    Raises:
        OutputError: ``out`` is a non-empty folder that ``segpipe demo`` did not make.
    """
    from segpipe.storage import outputs

    plan = outputs.check_output(out, option="--out", command="demo")
    # Built in place, not in a staging folder: the store records the absolute paths of the demo's images.
    with outputs.set_aside(plan, entries=DEMO_ENTRIES):
        return _run_demo(out, n_train=n_train, n_new=n_new, seed=seed, train_epochs=train_epochs,
                         train_seconds=train_seconds,
                         cluster=cluster, log=log)


def _run_demo(out: Path, *, n_train: int, n_new: int, seed: int, train_epochs: int, train_seconds: float,
              cluster: ClusterSpec | None, log: Callable[[str], None]) -> DemoResult:
    """The demo's steps, into the folder :func:`run_demo` prepared."""
    from segpipe.models.train import train
    from segpipe.pipeline.evaluate import EvaluateRequest, evaluate
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
    from segpipe.synth import synth

    cluster = cluster or ClusterSpec(workers=2)
    res = DemoResult(out)
    t0 = time.perf_counter()
    size = (128, 256)

    log(f"1/6 synthesising {n_train} training and {n_new} new street-view images with exact ground truth")
    train_dir, new_dir = out / "data" / "train", out / "data" / "new"
    synth("streetview", train_dir, n=n_train, seed=seed + 1, size=size)
    synth("streetview", new_dir, n=n_new, seed=seed + 2, size=size)
    res.steps.append(("synth", str(out / "data"), f"{n_train} train + {n_new} new images, COCO + label maps"))

    log(f"2/6 training a small U-Net for {train_epochs} epochs (at most {train_seconds:.0f} s)")
    ckpt_dir = out / "checkpoints"
    tr = train(train_dir, "unet", ckpt_dir, epochs=train_epochs, max_minutes=train_seconds / 60.0, seed=seed,
               batch_size=8, progress=False, model_kwargs={"base": 16, "depth": 3}, log=lambda m: None)
    best = ckpt_dir / "best.ckpt"
    res.steps.append(("train", str(best), _train_summary(tr, ckpt_dir, train_epochs)))

    log("3/6 pre-labeling the new images on the local Dask cluster into Zarr")
    store = out / "prelabels.zarr"
    pre = prelabel(PrelabelRequest(source=str(new_dir / "images"), model=str(best), out=store), cluster,
                   log=lambda m: log(f"    {m}"))
    im = pre["images"]
    res.steps.append(("prelabel", str(store), f"{im['done']}/{im['total']} images, {pre['throughput_img_s']} img/s "
                      f"on {pre['workers']} workers"))
    res.figures["prelabel_img_s"] = pre["throughput_img_s"]

    log("4/6 exporting COCO, Pascal VOC and Label Studio pre-annotations")
    for to in ("coco", "voc", "labelstudio"):
        dst = out / "export" / to
        rep = convert(ConvertRequest(src=store, dst=dst, to=to, from_="segpipe_zarr", copy_images="link"), cluster)
        res.steps.append((f"export {to}", str(dst), _loss_summary(rep)))

    log("5/6 evaluating the pre-labels against the ground truth")
    report_dir = out / "report"
    ev = evaluate(EvaluateRequest(gt=new_dir, pred=store, task="semantic", report_dir=report_dir), cluster)
    sem = ev["semantic"]
    res.figures.update({k: sem[k] for k in ("mean_iou", "pixel_accuracy", "mean_accuracy", "fw_iou")})
    res.steps.append(("evaluate", str(report_dir), f"mIoU {sem['mean_iou']:.3f}, pixel accuracy "
                      f"{sem['pixel_accuracy']:.3f} (+ plots, worst-image overlays)"))

    log("6/6 converting the ground truth COCO → VOC → COCO and validating")
    voc, back = out / "convert" / "voc", out / "convert" / "coco"
    rep1 = convert(ConvertRequest(src=new_dir / "annotations.json", dst=voc, to="voc", image_root=new_dir / "images"),
                   cluster)
    res.steps.append(("convert → voc", str(voc), _loss_summary(rep1)))
    rep2 = convert(ConvertRequest(src=voc, dst=back, to="coco"), cluster)
    res.steps.append(("convert → coco", str(back), _loss_summary(rep2)))
    errors = 0
    for name, path in (("ground truth", new_dir / "annotations.json"), ("voc", voc),
                       ("coco", back), ("export coco", out / "export" / "coco")):
        fmt, problems = validate_path(path)
        n_err = sum(p.severity == "error" for p in problems)
        errors += n_err
        res.steps.append((f"validate {name}", str(path), f"{fmt}: {n_err} errors, {len(problems) - n_err} warnings"))
    res.figures["validation_errors"] = errors

    preview = out / "preview.png"
    write_preview(store, new_dir, preview)
    res.steps.append(("preview", str(preview), "image | ground truth | pre-label"))
    res.figures["elapsed_s"] = round(time.perf_counter() - t0, 1)
    (out / "demo.json").write_text(json.dumps({"steps": res.steps, "figures": res.figures}, indent=2, default=str))
    return res


def _train_summary(tr: Any, ckpt_dir: Path, planned: int) -> str:
    lines = (ckpt_dir / "metrics.jsonl").read_text().splitlines() if (ckpt_dir / "metrics.jsonl").exists() else []
    best = max((json.loads(ln).get("mean_iou") or 0.0 for ln in lines), default=0.0)
    cut = f" (of {planned}: the time cap stopped it)" if len(lines) < planned else ""
    return f"{len(lines)} epochs{cut}, best validation mIoU {best:.3f}"


def _loss_summary(rep: dict[str, Any]) -> str:
    totals = rep["losses"]["totals"]
    if not totals:
        return f"{rep['images']['converted']} images, lossless"
    return f"{rep['images']['converted']} images; losses: " + ", ".join(f"{k}={v}" for k, v in totals.items())


def _blend(img: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` overlay: 45 % image, 55 % label colours."""
    return (0.45 * img + 0.55 * colours).astype(np.uint8)


def write_preview(store_path: Path, gt_dir: Path, out: Path, n: int = 3) -> None:
    """Writes ``image | ground truth | pre-label`` rows for the first ``n`` images of a store."""
    from PIL import Image

    from segpipe.storage.images import read_image, read_label_map
    from segpipe.storage.zarrstore import ZarrStore

    store = ZarrStore.open(store_path)
    cats = store.attrs().get("categories", [])
    palette = np.zeros((65536, 3), dtype=np.uint8)
    from segpipe.core.labelmap import voc_colormap

    cmap = voc_colormap(256)
    for c in cats:  # VOC colours, not the dataset's: synthetic classes are drawn in their own colours
        palette[int(c["id"])] = cmap[int(c["id"]) % 256]
    rows = []
    for image_id in store.image_ids()[:n]:
        g = store.group(image_id)
        img = read_image(g.attrs["path"])
        pred = palette[np.asarray(g["labels"][...])]
        mask = gt_dir / "masks" / (Path(g.attrs["file"]).stem + ".png")
        gt = palette[read_label_map(mask)] if mask.exists() else np.zeros_like(img)
        rows.append(np.concatenate([img, _blend(img, gt), _blend(img, pred)], axis=1))
    if rows:
        Image.fromarray(np.concatenate(rows, axis=0)).save(out)
