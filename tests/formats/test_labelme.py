"""LabelMe JSON: round trips, counted losses, every shape type, embedded images, paths, detection, the peer's loader."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.errors import FormatError, InputError, LossError, UnsafePathError
from segpipe.formats import detect_format, get_format
from segpipe.formats.derive import derive_instances
from segpipe.formats.labelme import LabelmeReader, detect_labelme, is_labelme_xml, validate_labelme
from segpipe.formats.labelme import shapes as shapes_mod
from segpipe.formats.labelme.shapes import circle_mask
from segpipe.formats.voc.reader import detect_voc
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

ASSETS = REPO.parent / "shared" / "testdata" / "datumaro" / "tests" / "assets"
LABELME_XML = ASSETS / "labelme_dataset"


def _png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")  # mode L 0/1, as LabelMe writes masks
    return base64.b64encode(buf.getvalue()).decode()


def _lm(path: Path, shapes: list, image_path: str = "a.png", w: int = 20, h: int = 10, **top) -> Path:
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
           "imageHeight": h, "imageWidth": w, **top}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _shape(label, points, shape_type="polygon", group_id=None, **kw) -> dict:
    return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": shape_type,
            "flags": {}, **kw}


def _masks(path: Path, fmt: str) -> dict[str, list[str]]:
    """Every image's instance masks (compressed RLE counts, in order), by file stem."""
    return {stem: [im.rle["counts"] for im in derive_instances(m, meta)[0] if im.rle]
            for stem, (_, m, meta) in _read(path, fmt).items()}


# ------------------------------------------------------------------------------------------ round trips


def test_coco_round_trip_is_lossless_pixel_identical_and_stable(tmp_path):
    # Holes, several parts, overlaps: all held (holes as mask shapes, parts as grouped polygons).
    src = make_coco(tmp_path / "src", n_images=5, objects=6, overlaps=True, crowd=False, keypoints=False)
    a, b = convert_lossless(src, tmp_path / "lm", "labelme")
    kinds = set()
    for stem, (s0, m0, meta0) in a.items():
        s1, m1, meta1 = b[stem]
        assert (s1.image.width, s1.image.height, s1.image.file_name) == (s0.image.width, s0.image.height,
                                                                         s0.image.file_name)
        assert np.array_equal(_named_class_map(m0, meta0), _named_class_map(m1, meta1))
        n0, n1 = meta0.category_by_id(), meta1.category_by_id()
        got = [(n1[im.instance.category_id].name, im.rle["counts"]) for im in m1.instances]
        want = [(n0[im.instance.category_id].name, im.rle["counts"]) for im in m0.instances]
        assert got == want  # same objects, same order (z-order), same pixels
        assert s1.image.attributes.get("license") == 1  # image keys LabelMe does not define travel as keys
        doc = json.loads((tmp_path / "lm" / f"{stem}.json").read_text())
        kinds |= {(s["shape_type"], s["group_id"] is not None) for s in doc["shapes"]}
        assert doc["imagePath"] == f"{stem}.png" and doc["imageData"] is None
    assert {("polygon", False), ("mask", False), ("polygon", True)} <= kinds, kinds
    assert (tmp_path / "lm" / "labels.txt").read_text().splitlines() == ["__ignore__", "_background_", "person",
                                                                          "car", "tree"]
    # LabelMe → LabelMe writes the same files again, byte for byte.
    rep2 = _convert(tmp_path / "lm", tmp_path / "lm2", "labelme")
    assert rep2["losses"]["lossless"], rep2["losses"]["totals"]
    for f in (tmp_path / "lm").glob("*.json"):
        if f.name != "conversion_report.json":
            assert (tmp_path / "lm2" / f.name).read_bytes() == f.read_bytes(), f.name
    # ... and back to COCO: identical masks.
    _convert(tmp_path / "lm", tmp_path / "coco", "coco")
    assert _masks(tmp_path / "coco", "coco") == _masks(src, "coco")


