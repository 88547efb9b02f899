"""segpipe.evaluation.cocoeval: sharded COCO AP equals pycocotools (published figures and a direct run)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.errors import FormatError, InputError
from segpipe.evaluation.cocoeval import AP_NAMES_DET, evaluate_coco, evaluate_coco_files


def load(path):
    return json.loads(path.read_text())


def pycocotools_direct(gt, dt, iou_type, configure=None):
    """Plain pycocotools on deep copies: COCO(gt) + loadRes(dt) + evaluate/accumulate/summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        cd = cg.loadRes(copy.deepcopy(dt))
        ev = COCOeval(cg, cd, iou_type)
        if configure:
            configure(ev.params)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.fixture(scope="module")
def fake100(testdata):
    exp = load(testdata / "expected.json")["cocoapi_fake_results"]
    gt = load(testdata / exp["gt"])
    return testdata, exp, gt


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("shards", [1, 3])
def test_cocoapi_fake_results_reproduce_published_stats(fake100, iou_type, shards):
    testdata, exp, gt = fake100
    dt = load(testdata / exp[iou_type]["results"])
    gt_before, dt_before = copy.deepcopy(gt), copy.deepcopy(dt)
    ids = sorted(img["id"] for img in gt["images"])[:100]  # the note in expected.json
    r = evaluate_coco(gt, dt, iou_type, shards=shards, img_ids=ids)[iou_type]
    published = np.array(exp[iou_type]["peer_documented_full"]["stats"])
    np.testing.assert_allclose(r.stats, published, rtol=0, atol=1e-12)
    assert list(r.named) == list(AP_NAMES_DET)
    assert r.named["AP"] == r.stats[0] and r.named["ARl"] == r.stats[11]

    direct = pycocotools_direct(gt, dt, iou_type, lambda p: setattr(p, "imgIds", ids))
    assert np.array_equal(r.stats, direct.stats)  # bit-identical, not just close
    assert np.array_equal(r.precision, direct.eval["precision"])
    assert np.array_equal(r.recall, direct.eval["recall"])
    assert gt == gt_before and dt == dt_before  # inputs untouched

    # detectron2's per-category AP from the same precision array
    assert len(r.per_class) == 80
    person = next(row for row in r.per_class if row["name"] == "person")
    pr = direct.eval["precision"][:, :, direct.params.catIds.index(person["id"]), 0, -1]
    assert person["ap"] == float(np.mean(pr[pr > -1]))


def test_published_3dp_figures(fake100):
    testdata, exp, gt = fake100
    dt = load(testdata / exp["bbox"]["results"])
    ids = sorted(img["id"] for img in gt["images"])[:100]
    r = evaluate_coco(gt, dt, "bbox", img_ids=ids)["bbox"]
    assert np.round(r.stats, 3).tolist() == exp["bbox"]["peer_documented_3dp"]["stats"]


@pytest.mark.parametrize("shards", [1, 2])
def test_faster_coco_eval_keypoints_exact(testdata, shards):
    exp = load(testdata / "expected.json")["faster_coco_eval_keypoints"]
    gt, dt = load(testdata / exp["gt"]), load(testdata / exp["dt"])
    r = evaluate_coco(gt, dt, "keypoints", shards=shards)["keypoints"]
    assert r.stats.tolist() == exp["peer_documented"]["stats"]
    assert list(r.named) == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    assert np.array_equal(r.stats, pycocotools_direct(gt, dt, "keypoints").stats)


def test_faster_coco_eval_shapes_segm(testdata):
    exp = load(testdata / "expected.json")["faster_coco_eval_shapes_segm"]
    gt, dt = load(testdata / exp["gt"]), load(testdata / exp["dt"])
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    results = []
    for d in dt:  # the peer's preprocessing: polygons → one RLE, bbox dropped
        d = dict(d)
        h, w = sizes[d["image_id"]]
        d["segmentation"] = mask_utils.merge(mask_utils.frPyObjects(d["segmentation"], h, w))
        d.pop("bbox", None)
        results.append(d)
    for shards in (1, 3):
        r = evaluate_coco(gt, results, "segm", shards=shards)["segm"]
        np.testing.assert_allclose(r.stats, exp["peer_documented"]["stats"], rtol=0, atol=1e-12)
    assert np.array_equal(r.stats, pycocotools_direct(gt, results, "segm").stats)
    by_name = {row["name"]: row["ap"] for row in r.per_class}
    assert by_name["star"] == 1.0


# -- generated data: custom parameters and executors, against pycocotools directly ------------------


