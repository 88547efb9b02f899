"""segpipe.evaluation.keypoints: OKS AP wrapper and heatmap PCK/NME."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.core.metrics import encode_heatmaps
from segpipe.evaluation.keypoints import LandmarkAccumulator, evaluate_heatmaps, evaluate_keypoints_coco


def test_oks_ap_with_max_dets_matches_pycocotools(testdata):
    exp = json.loads((testdata / "expected.json").read_text())["faster_coco_eval_keypoints"]
    gt = json.loads((testdata / exp["gt"]).read_text())
    dt = json.loads((testdata / exp["dt"]).read_text())
    r = evaluate_keypoints_coco(gt, dt, shards=2)
    assert r.stats.tolist() == exp["peer_documented"]["stats"]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = json.loads((testdata / exp["gt"]).read_text())
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(json.loads((testdata / exp["dt"]).read_text())), "keypoints")
        ev.params.maxDets = [5, 20]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert np.array_equal(evaluate_keypoints_coco(gt, dt, max_dets=[5, 20]).stats, ev.stats)


def test_landmark_accumulator_merges_exactly():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (10, 5, 2))
    pred = gt + rng.normal(0, 3, gt.shape)
    vis = rng.random((10, 5)) < 0.8
    norm = rng.uniform(20, 40, 10)
    one = LandmarkAccumulator(5, (0.05, 0.1))
    one.update(pred, gt, vis, norm)
    a, b = LandmarkAccumulator(5, (0.05, 0.1)), LandmarkAccumulator(5, (0.05, 0.1))
    a.update(pred[:4], gt[:4], vis[:4], norm[:4])
    b.update(pred[4:], gt[4:], vis[4:], norm[4:])
    merged = a.merge(b).compute()
    r = one.compute()
    assert merged["pck"] == r["pck"]
    assert merged["nme"] == pytest.approx(r["nme"], abs=1e-15)
    from segpipe.core.metrics import nme, pck

    assert r["pck"][0.1] == pytest.approx(pck(pred, gt, vis, norm, 0.1))
    assert r["nme"] == pytest.approx(nme(pred, gt, norm, vis))


def test_heatmap_model_evaluation_round_trip():
    kps = np.array([[8, 10, 2], [20, 4, 2], [30, 30, 0]], dtype=np.float64)
    hms = encode_heatmaps(kps, 48, 48, sigma=2)
    out = evaluate_heatmaps([(hms, kps[:, :2] * 4, kps[:, 2] > 0, 100.0)], 3, alphas=(0.01,), stride=4)
    assert out["pck"][0.01] == 1.0 and out["nme"] == 0.0
