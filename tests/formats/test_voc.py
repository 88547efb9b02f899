from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segpipe.core import rle as rle_ops
from segpipe.core.labelmap import voc_colormap
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    InstanceMask,
    Materialized,
    Sample,
    Segmentation,
)
from segpipe.errors import FormatError, UnsafePathError
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import WriteOptions
from segpipe.formats.voc import VocReader, VocWriter, materialize_voc
from segpipe.formats.voc.xml import coco_box_to_voc, voc_box_to_coco
from segpipe.storage.images import read_label_map, read_palette, write_label_png

#: Where the default (``devkit``) layout puts the VOC root below the output folder.
DEVKIT = "VOCdevkit/VOC2012"


def _convert(samples: list[Materialized], meta: DatasetMeta, out: Path, shard: int = 2, **opts):
    w = VocWriter(out, meta, WriteOptions(**opts))
    w.prepare()
    results = [
        w.write_shard(i, samples[i * shard : (i + 1) * shard])
        for i in range((len(samples) + shard - 1) // shard)
    ]
    w.finalize(results)
    losses = results[0].losses
    for r in results[1:]:
        losses.merge(r.losses)
    return losses


def _read_all(path: Path) -> tuple[VocReader, list[Materialized]]:
    r = VocReader(path)
    return r, [materialize_voc(s, r.meta) for s in r.samples()]


def _nn(r: dict | None) -> dict:
    assert r is not None
    return r


def _dec(r: dict | None) -> np.ndarray:
    return rle_ops.decode(_nn(r))


def _rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _coco_like(tmp_path: Path) -> tuple[DatasetMeta, list[Materialized]]:
    """A COCO-style dataset: non-contiguous category ids, nested file names, crowd, keypoints, overlap."""
    meta = DatasetMeta(
        "coco",
        (
            Category(1, "person", "human", keypoints=("nose", "eye")),
            Category(18, "dog", "animal"),
            Category(90, "toothbrush", "indoor", color=(10, 20, 30)),
        ),
        info={"year": 2017},
        licenses=({"id": 1, "name": "cc"},),
    )
    img_dir = tmp_path / "src" / "train"
    img_dir.mkdir(parents=True)
    samples = []
    for n, (iid, h, w) in enumerate([(42, 20, 30), (7, 16, 16), (100, 10, 12)]):
        p = img_dir / f"im{n}.jpg"
        p.write_bytes(b"\xff\xd8fake" + bytes([n]))
        info = ImageInfo(
            iid, f"train/im{n}.jpg", w, h, "train" if n < 2 else None, {"license": 1, "coco_url": f"u{n}"}
        )
        a = _rect(h, w, 1, 1, 6, 8)
        b = _rect(h, w, 4, 5, 9, 12)  # overlaps a by (6-4)*(8-5) = 6 px
        c = _rect(h, w, 0, 0, 1, 1)
        insts = [
            Instance(
                1000 + n * 10 + 1,
                iid,
                18,
                Segmentation.from_rle(rle_ops.encode(a)),
                (1.0, 1.0, 7.0, 5.0),
                35.0,
                attributes={"note": "x", "nested": {"k": [1, 2]}},
            ),
            Instance(
                1000 + n * 10 + 2,
                iid,
                1,
                Segmentation.from_rle(rle_ops.encode(b)),
                (5.0, 4.0, 7.0, 5.0),
                35.0,
                keypoints=(6.0, 5.0, 2.0, 0.0, 0.0, 0.0),
                num_keypoints=1,
            ),
            Instance(
                1000 + n * 10 + 3,
                iid,
                90,
                Segmentation.from_rle(rle_ops.encode(c)),
                (0.0, 0.0, 1.0, 1.0),
                1.0,
                iscrowd=True,
            ),
            Instance(1000 + n * 10 + 4, iid, 90, None, (2.25, 3.5, 4.125, 2.0), None, score=0.5),
        ]
        ims = tuple(
            InstanceMask(i, rle_ops.to_rle(i.segmentation, h, w) if i.segmentation else None) for i in insts
        )
        samples.append(Materialized(Sample(info, str(p), tuple(insts)), ims))
    return meta, samples


def test_registered_and_detected(tmp_path: Path) -> None:
    spec = get_format("voc")
    assert spec.reader is VocReader and spec.writer is VocWriter and spec.validate is not None
    (tmp_path / "Annotations").mkdir()
    assert detect_format(tmp_path) == "voc"


def test_coco_to_voc_to_records_restores_ids_and_counts_losses(tmp_path: Path) -> None:
    meta, samples = _coco_like(tmp_path)
    out = tmp_path / "voc"
    losses = _convert(samples, meta, out)
    t = losses.totals()
    assert t["overlap_flattened_pixels"] == 3 * 6
    assert t["crowd_to_void"] == 3
    assert t["keypoints_dropped"] == 3 and t["scores_dropped"] == 3
    assert "box_only_no_mask" not in t  # XML holds boxes
    assert "category_ids_reindexed" in losses.notes
    # counts_in is the orchestration's job; the writer counts what it wrote
    assert losses.counts_out == {"dog": 3, "person": 3, "toothbrush": 6}

    root = out / DEVKIT  # the default layout: torchvision's VOCSegmentation(root=out) finds it there
    labelmap = (root / "labelmap.txt").read_text().splitlines()
    assert labelmap[1:] == [
        "background:0,0,0::",
        "person:128,0,0::",
        "dog:0,128,0::",
        "toothbrush:10,20,30::",
    ]
    assert (root / "JPEGImages" / "train__im0.jpg").read_bytes() == (
        tmp_path / "src/train/im0.jpg"
    ).read_bytes()
    # shard order; im2 has no split: train (never "default", which torchvision refuses)
    assert (root / "ImageSets/Main/train.txt").read_text() == "train__im0\ntrain__im1\ntrain__im2\n"
    assert not (root / "ImageSets/Main/default.txt").exists()
    assert "train__im0  1" in (root / "ImageSets/Main/dog_train.txt").read_text()

    reader, got = _read_all(out)
    assert [c for c in reader.meta.categories] == list(meta.categories)
    assert reader.meta.info == {"year": 2017}
    by_id = {m.sample.image.id: m for m in got}
    assert sorted(by_id) == [7, 42, 100]
    for src in samples:
        m = by_id[src.sample.image.id]
        assert m.sample.image == src.sample.image  # id, file name, split (None restored), attributes
        assert [i.instance.id for i in m.instances] == [i.instance.id for i in src.instances]
        for a, b in zip(m.instances, src.instances, strict=True):
            assert (
                a.instance.category_id,
                a.instance.bbox,
                a.instance.iscrowd,
                dict(a.instance.attributes),
            ) == (b.instance.category_id, b.instance.bbox, b.instance.iscrowd, dict(b.instance.attributes))
        h, w = src.sample.image.height, src.sample.image.width
        # the top instance (person) is pixel-identical; the dog lost exactly the overlap
        np.testing.assert_array_equal(_dec(m.instances[1].rle), _dec(src.instances[1].rle))
        dog = _dec(src.instances[0].rle) & ~_dec(src.instances[1].rle)
        np.testing.assert_array_equal(_dec(m.instances[0].rle), dog)
        assert m.instances[2].rle is None and m.instances[3].rle is None  # crowd became void; box only
        assert m.class_map[0, 0] == 255 and m.class_map.shape == (h, w)
        assert set(np.unique(m.class_map)) <= {0, 1, 18, 255}


def test_voc_box_convention_round_trips() -> None:
    for box in [(1, 2, 3, 4), (5.5, 6, 7.5, 8), (1, 1, 1, 1)]:
        assert coco_box_to_voc(voc_box_to_coco(box)) == tuple(float(v) for v in box)
    assert voc_box_to_coco((1, 2, 3, 4)) == (0.0, 1.0, 3.0, 3.0)


def _write_voc(
    root: Path, stems: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], labelmap: str | None = None
):
    for d in (
        "Annotations",
        "SegmentationClass",
        "SegmentationObject",
        "ImageSets/Segmentation",
        "JPEGImages",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    for stem, (cm, om, names) in stems.items():
        write_label_png(root / "SegmentationClass" / f"{stem}.png", cm, voc_colormap(256))
        write_label_png(root / "SegmentationObject" / f"{stem}.png", om, voc_colormap(256))
        objs = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
            f"<xmax>{cm.shape[1]}</xmax><ymax>{cm.shape[0]}</ymax></bndbox></object>"
            for n in names
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{cm.shape[1]}</width>"
            f"<height>{cm.shape[0]}</height><depth>3</depth></size>{objs}</annotation>"
        )
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(s + "\n" for s in stems))
    if labelmap is not None:
        (root / "labelmap.txt").write_text(labelmap)


