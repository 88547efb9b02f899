"""COCO → COCO with ``polygons``: masks become pixel-edge polygons, every difference is counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from segpipe.errors import ConfigError, LossError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import Conversion, convert
from tests.datagen import make_coco


@pytest.fixture(scope="module")
def coco_src(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("src"), n_images=6, objects=5)


def _convert(src: Path, dst: Path, **opts) -> tuple[dict, COCO]:
    rep = convert(
        Conversion(src, dst, to="coco", copy_images="none", writer_options={"polygons": True, **opts}),
        ClusterSpec(workers=0),
    )
    return rep, COCO(str(dst / "annotations" / "instances_train.json"))  # default layout; no split: train


def test_keyhole_polygons_are_exact(coco_src, tmp_path):
    rep, out = _convert(coco_src, tmp_path / "out")
    gt = COCO(str(coco_src))
    assert rep["losses"]["lossless"], rep["losses"]["totals"]
    assert rep["losses"]["counts_out"] == rep["losses"]["counts_in"]
    n_poly = 0
    for a in gt.dataset["annotations"]:
        b = out.anns[a["id"]]
        if a["iscrowd"]:
            assert isinstance(b["segmentation"], dict)  # crowds stay RLE (COCO's convention)
            continue
        assert isinstance(b["segmentation"], list)
        n_poly += 1
        assert np.array_equal(out.annToMask(b), gt.annToMask(a)), a["id"]  # holes kept by keyhole cuts
        assert b["area"] == pytest.approx(a["area"]) and b["bbox"] == pytest.approx(a["bbox"])
    assert n_poly > 0
    assert "polygons_kept_rle" in rep["losses"]["notes"]


def test_dropped_holes_and_tolerance_are_counted(coco_src, tmp_path):
    gt = COCO(str(coco_src))
    rep, out = _convert(coco_src, tmp_path / "drop", polygon_holes="drop", polygon_tolerance=1.0)
    by_cat = rep["losses"]["by_category"]
    assert rep["losses"]["totals"]["holes_dropped"] > 0  # the test data's ellipses have a hole each
    assert set(by_cat["holes_dropped"]) <= {"person", "car", "tree"}
    # the reported pixels are exactly what pycocotools gets wrong, summed per category
    diff: dict[str, int] = {}
    for a in gt.dataset["annotations"]:
        if a["iscrowd"]:
            continue
        name = gt.cats[a["category_id"]]["name"]
        n = int((out.annToMask(out.anns[a["id"]]) != gt.annToMask(a)).sum())
        if n and not isinstance(a["segmentation"], list):
            diff[name] = diff.get(name, 0) + n
    assert by_cat["polygon_approximation_pixels"] == diff
    assert "polygon_approximation_pixels" in rep["losses"]["notes"]
    # pycocotools evaluates the output (polygon areas, IoUs) without complaint
    anns = out.loadAnns(out.getAnnIds())
    assert all(out.annToRLE(a)["size"] for a in anns)


def test_strict_refuses_lossy_polygons_and_bad_options(coco_src, tmp_path):
    with pytest.raises(LossError):
        convert(
            Conversion(coco_src, tmp_path / "s", to="coco", strict=True, copy_images="none",
                           writer_options={"polygons": True, "polygon_holes": "drop"}),
            ClusterSpec(workers=0),
        )
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError):
        convert(
            Conversion(coco_src, tmp_path / "b", to="coco", writer_options={"polygons": True,
                                                                             "polygon_holes": "fill"}),
            ClusterSpec(workers=0),
        )


def test_default_stays_rle(coco_src, tmp_path):
    convert(Conversion(coco_src, tmp_path / "rle", to="coco", copy_images="none"), ClusterSpec(workers=0))
    data = json.loads((tmp_path / "rle" / "annotations" / "instances_train.json").read_text())
    src = {a["id"]: a for a in json.loads(coco_src.read_text())["annotations"]}
    for a in data["annotations"]:
        assert type(a["segmentation"]) is type(src[a["id"]]["segmentation"])
