"""segpipe.evaluation.panoptic: the panopticapi sample, generated pairs and panopticapi (when installed)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from segpipe.core.panoptic import id2rgb, rgb2id
from segpipe.errors import FormatError, InputError
from segpipe.evaluation.panoptic import default_png_folder, evaluate_panoptic, evaluate_panoptic_files


@pytest.fixture()
def sample(testdata, tmp_path):
    """panopticapi's sample copied to tmp: panoptic_examples.json + panoptic_examples/ (default folder)."""
    src = testdata / "panopticapi" / "sample_data"
    shutil.copy(src / "panoptic_examples.json", tmp_path / "gt.json")
    shutil.copytree(src / "panoptic_examples", tmp_path / "gt")
    return tmp_path, src


def test_sample_against_itself_is_perfect(sample):
    tmp, src = sample
    r = evaluate_panoptic_files(src / "panoptic_examples.json", src / "panoptic_examples.json", worst_n=5)
    assert r.all == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 8}
    assert r.things == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 4}
    assert r.stuff == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 4}
    assert r.num_images == 2
    assert len(r.per_class) == 133
    assert [row["name"] for row in r.per_class if row["tp"]][:1] == ["person"]


def test_sample_figures_from_expected_json(testdata):
    """expected.json: 'PQ=SQ=RQ=100, N=8 (4 things, 4 stuff)'; crowd segments are never TP/FN."""
    exp = json.loads((testdata / "expected.json").read_text())["panopticapi_sample"]
    assert "N=8 (4 things, 4 stuff)" in exp["reproduced_with_panopticapi"]["self_eval"]
    src = testdata / "panopticapi" / "sample_data"
    r = evaluate_panoptic_files(src / "panoptic_examples.json", src / "panoptic_examples.json")
    gt = json.loads((src / "panoptic_examples.json").read_text())
    segments = sum(len(a["segments_info"]) for a in gt["annotations"])
    crowd = sum(s["iscrowd"] for a in gt["annotations"] for s in a["segments_info"])
    assert segments == exp["observed"]["142238"]["segments"] + exp["observed"]["439180"]["segments"]
    assert crowd == 3
    assert sum(row["tp"] for row in r.per_class) == segments - crowd
    assert sum(row["fp"] + row["fn"] for row in r.per_class) == 0


