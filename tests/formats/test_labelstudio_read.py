"""Label Studio read side: JSON, JSON_MIN, brush folders; detection; segpipe's writer round trip; writer options."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from segpipe.core import rle as rle_ops
from segpipe.execution.cluster import ClusterSpec
from segpipe.formats import detect_format, get_format
from segpipe.formats.coco.reader import detect_coco_results
from segpipe.formats.labelstudio import LabelStudioReader, decode_rle
from segpipe.pipeline.convert import Conversion, convert
from tests.conftest import TESTDATA
from tests.datagen import make_coco

SDK = TESTDATA / "label-studio-sdk" / "tests" / "custom" / "converter" / "data"
needs_sdk = pytest.mark.skipif(not SDK.is_dir(), reason="../shared/testdata (label-studio-sdk exports) is absent")


# ---------------------------------------------------------------- the sdk's own derived exports, re-stated here
# These follow label-studio-sdk's converter (JSON_MIN: convert_to_json_min + prettify_result; brush folders:
# brush.save_brush_images_from_annotation): checked by hand against label-studio-sdk 2.1.2's output on segpipe
# exports (JSON_MIN, BRUSH_TO_PNG and BRUSH_TO_NUMPY read back to the same masks as the JSON, 22 of 22).


def _annotations_newest_first(task: dict[str, Any]) -> list[dict[str, Any]]:
    anns = [a for a in task.get("annotations", []) if not (a.get("was_cancelled") or a.get("skipped"))]
    return sorted(anns, key=lambda a: a.get("created_at", 0), reverse=True)


def to_json_min(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label Studio's JSON_MIN of a JSON export."""
    out = []
    for task in tasks:
        for ann in _annotations_newest_first(task):
            rec = dict(task["data"])
            rec["id"] = task["id"]
            for r in ann["result"]:
                v = dict(r["value"])
                v["original_width"], v["original_height"] = r["original_width"], r["original_height"]
                rec.setdefault(r["from_name"], []).append(v)
            by = ann.get("completed_by")
            rec["annotator"] = by.get("email") if isinstance(by, dict) else by
            rec.update(annotation_id=ann.get("id"), created_at=ann.get("created_at"), updated_at=None, lead_time=None)
            out.append(rec)
    return out


def to_brush_folder(tasks: list[dict[str, Any]], out: Path, ext: str) -> None:
    """Label Studio's BRUSH_TO_PNG / BRUSH_TO_NUMPY of a JSON export."""
    out.mkdir(parents=True)
    for task in tasks:
        for ann in _annotations_newest_first(task):
            by = ann.get("completed_by")
            email = "".join(c for c in (by.get("email", "") if isinstance(by, dict) else str(by))
                            if c.isalnum() or c in "@.")
            counters: dict[str, int] = defaultdict(int)
            for r in ann["result"]:
                if r["type"] != "brushlabels":
                    continue
                name = r["from_name"] + "-" + "-".join(r["value"]["brushlabels"])
                layer = decode_rle(r["value"]["rle"]).reshape(r["original_height"], r["original_width"], 4)[:, :, 3]
                f = out / f"task-{task['id']}-annotation-{ann['id']}-by-{email}-{name}-{counters[name]}"
                counters[name] += 1
                if ext == "png":
                    Image.fromarray(layer).save(f"{f}.png")
                else:
                    np.save(f"{f}.npy", layer)


def _read(path: Path, fmt: str | None = None) -> tuple[Any, dict[Any, Any]]:
    """The reader and ``{task id: [(category name, mask bytes or bbox)]}`` of its materialized samples."""
    fmt = fmt or detect_format(path)
    spec = get_format(fmt)
    reader = spec.reader(path)
    names = {c.id: c.name for c in reader.meta.categories}
    out = {}
    for s in reader.samples():
        m = spec.materialize(s, reader.meta)
        out[s.image.attributes.get("ls_task_id", s.image.id)] = sorted(
            (names[im.instance.category_id],
             rle_ops.decode(im.rle).tobytes() if im.rle is not None else im.instance.bbox) for im in m.instances)
    return reader, out


