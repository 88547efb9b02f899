"""segpipe.evaluation.report: report.json keys, JSON-safe floats, Markdown, CSV, PNGs, worst overlays."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
from PIL import Image

from segpipe.evaluation.cocoeval import evaluate_coco
from segpipe.evaluation.panoptic import evaluate_panoptic_files
from segpipe.evaluation.report import json_safe, panoptic_overlay_loader, write_report
from segpipe.evaluation.semantic import evaluate_semantic


def synthetic():
    """Two images, two categories, a few jittered boxes."""
    images = [{"id": i, "width": 64, "height": 48, "file_name": f"{i}.jpg"} for i in (1, 2)]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    anns, dts = [], []
    for k, (img, cat, box) in enumerate(
        [(1, 1, [4, 4, 20, 10]), (1, 2, [30, 20, 10, 20]), (2, 1, [10, 10, 30, 30])]
    ):
        x, y, w, h = box
        seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        anns.append(
            {
                "id": k + 1,
                "image_id": img,
                "category_id": cat,
                "bbox": box,
                "area": w * h,
                "iscrowd": 0,
                "segmentation": seg,
            }
        )
        dts.append({"image_id": img, "category_id": cat, "bbox": [x + 1, y, w, h], "score": 0.9 - 0.1 * k})
    dts.append({"image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.3})
    return {"images": images, "annotations": anns, "categories": cats}, dts


def semantic_pairs():
    rng = np.random.default_rng(0)
    pairs = {}
    for i in range(4):
        gt = rng.integers(0, 3, (16, 24), dtype=np.uint8)  # class 3 never appears: NaN IoU
        pred = np.where(rng.random(gt.shape) < 0.2 * i, 0, gt).astype(np.uint8)
        pairs[f"im{i}"] = (gt, pred)
    return pairs


def test_full_report(tmp_path, testdata):
    pairs = semantic_pairs()
    sem = evaluate_semantic(
        [(k, g, p) for k, (g, p) in pairs.items()], 4, class_names=list("abcd"), worst_n=2
    )
    gt, dt = synthetic()
    inst = evaluate_coco(gt, dt, ("bbox", "segm"))
    src = testdata / "panopticapi" / "sample_data"
    pan = evaluate_panoptic_files(src / "panoptic_examples.json", src / "panoptic_examples.json", worst_n=1)

    def sem_loader(key):
        g, p = pairs[key]
        return np.zeros((*g.shape, 3), np.uint8), g, p

    rep = write_report(
        tmp_path / "out",
        semantic=sem,
        instance=inst,
        panoptic=pan,
        semantic_loader=sem_loader,
        panoptic_loader=panoptic_overlay_loader(src / "panoptic_examples", src / "panoptic_examples"),
    )
    out = tmp_path / "out"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == rep
    assert set(on_disk) == {"semantic", "instance", "panoptic", "worst"}
    s = on_disk["semantic"]
    assert set(s) == {"pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "per_class", "confusion"}
    assert set(s["per_class"][0]) == {"id", "name", "iou", "accuracy", "dice"}
    assert s["per_class"][3]["iou"] is None  # NaN → null
    assert s["confusion"] == sem.confusion.tolist()
    assert set(on_disk["instance"]) == {"bbox", "segm"}
    b = on_disk["instance"]["bbox"]
    assert list(b) == ["stats", *"AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl".split(), "per_class"]
    assert b["stats"] == inst["bbox"].stats.tolist() and b["AP"] == b["stats"][0]
    p = on_disk["panoptic"]
    assert set(p) == {"all", "things", "stuff", "per_class"}
    assert p["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 8}

    worst = on_disk["worst"]
    assert [e["image"] for e in worst["semantic"]] == ["im3", "im2"]
    for e in worst["semantic"] + worst["panoptic"]:
        im = Image.open(out / e["overlay"])
        assert im.mode == "RGB"
    w, h = Image.open(out / worst["semantic"][0]["overlay"]).size
    # photo | ground truth | prediction | error, each 24x16 enlarged x10, under a title, above a legend
    assert w == 4 * 240 + 3 * 6 and h > 160 + 26
    assert (out / "index.html").is_file()

    for name in ("confusion.png", "per_class.png"):
        assert Image.open(out / name).format == "PNG"
    md = (out / "summary.md").read_text()
    assert (
        "## Semantic segmentation" in md
        and "## COCO bbox" in md
        and "## Panoptic" in md
        and "Worst images" in md
    )
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert {r["section"] for r in rows} == {"semantic", "bbox", "segm", "panoptic"}


def test_keypoint_section_names(tmp_path, testdata):
    exp = json.loads((testdata / "expected.json").read_text())["faster_coco_eval_keypoints"]
    gt = json.loads((testdata / exp["gt"]).read_text())
    dt = json.loads((testdata / exp["dt"]).read_text())
    rep = write_report(tmp_path, instance=evaluate_coco(gt, dt, "keypoints"), plots=False)
    assert list(rep["instance"]["keypoints"]) == [
        "stats",
        *"AP AP50 AP75 APm APl AR AR50 AR75 ARm ARl".split(),
        "per_class",
    ]
    assert not (tmp_path / "per_class.png").exists()


def test_json_safe():
    assert json_safe({"a": np.float32(0.5), "b": [math.nan, np.int64(3)], 1: np.array([1.0, np.inf])}) == {
        "a": 0.5,
        "b": [None, 3],
        "1": [1.0, None],
    }
