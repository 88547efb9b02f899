"""CVAT for images 1.1 XML: the mask RLE, round trips, counted losses, CVAT's and Datumaro's files and loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segpipe.core import rle as rle_ops
from segpipe.errors import InputError, LossError
from segpipe.formats import detect_format, get_format
from segpipe.formats.cvat import CvatReader, validate_cvat
from segpipe.formats.cvat.shapes import decode_mask, encode_mask, skeleton_edges, skeleton_svg
from segpipe.formats.derive import derive_class_map
from tests.datagen import make_coco
from tests.formats._perimage import REPO, convert_lossless, run_peer
from tests.formats._perimage import convert_in_process as _convert
from tests.formats._perimage import random_image as _img
from tests.formats.test_contract import _named_class_map, _read

CVAT_ASSETS = REPO.parent / "shared" / "testdata" / "datumaro" / "tests" / "assets" / "cvat_dataset"
COCO_ASSETS = REPO.parent / "shared" / "testdata" / "datumaro" / "tests" / "assets" / "coco_dataset" / "coco_instances"


def _cvat_reference_decode(runs: list[int], left: int, top: int, width: int, h: int, w: int) -> np.ndarray:
    """CVAT's own decoding loop (cvat-ai/cvat#6487): runs over the box row by row, background first."""
    out = np.zeros((h, w), bool)
    value, offset = 0, 0
    for n in runs:
        for _ in range(n):
            y, x = divmod(offset, width)
            out[y + top, x + left] = bool(value)
            offset += 1
        value = 1 - value
    return out


def test_mask_rle_follows_cvat_and_round_trips():
    rng = np.random.default_rng(0)
    for k in range(60):
        m = rng.random((9, 13)) > (0.3 + k / 100)
        if not m.any():
            continue
        text, left, top, w, h = encode_mask(m)
        runs = [int(v) for v in text.split(",")]
        assert sum(runs) == w * h
        assert np.array_equal(_cvat_reference_decode(runs, left, top, w, 9, 13), m)
        assert np.array_equal(decode_mask(text, left, top, w, h, 13, 9), m)
    one = np.zeros((4, 5), bool)
    one[1, 2] = True
    assert encode_mask(one) == ("0, 1", 2, 1, 1, 1)  # a set first pixel starts with an empty background run
    # Row-major within the box, as CVAT writes it (Datumaro's transpose of a (W, H) mask is the same thing).
    box = decode_mask("1, 2, 3", 0, 0, 3, 2, 3, 2)
    assert box.tolist() == [[False, True, True], [False, False, False]]


def test_skeleton_svg_edges_round_trip():
    names = ("nose", "left eye", 'q"x')
    svg = skeleton_svg(names, ((1, 2), (2, 3)))
    assert skeleton_edges(svg.replace("&quot;", '"'), names)[:1] == ((1, 2),)
    assert skeleton_edges(svg, names[:2]) == ((1, 2),)


def _landmarks(root: Path) -> Path:
    from segpipe.synth import synth

    synth("landmarks", root, n=3, seed=2, size=(48, 56))
    return root / "annotations.json"


def test_synth_round_trip_is_lossless_and_pixel_identical(tmp_path):
    src = _landmarks(tmp_path / "src")
    a, b = convert_lossless(src, tmp_path / "c", "cvat")
    n = 0
    for stem, (_, m0, meta0) in a.items():
        _, m1, meta1 = b[stem]
        assert len(m1.instances) == len(m0.instances)
        for i0, i1 in zip(m0.instances, m1.instances, strict=True):
            assert np.array_equal(rle_ops.decode(i0.rle), rle_ops.decode(i1.rle))
            assert i1.instance.keypoints == tuple(float(v) for v in i0.instance.keypoints)
            assert i1.instance.bbox == tuple(i0.instance.bbox)
            n += 1
        assert np.array_equal(_named_class_map(m0, meta0), _named_class_map(m1, meta1))
    assert n >= 3
    cat = CvatReader(tmp_path / "c").meta.categories[0]
    src_cat = json.loads(src.read_text())["categories"][0]
    assert list(cat.keypoints) == src_cat["keypoints"] and [list(e) for e in cat.skeleton] == src_cat["skeleton"]
    assert list(cat.color or ()) == src_cat["color"]
    # cvat -> cvat writes the same XML again, byte for byte.
    rep = _convert(tmp_path / "c", tmp_path / "c2", "cvat")
    assert rep["losses"]["lossless"]
    assert (tmp_path / "c2" / "annotations.xml").read_bytes() == (tmp_path / "c" / "annotations.xml").read_bytes()


