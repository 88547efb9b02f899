"""Cityscapes adapter: Datumaro's asset read as its figures say, writer layout, ids, losses, round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.core.records import Category, DatasetMeta, ImageInfo, Instance, InstanceMask, Materialized, Sample
from segpipe.errors import FormatError
from segpipe.execution.cluster import ClusterSpec
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import WriteOptions
from segpipe.formats.cityscapes import LABELS, CityscapesReader, CityscapesWriter, materialize_cityscapes, plan_labels
from segpipe.pipeline.convert import Conversion, convert
from segpipe.storage.images import read_image, read_label_map

SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata"
ASSET = SHARED / "datumaro" / "tests" / "assets" / "cityscapes_dataset" / "dataset"
needs_asset = pytest.mark.skipif(not ASSET.is_dir(), reason="shared Datumaro test assets are absent")


def _inst(k: int, cat: int, mask: np.ndarray, *, crowd: bool = False, score: float | None = None) -> InstanceMask:
    r = rle_ops.encode(mask.astype(np.uint8))
    return InstanceMask(Instance(id=k, image_id=1, category_id=cat, segmentation=None, bbox=rle_ops.to_bbox(r),
                                 area=float(rle_ops.area(r)), iscrowd=crowd, score=score), r)


def _write(samples: list[Materialized], meta: DatasetMeta, out: Path, **opts: object):
    w = CityscapesWriter(out, meta, WriteOptions(**opts))  # type: ignore[arg-type]
    w.prepare()
    r = w.write_shard(0, samples)
    w.finalize([r])
    return r.losses


def test_official_table() -> None:
    assert len(LABELS) == 34 and [lab.id for lab in LABELS] == list(range(34))
    assert sorted(lab.train_id for lab in LABELS if lab.train_id != 255) == list(range(19))
    assert {lab.name for lab in LABELS if lab.has_instances} == {
        "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"}
    assert LABELS[26].name == "car" and LABELS[26].color == (0, 0, 142) and LABELS[26].train_id == 13


@needs_asset
def test_datumaro_asset_conformance() -> None:
    # expected.json: "[[3,3,27,27,27]] -> masks label 3 (cols 0-1) and 27 (cols 2-4)"
    expected = json.loads((SHARED / "expected.json").read_text())["datumaro_assets"]["cityscapes_dataset/dataset"]
    assert "[[3,3,27,27,27]]" in expected
    assert detect_format(ASSET) == "cityscapes"
    r = CityscapesReader(ASSET)
    assert len(r) == 4 and not r.problems
    got = {}
    for s in r.samples():
        m = materialize_cityscapes(s, r.meta)
        got[s.image.file_name] = (s.image.split, (s.image.width, s.image.height), m.class_map.tolist(),
                                  sorted((im.instance.category_id, im.instance.iscrowd,
                                          rle_ops.decode(im.rle or {}).astype(int).tolist()) for im in m.instances))
    names = {c.id: c.name for c in r.meta.categories}
    assert names[3] == "out of roi" and names[27] == "truck" and names[24] == "person" and names[12] == "wall"
    assert got["defaultcity/defaultcity_000001_000031.png"] == (
        "test", (5, 1), [[3, 3, 27, 27, 27]], [(27, True, [[0, 0, 1, 1, 1]])])
    assert got["defaultcity/defaultcity_000001_000032.png"] == (
        "test", (5, 1), [[31, 31, 12, 3, 3]], [(31, True, [[1, 1, 0, 0, 0]])])
    assert got["defaultcity/defaultcity_000002_000045.png"] == (
        "train", (5, 1), [[3, 3, 24, 3, 3]], [(24, True, [[0, 0, 1, 0, 0]])])
    # 1 = ego vehicle is stuff: a class-map region, no instance
    assert got["defaultcity/defaultcity_000001_000019.png"] == ("val", (5, 1), [[3, 1, 1, 3, 3]], [])


@needs_asset
def test_asset_round_trip_through_writer(tmp_path: Path) -> None:
    out = tmp_path / "cs"
    rep = convert(Conversion(src=ASSET, dst=out, to="cityscapes"), ClusterSpec(workers=0))
    assert rep["losses"]["lossless"]
    d = out / "gtFine" / "test" / "defaultcity"
    src_ids = read_label_map(ASSET / "gtFine/test/defaultcity/defaultcity_000001_000031_gtFine_instanceIds.png")
    assert np.array_equal(read_label_map(d / "defaultcity_000001_000031_gtFine_instanceIds.png"), src_ids)
    assert read_label_map(d / "defaultcity_000001_000031_gtFine_labelIds.png").tolist() == [[3, 3, 27, 27, 27]]
    # train ids: truck 14, train 16, wall 3; out of roi ignored (255)
    assert read_label_map(d / "defaultcity_000001_000031_gtFine_labelTrainIds.png").tolist() == [[255, 255, 14, 14, 14]]
    assert read_label_map(d / "defaultcity_000001_000032_gtFine_labelTrainIds.png").tolist() == [[16, 16, 3, 255, 255]]
    rel = "leftImg8bit/test/defaultcity/defaultcity_000001_000031_leftImg8bit.png"
    assert (out / rel).read_bytes() == (ASSET / rel).read_bytes()
    a, b = CityscapesReader(ASSET), CityscapesReader(out)
    for sa, sb in zip(a.samples(), b.samples(), strict=True):
        assert (sa.image.id, sa.image.file_name, sa.image.split) == (sb.image.id, sb.image.file_name, sb.image.split)
        ma, mb = materialize_cityscapes(sa, a.meta), materialize_cityscapes(sb, b.meta)
        assert np.array_equal(ma.class_map, mb.class_map)
        assert [(i.instance.id, i.instance.category_id, i.rle) for i in ma.instances] == [
            (i.instance.id, i.instance.category_id, i.rle) for i in mb.instances]


def _meta(cats: list[Category]) -> DatasetMeta:
    return DatasetMeta(format="coco", categories=tuple(cats), void_value=255)


def test_instances_ids_and_losses(tmp_path: Path) -> None:
    cats = [Category(1, "background", isthing=False), Category(2, "road", isthing=False), Category(3, "car"),
            Category(4, "person")]
    h, w = 8, 10
    m = np.zeros((4, h, w), bool)
    m[0, :, :5] = True          # car A
    m[1, :, 3:7] = True         # car B on top of A: 2 columns of A hidden
    m[2, 6:, :] = True          # road (stuff instance: no id)
    m[3, :2, 8:] = True         # a crowd of persons
    inst = [_inst(1, 3, m[0]), _inst(2, 3, m[1], score=0.9), _inst(3, 2, m[2]), _inst(4, 4, m[3], crowd=True),
            InstanceMask(Instance(id=5, image_id=1, category_id=4, bbox=(0, 0, 1, 1)), None)]
    s = Materialized(Sample(ImageInfo(1, "aachen_000001_000002.png", w, h, "val")), tuple(inst))
    losses = _write([s], _meta(cats), tmp_path, copy_images="none")
    d = tmp_path / "gtFine" / "val" / "aachen"   # city from the Cityscapes-like stem
    lab = read_label_map(d / "aachen_000001_000002_gtFine_labelIds.png")
    ids = read_label_map(d / "aachen_000001_000002_gtFine_instanceIds.png")
    train = read_label_map(d / "aachen_000001_000002_gtFine_labelTrainIds.png")
    assert ids.dtype == np.uint16 and lab.dtype == np.uint8
    assert ids[0, 0] == 26000 and ids[0, 4] == 26001 and ids[0, 7] == 0 and ids[7, 9] == 7 and ids[0, 9] == 24
    assert lab[0, 0] == 26 and lab[7, 9] == 7 and lab[0, 9] == 24 and lab[4, 9] == 0
    assert train[0, 0] == 13 and train[7, 0] == 0 and train[0, 9] == 11 and train[4, 9] == 255
    t = losses.totals()
    assert t["overlap_flattened_pixels"] == 16 + 6 + 8   # A under B, A under road, B under road
    assert t["instance_identity_dropped"] == 1 and t["scores_dropped"] == 1 and t["box_only_no_mask"] == 1
    assert "crowd_to_group" not in t   # one group per class is exactly what Cityscapes holds
    assert losses.notes["category_ids_reindexed"]
    # read back: two cars (ids 26000, 26001), a person group as crowd, road as class only
    r = CityscapesReader(tmp_path)
    (sb,) = list(r.samples())
    assert (sb.image.id, sb.image.file_name, sb.image.split) == (1, "aachen_000001_000002.png", "val")
    mb = materialize_cityscapes(sb, r.meta)
    assert [(i.instance.category_id, i.instance.iscrowd) for i in mb.instances] == [(4, True), (3, False), (3, False)]
    assert {c.id for c in r.meta.categories} == {1, 2, 3, 4}
    assert mb.class_map[0, 0] == 3 and mb.class_map[7, 0] == 2 and mb.class_map[4, 9] == 1


def test_crowd_merge_overflow_and_out_of_range(tmp_path: Path) -> None:
    # custom mode: "thing" is no Cityscapes class; ids = category ids; "car" keeps its train id 13
    cats = [Category(0, "bg", isthing=False), Category(3, "car"), Category(70, "thing")]
    plan = plan_labels(cats)
    assert not plan.official and plan.label_of == {0: 0, 3: 3, 70: 70} and plan.train_of[3] == 13
    assert plan.train_of[70] == 255 and plan.has_train_ids
    h, w = 40, 40
    inst = []
    for k in range(1001):   # 1001 one-pixel cars: the last cannot be numbered
        mk = np.zeros((h, w), bool)
        mk[divmod(k, w)] = True
        inst.append(_inst(k + 1, 3, mk))
    c1 = np.zeros((h, w), bool)
    c1[39, :2] = True
    c2 = np.zeros((h, w), bool)
    c2[39, 5:7] = True
    t1 = np.zeros((h, w), bool)
    t1[38, 30:] = True
    inst += [_inst(2001, 3, c1, crowd=True), _inst(2002, 3, c2, crowd=True), _inst(2003, 70, t1)]
    cm = np.zeros((h, w), np.uint8)
    cm[30, :4] = 255                   # void merges with bg (label 0)
    s = Materialized(Sample(ImageInfo(1, "x/y.png", w, h)), tuple(inst), class_map=None)
    losses = _write([s], _meta(cats), tmp_path / "a", copy_images="none")
    t = losses.totals()
    assert t["instance_index_overflow"] == 1 and t["crowd_to_group"] == 1 and t["instance_id_out_of_range"] == 1
    ids = read_label_map(tmp_path / "a/gtFine/train/x/y_gtFine_instanceIds.png")  # no split: train
    assert ids[0, 0] == 3000 and ids[divmod(999, w)] == 3999 and ids[divmod(1000, w)] == 3
    assert ids[39, 0] == 3 and ids[38, 35] == 70
    s2 = Materialized(Sample(ImageInfo(2, "z.png", w, h)), (), class_map=cm)
    l2 = _write([s2], _meta(cats), tmp_path / "b", copy_images="none")
    assert l2.totals() == {"void_merged_with_label0": 4}
    with pytest.raises(FormatError, match="0..65534"):
        plan_labels([Category(70000, "big")])


def test_images_copied_or_reencoded_upright(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    up = np.zeros((16, 32, 3), np.uint8)
    up[:, :16] = 255
    Image.fromarray(up).save(src / "p.png")
    ex = Image.Exif()
    ex[0x0112] = 6   # stored rotated: viewers turn it 90° clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(up, 1))).save(src / "j.jpg", quality=98, exif=ex.tobytes())
    cats = [Category(1, "road", isthing=False)]
    samples = [Materialized(Sample(ImageInfo(i + 1, n, 32, 16), image_path=str(src / n)), (),
                            class_map=np.ones((16, 32), np.uint8)) for i, n in enumerate(["p.png", "j.jpg"])]
    losses = _write(samples, _meta(cats), tmp_path / "o")
    base = tmp_path / "o/leftImg8bit/train/default"  # no split: train (torchvision's default split)
    assert (base / "p_leftImg8bit.png").read_bytes() == (src / "p.png").read_bytes()
    got = read_image(base / "j_leftImg8bit.png", exif=False)
    assert got.shape == (16, 32, 3) and np.abs(got.astype(int) - up).max() < 40
    assert "images_reencoded_upright" in losses.notes and losses.lossless


def test_duplicate_place_is_an_error(tmp_path: Path) -> None:
    cats = [Category(1, "road", isthing=False)]
    samples = [Materialized(Sample(ImageInfo(i + 1, n, 2, 2)), (), class_map=np.ones((2, 2), np.uint8))
               for i, n in enumerate(["a.png", "a.jpg"])]
    w = CityscapesWriter(tmp_path, _meta(cats), WriteOptions(copy_images="none"))
    w.prepare()
    r = w.write_shard(0, samples)
    with pytest.raises(FormatError, match="both map to"):
        w.finalize([r])


def test_cli_lists_and_converts(tmp_path: Path) -> None:
    """The real CLI: the format is registered (r/w) and `segpipe convert --to cityscapes` runs."""
    out = subprocess.run([sys.executable, "-m", "segpipe", "formats"], capture_output=True, text=True, check=True)
    assert any("cityscapes" in ln for ln in out.stdout.splitlines())
    from segpipe.synth import synth

    synth("streetview", tmp_path / "sv", n=3, seed=1, size=(64, 128))
    p = subprocess.run([sys.executable, "-m", "segpipe", "--quiet", "convert", str(tmp_path / "sv/annotations.json"),
                        str(tmp_path / "cs"), "--to", "cityscapes", "--workers", "0"], capture_output=True, text=True)
    assert p.returncode in (0, 1), p.stderr
    rep = json.loads((tmp_path / "cs" / "conversion_report.json").read_text())
    assert sum(rep["losses"]["counts_out"].values()) == sum(rep["losses"]["counts_in"].values())
    labs = sorted((tmp_path / "cs" / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(labs) == 3
    spec = get_format("cityscapes")
    r = spec.reader(tmp_path / "cs")
    names = {c.name for c in r.meta.categories}
    assert {"car", "person", "road", "sky"} <= names


@needs_asset
def test_validate(tmp_path: Path) -> None:
    from segpipe.formats.cityscapes import validate_cityscapes

    assert not [p for p in validate_cityscapes(ASSET) if p.severity == "error"]
    d = tmp_path / "gtFine" / "val" / "c"
    d.mkdir(parents=True)
    Image.fromarray(np.array([[7001, 26000, 99]], np.uint16)).save(d / "c_1_2_gtFine_instanceIds.png")
    Image.fromarray(np.array([[7, 25, 99]], np.uint8)).save(d / "c_1_2_gtFine_labelIds.png")
    codes = sorted(p.code for p in validate_cityscapes(tmp_path))
    assert codes == ["cityscapes.inconsistent", "cityscapes.instance_of_stuff", "cityscapes.unknown_label",
                     "cityscapes.unknown_label"]