def _sdk_case(tmp_path: Path, folder: str, data: str, config: str) -> Path:
    d = tmp_path / Path(data).stem
    d.mkdir()
    shutil.copy(SDK / folder / data, d / "export.json")
    shutil.copy(SDK / folder / config, d / "label_config.xml")
    return d


# ------------------------------------------------------------------------------------------ sdk exports


@needs_sdk
def test_sdk_coco_case_rectangle_polygon_keypoints(tmp_path):
    d = _sdk_case(tmp_path, "test_export_coco", "data.json", "label_config.xml")
    assert detect_format(d) == "labelstudio" and detect_format(d / "export.json") == "labelstudio"
    r = LabelStudioReader(d)
    assert [c.name for c in r.meta.categories] == ["rectangle_label", "polygon_label", "keypoint_label"]
    kp = r.meta.categories[2]
    assert kp.keypoints == ("keypoint_label1", "keypoint_label2")  # model_index order
    (s,) = list(r.samples())
    assert (s.image.file_name, s.image.width, s.image.height) == ("test_image1.jpg", 500, 320)
    box, poly, kps = s.instances
    # The sdk's own test: bbox = [x%/100*500, y%/100*320, w%/100*500, h%/100*320]
    assert box.bbox == pytest.approx([159.70961887477313, 13.163120567375884, 31.76043557168784, 31.773049645390074],
                                     rel=1e-6)
    assert box.segmentation is None
    assert poly.segmentation is not None and len(poly.segmentation.polygons[0]) == 6
    assert poly.segmentation.polygons[0][:2] == pytest.approx((41.74228675136116 * 5, 3.546099290780142 * 3.2))
    assert poly.area and poly.area > 0
    assert kps.category_id == kp.id and kps.num_keypoints == 2 and kps.keypoints is not None
    assert kps.keypoints[2::3] == (2.0, 2.0)
    assert kps.keypoints[0] == pytest.approx(22.595281306715066 * 5)
    assert r.losses.lossless and [p.code for p in r.problems] == ["labelstudio.images_not_found"]  # no images here
    assert s.image.attributes["ls_source"] == "annotation" and s.image.attributes["ls_annotation_id"] == 60205850


@needs_sdk
def test_sdk_yolo_cases(tmp_path):
    # Two tasks, three annotations by two labelers: the latest annotation per task is read, the other counted.
    d = _sdk_case(tmp_path, "test_export_yolo", "data.json", "label_config.xml")
    r = LabelStudioReader(d)
    assert len(r) == 2 and r.losses.totals() == {"annotations_not_read": 1}
    assert [c.name for c in r.meta.categories] == ["parasites", "white"]
    assert [c.color for c in r.meta.categories] == [(218, 1, 238), (0, 255, 0)]  # rgba(...) backgrounds
    assert [len(s.instances) for s in r.samples()] == [2, 2]
    # Rotated rectangles: polygons of the rotated corners; labels missing from the config are warned about.
    d = _sdk_case(tmp_path, "test_export_yolo", "data_obb.json", "label_config_obb.xml")
    r = LabelStudioReader(d)
    assert sum(len(s.instances) for s in r.samples()) == 25
    rotated = [i for s in r.samples() for i in s.instances if "rotation" in i.attributes]
    assert rotated and all(i.segmentation is not None and len(i.segmentation.polygons[0]) == 8 for i in rotated)
    assert any(p.code == "labelstudio.unknown_label" for p in r.problems)
    d = _sdk_case(tmp_path, "test_export_yolo", "data_polygons.json", "label_config_polygons.xml")
    r = LabelStudioReader(d)
    (inst,) = [i for s in r.samples() for i in s.instances]
    assert len(inst.segmentation.polygons[0]) == 74
    # Keypoints with a parent rectangle and relations: the relations are counted as not read.
    d = _sdk_case(tmp_path, "test_export_yolo", "data_keypoints.json", "label_config_keypoints.xml")
    r = LabelStudioReader(d)
    (s,) = list(r.samples())
    kp = next(i for i in s.instances if i.keypoints is not None)
    assert kp.num_keypoints == 3 and len(kp.keypoints) == 17 * 3
    assert r.losses.totals() == {"regions_not_read": 5}


@needs_sdk
@pytest.mark.parametrize("case", ["test_export_coco/data.json", "test_export_json_min/data.json",
                                  "test_export_yolo/data.json", "test_export_yolo/data_obb.json"])
