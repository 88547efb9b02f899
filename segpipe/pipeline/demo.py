"""``segpipe demo``: the README's first command, the whole product end to end on generated data.

1. synthesise a street-view training set and a "new" collection with exact ground truth;
2. train a small U-Net briefly (a fixed number of epochs, so the result does not depend on how busy
   the machine is; a time cap keeps a very slow machine from waiting forever; CPU is fine);
3. pre-label the new collection through the embedded Dask cluster into a Zarr store;
4. export the pre-labels as COCO, Pascal VOC and Label Studio pre-annotations;
5. evaluate them against the ground truth (report folder with plots and worst-image overlays);
6. convert the ground truth COCO → VOC → COCO and validate everything;
7. write the HTML report of the pre-labels over the images (``segpipe view``, with the ground truth);
and print where everything is with the headline metrics, plus a titled overlay preview PNG.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import Conversion, convert
from segpipe.pipeline.validate import validate_path

#: What the demo writes into its folder (the marker's entries: anything else blocks a replacement).
DEMO_ENTRIES = ("data", "checkpoints", "prelabels.zarr", "export", "report", "convert", "view", "preview.png",
                "demo.json", ".segpipe-demo")


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
    # lazy: the demo's steps load torch, zarr and Pillow only when it runs (DemoResult stays light)
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
    # lazy: the demo's steps load torch, zarr and Pillow only when it runs (DemoResult stays light)
    from segpipe.models.train import train
    from segpipe.pipeline.evaluate import EvaluateRequest, evaluate
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
    from segpipe.synth import synth

    cluster = cluster or ClusterSpec(workers=2)
    res = DemoResult(out)
    t0 = time.perf_counter()
    size = (128, 256)

    log(f"1/7 synthesising {n_train} training and {n_new} new street-view images with exact ground truth")
    train_dir, new_dir = out / "data" / "train", out / "data" / "new"
    synth("streetview", train_dir, n=n_train, seed=seed + 1, size=size)
    synth("streetview", new_dir, n=n_new, seed=seed + 2, size=size)
    res.steps.append(("synth", str(out / "data"), f"{n_train} train + {n_new} new images, COCO + label maps"))

    log(f"2/7 training a small U-Net for {train_epochs} epochs (at most {train_seconds:.0f} s)")
    ckpt_dir = out / "checkpoints"
    tr = train(train_dir, "unet", ckpt_dir, epochs=train_epochs, max_minutes=train_seconds / 60.0, seed=seed,
               batch_size=8, progress=False, model_kwargs={"base": 16, "depth": 3}, log=lambda m: None)
    best = ckpt_dir / "best.ckpt"
    res.steps.append(("train", str(best), _train_summary(tr, ckpt_dir, train_epochs)))

    log("3/7 pre-labeling the new images on the local Dask cluster into Zarr")
    store = out / "prelabels.zarr"
    pre = prelabel(PrelabelRequest.build(source=str(new_dir / "images"), model=str(best), out=store), cluster,
                   log=lambda m: log(f"    {m}"))
    im = pre["images"]
    res.steps.append(("prelabel", str(store), f"{im['done']}/{im['total']} images, {pre['throughput_img_s']} img/s "
                      f"on {pre['workers']} workers"))
    res.figures["prelabel_img_s"] = pre["throughput_img_s"]

    log("4/7 exporting COCO, Pascal VOC and Label Studio pre-annotations")
    for to in ("coco", "voc", "labelstudio"):
        dst = out / "export" / to
        rep = convert(Conversion(src=store, dst=dst, to=to, from_="segpipe_zarr", copy_images="link"), cluster)
        res.steps.append((f"export {to}", str(dst), _loss_summary(rep)))

    log("5/7 evaluating the pre-labels against the ground truth")
    report_dir = out / "report"
    ev = evaluate(EvaluateRequest.build(gt=new_dir, pred=store, task="semantic", report_dir=report_dir), cluster)
    sem = ev["semantic"]
    res.figures.update({k: sem[k] for k in ("mean_iou", "pixel_accuracy", "mean_accuracy", "fw_iou")})
    res.steps.append(("evaluate", str(report_dir), f"mIoU {sem['mean_iou']:.3f}, pixel accuracy "
                      f"{sem['pixel_accuracy']:.3f} (+ plots, worst-image overlays)"))

    log("6/7 converting the ground truth COCO → VOC → COCO and validating")
    voc, back = out / "convert" / "voc", out / "convert" / "coco"
    rep1 = convert(Conversion(src=new_dir / "annotations.json", dst=voc, to="voc", image_root=new_dir / "images"),
                   cluster)
    res.steps.append(("convert → voc", str(voc), _loss_summary(rep1)))
    rep2 = convert(Conversion(src=voc, dst=back, to="coco"), cluster)
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
    res.steps.append(("preview", str(preview), "photo | ground truth | pre-label | error, titled"))
    log("7/7 writing the HTML report: pre-labels over the images, with the ground truth")
    # lazy: the demo's steps load torch, zarr and Pillow only when it runs (DemoResult stays light)
    from segpipe.pipeline.requests import ViewRequest
    from segpipe.pipeline.view import view  # lazy: as the other steps' workflows above

    page = view(ViewRequest.build(source=store, out=out / "view", gt=new_dir, title="segpipe demo: pre-labels"),
                cluster)
    res.steps.append(("view", str(Path(page["index"]).resolve()),
                      f"{page['images']} images: toggle pre-label / ground truth / error, sort by doubt or error"))
    res.figures["view"] = str(Path(page["index"]).resolve())
    res.figures["elapsed_s"] = round(time.perf_counter() - t0, 1)
    (out / "demo.json").write_text(json.dumps({"steps": res.steps, "figures": res.figures}, indent=2, default=str))
    return res


def _train_summary(tr: Any, ckpt_dir: Path, planned: int) -> str:
    lines = (ckpt_dir / "metrics.jsonl").read_text().splitlines() if (ckpt_dir / "metrics.jsonl").exists() else []
    best = max((json.loads(ln).get("mean_iou") or 0.0 for ln in lines), default=0.0)
    cut = f" (of {planned}: the time cap stopped it)" if len(lines) < planned else ""
    return f"{len(lines)} epochs{cut}, best validation mIoU {best:.3f}"


def _loss_summary(rep: Mapping[str, Any] | Any) -> str:
    totals = rep["losses"]["totals"]
    if not totals:
        return f"{rep['images']['converted']} images, lossless"
    return f"{rep['images']['converted']} images; losses: " + ", ".join(f"{k}={v}" for k, v in totals.items())


def write_preview(store_path: Path, gt_dir: Path, out: Path, n: int = 3) -> None:
    """Writes, for the first ``n`` images of a store, titled ``photo | ground truth | pre-label | error`` rows
    in the label map's colours, with a legend (the HTML report shows every image; this is a glance).
    """
    # lazy: Pillow, zarr and matplotlib's neighbours load only when the demo gets here
    from PIL import Image

    # lazy: the demo's steps load torch, zarr and Pillow only when it runs (DemoResult stays light)
    from segpipe.evaluation.report import worst_panel
    from segpipe.storage.images import read_image, read_label_map
    from segpipe.storage.zarrstore import ZarrStore
    from segpipe.view.colors import class_colors

    store = ZarrStore.open(store_path)
    cats = [dict(c) for c in store.attrs().get("categories", [])]
    names = {int(c["id"]): str(c["name"]) for c in cats}
    gt_colors = _labelmap_colors(gt_dir / "labelmap.txt")
    for c in cats:  # the store's classes in the dataset's own colours (a checkpoint may carry none)
        c["color"] = c.get("color") or gt_colors.get(str(c["name"]))
    colors = class_colors(cats)
    rows = []
    for image_id in store.image_ids()[:n]:
        g = store.group(image_id)
        img = read_image(g.attrs["path"])
        pred = np.asarray(g["labels"][...])
        mask = gt_dir / "masks" / (Path(g.attrs["file"]).stem + ".png")
        gt = read_label_map(mask) if mask.exists() else np.full_like(pred, 255)
        rows.append(worst_panel(img, gt, pred, title=f"{g.attrs['file']}: pre-label against the ground truth",
                                colors=colors, names=names))
    if rows:
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        Image.fromarray(np.concatenate(padded, axis=0)).save(out)


def _labelmap_colors(path: Path) -> dict[str, tuple[int, int, int]]:
    """``{name: colour}`` of a ``labelmap.txt`` (empty when there is none)."""
    from segpipe.core.labelmap import parse_labelmap_txt  # lazy: as write_preview's

    if not path.is_file():
        return {}
    return {e.name: e.color for e in parse_labelmap_txt(path.read_text(encoding="utf-8"), source=path) if e.color}
