"""COCO ground truth that pycocotools cannot rasterise for segm AP: one line naming the annotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]


@pytest.mark.parametrize(("segm", "where"), [
    ([], "annotations[1].segmentation"),  # detection datasets: IndexError inside pycocotools before
    ([[1.0, 2.0, 3.0, 4.0]], "annotations[1].segmentation[0]"),  # 4 numbers: pycocotools reads a box
    ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]], "annotations[1].segmentation[0]"),
    ([[1.0, 2.0, 3.0, 4.0, "x", 6.0]], "annotations[1].segmentation[0]"),
    ({"counts": "abc"}, "annotations[1].segmentation"),
    ("polygon", "annotations[1].segmentation"),
])
def test_segm_ground_truth_without_a_mask(tmp_path: Path, segm: object, where: str) -> None:
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 400.0, "bbox": [10, 10, 20, 20],
             "segmentation": [SQUARE]} for i in range(2)]
    anns[1]["segmentation"] = segm
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "annotations": anns,
          "categories": [{"id": 1, "name": "thing"}]}
    dt = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": [SQUARE]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    check_bad_input("evaluate", "gt.json", "dt.json", "--task", "instance", "--iou-types", "segm", "-w", "0",
                    root=tmp_path, code=2, names=["gt.json", where])