def test_exports_are_never_coco_results(case):
    assert detect_format(SDK / case) == "labelstudio"
    assert not detect_coco_results(SDK / case)


@needs_sdk
def test_sdk_json_min(tmp_path):
    d = _sdk_case(tmp_path, "test_export_json_min", "data.json", "label_config.xml")
    tasks = json.loads((d / "export.json").read_text())
    m = tmp_path / "min"
    m.mkdir()
    (m / "result.json").write_text(json.dumps(to_json_min(tasks), indent=2))
    assert detect_format(m) == "labelstudio_min" and not detect_coco_results(m / "result.json")
    _, from_json = _read(d)
    _, from_min = _read(m)
    assert from_min == from_json and len(from_json[87]) == 1


# --------------------------------------------------------------------------------- segpipe's writer round trip


def _as_annotations(out: Path) -> list[dict[str, Any]]:
    """segpipe's tasks.json with each prediction turned into an annotation (as an annotator would submit it)."""
    tasks = json.loads((out / "tasks.json").read_text())
    for k, t in enumerate(tasks):
        t["id"] = 100 + k
        ann = t.pop("predictions")[0]
        ann.update(id=500 + k, completed_by={"email": "ann@x.test", "id": 1}, created_at="2026-01-01T00:00:00Z")
        t["annotations"] = [ann]
    (out / "tasks.json").write_text(json.dumps(tasks))
    return tasks


@pytest.fixture(scope="module")
def coco_src(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("src"), n_images=4, objects=5)


def test_brush_round_trip_is_pixel_identical(coco_src, tmp_path):
    out = tmp_path / "ls"
    convert(Conversion(coco_src, out, to="labelstudio"), ClusterSpec(workers=0))
    tasks = _as_annotations(out)
    assert detect_format(out) == "labelstudio"
    reader, _ = _read(out)
    gt = COCO(str(coco_src))
    # Category ids, colours and image ids/names come back through segpipe_meta.json and data.*.
    assert [(c.id, c.name) for c in reader.meta.categories] == [(1, "person"), (3, "car"), (7, "tree")]
    spec = get_format("labelstudio")
    n = 0
    for s in reader.samples():
        img = gt.imgs[s.image.id]
        assert s.image.file_name == img["file_name"]
        assert (s.image.width, s.image.height) == (img["width"], img["height"]) and s.image_path is not None
        m = spec.materialize(s, reader.meta)
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[s.image.id]))
        assert len(m.instances) == len(anns)
        for im, ann in zip(m.instances, anns, strict=True):  # result order is the source's order
            assert im.instance.category_id == ann["category_id"]
            assert np.array_equal(rle_ops.decode(im.rle).astype(bool), gt.annToMask(ann).astype(bool))
            n += 1
        # the label map rendered from the objects (later on top) is the source's too
        lm = np.zeros((img["height"], img["width"]), np.int32)
        ref = lm.copy()
        for im, ann in zip(m.instances, anns, strict=True):
            lm[rle_ops.decode(im.rle).astype(bool)] = im.instance.category_id
            ref[gt.annToMask(ann).astype(bool)] = ann["category_id"]
        assert np.array_equal(lm, ref)
    assert n == len(gt.dataset["annotations"]) and reader.losses.lossless
    # JSON_MIN and the brush folders of the same export give the same masks.
    _, from_json = _read(out)
    m = tmp_path / "min"
    m.mkdir()
    (m / "result.json").write_text(json.dumps(to_json_min(tasks)))
    assert _read(m)[1] == from_json
    for ext, fmt in (("png", "labelstudio_brush_png"), ("npy", "labelstudio_brush_numpy")):
        folder = tmp_path / f"brush_{ext}"
        to_brush_folder(tasks, folder, ext)
        assert detect_format(folder) == fmt
        assert _read(folder)[1] == from_json