def synthetic(seed=0, n_images=12, n_cats=3):
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": 64, "height": 48, "file_name": f"{i}.jpg"} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(n_cats)]
    anns, dts = [], []
    for img in images:
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 40), rng.uniform(0, 30)
            w, h = rng.uniform(2, 24), rng.uniform(2, 18)
            cat = int(rng.integers(1, n_cats + 1))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.1),
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
            for _ in range(rng.integers(0, 3)):
                j = rng.normal(0, 2, 4)
                dts.append(
                    {
                        "image_id": img["id"],
                        "category_id": cat if rng.random() < 0.8 else int(rng.integers(1, n_cats + 1)),
                        "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                        # coarse scores make ties, which exercise the order-keeping of shards
                        "score": float(np.round(rng.random(), 1)),
                    }
                )
    return {"images": images, "annotations": anns, "categories": cats}, dts


CUSTOM = {
    "max_dets": [1, 5, 7],
    "iou_thrs": [0.3, 0.5, 0.75],
    "area_rng": [[0, 1e10], [0, 100], [100, 300], [300, 1e10]],
    "area_rng_lbl": ["all", "small", "medium", "large"],
}


def _configure_custom(p):
    p.maxDets = CUSTOM["max_dets"]
    p.iouThrs = np.array(CUSTOM["iou_thrs"])
    p.areaRng = CUSTOM["area_rng"]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_custom_params_match_pycocotools(iou_type):
    gt, dt = synthetic(1)
    direct = pycocotools_direct(gt, dt, iou_type, _configure_custom)
    r = evaluate_coco(gt, dt, iou_type, shards=4, **CUSTOM)[iou_type]
    assert np.array_equal(r.stats, direct.stats)
    assert np.array_equal(r.precision, direct.eval["precision"])


def test_use_cats_false_matches_pycocotools():
    gt, dt = synthetic(2)
    direct = pycocotools_direct(gt, dt, "bbox", lambda p: setattr(p, "useCats", 0))
    r = evaluate_coco(gt, dt, "bbox", shards=3, use_cats=False)["bbox"]
    assert np.array_equal(r.stats, direct.stats)
    assert [row["id"] for row in r.per_class] == [-1]


def test_custom_keypoint_sigmas_match_pycocotools(testdata):
    exp = load(testdata / "expected.json")["faster_coco_eval_keypoints"]
    gt, dt = load(testdata / exp["gt"]), load(testdata / exp["dt"])
    sigmas = np.linspace(0.02, 0.12, 17)
    direct = pycocotools_direct(gt, dt, "keypoints", lambda p: setattr(p, "kpt_oks_sigmas", sigmas))
    r = evaluate_coco(gt, dt, "keypoints", shards=2, params={"keypoints": {"kpt_oks_sigmas": sigmas}})
    assert np.array_equal(r["keypoints"].stats, direct.stats)


def test_executor_and_several_iou_types():
    gt, dt = synthetic(3, n_images=20)
    local = evaluate_coco(gt, dt, ("bbox", "segm"), shards=1)
    with ThreadPoolExecutor(2) as pool:
        remote = evaluate_coco(gt, dt, ("bbox", "segm"), shards=5, client=pool)
    for t in ("bbox", "segm"):
        assert np.array_equal(local[t].stats, remote[t].stats)
        assert np.array_equal(local[t].stats, pycocotools_direct(gt, dt, t).stats)


def test_dask_client_in_process():
    distributed = pytest.importorskip("distributed")
    gt, dt = synthetic(4)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        r = evaluate_coco(gt, dt, "bbox", shards=3, client=client)["bbox"]
    assert np.array_equal(r.stats, pycocotools_direct(gt, dt, "bbox").stats)


def test_empty_results_give_zero_recall():
    gt, _ = synthetic(5)
    r = evaluate_coco(gt, [], "bbox")["bbox"]
    assert r.named["AR100"] == 0.0 and r.named["AP"] == 0.0


def test_results_on_unknown_images_are_rejected():
    gt, dt = synthetic(6)
    dt.append({"image_id": 999999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5})
    with pytest.raises(InputError, match="image_id 999999") as e:
        evaluate_coco(gt, dt, "bbox", dt_source="dets.json")
    assert e.value.path == "dets.json" and e.value.where == f"[{len(dt) - 1}]"


def test_malformed_ground_truth_names_the_annotation():
    gt, dt = synthetic(7)
    del gt["annotations"][2]["area"]
    with pytest.raises(FormatError, match="lacks area") as e:
        evaluate_coco(gt, dt, "bbox")
    assert e.value.where == "annotations[2]"
    gt, dt = synthetic(7)
    gt["annotations"][3]["id"] = gt["annotations"][0]["id"]
    with pytest.raises(FormatError, match="repeated"):
        evaluate_coco(gt, dt, "bbox")


def test_files_entry_point(tmp_path):
    gt, dt = synthetic(8)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    r = evaluate_coco_files(tmp_path / "gt.json", tmp_path / "dt.json", ["bbox"], shards=2)["bbox"]
    assert np.array_equal(r.stats, pycocotools_direct(gt, dt, "bbox").stats)
    with pytest.raises(InputError, match="file not found"):
        evaluate_coco_files(tmp_path / "missing.json", tmp_path / "dt.json")