def test_streetview_objects_identical_and_stuff_pixels_counted(tmp_path):
    from segpipe.synth import synth

    synth("streetview", tmp_path / "sv", n=2, seed=3, size=(40, 64))
    rep = _convert(tmp_path / "sv" / "annotations.json", tmp_path / "c", "cvat")
    assert set(rep["losses"]["totals"]) == {"semantic_pixels_dropped"}
    a, b = _read(tmp_path / "sv" / "annotations.json", "coco"), _read(tmp_path / "c", "cvat")
    dropped = 0
    for stem, (_, m0, _meta0) in a.items():
        _, m1, _ = b[stem]
        assert [rle_ops.decode(i.rle).tolist() for i in m0.instances] == \
            [rle_ops.decode(i.rle).tolist() for i in m1.instances]
        cover = np.zeros(m0.class_map.shape, bool)
        for im in m0.instances:
            cover |= rle_ops.decode(im.rle).astype(bool)
        dropped += int(((m0.class_map != 0) & (m0.class_map != m0.void_value) & ~cover).sum())
    assert dropped == rep["losses"]["totals"]["semantic_pixels_dropped"]


def test_overlaps_holes_and_polygons_option(tmp_path):
    src = make_coco(tmp_path / "src", n_images=4, objects=5, overlaps=True, crowd=True, keypoints=True)
    rep = _convert(src, tmp_path / "m", "cvat")
    assert set(rep["losses"]["totals"]) == {"crowd_dropped"}, rep["losses"]["totals"]
    rep_p = _convert(src, tmp_path / "p", "cvat", writer_options={"polygons": True})
    assert set(rep_p["losses"]["totals"]) == {"crowd_dropped"}
    xml_p = (tmp_path / "p" / "annotations.xml").read_text()
    assert "<polygon" in xml_p and "<mask" in xml_p  # objects with holes stay masks
    src_r = _read(src, "coco")
    for out in ("m", "p"):
        got = _read(tmp_path / out, "cvat")
        for stem, (_, m0, meta0) in src_r.items():
            _, m1, meta1 = got[stem]
            kept = [im for im in m0.instances if not im.instance.iscrowd]
            assert [rle_ops.decode(i.rle).tolist() for i in kept] == \
                [rle_ops.decode(i.rle).tolist() if i.rle else None for i in m1.instances], out
            assert [i.instance.keypoints and [float(v) for v in i.instance.keypoints] for i in kept] == \
                [i.instance.keypoints and list(i.instance.keypoints) for i in m1.instances]
            cm0, _ = derive_class_map(m0, meta0)
            assert cm0 is not None


def _xml(body: str, labels: str = "<label><name>a</name></label><label><name>b</name></label>") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
            f"<labels>{labels}</labels></task></meta>{body}</annotations>")


def test_z_order_then_document_order_decides_what_is_on_top(tmp_path):
    ds = tmp_path / "ds"
    _img(ds / "images" / "x.png", 10, 8)
    # b is drawn first in the file but has the higher z_order: CVAT draws it on top of a.
    (ds / "annotations.xml").write_text(_xml(
        '<image id="0" name="x.png" width="10" height="8">'
        '<polygon label="b" points="0,0;6,0;6,6;0,6" z_order="2"/>'
        '<mask label="a" rle="0, 24" left="2" top="2" width="6" height="4" z_order="1"/>'
        '<polygon label="a" points="8,0;10,0;10,2" z_order="2"/></image>'))
    r = CvatReader(ds)
    (s,) = list(r.samples())
    names = {c.id: c.name for c in r.meta.categories}
    assert [names[i.category_id] for i in s.instances] == ["a", "b", "a"]
    m = get_format("cvat").materialize(s, r.meta)
    cm, _ = derive_class_map(m, r.meta)
    assert names[int(cm[3, 3])] == "b" and names[int(cm[5, 7])] == "a"
    assert r.losses.lossless