def test_what_labelme_cannot_hold_is_counted(tmp_path):
    src = make_coco(tmp_path / "src", n_images=4, objects=4, overlaps=True, crowd=True, keypoints=True)
    rep = _convert(src, tmp_path / "lm", "labelme")
    t = rep["losses"]["totals"]
    assert set(t) == {"crowd_dropped", "keypoints_dropped"}, t
    assert all(v > 0 for v in t.values())
    with pytest.raises(LossError, match="crowd_dropped"):
        _convert(src, tmp_path / "strict", "labelme", strict=True)
    assert not (tmp_path / "strict").exists()


def test_box_only_objects_become_counted_rectangles(tmp_path):
    root = tmp_path / "src"
    _img(root / "images" / "a.png", 30, 20)
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.5, 3, 10, 6], "area": 60,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "sign"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    rep = _convert(root / "annotations.json", tmp_path / "lm", "labelme")
    assert rep["losses"]["totals"] == {"boxes_as_rectangles": 1}
    (shape,) = json.loads((tmp_path / "lm" / "a.json").read_text())["shapes"]
    assert shape["shape_type"] == "rectangle" and shape["points"] == [[2.5, 3.0], [12.5, 9.0]]
    (s,) = LabelmeReader(tmp_path / "lm").samples()
    assert s.instances[0].bbox == (2.5, 3.0, 10.0, 6.0)


def test_semantic_source_becomes_one_shape_per_component(tmp_path):
    root = ring_and_island_maskdir(tmp_path / "md")
    rep = _convert(root, tmp_path / "lm", "labelme")
    assert rep["losses"]["totals"] == {"void_pixels_dropped": 1}
    assert "semantic_components_as_objects" in rep["losses"]["notes"]
    shapes = json.loads((tmp_path / "lm" / "a.json").read_text())["shapes"]
    assert sorted((s["label"], s["shape_type"]) for s in shapes) == [("car", "polygon"), ("road", "mask"),
                                                                      ("road", "polygon")]
    assert "background" not in (tmp_path / "lm" / "labels.txt").read_text().replace("_background_", "")
    a, b = _read(root, "maskdir"), _read(tmp_path / "lm", "labelme")
    want = _named_class_map(a["a"][1], a["a"][2])
    want[want == "void"] = ""
    assert np.array_equal(_named_class_map(b["a"][1], b["a"][2]), want)


# ------------------------------------------------------------------------------------------ reading


def _all_shapes_dataset(root: Path) -> Path:
    _img(root / "a.png", 20, 10)
    m = np.zeros((3, 4), np.uint8)
    m[0, :] = 1
    m[2, 3] = 1
    shapes = [
        _shape("car", [[1, 1], [5, 1], [5, 4], [1, 4]]),  # polygon: pixels x 1..4, y 1..3
        _shape("car", [[9, 6], [7, 2]], "rectangle"),  # corners in any order: x 7..8, y 2..5
        _shape("sign", [[15, 5], [15, 7]], "circle", flags={"lit": True}, description="round"),
        _shape("tree", [[10, 6], [13, 8]], "mask", mask=_png_b64(m), extra_key=[1, 2]),
        _shape("car", [[0, 9], [3, 9], [0, 7]], group_id=4),
        _shape("car", [[17, 0], [19, 0], [19, 2]], group_id=4),  # joined with the previous: one object
        _shape("tree", [[0, 0], [5, 5]], "line"),
        _shape("tree", [[0, 0], [5, 5], [7, 1]], "linestrip"),
        _shape("tree", [[3, 3]], "point"),
        _shape("tree", [[1, 1], [2, 2]], "cuboid"),
    ]
    _lm(root / "a.json", shapes, flags={"night": True, "blurry": False}, reviewer="ann")
    return root