def test_polygon_round_trip_keeps_the_polygons(coco_src, tmp_path):
    out = tmp_path / "ls"
    convert(Conversion(coco_src, out, to="labelstudio", writer_options={"polygons": True}), ClusterSpec(workers=0))
    tasks = _as_annotations(out)
    reader = LabelStudioReader(out)
    written = {}
    for t in tasks:
        w, h = t["annotations"][0]["result"][0]["original_width"], t["annotations"][0]["result"][0]["original_height"]
        written[t["id"]] = [[v for x, y in r["value"]["points"] for v in (x * w / 100, y * h / 100)]
                            for r in t["annotations"][0]["result"] if r["type"] == "polygonlabels"]
    n = 0
    for s in reader.samples():
        got = [list(i.segmentation.polygons[0]) for i in s.instances if i.segmentation is not None]
        want = written[s.image.attributes["ls_task_id"]]
        assert len(got) == len(want)
        for g, wnt in zip(got, want, strict=True):
            assert g == pytest.approx(wnt, abs=1e-9)
            # segpipe's polygons have integer vertices (pixel corners): the percent round trip restores them
            assert all(v == round(v) for v in g)
            n += 1
    assert n > 0 and reader.losses.lossless


def test_choice_of_annotation_or_prediction_and_what_is_not_read(tmp_path):
    def region(label: str, x: float, **kw: Any) -> dict[str, Any]:
        return {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": 100,
                "original_height": 50, "value": {"x": x, "y": 10, "width": 10, "height": 20,
                                                 "rectanglelabels": [label]}, **kw}

    tasks = [
        {"id": 1, "data": {"image": "/data/upload/3/a.png"},
         "annotations": [{"id": 7, "created_at": "2026-01-02", "result": [region("car", 1)]},
                         {"id": 8, "created_at": "2026-01-03", "result": [region("tree", 2), region("car", 3)]},
                         {"id": 9, "created_at": "2026-01-04", "was_cancelled": True, "result": [region("car", 4)]}],
         "predictions": [{"id": 3, "model_version": "m1", "score": 0.5, "result": [region("car", 5, score=0.25)]}]},
        {"id": 2, "data": {"image": "s3://bucket/dir/b.png"},
         "annotations": [{"id": 10, "was_cancelled": True, "result": []}],
         "predictions": [{"id": 4, "model_version": "m1", "score": 0.5,
                          "result": [region("car", 6, score=0.25),
                                     {"type": "choices", "from_name": "c", "to_name": "image",
                                      "value": {"choices": ["x"]}},
                                     {"type": "ellipselabels", "from_name": "e", "to_name": "image",
                                      "original_width": 100, "original_height": 50,
                                      "value": {"x": 1, "y": 1, "radiusX": 1, "radiusY": 1,
                                                "ellipselabels": ["car"]}}]}]},
    ]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    r = LabelStudioReader(tmp_path)
    a, b = r.samples()
    assert a.image.file_name == "a.png" and b.image.file_name == "dir/b.png"
    assert a.image.attributes["ls_annotation_id"] == 8  # the latest non-cancelled annotation
    assert [i.bbox for i in a.instances] == [(2.0, 5.0, 10.0, 10.0), (3.0, 5.0, 10.0, 10.0)]
    assert b.image.attributes["ls_source"] == "prediction" and b.instances[0].score == 0.25
    assert r.losses.totals() == {"annotations_not_read": 1, "regions_not_read": 2}
    assert {p.code for p in r.problems} >= {"labelstudio.cancelled", "labelstudio.predictions_superseded"}
    only_pred = LabelStudioReader(tmp_path, source="predictions")
    assert [len(s.instances) for s in only_pred.samples()] == [1, 1]
    only_ann = LabelStudioReader(tmp_path, source="annotations")
    assert [len(s.instances) for s in only_ann.samples()] == [2, 0]