def test_groups_skeletons_points_attributes_and_what_is_not_read(tmp_path):
    ds = tmp_path / "ds"
    _img(ds / "images" / "x.png", 12, 10)
    (ds / "images" / "stray.png").write_bytes(b"")
    labels = ('<label><name>p</name><color>#ff0000</color><type>skeleton</type><attributes><attribute><name>pose'
              '</name><input_type>select</input_type><values>up\ndown</values></attribute></attributes>'
              '<svg>&lt;line data-node-from="1" data-node-to="2"&gt;&lt;/line&gt;&lt;circle data-node-id="1" '
              'data-label-name="h"&gt;&lt;/circle&gt;&lt;circle data-node-id="2" data-label-name="t"&gt;'
              '&lt;/circle&gt;</svg></label>'
              '<label><name>h</name><type>points</type><parent>p</parent></label>'
              '<label><name>t</name><type>points</type><parent>p</parent></label>'
              '<label><name>road</name></label>')
    (ds / "annotations.xml").write_text(_xml(
        '<image id="0" name="x.png" width="12" height="10">'
        '<polygon label="p" points="0,0;4,0;4,4" group_id="3" occluded="1"><attribute name="pose">up</attribute>'
        '</polygon><skeleton label="p" group_id="3"><points label="h" points="1,1" outside="0" occluded="1"/>'
        '<points label="t" points="3.5,2" outside="1"><attribute name="x">y</attribute></points></skeleton>'
        '<points label="road" points="5,5;6,6"/><polyline label="road" points="0,9;11,9"/>'
        '<polygon label="" points="0,0;1,0;1,1"/><ellipse label="road" cx="5" cy="5" rx="2" ry="1"/>'
        '<tag label="road"/><comment>hi</comment></image>', labels))
    r = CvatReader(ds)
    cats = {c.name: c for c in r.meta.categories}
    assert list(cats) == ["p", "road"] and cats["p"].keypoints == ("h", "t") and cats["p"].skeleton == ((1, 2),)
    assert cats["p"].color == (255, 0, 0)
    (s,) = list(r.samples())
    p, road = s.instances
    assert p.keypoints == (1.0, 1.0, 1.0, 3.5, 2.0, 0.0) and p.segmentation is not None
    assert dict(p.attributes) == {"pose": "up", "occluded": True, "group_id": 3}
    assert road.keypoints == (5.0, 5.0, 2.0, 6.0, 6.0, 2.0) and road.segmentation is None
    assert r.losses.totals() == {"polylines_not_read": 1, "unlabelled_shapes_not_read": 1, "shapes_not_read": 1,
                                 "tags_not_read": 1, "elements_not_read": 1, "attributes_not_read": 1,
                                 "files_not_read": 1}
    assert any("stray.png" in p.file for p in r.problems)
    with pytest.raises(LossError, match="polylines_not_read"):
        _convert(ds, tmp_path / "strict", "coco", strict=True)
    # Written back: the group (polygon + skeleton), the attribute spec and the points survive.
    _convert(ds, tmp_path / "back", "cvat")
    (s2,) = list(CvatReader(tmp_path / "back").samples())
    assert [(i.keypoints, dict(i.attributes)) for i in s2.instances] == [(i.keypoints, dict(i.attributes))
                                                                        for i in s.instances]
    assert "<values>up\ndown</values>" in (tmp_path / "back" / "annotations.xml").read_text()


def test_splits_write_a_project_and_read_back(tmp_path):
    src = make_coco(tmp_path / "src", n_images=3, objects=2, overlaps=False, crowd=False, keypoints=False)
    data = json.loads(src.read_text())
    for k, im in enumerate(data["images"]):
        im["split"] = ["train", "val", "train"][k]
    src.write_text(json.dumps(data))
    rep = _convert(src, tmp_path / "c", "cvat")
    assert rep["losses"]["lossless"]
    xml = (tmp_path / "c" / "annotations.xml").read_text()
    if "<project>" not in xml:
        pytest.skip("this COCO reader keeps no per-image split")
    assert (tmp_path / "c" / "images" / "val").is_dir()
    assert sorted({s.image.split for s in CvatReader(tmp_path / "c").samples()}) == ["train", "val"]