def test_reads_every_shape_type_and_accounts_for_the_rest(tmp_path):
    root = _all_shapes_dataset(tmp_path / "ds")
    r = LabelmeReader(root)
    assert [c.name for c in r.meta.categories] == ["car", "sign", "tree"]
    assert r.losses.totals() == {"shapes_without_area": 3, "unknown_shape_types": 1}
    assert {p.code for p in r.problems} == {"labelme.shape_not_read"}
    (s,) = r.samples()
    assert s.image.attributes == {"flags": {"night": True, "blurry": False}, "reviewer": "ann"}
    m = get_format("labelme").materialize(s, r.meta)
    got = [rle_ops.decode(im.rle).astype(bool) for im in m.instances]
    assert len(got) == 5
    want = [np.zeros((10, 20), bool) for _ in range(5)]
    want[0][1:4, 1:5] = True
    want[1][2:6, 7:9] = True
    want[2] = circle_mask([(15, 5), (15, 7)], 10, 20)
    want[3][6:9, 10:14] = [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]]
    want[4] = rle_ops.decode(rle_ops.polygons_to_rle([[0, 9, 3, 9, 0, 7], [17, 0, 19, 0, 19, 2]], 10, 20)) > 0
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert np.array_equal(g, w), k
    assert int(want[2].sum()) == 12  # radius 2 around the corner (15, 5): 4 + 8 pixel centres within it
    insts = s.instances
    assert insts[2].attributes == {"flags": {"lit": True}, "description": "round"}
    assert insts[3].attributes == {"extra_key": [1, 2]}
    assert insts[4].attributes == {"group_id": 4} and insts[4].segmentation.kind == "polygons"
    assert insts[2].segmentation.kind == "rle" and insts[2].area == 12.0
    # Everything read is written back, attributes included; what was not read is counted again by convert.
    rep = _convert(root, tmp_path / "out", "labelme")
    assert rep["losses"]["totals"] == {"shapes_without_area": 3, "unknown_shape_types": 1}
    assert {p["code"] for p in rep["problems"]} == {"labelme.shape_not_read"}
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    assert doc["flags"] == {"night": True, "blurry": False} and doc["reviewer"] == "ann"
    by_label = [(s["label"], s["shape_type"], s["group_id"]) for s in doc["shapes"]]
    assert by_label[-2:] == [("car", "polygon", 4), ("car", "polygon", 4)]
    assert doc["shapes"][3]["extra_key"] == [1, 2]
    with pytest.raises(LossError, match="shapes_without_area"):
        _convert(root, tmp_path / "strict", "coco", strict=True)


def test_files_not_read_are_counted(tmp_path):
    root = tmp_path / "ds"
    _img(root / "a.png", 20, 10)
    _img(root / "unlabelled.png", 20, 10)
    _lm(root / "a.json", [_shape("x", [[1, 1], [5, 1], [5, 4]])])
    (root / "notes.md").write_text("hi")
    (root / "other.json").write_text(json.dumps({"some": "config"}))
    (root / "labels.txt").write_text("__ignore__\n_background_\nz\nx\n")
    r = LabelmeReader(root)
    assert r.losses.totals() == {"files_not_read": 2, "images_without_json": 1}
    assert [c.name for c in r.meta.categories] == ["z", "x"]  # labels.txt order
    codes = sorted((p.file, p.code) for p in r.problems)
    assert codes == [("notes.md", "labelme.file_not_read"), ("other.json", "labelme.file_not_read"),
                     ("unlabelled.png", "labelme.image_without_json")]


def test_splits_subfolders_and_json_beside_or_apart(tmp_path):
    root = tmp_path / "ds"
    _img(root / "train" / "a.png", 20, 10)
    _img(root / "val" / "sub" / "b.png", 20, 10)
    _img(root / "images" / "c.png", 20, 10)
    _lm(root / "train" / "a.json", [_shape("x", [[1, 1], [5, 1], [5, 4]])])
    _lm(root / "val" / "sub" / "b.json", [], image_path="b.png")
    _lm(root / "annotations" / "c.json", [], image_path="..\\images\\c.png")  # as LabelMe writes it on Windows
    r = LabelmeReader(root)
    got = [(s.image.split, s.image.file_name) for s in r.samples()]
    assert got == [(None, "images/c.png"), ("train", "a.png"), ("val", "sub/b.png")]
    _convert(root, tmp_path / "out", "labelme")
    assert (tmp_path / "out" / "train" / "a.json").is_file() and (tmp_path / "out" / "train" / "a.png").is_file()
    assert (tmp_path / "out" / "val" / "sub" / "b.json").is_file()
    assert json.loads((tmp_path / "out" / "images" / "c.json").read_text())["imagePath"] == "c.png"
    again = [(s.image.split, s.image.file_name) for s in LabelmeReader(tmp_path / "out").samples()]
    assert again == got


