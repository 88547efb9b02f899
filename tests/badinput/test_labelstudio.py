"""Bad Label Studio exports: one error line naming the file and the JSON path, exit 2, nothing written."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segpipe.formats.labelstudio import mask_to_rle
from tests.badinput._corpus import check_bad_input

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image"><Label value="car"/></BrushLabels>
  <PolygonLabels name="polygon" toName="image"><Label value="car"/></PolygonLabels>
</View>
"""
MASK = np.zeros((6, 8), bool)
MASK[1:4, 2:5] = True


def _task() -> dict[str, Any]:
    return {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [{"id": 2, "result": [
        {"type": "brushlabels", "from_name": "brush", "to_name": "image", "original_width": 8, "original_height": 6,
         "value": {"format": "rle", "rle": mask_to_rle(MASK), "brushlabels": ["car"]}},
        {"type": "polygonlabels", "from_name": "polygon", "to_name": "image", "original_width": 8,
         "original_height": 6, "value": {"points": [[10, 10], [50, 10], [50, 60]], "polygonlabels": ["car"]}},
    ]}]}


def _edit(path: str, value: Any) -> Any:
    """A task list with ``path`` (``result.1.value.points.2``, below the first annotation) set to ``value``."""
    task = _task()
    node: Any = task["annotations"][0]
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return [task]


_DELETE = object()
_R0 = "[0].annotations[0].result[0]"
_R1 = "[0].annotations[0].result[1]"

#: (case, the export (JSON-ready, or bytes), strings the error line must name)
CASES = [
    ("not_a_list", {"data": {"image": "a.png"}, "annotations": []}, ["export.json", "$", "list"]),
    ("task_not_object", [[1, 2]], ["export.json", "[0]", "object"]),
    ("data_missing", [{"id": 1, "annotations": []}], ["export.json", "[0].data"]),
    ("annotations_not_list", [{"id": 1, "data": {}, "annotations": {"result": []}}], ["[0].annotations"]),
    ("result_not_list", _edit("result", {"x": 1}), ["[0].annotations[0].result", "list"]),
    ("bad_rle_bytes", _edit("result.0.value.rle", [0, 0, 0, 192, 7]), [f"{_R0}.value.rle", "brush RLE"]),
    ("rle_wrong_size", _edit("result.0.original_height", 7), [f"{_R0}.value.rle", "224"]),
    ("rle_not_bytes", _edit("result.0.value.rle", [1, 300]), [f"{_R0}.value.rle", "0..255"]),
    ("brush_format", _edit("result.0.value.format", "png"), [f"{_R0}.value.format"]),
    ("missing_original_width", _edit("result.0.original_width", _DELETE), [f"{_R0}.original_width", "missing"]),
    ("original_width_text", _edit("result.1.original_width", "8"), [f"{_R1}.original_width"]),
    ("size_mismatch", _edit("result.1.original_width", 9), [f"{_R1}.original_width", "differs"]),
    ("percent_above_100", _edit("result.1.value.points.2", [50, 130]), [f"{_R1}.value.points[2]", "outside [0, 100]"]),
    ("percent_negative", _edit("result.1.value.points.0", [-5, 10]), [f"{_R1}.value.points[0]", "outside [0, 100]"]),
    ("percent_nan", _edit("result.1.value.points.0", [10, "x"]), [f"{_R1}.value.points[0]", "finite number"]),
    ("two_points", _edit("result.1.value.points", [[1, 1], [2, 2]]), [f"{_R1}.value.points", "at least 3"]),
    ("unknown_from_name", _edit("result.1.from_name", "poly"), [f"{_R1}.from_name", "'poly'", "label_config.xml"]),
    ("tag_type_mismatch", _edit("result.1.from_name", "brush"), [f"{_R1}.type", "BrushLabels"]),
    ("labels_not_list", _edit("result.1.value.polygonlabels", "car"), [f"{_R1}.value.polygonlabels"]),
    ("result_type_missing", _edit("result.0.type", _DELETE), [f"{_R0}.type"]),
    ("invalid_json", b"[{\"data\": ", ["export.json", "invalid JSON"]),
]