def test_detection_and_video_refusal(tmp_path):
    src = make_coco(tmp_path / "src", n_images=1, objects=1, crowd=False, keypoints=False)
    _convert(src, tmp_path / "c", "cvat")
    assert detect_format(tmp_path / "c") == "cvat"
    assert detect_format(tmp_path / "c" / "annotations.xml") == "cvat"
    _convert(src, tmp_path / "v", "voc")
    assert detect_format(tmp_path / "v") == "voc"
    assert not list(validate_cvat(tmp_path / "c"))
    if (CVAT_ASSETS / "for_video").is_dir():
        with pytest.raises(InputError, match="CVAT for video"):
            CvatReader(CVAT_ASSETS / "for_video")


@pytest.mark.skipif(not CVAT_ASSETS.is_dir(), reason="Datumaro's CVAT test assets are not in ../shared/testdata")
def test_reads_cvat_exports_of_datumaro_tests():
    # ../shared/testdata/expected.json: export_project has 6 items (img0, img1 in Test/Train/Validation);
    # img0: Bbox(0, 2, 4, 2) label1 z_order 1 occluded with a1..a4 + a PolyLine; img1: Polygon [1,2,3,4,6,5] label1
    # z_order 1, Points [1,2,3,4,5,6] label2 z_order 2. export_task: the same 2 items (subset train from train.xml)
    # with the PolyLine and the Polygon unlabelled.
    proj = CvatReader(CVAT_ASSETS / "for_images" / "export_project")
    assert [c.name for c in proj.meta.categories] == ["label1", "label2"]
    samples = list(proj.samples())
    assert [(s.image.split, s.image.file_name) for s in samples] == [
        (sp, f) for sp in ("Test", "Train", "Validation") for f in ("img0.jpg", "img1.jpg")]
    assert all(s.image_path and Path(s.image_path).parent.name == s.image.split for s in samples)
    for s in samples:
        if s.image.file_name == "img0.jpg":
            (box,) = s.instances
            assert box.bbox == (0.0, 2.0, 4.0, 2.0) and box.segmentation is None
            assert dict(box.attributes) == {"a1": "true", "a2": "v3", "a3": "0003", "a4": "2.4", "occluded": True,
                                            "z_order": 1}
        else:
            poly, pts = s.instances
            assert poly.segmentation.polygons == ((1.0, 2.0, 3.0, 4.0, 6.0, 5.0),) and poly.category_id == 1
            assert pts.keypoints == (1.0, 2.0, 2.0, 3.0, 4.0, 2.0, 5.0, 6.0, 2.0) and pts.category_id == 2
    assert proj.losses.totals() == {"polylines_not_read": 3}
    task = CvatReader(CVAT_ASSETS / "for_images" / "export_task")
    samples = list(task.samples())
    assert [(s.image.split, len(s.instances)) for s in samples] == [("train", 1), ("train", 1)]
    assert task.losses.totals() == {"unlabelled_shapes_not_read": 2}


# --- conformance with Datumaro's own CVAT importer and exporter (.venv-peers: `make peers-yolo`) ---

def _peer(*args: str, cwd: Path) -> dict:
    return run_peer("_cvat_peer.py", *args, cwd=cwd, env={}, not_importable=("No module named",),
                    missing="peer not installed",
                    hint="peers' venv absent: run `make peers-yolo` (installs datumaro into .venv-peers)")