def test_embedded_image_data(tmp_path):
    root = tmp_path / "ds"
    raw = _img(tmp_path / "tmp.png", 20, 10)
    _lm(root / "a.json", [_shape("x", [[1, 1], [5, 1], [5, 4]])], image_path="gone.png",
        imageData=base64.b64encode(raw).decode())
    r = LabelmeReader(root)
    (s,) = r.samples()
    assert s.image_path is None and (s.image.width, s.image.height) == (20, 10)
    assert [p.code for p in r.problems] == ["labelme.embedded_only"]
    # A LabelMe target keeps it embedded (it has no file to copy); other targets count it missing.
    rep = _convert(root, tmp_path / "lm", "labelme")
    doc = json.loads((tmp_path / "lm" / "gone.json").read_text())
    assert base64.b64decode(doc["imageData"]) == raw and not (tmp_path / "lm" / "gone.png").exists()
    assert rep["images"]["missing_files"] == 1
    # A wrong recorded size is named against the embedded image.
    _lm(root / "a.json", [], image_path="gone.png", w=21, imageData=base64.b64encode(raw).decode())
    with pytest.raises(FormatError, match="imageWidth: imageWidth is 21 but its embedded imageData is 20"):
        LabelmeReader(root)


def test_labelme_embedded_writes_the_image_bytes(tmp_path):
    src = make_coco(tmp_path / "src", n_images=2, objects=2, overlaps=False, crowd=False, keypoints=False)
    rep = _convert(src, tmp_path / "lm", "labelme_embedded", copy_images="none")
    assert rep["losses"]["lossless"]
    assert detect_format(tmp_path / "lm") == "labelme"
    for stem in ("img_000", "img_001"):
        doc = json.loads((tmp_path / "lm" / f"{stem}.json").read_text())
        assert base64.b64decode(doc["imageData"]) == (src.parent / "images" / f"{stem}.png").read_bytes()
    # Read back from the embedded data alone: same sizes, same pixels.
    assert _masks(tmp_path / "lm", "labelme") == _masks(src, "coco")