def test_two_channel_format_converted_matches_ground_truth(testdata, tmp_path):
    """expected.json: the 2ch PNGs (category=ch0, instance=ch1) encode the GT exactly → PQ 1."""
    src = testdata / "panopticapi" / "sample_data"
    gt = json.loads((src / "panoptic_examples.json").read_text())
    (tmp_path / "pred").mkdir()
    pred = {"annotations": []}
    for ann in gt["annotations"]:
        two = np.array(Image.open(src / "panoptic_examples_2ch_format" / ann["file_name"]))
        pan = two[..., 0].astype(np.int64) * 1000 + two[..., 1]
        ids = np.zeros(pan.shape, np.int64)
        segs = []
        for k, value in enumerate(np.unique(pan)):
            if value // 1000 == 0:  # category 0 = VOID
                continue
            ids[pan == value] = k + 1
            segs.append({"id": k + 1, "category_id": int(value // 1000)})
        Image.fromarray(id2rgb(ids)).save(tmp_path / "pred" / ann["file_name"])
        pred["annotations"].append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs}
        )
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    r = evaluate_panoptic_files(src / "panoptic_examples.json", tmp_path / "pred.json")
    assert r.all["pq"] == 1.0


def perturbed_prediction(gt_json, gt_folder, out_folder, seed):
    rng = np.random.default_rng(seed)
    out_folder.mkdir(exist_ok=True)
    pred = {"annotations": []}
    for ann in gt_json["annotations"]:
        ids = rgb2id(np.array(Image.open(gt_folder / ann["file_name"])))
        segs = [dict(s) for s in ann["segments_info"]]
        ids = np.roll(ids, int(rng.integers(-9, 10)), axis=int(rng.integers(0, 2)))
        drop = segs[int(rng.integers(len(segs)))]["id"]
        ids[ids == drop] = 0
        for s in segs:
            if rng.random() < 0.2:
                s["category_id"] = segs[int(rng.integers(len(segs)))]["category_id"]
            s.pop("area", None)
        present = set(np.unique(ids).tolist())
        segs = [s for s in segs if s["id"] in present]
        Image.fromarray(id2rgb(ids)).save(out_folder / ann["file_name"])
        pred["annotations"].append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs}
        )
    return pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_sample_matches_panopticapi(sample, seed):
    panopticapi_eval = pytest.importorskip("panopticapi.evaluation", reason="panopticapi-lite not installed")
    tmp, _ = sample
    gt = json.loads((tmp / "gt.json").read_text())
    pred = perturbed_prediction(gt, tmp / "gt", tmp / "pred", seed)
    (tmp / "pred.json").write_text(json.dumps(pred))
    r = evaluate_panoptic_files(tmp / "gt.json", tmp / "pred.json", shards=2)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = panopticapi_eval.pq_compute(str(tmp / "gt.json"), str(tmp / "pred.json"))
    for mine, theirs in ((r.all, ref["All"]), (r.things, ref["Things"]), (r.stuff, ref["Stuff"])):
        assert mine["n"] == theirs["n"]
        for k in ("pq", "sq", "rq"):
            assert mine[k] == pytest.approx(float(theirs[k]), abs=1e-12)
    for row in r.per_class:
        theirs = ref["per_class"][row["id"]]
        assert row["pq"] == pytest.approx(float(theirs["pq"]), abs=1e-12)


def test_sharded_and_executor_equal_one_pass(sample):
    tmp, _ = sample
    gt = json.loads((tmp / "gt.json").read_text())
    pred = perturbed_prediction(gt, tmp / "gt", tmp / "pred", 5)
    one = evaluate_panoptic(gt, pred, tmp / "gt", tmp / "pred", worst_n=1)
    with ThreadPoolExecutor(2) as pool:
        two = evaluate_panoptic(gt, pred, tmp / "gt", tmp / "pred", shards=2, client=pool, worst_n=1)
    assert one.all == pytest.approx(two.all) and one.per_class == two.per_class
    assert one.worst == two.worst and len(one.worst) == 1


def test_match_by_file_name(sample):
    tmp, _ = sample
    gt = json.loads((tmp / "gt.json").read_text())
    pred = json.loads((tmp / "gt.json").read_text())
    for ann in pred["annotations"]:
        ann["image_id"] = -1
    with pytest.raises(InputError, match="no prediction for the image with image_id"):
        evaluate_panoptic(gt, pred, tmp / "gt", tmp / "gt")
    r = evaluate_panoptic(gt, pred, tmp / "gt", tmp / "gt", match_by="file_name")
    assert r.all["pq"] == 1.0


def test_default_folder_and_missing_folder(sample):
    tmp, _ = sample
    assert default_png_folder(tmp / "gt.json") == tmp / "gt"
    shutil.copy(tmp / "gt.json", tmp / "other.json")
    with pytest.raises(InputError, match="PNG folder does not exist"):
        evaluate_panoptic_files(tmp / "gt.json", tmp / "other.json")


def test_png_segment_missing_from_json_is_a_format_error(sample):
    tmp, _ = sample
    gt = json.loads((tmp / "gt.json").read_text())
    pred = json.loads((tmp / "gt.json").read_text())
    pred["annotations"][0]["segments_info"] = pred["annotations"][0]["segments_info"][1:]
    with pytest.raises(FormatError, match="in the predicted map but not in its segment list") as e:
        evaluate_panoptic(gt, pred, tmp / "gt", tmp / "gt", pred_source="pred.json")
    assert e.value.where == f"image_id {gt['annotations'][0]['image_id']}"