@pytest.mark.parametrize("case,export,names", CASES, ids=[c[0] for c in CASES])
def test_convert_refuses_with_one_line(tmp_path, case, export, names):
    ds = tmp_path / "ds"
    ds.mkdir()
    data = export if isinstance(export, bytes) else json.dumps(export).encode()
    (ds / "export.json").write_bytes(data)
    (ds / "label_config.xml").write_text(CONFIG)
    check_bad_input("convert", "ds/export.json", "out", "--from", "labelstudio", "--to", "coco", "-w", "0",
                    root=tmp_path, code=2, names=names, outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_the_good_export_converts(tmp_path):
    # The cases above are this export with one field broken: it must itself be detected and convert.
    from tests.conftest import run_cli

    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "export.json").write_text(json.dumps([_task()]))
    (ds / "label_config.xml").write_text(CONFIG)
    r = run_cli("convert", "ds", "out", "--to", "coco", "--images", "none", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["losses"]["counts_out"] == {"car": 2}


def test_json_min_and_brush_folder_errors_name_the_file(tmp_path):
    from PIL import Image

    ds = tmp_path / "ds"
    ds.mkdir()
    rec = {"image": "a.png", "id": 1, "brush": [{"format": "rle", "rle": [0, 0, 0, 9], "brushlabels": ["car"],
                                                 "original_width": 8, "original_height": 6}],
           "annotator": 1, "annotation_id": 2}
    (ds / "result.json").write_text(json.dumps([rec]))
    check_bad_input("convert", "ds", "out", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=["result.json", "[0].brush[0].value.rle"], outputs=[tmp_path / "out"])
    bf = tmp_path / "bf"
    bf.mkdir()
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(bf / "task-1-annotation-2-by-1-tag-car-0.png")
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(bf / "task-1-annotation-2-by-1-tag-car-1.png")
    check_bad_input("convert", "bf", "out", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=["task-1-annotation-2-by-1-tag-car-1.png", "8x5"], outputs=[tmp_path / "out"])


def test_validate_lists_every_bad_region(tmp_path):
    from segpipe.formats.labelstudio.reader import validate_labelstudio

    tasks = _edit("result.1.value.points.2", [50, 130])
    bad = copy.deepcopy(tasks[0])
    bad["annotations"][0]["result"][0]["value"]["rle"] = [1, 2, 3]
    (tmp_path / "export.json").write_text(json.dumps([tasks[0], bad]))
    (tmp_path / "label_config.xml").write_text(CONFIG)
    errors = [(p.where, p.code) for p in validate_labelstudio(tmp_path) if p.severity == "error"]
    assert errors == [(f"{_R1}.value.points[2]", "labelstudio.region"),
                      ("[1].annotations[0].result[0].value.rle", "labelstudio.region"),
                      ("[1].annotations[0].result[1].value.points[2]", "labelstudio.region")]


def test_unreadable_path_in_a_folder_of_two_exports(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    for name in ("a.json", "b.json"):
        (ds / name).write_text(json.dumps([_task()]))
    check_bad_input("convert", "ds", "out", "--from", "labelstudio", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=["several", "a.json", "b.json"], outputs=[tmp_path / "out"])
    assert Path(ds / "a.json").exists()


def _with_file_name(name: str) -> list[dict[str, Any]]:
    task = _task()
    task["data"]["file_name"] = name  # segpipe's own key: the image's name in every target
    return [task]


@pytest.mark.parametrize("case,name,why", [("escapes", "../../evil.png", "escapes"),
                                           ("absolute", "/etc/passwd", "absolute"),
                                           ("nul", "a\x00b.png", "NUL")])
def test_unsafe_data_file_name_is_refused(tmp_path, case, name, why):
    # It used to be written as it was into the target's annotation file ("file_name": "../../evil.png").
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "export.json").write_text(json.dumps(_with_file_name(name)))
    (ds / "label_config.xml").write_text(CONFIG)
    check_bad_input("convert", "ds/export.json", "out", "--from", "labelstudio", "--to", "coco", "-w", "0",
                    root=tmp_path, code=2, names=["export.json", "[0].data.file_name", why],
                    outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_config_category_in_other_digits_is_ignored(tmp_path):
    # category="²" passed str.isdigit() and int() raised: "internal error: ValueError".
    from tests.conftest import run_cli

    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "export.json").write_text(json.dumps([_task()]))
    (ds / "label_config.xml").write_text(CONFIG.replace('<Label value="car"/></Brush', '<Label value="car" '
                                                        'category="²"/></Brush'))
    r = run_cli("convert", "ds", "out", "--to", "coco", "--images", "none", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr


def test_json_min_id_that_is_no_task_id(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    rec = {"image": "a.png", "id": [1], "brush": [{"format": "rle", "rle": mask_to_rle(MASK), "brushlabels": ["car"],
                                                   "original_width": 8, "original_height": 6}],
           "annotator": 1, "annotation_id": 2}
    (ds / "result.json").write_text(json.dumps([rec, rec]))  # it was "internal error: unhashable type: 'list'"
    check_bad_input("convert", "ds", "out", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=["result.json", "[0].id", "task's integer id"], outputs=[tmp_path / "out"])


@pytest.mark.parametrize("url,names", [("http://[::1", ["--url", "IPv6"]),
                                       ("http://127.0.0.1:99999", ["--url", "Port"]),
                                       ("http://127.0.0.1:1/?token=SECRET9", ["--url", "?query"]),
                                       ("http://exa mple.com", ["--url", "blanks"])])
def test_pull_url_that_is_no_server_address(tmp_path, url, names):
    # "http://[::1" was an internal error; a ?query was glued before every API path and its token printed.
    r = check_bad_input("pull", "labelstudio", "--url", url, "--project", "x", "--token", "TOKEN7x", "out",
                        root=tmp_path, code=2, names=names, outputs=[tmp_path / "out"])
    assert "TOKEN7x" not in r.stderr and "SECRET9" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("to", ["labelstudio", "cvat", "labelme"])
def test_two_classes_of_one_name_are_refused_by_name_keyed_targets(tmp_path, to):
    # COCO allows two ids of one name; these targets name classes, and merged them without a count.
    from PIL import Image

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(ds / "images" / "a.png")
    ann = {"image_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8]], "bbox": [1, 1, 7, 7], "area": 24, "iscrowd": 0}
    (ds / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 12}],
        "annotations": [dict(ann, id=1, category_id=1), dict(ann, id=2, category_id=2)],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "car"}]}))
    check_bad_input("convert", "ds", "out", "--to", to, "-w", "0", root=tmp_path, code=2,
                    names=["categories 1 and 2", "'car'", "--categories"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()
