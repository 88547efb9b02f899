"""No silent loss, by design (issue 14, point 6): each case of the issue's Why list, through the real CLI.

Every case gives an exact result or a reported loss (``--strict`` fails on it), or is refused with one
line naming the files: a Cityscapes ``label_colors.txt``, an Open Images export, COCO panoptic stuff
with several segments per image, a COCO folder of several tasks, VOC ``<polygon>`` elements, images
that share a stem in a mask directory, files ``validate`` passed and ``convert`` refused, and
autodetection that matches several formats or none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.core.panoptic import id2rgb
from tests.badinput._corpus import check_bad_input, check_convert_refused, check_validate_one_error, tree_state
from tests.conftest import run_cli

DATUMARO = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "datumaro" / "tests" / "assets"


def _report(out: Path) -> dict:
    return json.loads((out / "conversion_report.json").read_text())


def _coco_anns(out: Path) -> list[dict]:
    """The annotations of the COCO JSON files segpipe wrote under ``out`` (whichever layout)."""
    anns: list[dict] = []
    for f in sorted(out.rglob("*.json")):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            anns += data["annotations"]
    return anns


def _rgb(path: Path, h: int = 4, w: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 20, 30)).save(path)


def _convert_ok(root: Path, *args: str) -> dict:
    """``segpipe convert ARGS -w 0`` in ``root``: exit 0, no traceback; the report."""
    r = run_cli("convert", *args, "-w", "0", cwd=root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    return _report(root / args[1])


def _strict_fails(root: Path, *args: str, names: tuple[str, ...]) -> None:
    """``--strict`` turns the case's loss into exit 1 naming it; nothing is written."""
    check_bad_input("convert", *args, "--strict", "--overwrite", "-w", "0", root=root, code=1, names=names,
                    outputs=[root / args[1]])


# --------------------------------------------------------------------------- 1. Cityscapes label_colors.txt


def _cityscapes(root: Path, colors: str) -> np.ndarray:
    """``ds/``: one image whose labelIds use Datumaro's ids of ``colors`` (0 background, 1 sky, 2 road)."""
    ds = root / "ds"
    labels = np.array([[0, 1, 1, 2, 2, 2]] * 4, dtype=np.uint8)
    city = ds / "gtFine" / "train" / "bonn"
    city.mkdir(parents=True)
    Image.fromarray(labels).save(city / "bonn_000000_000001_gtFine_labelIds.png")
    _rgb(ds / "leftImg8bit" / "train" / "bonn" / "bonn_000000_000001_leftImg8bit.png")
    (ds / "label_colors.txt").write_text(colors)
    return labels