@st.composite
def voc_images(draw: st.DrawFn) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    out = {}
    for k in range(draw(st.integers(1, 3))):
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        n_obj = draw(st.integers(0, 4))
        om = np.array(
            draw(st.lists(st.integers(0, n_obj), min_size=h * w, max_size=h * w)), np.uint8
        ).reshape(h, w)
        classes = [draw(st.integers(1, 20)) for _ in range(n_obj)]
        cm = np.zeros((h, w), np.uint8)
        for i, c in enumerate(classes):
            cm[om == i + 1] = c
        void = np.array(draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))).reshape(h, w)
        void &= draw(st.booleans())
        cm[void] = 255
        om[void] = 255
        from segpipe.core.labelmap import VOC_CLASSES

        out[f"2008_{k:06d}"] = (cm, om, [VOC_CLASSES[c] for c in classes])
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(voc_images())
def test_voc_records_voc_pixel_identical(tmp_path_factory: pytest.TempPathFactory, images) -> None:
    tmp = tmp_path_factory.mktemp("vocrt")
    src = tmp / "src"
    _write_voc(src, images)
    reader, got = _read_all(src)
    _convert(got, reader.meta, tmp / "out")
    for stem, (cm, om, _) in images.items():
        out = tmp / "out" / DEVKIT
        np.testing.assert_array_equal(read_label_map(out / "SegmentationClass" / f"{stem}.png"), cm)
        np.testing.assert_array_equal(read_label_map(out / "SegmentationObject" / f"{stem}.png"), om)
        assert read_palette(out / "SegmentationClass" / f"{stem}.png") is not None
    # and a second read gives the same records
    reader2, got2 = _read_all(tmp / "out")
    assert [m.instances for m in got2] == [m.instances for m in got]
    assert [m.sample.image for m in got2] == [m.sample.image for m in got]