def test_payload_ceilings(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    _img(root / "a.png", 20, 10)
    _lm(root / "a.json", [_shape("x", [[0, 0], [3, 2]], "mask", mask=_png_b64(np.ones((3, 4))))])
    monkeypatch.setattr(shapes_mod, "MAX_MASK_CHARS", 16)
    with pytest.raises(FormatError, match=r"shapes\[0\]\.mask: mask is \d+ characters of base64, more than the 16"):
        LabelmeReader(root)
    monkeypatch.setenv("SEGPIPE_MAX_PIXELS", "100")
    monkeypatch.setattr(shapes_mod, "MAX_MASK_CHARS", 1 << 20)
    _lm(root / "a.json", [_shape("x", [[0, 0], [3, 2]], "mask", mask=_png_b64(np.ones((30, 40))))])
    with pytest.raises(FormatError, match="decompression bomb"):
        LabelmeReader(root)


def test_paths_never_leave_the_dataset(tmp_path):
    (tmp_path / "outside").mkdir()
    _img(tmp_path / "outside" / "o.png", 20, 10)
    cases = ["../outside/o.png", str(tmp_path / "outside" / "o.png"), "sub/../../outside/o.png",
             "https://example.com/o.png", "link/o.png"]
    for n, value in enumerate(cases):
        root = tmp_path / f"ds{n}"
        root.mkdir()
        os.symlink(tmp_path / "outside", root / "link")
        _lm(root / "a.json", [], image_path=value)
        with pytest.raises(UnsafePathError) as e:
            LabelmeReader(root)
        assert str(e.value).startswith(f"{(root / 'a.json').resolve()}: imagePath:"), str(e.value)
        probs = [p for p in validate_labelme(root) if p.severity == "error"]
        assert [(p.file, p.where, p.code) for p in probs] == [("a.json", "imagePath", "labelme.path")]
    # Climbing inside the folder is how LabelMe names images of a sibling folder: fine.
    root = tmp_path / "ok"
    _img(root / "img" / "a.png", 20, 10)
    _lm(root / "ann" / "a.json", [], image_path="../img/a.png")
    assert [s.image.file_name for s in LabelmeReader(root).samples()] == ["img/a.png"]


def test_validate_lists_every_bad_shape(tmp_path):
    root = tmp_path / "ds"
    _img(root / "a.png", 20, 10)
    _lm(root / "a.json", [_shape("x", [[1, 1], [2, 2]]), _shape("x", [[1, 1], [2, 2], [3, 1]], group_id="g"),
                          _shape("", [[1, 1], [2, 2], [3, 1]]), _shape("x", [[1, 1], [2, 2], [3, 1]])], w=30)
    probs = [(p.severity, p.file, p.where, p.code) for p in validate_labelme(root)]
    assert probs == [("error", "a.json", "imageWidth", "labelme.size"),
                     ("error", "a.json", "shapes[0].points", "labelme.shape"),
                     ("error", "a.json", "shapes[1].group_id", "labelme.shape"),
                     ("error", "a.json", "shapes[2].label", "labelme.shape")]
    with pytest.raises(FormatError) as e:
        LabelmeReader(root)
    assert str(e.value) == f"{(root / 'a.json').resolve()}: imageWidth: imageWidth is 30 but the image a.png is 20 " \
                           "pixels wide"


def test_two_files_for_one_image_are_refused(tmp_path):
    root = tmp_path / "ds"
    _img(root / "a.png", 20, 10)
    _lm(root / "a.json", [])
    _lm(root / "a_copy.json", [])
    with pytest.raises(FormatError, match="a_copy.json: imagePath: image a.png is already annotated by a.json"):
        LabelmeReader(root)


def test_two_images_with_one_stem_are_never_merged_silently(tmp_path):
    rep = _convert(same_stem_coco(tmp_path / "src"), tmp_path / "lm", "labelme")
    assert rep["losses"]["totals"] == {"image_name_collision": 1}
    assert sorted(p.name for p in (tmp_path / "lm").iterdir() if p.suffix != ".txt") == [
        ".segpipe-output", "a.json", "a.png", "conversion_report.json"]


@pytest.mark.parametrize("to", ["labelme", "labelme_embedded"])
def test_a_shard_run_twice_finds_no_false_collision(tmp_path, to):
    # Dask re-runs a shard whose worker was killed: the re-run meets its own files, not another image's.
    src = same_stem_coco(tmp_path / "src")
    first, again = write_shard_twice(src, tmp_path / "lm", to)
    assert first.losses.totals() == again.losses.totals() == {"image_name_collision": 1}  # a.jpg, both times
    assert again.fragments == first.fragments == [{"json": "a.json"}]
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["a.json", "a.png", "labels.txt"]
    _convert(src, tmp_path / "ref", to)  # the JSON is whole again: as one clean run writes it
    assert (tmp_path / "lm" / "a.json").read_bytes() == (tmp_path / "ref" / "a.json").read_bytes()


# ------------------------------------------------------------------------------------------ detection


def test_detection_claims_labelme_json_and_refuses_labelme_xml(tmp_path):
    src = make_coco(tmp_path / "src", n_images=2, objects=3, overlaps=False, crowd=False, keypoints=False)
    assert not detect_labelme(src.parent) and not detect_labelme(src)
    for fmt in ("voc", "maskdir", "yolo", "labelstudio", "cityscapes"):
        _convert(src, tmp_path / fmt, fmt)
        assert not detect_labelme(tmp_path / fmt), fmt
    _convert(src, tmp_path / "lm", "labelme")
    assert detect_labelme(tmp_path / "lm") and detect_labelme(tmp_path / "lm" / "img_000.json")
    assert detect_format(tmp_path / "lm" / "img_000.json") == "labelme"
    # A minimal LabelMe XML folder (the web tool's format): neither LabelMe JSON nor VOC; refused in one line.
    xml = tmp_path / "lmxml"
    (xml / "Annotations" / "s").mkdir(parents=True)
    (xml / "Annotations" / "s" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><object><name>w</name><polygon><pt><x>1</x><y>2</y></pt></polygon>"
        "</object><imagesize><nrows>4</nrows><ncols>5</ncols></imagesize></annotation>")
    assert is_labelme_xml(xml) and not detect_voc(xml)
    with pytest.raises(InputError, match="LabelMe XML"):
        detect_format(xml)
    assert not is_labelme_xml(tmp_path / "voc") and detect_voc(tmp_path / "voc")


@pytest.mark.skipif(not LABELME_XML.is_dir(), reason="Datumaro's label_me assets are not in ../shared/testdata")
def test_datumaro_labelme_xml_asset_is_refused_not_read_as_voc(tmp_path):
    assert is_labelme_xml(LABELME_XML) and not detect_voc(LABELME_XML)
    with pytest.raises(InputError, match="LabelMe XML") as e:
        detect_format(LABELME_XML)
    assert "datum convert -if label_me" in str(e.value)
    with pytest.raises(InputError, match="LabelMe XML"):
        LabelmeReader(LABELME_XML)
    shutil.copytree(LABELME_XML, tmp_path / "copy")
    with pytest.raises(InputError, match="LabelMe XML"):
        _convert(tmp_path / "copy", tmp_path / "out", "coco", strict=True)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------- conformance with LabelMe's own loader (.venv-peers)


def _outline_distance(poly: list[float], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance from each point ``(x, y)`` to the closed polygon's outline: ``(n,) float64``."""
    a = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    ab = np.roll(a, -1, axis=0) - a
    pts = np.stack([xs, ys], axis=1).astype(np.float64)[:, None, :]
    t = np.clip(((pts - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.sqrt((((a + t[..., None] * ab) - pts) ** 2).sum(-1)).min(axis=1) if len(xs) else np.zeros(0)


def _peer(dataset: Path) -> dict:
    return run_peer("_labelme_peer.py", str(dataset), cwd=None, env={"QT_QPA_PLATFORM": "offscreen"},
                    not_importable=("No module named", "cannot open shared object"), missing="labelme not importable",
                    hint="peers' venv absent: run `make peers-labelme` (installs labelme into .venv-peers)")


@pytest.mark.parametrize("to", ["labelme", "labelme_embedded"])
def test_labelme_loads_our_output_as_written(tmp_path, to):
    src = make_coco(tmp_path / "src", n_images=3, objects=5, overlaps=True, crowd=False, keypoints=False)
    _convert(src, tmp_path / "lm", to, copy_images="none" if to == "labelme_embedded" else "copy")
    peer = _peer(tmp_path / "lm")
    ours = _read(tmp_path / "lm", "labelme")
    assert sorted(peer["files"]) == sorted(f"{k}.json" for k in ours)
    n_mask = n_poly = 0
    for stem, (s, _, _) in ours.items():
        got = peer["files"][f"{stem}.json"]
        assert got["size"] == [s.image.height, s.image.width] and got["embedded"] == (to == "labelme_embedded")
        doc = json.loads((tmp_path / "lm" / f"{stem}.json").read_text())
        assert [(g["label"], g["shape_type"]) for g in got["shapes"]] == [(d["label"], d["shape_type"])
                                                                           for d in doc["shapes"]]
        h, w = s.image.height, s.image.width
        for g, d in zip(got["shapes"], doc["shapes"], strict=True):
            theirs = np.zeros(h * w, bool)
            theirs[g["pixels"]] = True
            theirs = theirs.reshape(h, w)
            if d["shape_type"] == "mask":
                mine = shapes_mod.place_mask(shapes_mod.parse_shape(d, 0), h, w)
                assert np.array_equal(theirs, mine)  # masks: identical in LabelMe
                n_mask += 1
            else:
                poly = [v for p in d["points"] for v in p]
                mine = rle_ops.decode(rle_ops.polygons_to_rle([poly], h, w)).astype(bool)
                # LabelMe's PIL fill takes vertices as pixel indices and paints the outline too, so it adds the
                # pixels on the polygon's right and bottom boundary (and along diagonal edges); it never loses one.
                assert not (mine & ~theirs).any()
                ys, xs = np.nonzero(theirs & ~mine)
                assert (_outline_distance(poly, xs, ys) <= 1.0 + 1e-9).all()
                n_poly += 1
    assert n_mask and n_poly