def test_cityscapes_label_colors_give_the_custom_classes(tmp_path: Path) -> None:
    labels = _cityscapes(tmp_path, "70 130 180 sky\n128 64 128 road\n")
    r = run_cli("validate", "ds", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    report = _convert_ok(tmp_path, "ds", "out", "--to", "maskdir")
    assert report["losses"]["lossless"], report["losses"]
    names = [ln.split(":")[0] for ln in (tmp_path / "out" / "labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert names == ["background", "sky", "road"]  # not "ego vehicle", "rectification border"
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "bonn" / "bonn_000000_000001.png"))
    assert np.array_equal(mask, labels)


def test_cityscapes_label_colors_black_label_and_spaces(tmp_path: Path) -> None:
    from segpipe.formats.cityscapes.reader import CityscapesReader

    _cityscapes(tmp_path, "# Datumaro label map\n0 0 0 void\n220 20 60 traffic light\n")
    meta = CityscapesReader(tmp_path / "ds").meta
    assert [(c.id, c.name, c.color) for c in meta.categories] == [(0, "void", (0, 0, 0)),
                                                                 (1, "traffic light", (220, 20, 60))]
    assert meta.extra["background_id"] == 0


def test_cityscapes_bad_label_colors_validate_and_convert_agree(tmp_path: Path) -> None:
    _cityscapes(tmp_path, "70 130 180 sky\n1 2 sky\n")
    check_validate_one_error(tmp_path, "cityscapes", ["label_colors.txt", "line 2"])
    check_convert_refused(tmp_path, ["label_colors.txt", "line 2"])


# --------------------------------------------------------------------------------- 2. Open Images export


def test_open_images_export_is_not_taken_for_a_mask_directory(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "annotations").mkdir(parents=True)
    (ds / "annotations" / "train-annotations-object-segmentation.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        "a_m0k4j_1.png,a,/m/0k4j,1,0,1,0,1,0.9,\n")
    _rgb(ds / "images" / "train" / "a.jpg")
    (ds / "masks" / "train").mkdir(parents=True)
    Image.fromarray(np.full((4, 6), 255, np.uint8)).save(ds / "masks" / "train" / "a_m0k4j_1.png")
    check_convert_refused(tmp_path, ["Open Images"])


def test_masks_that_pair_with_no_image_are_not_a_mask_directory(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    _rgb(ds / "images" / "x.jpg")
    (ds / "masks").mkdir()
    Image.fromarray(np.ones((4, 6), np.uint8)).save(ds / "masks" / "x_object_1.png")
    check_convert_refused(tmp_path, ["cannot tell the dataset format", "maskdir"])


# ---------------------------------------------------------------------- 3. COCO panoptic stuff "objects"


def _panoptic(root: Path, isthing: int) -> None:
    ds = root / "ds"
    ids = np.zeros((4, 6), np.uint32)
    ids[:, :2], ids[:, 4:] = 1, 2  # two car segments in one image
    (ds / "panoptic").mkdir(parents=True)
    Image.fromarray(id2rgb(ids)).save(ds / "panoptic" / "a.png")
    _rgb(ds / "images" / "a.jpg")
    segs = [{"id": i, "category_id": 1, "iscrowd": 0, "area": 8, "bbox": [0, 0, 2, 4]} for i in (1, 2)]
    segs[1]["bbox"] = [4, 0, 2, 4]
    (ds / "panoptic.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 6, "height": 4}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segs}],
        "categories": [{"id": 1, "name": "car", "isthing": isthing, "supercategory": "vehicle"}],
    }))


def test_panoptic_stuff_with_several_segments_is_a_reported_loss(tmp_path: Path) -> None:
    _panoptic(tmp_path, isthing=0)
    report = _convert_ok(tmp_path, "ds", "out", "--to", "coco")
    assert report["losses"]["by_category"]["stuff_segments_merged"] == {"car": 2}
    assert any(p["code"] == "panoptic.stuff_objects" for p in report["problems"])
    _strict_fails(tmp_path, "ds", "out", "--to", "coco", names=("stuff_segments_merged=2",))
    r = run_cli("validate", "ds", cwd=tmp_path)
    assert r.returncode == 0 and "isthing 0" in r.stdout, r.stdout


def test_panoptic_things_become_instances(tmp_path: Path) -> None:
    _panoptic(tmp_path, isthing=1)
    report = _convert_ok(tmp_path, "ds", "out", "--to", "coco")
    assert report["losses"]["lossless"], report["losses"]
    anns = _coco_anns(tmp_path / "out")
    assert sorted(a["area"] for a in anns) == [8, 8]


# ------------------------------------------------------------------------ 4. COCO folder of several tasks


@pytest.fixture()
def coco_tasks(tmp_path: Path) -> Path:
    src = DATUMARO / "coco_dataset" / "coco"
    if not src.is_dir():
        pytest.skip("Datumaro test assets absent (../shared/testdata)")
    shutil.copytree(src, tmp_path / "ds")
    return tmp_path


def test_coco_folder_of_several_tasks_is_refused_then_counted(coco_tasks: Path) -> None:
    root = coco_tasks
    check_convert_refused(root, ["several formats", "coco_panoptic", "coco", "--from"])
    report = _convert_ok(root, "ds", "out", "--to", "coco", "--from", "coco")
    assert report["source"]["images"] == 2  # instances_train + instances_val: every split of the task
    lost = report["losses"]["totals"]["task_files_not_read"]
    assert lost == 12  # captions, image_info, labels, panoptic, person_keypoints, stuff: train and val each
    unread = {Path(p["file"]).name for p in report["problems"] if p["code"] == "coco.task_file_not_read"}
    assert "captions_train.json" in unread and "panoptic_val.json" in unread and len(unread) == lost
    _strict_fails(root, "ds", "out", "--to", "coco", "--from", "coco", names=("task_files_not_read=12",))
    r = run_cli("validate", "ds", "--format", "coco", cwd=root)
    assert r.returncode == 0 and r.stdout.count("task file not read") == 12, r.stdout


# ------------------------------------------------------------------------------------ 5. VOC <polygon>


VOC_XML = """<annotation>
  <filename>a.jpg</filename>
  <size><width>6</width><height>4</height><depth>3</depth></size>
  <object id="7">
    <name>cat</name>
    <polygon><x1>0</x1><y1>0</y1><x2>4</x2><y2>0</y2><x3>4</x3><y3>4</y3><x4>0</x4><y4>4</y4></polygon>
  </object>
  <object>
    <name>cat</name>
    <polygon><pt><x>4</x><y>0</y></pt><pt><x>6</x><y>0</y></pt><pt><x>6</x><y>2</y></pt></polygon>
  </object>
</annotation>
"""


def test_voc_polygons_are_read_and_unread_xml_is_counted(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "Annotations").mkdir(parents=True)
    (ds / "Annotations" / "a.xml").write_text(VOC_XML)
    _rgb(ds / "JPEGImages" / "a.jpg")
    (ds / "labelmap.txt").write_text("background:0,0,0::\ncat:128,0,0::\n")
    report = _convert_ok(tmp_path, "ds", "out", "--to", "coco")
    anns = _coco_anns(tmp_path / "out")
    assert [a["segmentation"] for a in anns] == [[[0, 0, 4, 0, 4, 4, 0, 4]], [[4, 0, 6, 0, 6, 2]]]
    assert [a["bbox"] for a in anns] == [[0, 0, 4, 4], [4, 0, 2, 2]]
    assert report["losses"]["totals"] == {"xml_content_not_read": 1}  # object[0]@id
    assert any("object[0]@id" in p["message"] for p in report["problems"])
    _strict_fails(tmp_path, "ds", "out", "--to", "coco", names=("xml_content_not_read=1",))


def test_voc_bad_polygon_validate_and_convert_agree(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "Annotations").mkdir(parents=True)
    (ds / "Annotations" / "a.xml").write_text(VOC_XML.replace("<x3>4</x3>", "<x3>four</x3>"))
    _rgb(ds / "JPEGImages" / "a.jpg")
    check_convert_refused(tmp_path, ["a.xml", "object[0].polygon.x3"])
    before = tree_state(tmp_path)
    r = run_cli("validate", "ds", cwd=tmp_path)
    assert r.returncode != 0 and "object[0].polygon.x3" in r.stdout + r.stderr, r.stdout + r.stderr
    assert tree_state(tmp_path) == before


# ------------------------------------------------------------------------- 6. two images, one stem


def test_mask_directory_images_sharing_a_stem_are_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    _rgb(ds / "images" / "a.png")
    _rgb(ds / "images" / "a.jpg")
    (ds / "masks").mkdir()
    Image.fromarray(np.ones((4, 6), np.uint8)).save(ds / "masks" / "a.png")
    check_convert_refused(tmp_path, ["images/a.jpg", "images/a.png"])
    check_validate_one_error(tmp_path, "maskdir", ["images/a.jpg", "images/a.png"])


def test_mask_directory_export_of_images_sharing_a_stem_is_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    _rgb(ds / "images" / "a.png")
    _rgb(ds / "images" / "a.jpg")
    box = {"category_id": 1, "iscrowd": 0, "bbox": [0, 0, 2, 2], "area": 4,
           "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}
    (ds / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 6, "height": 4},
                   {"id": 2, "file_name": "a.jpg", "width": 6, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, **box}, {"id": 2, "image_id": 2, **box}],
        "categories": [{"id": 1, "name": "cat"}],
    }))
    check_bad_input("convert", "ds", "out", "--to", "maskdir", "-w", "0", root=tmp_path, code=2,
                    names=["'a.png'", "'a.jpg'", "masks/a.png"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------- 7. validate and convert share the checks


def _coco(root: Path, category: dict) -> None:
    ds = root / "ds"
    _rgb(ds / "images" / "a.jpg")
    (ds / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 6, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 2, 2], "area": 4,
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
        "categories": [{"id": 1, "name": "cat", **category}],
    }))