def test_custom_labelmap_survives(tmp_path: Path) -> None:
    cm = np.array([[0, 1, 2], [2, 255, 1]], np.uint8)
    om = np.array([[0, 1, 2], [2, 255, 1]], np.uint8)
    _write_voc(
        tmp_path / "src",
        {"a": (cm, om, ["road", "car"])},
        labelmap="# label:color_rgb:parts:actions\nbackground:0,0,0::\nroad:128,64,128::\ncar:0,0,142::\n",
    )
    reader, got = _read_all(tmp_path / "src")
    assert [c.name for c in reader.meta.categories] == ["background", "road", "car"]
    assert [(i.instance.category_id, rle_ops.area(_nn(i.rle))) for i in got[0].instances] == [(1, 2), (2, 2)]
    _convert(got, reader.meta, tmp_path / "out")
    out = tmp_path / "out" / DEVKIT
    assert "road:128,64,128::" in (out / "labelmap.txt").read_text()
    pal = read_palette(out / "SegmentationClass/a.png")
    assert pal is not None
    assert tuple(pal[1]) == (128, 64, 128) and tuple(pal[255]) == (224, 224, 192)
    np.testing.assert_array_equal(read_label_map(out / "SegmentationClass/a.png"), cm)


def test_unknown_xml_class_is_added_not_dropped(tmp_path: Path) -> None:
    cm = np.zeros((2, 2), np.uint8)
    _write_voc(tmp_path, {"a": (cm, cm, ["unicorn"])})
    r = VocReader(tmp_path)
    assert r.meta.categories[-1].name == "unicorn"
    assert [p.code for p in r.problems] == ["voc.unknown_class", "voc.missing_image"]


def test_too_many_classes(tmp_path: Path) -> None:
    meta = DatasetMeta("coco", tuple(Category(i + 1, f"c{i}") for i in range(300)))
    with pytest.raises(FormatError, match="255"):
        VocWriter(tmp_path, meta)


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<annotation><filename>&lol2;</filename></annotation>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation><filename>&xxe;</filename></annotation>"""


@pytest.mark.parametrize("payload", [BOMB, XXE])
def test_xml_bombs_rejected(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_bytes(payload)
    with pytest.raises(FormatError) as ei:
        VocReader(tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg and "x.xml" in msg and "unsafe XML" in msg


def test_unsafe_names_rejected(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("../../etc/passwd\n")
    with pytest.raises(UnsafePathError, match="escapes"):
        VocReader(root)
    (root / "ImageSets/Main/train.txt").write_text("ok\n")
    outside = tmp_path / "secret.xml"
    outside.write_text("<annotation/>")
    os.symlink(outside, root / "Annotations" / "ok.xml")
    with pytest.raises(UnsafePathError, match="outside"):
        VocReader(root)


def test_writer_never_writes_outside_out(tmp_path: Path) -> None:
    meta = DatasetMeta("coco", (Category(1, "a"),))
    out = tmp_path / "out"
    w = VocWriter(out, meta)
    w.prepare()
    evil = Materialized(Sample(ImageInfo(1, "../../evil.jpg", 2, 2)))
    with pytest.raises(UnsafePathError):
        w.write_shard(0, [evil])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    abs_name = Materialized(Sample(ImageInfo(1, "/etc/x.jpg", 2, 2)))
    with pytest.raises(UnsafePathError):
        w.write_shard(0, [abs_name])


def test_duplicate_stems_refused(tmp_path: Path) -> None:
    meta = DatasetMeta("coco", (Category(1, "a"),))
    w = VocWriter(tmp_path, meta, WriteOptions(copy_images="none"))
    w.prepare()
    r = w.write_shard(
        0,
        [
            Materialized(Sample(ImageInfo(1, "a.jpg", 2, 2))),
            Materialized(Sample(ImageInfo(2, "a.png", 2, 2))),
        ],
    )
    with pytest.raises(FormatError, match="same VOC stem|both map"):
        w.finalize([r])


def test_hard_link_option(tmp_path: Path) -> None:
    meta, samples = _coco_like(tmp_path)
    _convert(samples[:1], meta, tmp_path / "out", copy_images="link")
    dst = tmp_path / "out" / DEVKIT / "JPEGImages/train__im0.jpg"
    assert dst.stat().st_ino == (tmp_path / "src/train/im0.jpg").stat().st_ino
