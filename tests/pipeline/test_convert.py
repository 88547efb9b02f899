"""End-to-end conversions through the orchestrator, on real Dask worker processes and real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from segpipe.errors import LossError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import convert
from segpipe.pipeline.requests import ConvertRequest
from segpipe.storage.images import read_label_map
from tests.datagen import make_coco


def _masks_by_id(coco: COCO) -> dict[int, np.ndarray]:
    return {a["id"]: coco.annToMask(a) for a in coco.dataset["annotations"]}


def _unoccluded_ids(coco: COCO) -> set[int]:
    """Non-crowd annotations that no later annotation on the same image overlaps."""
    out = set()
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        for i, a in enumerate(anns):
            if a["iscrowd"]:
                continue
            m = coco.annToMask(a).astype(bool)
            later = [coco.annToMask(b).astype(bool) for b in anns[i + 1:]]
            crowd_before = [coco.annToMask(b).astype(bool) for b in anns[:i] if b["iscrowd"]]
            if not any((m & o).any() for o in later + crowd_before):
                out.add(a["id"])
    return out


@pytest.fixture(scope="module")
def coco_src(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("src"), n_images=7, objects=5)


def test_coco_voc_coco_roundtrip_on_dask(coco_src, tmp_path):
    voc = tmp_path / "voc"
    rep1 = convert(ConvertRequest(src=coco_src, out=voc, to="voc", shard_size=2), ClusterSpec(workers=2))
    root = voc / "VOCdevkit" / "VOC2012"  # the default layout, where torchvision's VOCSegmentation looks
    assert (root / "SegmentationClass").is_dir() and (root / "Annotations").is_dir()
    assert rep1["images"]["converted"] == 7
    assert rep1["shards"] == 4
    back = tmp_path / "coco"
    convert(ConvertRequest(src=voc, out=back, to="coco"), ClusterSpec(workers=2))
    gt = COCO(str(coco_src))
    got = COCO(str(back / "annotations" / "instances_train.json"))  # the default layout; no split: train
    # ids are restored from the sidecar; every unoccluded non-crowd mask is pixel-identical
    gt_masks, got_masks = _masks_by_id(gt), _masks_by_id(got)
    ids = _unoccluded_ids(gt)
    assert ids
    for aid in ids:
        assert aid in got_masks, f"annotation {aid} lost"
        np.testing.assert_array_equal(got_masks[aid], gt_masks[aid], err_msg=f"annotation {aid}")
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    assert {c["id"]: c["name"] for c in got.dataset["categories"]} == names


def test_losses_reported(coco_src, tmp_path):
    rep = convert(ConvertRequest(src=coco_src, out=tmp_path / "voc", to="voc"), ClusterSpec(workers=0))
    totals = rep["losses"]["totals"]
    assert not rep["losses"]["lossless"]
    assert totals.get("crowd_to_void", 0) > 0
    assert totals.get("keypoints_dropped", 0) > 0
    saved = json.loads((tmp_path / "voc" / "conversion_report.json").read_text())
    assert saved["losses"]["totals"] == totals
    assert sum(saved["losses"]["counts_in"].values()) == len(json.loads(coco_src.read_text())["annotations"])


def test_strict_writes_nothing(coco_src, tmp_path):
    dst = tmp_path / "voc"
    with pytest.raises(LossError) as e:
        convert(ConvertRequest(src=coco_src, out=dst, to="voc", strict=True), ClusterSpec(workers=0))
    assert "crowd_to_void" in str(e.value)
    assert not dst.exists()


def test_sharded_equals_in_process(coco_src, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    convert(ConvertRequest(src=coco_src, out=a, to="voc", shard_size=1), ClusterSpec(workers=2))
    convert(ConvertRequest(src=coco_src, out=b, to="voc", shard_size=100), ClusterSpec(workers=0))
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "conversion_report.json")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "conversion_report.json")
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix == ".png" and rel.parts[0].startswith("Segmentation"):
            np.testing.assert_array_equal(read_label_map(a / rel), read_label_map(b / rel))
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_category_map_applied(coco_src, tmp_path):
    cmap = tmp_path / "map.yaml"
    cmap.write_text("merge:\n  thing: [car, tree]\ndrop: [person]\nids: {thing: 5}\n")
    dst = tmp_path / "out"
    convert(ConvertRequest(src=coco_src, out=dst, to="coco", categories=cmap), ClusterSpec(workers=0))
    data = json.loads((dst / "annotations" / "instances_train.json").read_text())  # no split: train
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(5, "thing")]
    assert {a["category_id"] for a in data["annotations"]} == {5}
    src = json.loads(coco_src.read_text())
    assert len(data["annotations"]) == sum(1 for a in src["annotations"] if a["category_id"] != 1)


def test_coco_to_coco_is_lossless(coco_src, tmp_path):
    dst = tmp_path / "out"
    rep = convert(ConvertRequest(src=coco_src, out=dst, to="coco", strict=True), ClusterSpec(workers=0))
    assert rep["losses"]["lossless"]
    src = json.loads(coco_src.read_text())
    out = json.loads((dst / "annotations" / "instances_train.json").read_text())  # no split: train
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in src["annotations"]]
    for a, b in zip(src["annotations"], out["annotations"]):
        assert a["segmentation"] == b["segmentation"]
        assert a["bbox"] == pytest.approx(b["bbox"]) and a["iscrowd"] == b["iscrowd"]
    assert (dst / "images" / "train" / src["images"][0]["file_name"]).exists()


def test_missing_images_listed_and_strict_fails(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3, images=False, crowd=False, overlaps=False)
    rep = convert(ConvertRequest(src=src, out=tmp_path / "o1", to="coco"), ClusterSpec(workers=0))
    assert len(rep["losses"]["missing_images"]) == 3
    with pytest.raises(LossError, match="missing_images=3"):
        convert(ConvertRequest(src=src, out=tmp_path / "o2", to="coco", strict=True), ClusterSpec(workers=0))


def test_refuses_non_empty_destination(coco_src, tmp_path):
    from segpipe.errors import InputError

    dst = tmp_path / "full"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        convert(ConvertRequest(src=coco_src, out=dst, to="voc"), ClusterSpec(workers=0))
    assert (dst / "keep.txt").read_text() == "mine"
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]


def test_cli_convert_and_validate(coco_src, tmp_path, cli):
    r = cli("convert", str(coco_src), str(tmp_path / "voc"), "--to", "voc", "-w", "2")
    assert r.returncode == 0, r.stderr
    assert "crowd_to_void" in r.stdout
    r = cli("validate", str(tmp_path / "voc"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("validate", str(coco_src))
    assert r.returncode == 0, r.stdout + r.stderr


def test_polygon_masks_match_pycocotools(coco_src, tmp_path):
    """COCO → VOC: the class PNG equals pycocotools' own rasterisation painted in annotation order."""
    convert(ConvertRequest(src=coco_src, out=tmp_path / "voc", to="voc"), ClusterSpec(workers=0))
    gt = COCO(str(coco_src))
    names = [ln.split(":")[0] for ln in (tmp_path / "voc/VOCdevkit/VOC2012/labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    label_of = {c["id"]: names.index(c["name"]) for c in gt.dataset["categories"]}
    for img in gt.dataset["images"]:
        expect = np.zeros((img["height"], img["width"]), np.uint8)
        for a in gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]])):
            m = gt.annToMask(a).astype(bool)
            if a["iscrowd"]:
                expect[m] = 255
            else:
                expect[m] = label_of[a["category_id"]]
        # crowd regions are void whatever is painted after them
        for a in gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]], iscrowd=True)):
            expect[gt.annToMask(a).astype(bool)] = 255
        seg = tmp_path / "voc/VOCdevkit/VOC2012/SegmentationClass"
        got = read_label_map(seg / f"{Path(img['file_name']).stem}.png")
        np.testing.assert_array_equal(got, expect, err_msg=img["file_name"])