def test_label_studio_hex_colour_and_null_supercategory_validate_and_convert(tmp_path: Path) -> None:
    _coco(tmp_path, {"supercategory": None, "color": "#4685a0"})
    r = run_cli("validate", "ds", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    _convert_ok(tmp_path, "ds", "out", "--to", "maskdir")
    assert "cat:70,133,160" in (tmp_path / "out" / "labelmap.txt").read_text()


def test_a_bad_colour_fails_validate_with_converts_error(tmp_path: Path) -> None:
    _coco(tmp_path, {"color": "teal"})
    check_validate_one_error(tmp_path, "coco", ["annotations.json", "categories[0].color", "'#rrggbb'"])
    check_convert_refused(tmp_path, ["annotations.json", "categories[0].color", "'#rrggbb'"])


# ----------------------------------------------------------------------------------- 8. autodetection


def test_nothing_matches_lists_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("x")
    check_convert_refused(tmp_path, ["cannot tell the dataset format", "matches none", "coco,", "voc,", "--from",
                                     "segpipe formats"])


def test_a_folder_of_several_exports_names_them(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    for name in ("data.json", "data_polygons.json", "label_config.xml"):
        (tmp_path / "ds" / name).write_text("[]" if name.endswith(".json") else "<View/>")
    check_convert_refused(tmp_path, ["cannot tell the dataset format", "several annotation files", "data.json",
                                     "data_polygons.json", "pass one of the files"])


def test_synthetic_coco_with_masks_is_coco_and_semantic_prefers_maskdir(tmp_path: Path) -> None:
    from segpipe.formats import detect_format

    ds = tmp_path / "ds"
    _coco(tmp_path, {})
    (ds / "masks").mkdir()
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(ds / "masks" / "a.png")
    assert detect_format(ds) == "coco"  # a deliberate preference: the COCO reader reads masks/ too
    assert detect_format(ds, prefer=("maskdir",)) == "maskdir"


@pytest.mark.parametrize(("to", "names"), [("voc", ["a/x.png", "a__x.png"]),
                                           ("cityscapes", ["a/b/x.png", "a__b/x.png"])])
def test_two_images_mapping_to_one_output_name_name_the_output_not_a_staging_folder(tmp_path: Path, to: str,
                                                                                   names: list[str]) -> None:
    """Two files that flatten to one name in VOC (``a/x`` → ``a__x``) or one city folder in Cityscapes:
    the error names DST, never the staging folder (which is gone by the time the user reads the line)."""
    for name in names:
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / name)
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 6.0, 1.0, 6.0]]
    doc = {"images": [{"id": i + 1, "file_name": name, "width": 8, "height": 8} for i, name in enumerate(names)],
           "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": 25.0,
                            "bbox": [1, 1, 5, 5], "segmentation": poly} for i in range(2)],
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    r = check_bad_input("-q", "convert", "annotations.json", "out", "--to", to, "-w", "0", root=tmp_path, code=2,
                        names=["out", *names], outputs=[tmp_path / "out"])
    assert "staging" not in r.stderr, r.stderr