@pytest.mark.parametrize("polygons", [False, True], ids=["masks", "polygons"])
def test_datumaro_loads_output_as_written(tmp_path, polygons):
    src = make_coco(tmp_path / "src", n_images=4, objects=5, overlaps=True, crowd=False, keypoints=True)
    _convert(src, tmp_path / "c", "cvat", writer_options={"polygons": True} if polygons else {})
    ours = _read(tmp_path / "c", "cvat")
    peer = _peer("load", str(tmp_path / "c"), cwd=tmp_path)
    assert set(peer["items"]) == {f"annotations/{stem}" for stem in ours}
    shapes = 0
    for stem, (_, m, meta) in ours.items():
        names = {c.id: c.name for c in meta.categories}
        anns = [a for a in peer["items"][f"annotations/{stem}"]["annotations"] if a["type"] != "points"]
        area = [a for a in anns if a["type"] in ("mask", "polygon", "bbox")]
        for im in m.instances:
            mine = [a for a in area if a["label"] == names[im.instance.category_id]
                    and (a["group"] == im.instance.attributes.get("group_id", -1) or not a["group"])]
            assert mine, stem
        # Every area shape Datumaro loads is one of ours, pixel for pixel (masks) or vertex for vertex (polygons).
        ours_px = [rle_ops.decode(im.rle).astype(bool) for im in m.instances if im.rle is not None]
        for a in area:
            shapes += 1
            if a["type"] == "mask":
                px = np.zeros_like(ours_px[0])
                px[tuple(np.array(a["mask"]).T)] = True
                assert any(np.array_equal(px, o) for o in ours_px), stem
            elif a["type"] == "polygon":
                got = [i for i in m.instances if i.instance.segmentation is not None
                       and i.instance.segmentation.kind == "polygons"
                       and any(len(p) == len(a["points"]) and np.allclose(p, a["points"], atol=1e-4)
                               for p in i.instance.segmentation.polygons)]
                if not polygons:
                    assert got, stem
                else:  # traced polygons: their pixels are the object's, part by part
                    poly_px = rle_ops.decode(rle_ops.polygons_to_rle([a["points"]], *ours_px[0].shape)).astype(bool)
                    assert any(not (poly_px & ~o).any() for o in ours_px), stem
    assert shapes > 10


@pytest.mark.skipif(not COCO_ASSETS.is_dir(), reason="Datumaro's COCO assets are not in ../shared/testdata")
def test_datumaro_cvat_export_reads_back_identical(tmp_path):
    _peer("export", str(COCO_ASSETS), str(tmp_path / "dm"), cwd=tmp_path)
    r = CvatReader(tmp_path / "dm")
    assert r.losses.lossless, r.losses.totals()
    coco = get_format("coco").reader(COCO_ASSETS)
    cn = {c.id: c.name for c in coco.meta.categories}
    rn = {c.id: c.name for c in r.meta.categories}
    src = {s.image.file_name: s for s in coco.samples()}
    for s in r.samples():
        s0 = src[s.image.file_name]
        assert s.image.split == s0.image.split and (s.image.width, s.image.height) == (s0.image.width, s0.image.height)
        m0 = get_format("coco").materialize(s0, coco.meta)
        m1 = get_format("cvat").materialize(s, r.meta)

        def by_name(m, names):
            out = {}
            for im in m.instances:
                px = rle_ops.decode(im.rle).astype(bool) if im.rle is not None else None
                out.setdefault(names[im.instance.category_id], []).append(
                    px.sum() if px is not None and px.any() else tuple(im.instance.bbox))
            return {k: sorted(v, key=str) for k, v in out.items()}

        # Datumaro writes the crowd region as a plain mask and reorders shapes; pixels and boxes agree per class.
        assert {k: [np.asarray(x).tolist() for x in v] for k, v in by_name(m1, rn).items()} == \
            {k: [np.asarray(x).tolist() for x in v] for k, v in by_name(m0, cn).items()}


def test_images_without_a_split_beside_split_ones_are_all_written(tmp_path):
    # A project XML (there are splits) used to hold only the split images: "2/2 images, lossless", 1 written.
    from PIL import Image

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    images, anns = [], []
    for k, (name, split) in enumerate([("a.png", "train"), ("b.png", None), ("c.png", "val")], start=1):
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(src / "images" / name)
        images.append({"id": k, "file_name": name, "width": 16, "height": 12, **({"split": split} if split else {})})
        anns.append({"id": k, "image_id": k, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8]],
                     "bbox": [1, 1, 7, 7], "area": 24.5, "iscrowd": 0})
    (src / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                      "categories": [{"id": 1, "name": "car"}]}))
    rep = _convert(src, tmp_path / "out", "cvat")
    assert rep["losses"]["lossless"], rep["losses"]["totals"]
    reader = CvatReader(tmp_path / "out")
    got = {s.image.file_name: (s.image.split, len(s.instances)) for s in reader.samples()}
    assert got == {"a.png": ("train", 1), "b.png": (None, 1), "c.png": ("val", 1)}