def _ls123_task(tid: int, image_id: int, name: str, mask: np.ndarray | None, **extra: Any) -> dict[str, Any]:
    """A task as Label Studio 1.23's JSON export writes it (every key it adds; predictions as ids)."""
    from segpipe.formats.labelstudio.writer import brush_result

    result = [] if mask is None else [brush_result("e1", mask, "car")]
    stamp = "2026-12-07T02:45:49.221581Z"
    ann = {"id": 100 + tid, "completed_by": 1, "result": result, "was_cancelled": False, "ground_truth": False,
           "created_at": stamp, "updated_at": stamp, "draft_created_at": None, "lead_time": 1.0,
           "prediction": {"id": tid, "result": [], "model_version": "segpipe", "created_ago": "0 minutes",
                          "score": 0.5, "cluster": None, "neighbors": None, "mislabeling": 0.0, "created_at": stamp,
                          "updated_at": stamp, "model": None, "model_run": None, "task": tid, "project": 6},
           "result_count": len(result), "unique_id": "f266b7ba", "import_id": None, "last_action": None,
           "bulk_created": False, "task": tid, "project": 6, "updated_by": 1, "parent_prediction": None,
           "parent_annotation": None, "last_created_by": None}
    return {"id": tid, "annotations": [ann] if mask is not None else [], "drafts": [], "predictions": [tid],
            "data": {"image": f"/data/local-files/?d=images/{name}", "image_id": image_id, "file_name": name,
                     "segpipe_id": name},
            "meta": {}, "created_at": stamp, "updated_at": stamp, "allow_skip": True, "inner_id": 1,
            "total_annotations": 1, "cancelled_annotations": 0, "total_predictions": 1, "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 6, "updated_by": 1,
            "comment_authors": [], "file_upload": None, **extra}


def test_label_studio_123_pull_folder_reads_lossless(tmp_path):
    """What ``segpipe pull`` writes: 1.23's export (predictions as ids, bookkeeping keys), its config with
    segpipe's category ids, segpipe_pull.json and the output marker, no images."""
    from segpipe.core.records import Category
    from segpipe.formats.labelstudio.reader import validate_labelstudio
    from segpipe.formats.labelstudio.writer import label_config_xml

    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    d = tmp_path / "pulled"
    d.mkdir()
    (d / "export.json").write_text(json.dumps([_ls123_task(11, 5001, "a.png", mask),
                                               _ls123_task(12, 5002, "b.png", ~mask)]))
    cats = [Category(0, "background"), Category(3, "car"), Category(9, "tree")]
    (d / "label_config.xml").write_text(label_config_xml(cats, used=["brush"]))
    (d / "segpipe_pull.json").write_text(json.dumps({"server": "http://x", "project": 6}))
    (d / ".segpipe-output").write_text("{}")
    assert detect_format(d) == "labelstudio"
    r = LabelStudioReader(d)
    assert [(c.id, c.name) for c in r.meta.categories] == [(0, "background"), (3, "car"), (9, "tree")]
    a, b = r.samples()
    assert (a.image.id, a.image.file_name, a.image.width, a.image.height) == (5001, "a.png", 8, 6)
    assert (b.image.id, b.image.file_name) == (5002, "b.png") and a.image_path is None
    assert [i.category_id for i in a.instances] == [3] and a.instances[0].area == mask.sum()
    assert r.losses.lossless, r.losses.totals()
    assert [p.code for p in r.problems] == ["labelstudio.images_not_found"]
    assert [(p.severity, p.code) for p in validate_labelstudio(d)] == [("warning", "labelstudio.images_not_found")]

    # an unknown key of a task or of the annotation read is counted, per key; a task holding only
    # prediction ids has nothing to read (a warning says so)
    t1 = _ls123_task(11, 5001, "a.png", mask, review_note="x")
    t1["annotations"][0]["custom_field"] = [1]
    (d / "export.json").write_text(json.dumps([t1, _ls123_task(13, 5003, "c.png", None)]))
    r = LabelStudioReader(d)
    assert dict(r.losses.losses) == {("keys_not_read", "task.review_note"): 1,
                                     ("keys_not_read", "annotation.custom_field"): 1}
    assert "labelstudio.prediction_ids" in {p.code for p in r.problems}
    assert [len(s.instances) for s in r.samples()] == [1, 0]
    # a config whose category ids are partial is not trusted: classes are numbered, with a warning
    (d / "label_config.xml").write_text(label_config_xml(cats, used=["brush"]).replace(' category="9"', ""))
    r = LabelStudioReader(d)
    assert [c.id for c in r.meta.categories] == [1, 2, 3]
    assert "labelstudio.category_ids" in {p.code for p in r.problems}


# ------------------------------------------------------------------------------------------ writer


def _config_tags(out: Path) -> dict[str, str]:
    root = ET.fromstring((out / "label_config.xml").read_text())
    return {el.get("name"): el.tag for el in root if el.get("toName")}


