"""YOLO (Ultralytics) detect and segment: round trips, counted losses, peers' datasets and peers' loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segpipe.core import rle as rle_ops
from segpipe.core.contours import polygonize, rasterize
from segpipe.errors import FormatError, LossError, UnsafePathError, UnsupportedError
from segpipe.formats import detect_format, get_format
from segpipe.formats.derive import derive_instances
from segpipe.formats.yolo import YoloReader, validate_yolo
from segpipe.formats.yolo.layout import detect_yolo
from segpipe.formats.yolo.writer import join_parts, mask_polygon
from tests.datagen import make_coco
from tests.formats._perimage import (
    REPO,
    convert_lossless,
    ring_and_island_maskdir,
    run_peer,
    same_stem_coco,
    write_shard_twice,
)
from tests.formats._perimage import convert_in_process as _convert
from tests.formats._perimage import random_image as _img
from tests.formats.test_contract import _named_class_map, _read

DATUMARO_YOLO = REPO.parent / "shared" / "testdata" / "datumaro" / "tests" / "assets" / "yolo_dataset"


def _holdable_coco(root: Path) -> Path:
    """COCO with what YOLO holds exactly: one simple part per object, no holes, no overlaps, no crowd."""
    w, h = 40, 30
    shapes = [
        [[2, 2, 12, 2, 12, 9, 2, 9]],  # rectangle
        [[15, 3, 25, 3, 25, 6, 19, 6, 19, 14, 15, 14]],  # L shape
        [[28, 20, 38, 20, 28, 28]],  # triangle (staircase when rasterised)
    ]
    cats = [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}]
    images, anns = [], []
    for i in range(3):
        fn = f"pic_{i}.png"
        _img(root / "images" / fn, w, h, seed=i)
        images.append({"id": i + 1, "file_name": fn, "width": w, "height": h})
        for k, seg in enumerate(shapes[: i + 1]):
            m = rle_ops.polygons_to_rle(seg, h, w)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cats[k % 2]["id"], "segmentation": seg,
                         "area": float(rle_ops.area(m)), "bbox": list(rle_ops.to_bbox(m)), "iscrowd": 0})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_holdable_round_trip_is_lossless_and_pixel_identical(tmp_path):
    src = _holdable_coco(tmp_path / "src")
    a, b = convert_lossless(src, tmp_path / "y", "yolo")
    for stem, (s0, m0, meta0) in a.items():
        s1, m1, meta1 = b[stem]
        assert s1.image.split == "train" and s1.image.file_name == s0.image.file_name
        assert np.array_equal(_named_class_map(m0, meta0), _named_class_map(m1, meta1))
        masks0 = [im.rle["counts"] for im in derive_instances(m0, meta0)[0]]
        masks1 = [im.rle["counts"] for im in derive_instances(m1, meta1)[0]]
        assert masks1 == masks0  # same order too: z-order is kept
    # ... and back out again: the same label files byte for byte.
    _convert(tmp_path / "y", tmp_path / "y2", "yolo")
    for f in (tmp_path / "y" / "labels" / "train").iterdir():
        assert (tmp_path / "y2" / "labels" / "train" / f.name).read_text() == f.read_text()
    assert (tmp_path / "y2" / "data.yaml").read_text() == (tmp_path / "y" / "data.yaml").read_text()


def _filled(mask: np.ndarray) -> np.ndarray:
    return rasterize(polygonize(mask, holes="drop").polygons, *mask.shape)


def test_what_yolo_cannot_hold_is_counted_and_the_rest_comes_back_exact(tmp_path):
    src = make_coco(tmp_path / "src", n_images=6, objects=5, overlaps=True, crowd=True, keypoints=True)
    rep = _convert(src, tmp_path / "y", "yolo")
    t = rep["losses"]["totals"]
    for kind in ("holes_dropped", "hole_pixels_added", "parts_joined", "overlap_pixels", "crowd_dropped",
                 "keypoints_dropped"):
        assert t.get(kind, 0) > 0, (kind, t)
    assert set(t) <= {"holes_dropped", "hole_pixels_added", "parts_joined", "overlap_pixels", "crowd_dropped",
                      "keypoints_dropped"}, t
    src_r, got = _read(src, "coco"), _read(tmp_path / "y", "yolo")
    hole_px = overlap_px = 0
    for stem, (_, m0, meta0) in src_r.items():
        _, m1, _ = got[stem]
        kept = [im for im in m0.instances if not im.instance.iscrowd]
        assert len(m1.instances) == len(kept)
        cover = np.zeros((m0.sample.image.height, m0.sample.image.width), np.int32)
        for im0, im1 in zip(kept, m1.instances, strict=True):
            orig = rle_ops.decode(im0.rle).astype(bool)
            back = rle_ops.decode(im1.rle).astype(bool)
            # Parts are joined without changing a pixel; holes are filled and nothing else changes.
            assert np.array_equal(back, _filled(orig))
            hole_px += int((back & ~orig).sum())
            cover += back
            assert meta0.category_by_id()[im0.instance.category_id].name == \
                {c.id: c.name for c in got[stem][2].categories}[im1.instance.category_id]
        overlap_px += int((cover > 1).sum())
    assert hole_px == t["hole_pixels_added"]
    assert overlap_px == t["overlap_pixels"]
    with pytest.raises(LossError, match="holes_dropped"):
        _convert(src, tmp_path / "strict", "yolo", strict=True)
    assert not (tmp_path / "strict").exists()


def test_joined_parts_rasterise_exactly():
    rng = np.random.default_rng(3)
    for _ in range(40):
        m = rng.random((24, 31)) > 0.72  # many small parts, diagonal contacts, holes
        polys, stats = mask_polygon(m, join=True)
        assert stats["changed_pixels"] == 0
        if m.any():
            assert len(polys) == 1
            assert np.array_equal(rasterize(polys, *m.shape), _filled(m))
    assert join_parts([[0, 0, 2, 0, 2, 2], [5, 5, 6, 5, 6, 6]])[:2] == [0.0, 0.0]


def test_semantic_source_becomes_components_largest_first(tmp_path):
    root = ring_and_island_maskdir(tmp_path / "md")
    rep = _convert(root, tmp_path / "y", "yolo")
    assert rep["losses"]["totals"] == {"hole_pixels_added": 9, "holes_dropped": 1, "overlap_pixels": 9}
    assert "semantic_components_as_objects" in rep["losses"]["notes"]
    lines = (tmp_path / "y" / "labels" / "train" / "a.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["0", "0", "1"]  # road (100 px), road (32 px), car (9 px)
    assert "background" not in (tmp_path / "y" / "data.yaml").read_text()
    a, b = _read(root, "maskdir"), _read(tmp_path / "y", "yolo")
    got = _named_class_map(b["a"][1], b["a"][2])
    want = _named_class_map(a["a"][1], a["a"][2])
    want[want == "void"] = ""
    assert np.array_equal(got, want)  # the island is drawn over the filled hole


def test_detect_writes_tight_boxes(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3, objects=4, overlaps=True, crowd=False, keypoints=False)
    rep = _convert(src, tmp_path / "d", "yolo_detect")
    assert set(rep["losses"]["totals"]) == {"masks_to_boxes"}
    assert detect_format(tmp_path / "d") == "yolo"  # every YOLO folder reads as "yolo"
    a, b = _read(src, "coco"), _read(tmp_path / "d", "yolo")
    for stem, (_, m0, _) in a.items():
        boxes0 = [rle_ops.to_bbox(im.rle) for im in m0.instances]
        boxes1 = [im.instance.bbox for im in b[stem][1].instances]
        assert all(im.rle is None for im in b[stem][1].instances)
        np.testing.assert_allclose(np.array(boxes1), np.array(boxes0), atol=1e-5)


def _yolo_dataset(root: Path, yaml_text: str, labels: dict[str, str], images: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml_text)
    for rel in images:
        _img(root / rel, 20, 10)
    for rel, text in labels.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_splits_lists_names_and_boxes(tmp_path):
    root = _yolo_dataset(
        tmp_path / "ds",
        "path: .\ntrain: train.txt\nval: [images/val]\ntest: images/test\nnames: [a, b]\n",
        {"train.txt": "./images/train/x.jpg\nimages/train/sub/y.png\n",
         "labels/train/x.txt": "1 0.5 0.5 0.5 1\n\n",
         "labels/train/sub/y.txt": "0 0.1 0.1 0.9 0.1 0.9 0.9\n",
         "labels/val/z.txt": ""},
        ("images/train/x.jpg", "images/train/sub/y.png", "images/val/z.jpg", "images/test/t.jpg"),
    )
    r = YoloReader(root)
    assert not r.problems and r.losses.lossless
    got = {(s.image.split, s.image.file_name): s for s in r.samples()}
    assert sorted(got) == [("test", "t.jpg"), ("train", "sub/y.png"), ("train", "x.jpg"), ("val", "z.jpg")]
    x = got[("train", "x.jpg")].instances[0]
    assert x.category_id == 2 and x.bbox == (5.0, 0.0, 10.0, 10.0) and x.segmentation is None
    y = got[("train", "sub/y.png")].instances[0]
    assert y.segmentation.polygons == ((2.0, 1.0, 18.0, 1.0, 18.0, 9.0),)
    assert [c.name for c in r.meta.categories] == ["a", "b"]
    _convert(root, tmp_path / "out", "yolo")
    data = (tmp_path / "out" / "data.yaml").read_text()
    assert "val: images/val" in data and "test: images/test" in data and "  0: a" in data
    assert (tmp_path / "out" / "labels" / "test" / "t.txt").read_text() == ""  # no objects: empty label file
    assert (tmp_path / "out" / "images" / "train" / "sub" / "y.png").is_file()


def test_validate_names_every_bad_line_and_orphan(tmp_path):
    root = _yolo_dataset(
        tmp_path / "ds", "train: images/train\nval: images/train\nnames: {0: a}\nnc: 1\ndownload: x.sh\n",
        {"labels/train/x.txt": "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n0 0.5 0.5\n0 1.5 0.5 0.2 0.2\n0 a b c d\n",
         "labels/train/ghost.txt": "0 0.5 0.5 0.1 0.1\n", "notes.md": "hi"},
        ("images/train/x.jpg",),
    )
    probs = [(p.severity, p.file, p.where, p.code) for p in validate_yolo(root)]
    assert ("error", "labels/train/x.txt", "line 2", "yolo.line") in probs
    assert ("error", "labels/train/x.txt", "line 3", "yolo.line") in probs
    assert ("error", "labels/train/x.txt", "line 4", "yolo.line") in probs
    assert ("error", "labels/train/x.txt", "line 5", "yolo.line") in probs
    assert ("error", "labels/train/ghost.txt", "", "yolo.label_without_image") in probs
    assert ("warning", "notes.md", "", "yolo.file_not_read") in probs
    assert ("warning", "data.yaml", "download", "yolo.key_not_read") in probs
    with pytest.raises(FormatError, match="class 3 is not in names") as e:
        YoloReader(root)
    assert str(e.value).startswith(str((root / "labels/train/x.txt").resolve()) + ": line 2:")


def test_reader_accounts_for_what_it_does_not_read(tmp_path):
    root = _yolo_dataset(
        tmp_path / "ds", "train: images/train\nval: images/train\nnames: [a]\nflip_idx: [0]\n",
        {"labels/train/x.txt": "0 0.5 0.5 0.2 0.2\n", "labels/train/ghost.txt": "0 0.5 0.5 0.1 0.1\n",
         "README.md": "x", "labels/train.cache": "x"},
        ("images/train/x.jpg",),
    )
    r = YoloReader(root)
    assert r.losses.totals() == {"files_not_read": 1, "keys_not_read": 1, "labels_without_image": 1}
    codes = {p.code for p in r.problems}
    assert codes == {"yolo.file_not_read", "yolo.key_not_read", "yolo.label_without_image", "yolo.cache_not_read"}


def test_paths_never_leave_the_dataset(tmp_path):
    (tmp_path / "outside").mkdir()
    _img(tmp_path / "outside" / "o.jpg", 20, 10)
    for n, val in enumerate(["../outside", f"{tmp_path / 'outside'}", "images/../../outside"]):
        root = _yolo_dataset(tmp_path / f"ds{n}", f"train: {val}\nnames: [a]\n", {}, ("images/train/x.jpg",))
        with pytest.raises((UnsafePathError, FormatError)) as e:
            YoloReader(root)
        assert "data.yaml" in str(e.value) and "train" in str(e.value)
    root = _yolo_dataset(tmp_path / "ds9", "train: t.txt\nnames: [a]\n", {"t.txt": "../outside/o.jpg\n"})
    with pytest.raises(UnsafePathError, match="t.txt: line 1"):
        YoloReader(root)
    root = _yolo_dataset(tmp_path / "dsp", "path: /somewhere/else\ntrain: images/train\nnames: [a]\n", {},
                         ("images/train/x.jpg",))
    r = YoloReader(root)
    assert [p.code for p in r.problems] == ["yolo.path_ignored"] and len(r) == 1
    root = _yolo_dataset(tmp_path / "dsk", "train: images/train\nnames: [a]\nkpt_shape: [17, 3]\n", {})
    with pytest.raises(UnsupportedError, match="kpt_shape"):
        YoloReader(root)
    root = _yolo_dataset(tmp_path / "dsy", "train: !!python/object/apply:os.system ['true']\nnames: [a]\n", {})
    with pytest.raises(FormatError, match="not valid YAML"):
        YoloReader(root)


def test_detection_claims_yolo_and_nothing_else(tmp_path):
    src = _holdable_coco(tmp_path / "src")
    assert not detect_yolo(src.parent) and not detect_yolo(src)
    for fmt in ("voc", "maskdir", "cityscapes"):
        if get_format(fmt).writer is not None:
            _convert(src, tmp_path / fmt, fmt)
            assert not detect_yolo(tmp_path / fmt), fmt
    _convert(src, tmp_path / "y", "yolo")
    assert detect_yolo(tmp_path / "y") and detect_yolo(tmp_path / "y" / "data.yaml")
    assets = REPO.parent / "shared" / "testdata" / "datumaro" / "tests" / "assets"
    for d in ("coco_dataset/coco", "voc_dataset/voc", "cvat_dataset/for_images", "labelme_dataset"):
        if (assets / d).is_dir():
            assert not detect_yolo(assets / d), d


@pytest.mark.skipif(not DATUMARO_YOLO.is_dir(), reason="Datumaro's YOLO test assets are not in ../shared/testdata")
@pytest.mark.parametrize(
    "variant,splits", [("strict", ["train"]), ("labels", ["train", "val"]), ("annotations", [None])]
)
def test_reads_datumaro_yolo_assets(variant, splits):
    path = DATUMARO_YOLO / variant
    assert detect_format(path) == "yolo"
    r = YoloReader(path)
    assert [c.name for c in r.meta.categories] == [f"label_{i}" for i in range(10)]
    got = list(r.samples())
    assert [s.image.split for s in got] == splits
    for s in got:
        assert (s.image.file_name, s.image.width, s.image.height) == ("1.jpg", 15, 10)
        # Datumaro's own expectation for this asset: Bbox(0, 2, 4, 2, label=2), Bbox(3, 3, 2, 3, label=4)
        assert [r.meta.category_by_id()[i.category_id].name for i in s.instances] == ["label_2", "label_4"]
        np.testing.assert_allclose([i.bbox for i in s.instances], [(0, 2, 4, 2), (3, 3, 2, 3)], atol=1e-4)
    # Everything in the folder is read except Datumaro's README.txt in the "labels" variant, which is counted.
    assert r.losses.totals() == ({"files_not_read": 1} if variant == "labels" else {})


# --- conformance with the peers' own loaders (ultralytics, datumaro in .venv-peers: `make peers-yolo`) ---

def _peer(*args: str, cwd: Path) -> dict:
    return run_peer("_yolo_peer.py", *args, cwd=cwd,
                    env={"YOLO_CONFIG_DIR": str(cwd / "ultralytics-config"), "YOLO_OFFLINE": "1"},
                    not_importable=("No module named",), missing="peer not installed", hint="peers' venv absent: "
                    "run `make peers-yolo` (installs ultralytics and datumaro into .venv-peers)")


def test_ultralytics_loads_segment_output_as_written(tmp_path):
    src = make_coco(tmp_path / "src", n_images=4, objects=4, overlaps=False, crowd=False, keypoints=False)
    _convert(src, tmp_path / "y", "yolo")
    ours = _read(tmp_path / "y", "yolo")
    peer = _peer("ultralytics", str(tmp_path / "y"), "segment", cwd=tmp_path)
    assert set(peer["images"]) == set(ours)
    for stem, (_, m, _meta) in ours.items():
        objs = peer["images"][stem]["objects"]
        assert [o["cls"] + 1 for o in objs] == [im.instance.category_id for im in m.instances]
        for o, im in zip(objs, m.instances, strict=True):
            ours_mask = rle_ops.decode(im.rle).astype(bool)
            theirs = np.zeros_like(ours_mask)
            theirs[tuple(np.array(o["mask"]).T)] = True
            # OpenCV fills pixels whose centre is on or inside the polygon (pixel corners at integers), so it
            # adds the right and bottom boundary rows that pycocotools leaves out; it never loses a pixel.
            assert not (ours_mask & ~theirs).any()
            box = rle_ops.to_bbox(im.rle)
            np.testing.assert_allclose(o["box"], box, atol=1e-3)


def test_peers_load_detect_output_as_written(tmp_path):
    src = make_coco(tmp_path / "src", n_images=4, objects=4, overlaps=True, crowd=False, keypoints=False)
    _convert(src, tmp_path / "d", "yolo_detect")
    ours = _read(tmp_path / "d", "yolo")
    for peer in ("ultralytics", "datumaro"):
        args = ["datumaro", str(tmp_path / "d")] + (["detect"] if peer == "ultralytics" else [])
        args[0] = peer
        got = _peer(*args, cwd=tmp_path)
        assert set(got["images"]) == set(ours), peer
        for stem, (_, m, _) in ours.items():
            objs = got["images"][stem]["objects"]
            assert [o["cls"] + 1 for o in objs] == [im.instance.category_id for im in m.instances], peer
            np.testing.assert_allclose([o["box"] for o in objs], [im.instance.bbox for im in m.instances], atol=1e-3)


def test_datumaro_yolo_export_reads_back_identical(tmp_path):
    assets = REPO.parent / "shared" / "testdata" / "datumaro" / "tests" / "assets" / "coco_dataset" / "coco_instances"
    if not assets.is_dir():
        pytest.skip("Datumaro's COCO assets are not in ../shared/testdata")
    _peer("datumaro-export", str(assets), str(tmp_path / "dm"), cwd=tmp_path)
    r = YoloReader(tmp_path / "dm")
    src = {s.image.file_name.rsplit("/", 1)[-1]: s for s in get_format("coco").reader(assets).samples()}
    names = {c.id: c.name for c in r.meta.categories}
    for s in r.samples():
        assert s.image.split in ("train", "val")
        s0 = src[s.image.file_name]
        src_names = {c.id: c.name for c in get_format("coco").reader(assets).meta.categories}
        want = [(src_names[i.category_id], i.bbox) for i in s0.instances if i.bbox is not None and not i.iscrowd]
        got = [(names[i.category_id], i.bbox) for i in s.instances]
        assert [n for n, _ in got] == [n for n, _ in want]
        # Datumaro writes 6 decimals: boxes agree to 1e-6 of the image size.
        np.testing.assert_allclose([b for _, b in got], [b for _, b in want], atol=1e-5 * max(s.image.width, 10))


def test_two_images_with_one_stem_are_never_merged_silently(tmp_path):
    anns = [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
             "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}]
    rep = _convert(same_stem_coco(tmp_path / "src", anns), tmp_path / "y", "yolo")
    assert rep["losses"]["totals"] == {"image_name_collision": 1}
    assert [p.name for p in (tmp_path / "y" / "labels" / "train").iterdir()] == ["a.txt"]
    assert len(list((tmp_path / "y" / "images" / "train").iterdir())) == 1


@pytest.mark.parametrize("to", ["yolo", "yolo_detect"])
def test_a_shard_run_twice_finds_no_false_collision(tmp_path, to):
    # Dask re-runs a shard whose worker was killed: the re-run meets its own files, not another image's.
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
             "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}]
    src = same_stem_coco(tmp_path / "src", anns)
    first, again = write_shard_twice(src, tmp_path / "y", to)
    assert first.losses.totals() == again.losses.totals()
    assert again.losses.totals()["image_name_collision"] == 1  # a.jpg, both times
    assert again.fragments == first.fragments == [{"split": "train", "file_name": "a.png", "objects": 1}]
    assert dict(again.losses.counts_out) == {"x": 1}
    assert sorted(p.relative_to(tmp_path / "y").as_posix() for p in (tmp_path / "y").rglob("*") if p.is_file()) == [
        "data.yaml", "images/train/a.png", "labels/train/a.txt"]
    _convert(src, tmp_path / "ref", to)  # the label file is whole again: as one clean run writes it
    assert (tmp_path / "y" / "labels" / "train" / "a.txt").read_bytes() == \
        (tmp_path / "ref" / "labels" / "train" / "a.txt").read_bytes()