def test_config_matches_results_in_every_mode(coco_src, tmp_path):
    voc = tmp_path / "voc"
    convert(Conversion(coco_src, voc, to="voc"), ClusterSpec(workers=0))
    for name, src, opts in (("coco_rle", coco_src, {}), ("coco_poly", coco_src, {"polygons": True}),
                            ("voc_poly", voc, {"polygons": True}), ("voc_rle", voc, {})):
        out = tmp_path / name
        convert(Conversion(src, out, to="labelstudio", copy_images="none", writer_options=opts),
                ClusterSpec(workers=0))
        tasks = json.loads((out / "tasks.json").read_text())
        used = {r["from_name"] for t in tasks for p in t["predictions"] for r in p["result"]}
        tags = _config_tags(out)
        assert set(tags) == used, name  # every from_name has its tag, and no tag is unused
        for t in tasks:
            assert t["data"]["segpipe_id"] == t["data"]["file_name"] and "id" not in t


def test_image_url_prefix_model_version_and_class_scores(tmp_path):
    from tests.badinput._corpus import synth_with_unet
    from tests.conftest import run_cli

    synth_with_unet(tmp_path / "data", tmp_path / "unet.ckpt", n=2, seed=3, size=(48, 64))
    r = run_cli("prelabel", "data/images", "--model", "unet.ckpt", "--out", "store.zarr", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("convert", "store.zarr", "ls", "--to", "labelstudio", "--model-version", "unet-v1",
                "--image-url-prefix", "https://host/img/", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from segpipe.storage.zarrstore import ZarrStore

    store = ZarrStore(tmp_path / "store.zarr")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert tasks
    for t in tasks:
        assert t["data"]["image"] == "https://host/img/" + t["data"]["file_name"]
        pred = t["predictions"][0]
        assert pred["model_version"] == "unet-v1"
        labels = store.read(t["data"]["image_id"], "labels")
        maxp = store.read(t["data"]["image_id"], "probs").max(axis=0) / 255.0
        region_scores = []
        for reg in pred["result"]:
            v = int(reg["id"].removeprefix("class_"))
            assert reg["score"] == pytest.approx(float(maxp[labels == v].mean()))
            region_scores.append(reg["score"])
        # the task's score is 1 - the doubt stored with the pre-label (mean entropy of its stored probs),
        # so Label Studio sorts the least sure first; the regions keep their mean top-class probability
        from segpipe.core.doubt import image_doubt

        doubt = image_doubt(store.read(t["data"]["image_id"], "probs")).entropy
        assert region_scores and pred["score"] == pytest.approx(1.0 - doubt, abs=2e-6)
    r = run_cli("convert", "store.zarr", "c", "--to", "coco", "--model-version", "x", "-w", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--model-version" in r.stderr


def test_keypoint_tag_named_like_a_class_keeps_its_points(tmp_path):
    # The tag's category merged into the class of that name, which had no keypoint names: the points were
    # dropped while the report said lossless.
    from segpipe.formats.labelstudio import mask_to_rle

    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:5] = True
    (tmp_path / "label_config.xml").write_text(
        '<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image"><Label value="car"/>'
        '</BrushLabels><KeyPointLabels name="car" toName="image"><Label value="nose"/><Label value="tail"/>'
        "</KeyPointLabels></View>")
    size = {"original_width": 8, "original_height": 6, "to_name": "image"}
    task = {"id": 1, "data": {"image": "a.png"}, "annotations": [{"id": 2, "result": [
        {"type": "brushlabels", "from_name": "brush", **size,
         "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["car"]}},
        {"type": "keypointlabels", "from_name": "car", **size, "value": {"x": 50, "y": 50, "keypointlabels": ["nose"]}},
    ]}]}
    (tmp_path / "export.json").write_text(json.dumps([task]))
    reader = LabelStudioReader(tmp_path)
    (cat,) = reader.meta.categories
    assert cat.name == "car" and cat.keypoints == ("nose", "tail")
    (sample,) = reader.samples()
    kps = [i.keypoints for i in sample.instances if i.keypoints]
    assert kps == [(4.0, 3.0, 2.0, 0.0, 0.0, 0.0)]
