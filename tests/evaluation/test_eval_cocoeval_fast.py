"""segpipe's fast COCO evaluation (numpy matching + accumulation) is bit-identical to pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.errors import InputError
from segpipe.evaluation import cocofast
from segpipe.evaluation.cocoeval import evaluate_coco, make_params

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


@pytest.fixture(scope="module")
def assets() -> Path:
    if not (TESTDATA / "expected.json").exists():
        pytest.skip(f"peer test assets not found at {TESTDATA}")
    return TESTDATA


def load(path):
    return json.loads(Path(path).read_text())


def reference(gt, dt, iou_type, configure=None):
    """Plain pycocotools on deep copies."""
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        cd = cg.loadRes(copy.deepcopy(dt)) if dt else COCO()
        if not dt:  # loadRes rejects an empty list; an empty result set is a COCO without annotations
            cd.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            cd.createIndex()
        ev = COCOeval(cg, cd, iou_type)
        if configure:
            configure(ev.params)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_identical(r, ev):
    assert np.array_equal(r.stats, np.asarray(ev.stats)), (r.stats, ev.stats)
    assert np.array_equal(r.precision, ev.eval["precision"])
    assert np.array_equal(r.recall, ev.eval["recall"])


def fast_scores(gt, dt, iou_type, **kw):
    """cocofast.evaluate_fast directly, for the ``scores`` array CocoResult does not carry."""
    from segpipe.evaluation.cocoeval import _load_res_kind

    p = make_params(iou_type, **kw)
    if "img_ids" not in kw:
        p.imgIds = sorted(img["id"] for img in gt["images"])
    if "cat_ids" not in kw:
        p.catIds = sorted(c["id"] for c in gt["categories"])
    p.imgIds = list(np.unique(p.imgIds))
    if p.useCats:
        p.catIds = list(np.unique(p.catIds))
    p.maxDets = sorted(p.maxDets)
    return cocofast.evaluate_fast(gt, dt, _load_res_kind(dt, None), p)


# -- published data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_cocoapi_fake_results(assets, iou_type):
    exp = load(assets / "expected.json")["cocoapi_fake_results"]
    gt = load(assets / exp["gt"])
    dt = load(assets / exp[iou_type]["results"])
    ids = sorted(img["id"] for img in gt["images"])[:100]
    ev = reference(gt, dt, iou_type, lambda p: setattr(p, "imgIds", ids))
    r = evaluate_coco(gt, dt, iou_type, img_ids=ids)[iou_type]
    assert_identical(r, ev)
    np.testing.assert_allclose(r.stats, exp[iou_type]["peer_documented_full"]["stats"], rtol=0, atol=1e-12)
    # sharded over an executor: the same bits
    with ThreadPoolExecutor(2) as pool:
        r3 = evaluate_coco(gt, dt, iou_type, shards=3, client=pool, img_ids=ids)[iou_type]
    assert_identical(r3, ev)
    assert np.array_equal(fast_scores(gt, dt, iou_type, img_ids=ids)["scores"], ev.eval["scores"])


def test_faster_coco_eval_keypoints(assets):
    exp = load(assets / "expected.json")["faster_coco_eval_keypoints"]
    gt, dt = load(assets / exp["gt"]), load(assets / exp["dt"])
    ev = reference(gt, dt, "keypoints")
    r = evaluate_coco(gt, dt, "keypoints", shards=2)["keypoints"]
    assert_identical(r, ev)
    assert r.stats.tolist() == exp["peer_documented"]["stats"]
    assert np.array_equal(fast_scores(gt, dt, "keypoints")["scores"], ev.eval["scores"])


def test_faster_coco_eval_shapes_segm(assets):
    exp = load(assets / "expected.json")["faster_coco_eval_shapes_segm"]
    gt, dt = load(assets / exp["gt"]), load(assets / exp["dt"])
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    results = []
    for d in dt:  # the peer's preprocessing: polygons → one RLE, bbox dropped
        d = dict(d)
        h, w = sizes[d["image_id"]]
        d["segmentation"] = mask_utils.merge(mask_utils.frPyObjects(d["segmentation"], h, w))
        d.pop("bbox", None)
        results.append(d)
    for iou_type in ("segm", "bbox"):  # bbox: boxes come from toBbox of the masks, as in loadRes
        ev = reference(gt, results, iou_type)
        r = evaluate_coco(gt, results, iou_type)[iou_type]
        assert_identical(r, ev)
    np.testing.assert_allclose(
        evaluate_coco(gt, results, "segm")["segm"].stats, exp["peer_documented"]["stats"], rtol=0, atol=1e-12
    )


# -- the pieces --------------------------------------------------------------------------------------


def test_box_iou_equals_pycocotools_c():
    rng = np.random.default_rng(0)
    n = 400
    # integer and fractional boxes, touching and nested ones, zero sizes
    d = np.round(rng.uniform(0, 50, (n, 4)) * rng.choice([1, 4], (n, 1))) / rng.choice([1, 4], (n, 1))
    g = np.round(rng.uniform(0, 50, (60, 4)) * 2) / 2
    g[:5, 2:] = 0
    crowd = rng.random(60) < 0.3
    ref = mask_utils.iou(d, g, crowd.astype(np.uint8))
    pd = np.repeat(np.arange(n), 60)
    pg = np.tile(np.arange(60), n)
    got = cocofast._box_iou_pairs(d[pd], g[pg], crowd[pg]).reshape(n, 60)
    assert np.array_equal(got, ref)


def test_backend_choice_and_fallback():
    gt, dt = generate(np.random.default_rng(3), n_images=6, n_cats=3, kind="bbox")
    a = evaluate_coco(gt, dt, "bbox", backend="pycocotools")["bbox"]
    b = evaluate_coco(gt, dt, "bbox")["bbox"]
    assert np.array_equal(a.stats, b.stats) and np.array_equal(a.precision, b.precision)
    with pytest.raises(InputError, match="backend"):
        evaluate_coco(gt, dt, "bbox", backend="nope")
    # a repeated category with use_cats=False counts annotations twice in pycocotools: fallback
    cats = [1, 1, 2, 3]
    ev = reference(gt, dt, "bbox", lambda p: (setattr(p, "useCats", 0), setattr(p, "catIds", cats)))
    r = evaluate_coco(gt, dt, "bbox", use_cats=False, cat_ids=cats)["bbox"]
    assert_identical(r, ev)


def test_empty_results_and_empty_ground_truth():
    gt, dt = generate(np.random.default_rng(4), n_images=5, n_cats=2, kind="bbox")
    r = evaluate_coco(gt, [], "bbox")["bbox"]
    assert_identical(r, reference(gt, [], "bbox"))
    gt_empty = {**gt, "annotations": []}
    r = evaluate_coco(gt_empty, dt, "bbox")["bbox"]
    assert_identical(r, reference(gt_empty, dt, "bbox"))
    assert (r.stats == -1).all()


# -- generated data ----------------------------------------------------------------------------------

KPT = 5  # keypoints per object in the generated keypoint sets


def _box(rng, w, h, grid):
    if grid:  # integer boxes on a coarse grid: exact IoU ties between different pairs
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        return [x, y, int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))]
    x, y = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
    return [x, y, rng.uniform(1, w * 0.4), rng.uniform(1, h * 0.4)]


def generate(rng, n_images=8, n_cats=3, kind="bbox", crowd_p=0.15, dup_p=0.2, grid=True, score_levels=4, per_img=6):
    """Random COCO ground truth and results with crowds, duplicates, empty images and score ties."""
    w, h = 40, 32
    images = [{"id": 10 + 3 * i, "width": w, "height": h, "file_name": f"{i}.jpg"} for i in range(n_images)]
    cats = [{"id": 2 * c + 1, "name": f"c{c}"} for c in range(n_cats)]
    anns, dts = [], []
    for img in images:
        if rng.random() < 0.2:
            continue  # an image without ground truth (it may still get results)
        objs = []
        for _ in range(int(rng.integers(0, per_img))):
            cat = cats[int(rng.integers(n_cats))]["id"]
            box = objs[-1][1] if objs and rng.random() < dup_p else _box(rng, w, h, grid)  # duplicate gt
            objs.append((cat, box))
            ann = {
                "id": len(anns) + 1,
                "image_id": img["id"],
                "category_id": cat,
                "bbox": box,
                "area": float(box[2] * box[3]) if rng.random() < 0.8 else float(rng.uniform(0, 400)),
                "iscrowd": int(rng.random() < crowd_p),
            }
            x, y, bw, bh = box
            if rng.random() < 0.5:
                ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            else:  # a triangle: mask IoU differs from box IoU
                ann["segmentation"] = [[x, y, x + bw, y, x, y + bh]]
            if kind == "keypoints":
                kp = []
                for _ in range(KPT):
                    v = int(rng.choice([0, 1, 2]))
                    kp += [float(x + rng.uniform(0, bw)), float(y + rng.uniform(0, bh)), v]
                if rng.random() < 0.2:
                    kp = [0.0 if j % 3 == 2 else c for j, c in enumerate(kp)]  # no visible keypoint
                ann["keypoints"] = kp
                ann["num_keypoints"] = sum(1 for j in range(2, len(kp), 3) if kp[j] > 0)
            anns.append(ann)
        for _ in range(int(rng.integers(0, per_img + 4))):
            if objs and rng.random() < 0.7:
                cat, box = objs[int(rng.integers(len(objs)))]
                if rng.random() < 0.2:
                    cat = cats[int(rng.integers(n_cats))]["id"]
                if rng.random() < 0.7:  # jitter (on the grid: integers, so ties stay exact)
                    j = rng.integers(-2, 3, 4) if grid else rng.normal(0, 1.5, 4)
                    box = [box[0] + j[0], box[1] + j[1], max(1, box[2] + j[2]), max(1, box[3] + j[3])]
                    box = [float(v) for v in box]
            else:
                cat = cats[int(rng.integers(n_cats))]["id"]
                box = [float(v) for v in _box(rng, w, h, grid)]
            d = {
                "image_id": img["id"],
                "category_id": cat,
                "score": float(rng.integers(1, score_levels + 1)) / score_levels,  # coarse: ties
            }
            if kind == "bbox":
                d["bbox"] = [float(v) for v in box]
            elif kind == "segm":
                x, y, bw, bh = box
                poly = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
                d["segmentation"] = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
                d["segmentation"]["counts"] = d["segmentation"]["counts"].decode()
            else:
                x, y, bw, bh = box
                d["keypoints"] = [
                    v for _ in range(KPT) for v in (float(x + rng.uniform(0, bw)), float(y + rng.uniform(0, bh)), 1)
                ]
            dts.append(d)
            if rng.random() < 0.1:
                dts.append(dict(d))  # an identical result: tie in score and overlap
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, dts


AREAS = {
    "default": None,
    "custom": ([[0, 1e10], [0, 60], [60, 200], [200, 1e10]], ["all", "small", "medium", "large"]),
    "overlapping": ([[0, 1e10], [10, 100], [50, 1e10]], ["all", "medium", "large"]),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["bbox", "segm", "keypoints"]),
    n_images=st.integers(1, 10),
    n_cats=st.integers(1, 4),
    crowd_p=st.sampled_from([0.0, 0.2, 0.5]),
    dup_p=st.sampled_from([0.0, 0.3]),
    grid=st.booleans(),
    score_levels=st.sampled_from([1, 3, 1000]),
    max_dets=st.sampled_from([None, [1, 2, 3], [1, 5, 100], [0, 2, 4], [3, 1, 2]]),
    areas=st.sampled_from(sorted(AREAS)),
    use_cats=st.booleans(),
    thrs=st.sampled_from([None, [0.1, 0.5, 0.5, 0.99, 1.0], [0.0, 0.3]]),
)
def test_random_sets_match_pycocotools(
    seed, kind, n_images, n_cats, crowd_p, dup_p, grid, score_levels, max_dets, areas, use_cats, thrs
):
    rng = np.random.default_rng(seed)
    gt, dt = generate(rng, n_images, n_cats, kind, crowd_p, dup_p, grid, score_levels)
    kw: dict = {"use_cats": use_cats}
    if kind == "keypoints":
        kw["kpt_oks_sigmas"] = np.linspace(0.3, 0.9, KPT)
        kw["max_dets"] = max_dets or [20]
    elif max_dets is not None:
        kw["max_dets"] = max_dets
    if areas != "default":
        kw["area_rng"], kw["area_rng_lbl"] = AREAS[areas]
    if thrs is not None:
        kw["iou_thrs"] = thrs

    def configure(p):
        if "kpt_oks_sigmas" in kw:
            p.kpt_oks_sigmas = kw["kpt_oks_sigmas"]
        if "max_dets" in kw:
            p.maxDets = list(kw["max_dets"])
        if "area_rng" in kw:
            p.areaRng, p.areaRngLbl = kw["area_rng"], kw["area_rng_lbl"]
        if "iou_thrs" in kw:
            p.iouThrs = np.asarray(kw["iou_thrs"], dtype=np.float64)
        p.useCats = int(use_cats)

    ev = reference(gt, dt, kind, configure)
    r = evaluate_coco(gt, dt, kind, shards=int(rng.integers(1, 4)), **kw)[kind]
    assert np.array_equal(r.precision, ev.eval["precision"])
    assert np.array_equal(r.recall, ev.eval["recall"])
    assert np.array_equal(r.stats, np.asarray(ev.stats))
    assert np.array_equal(fast_scores(gt, dt, kind, **kw)["scores"], ev.eval["scores"])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), use_cats=st.booleans())
def test_crowded_images_match_pycocotools(seed, use_cats):
    """Many objects per image (buckets of 16–64 padded ground truths) and maxDets cut-offs."""
    rng = np.random.default_rng(seed)
    gt, dt = generate(rng, n_images=3, n_cats=2, kind="bbox", crowd_p=0.1, dup_p=0.3, per_img=40)
    ev = reference(gt, dt, "bbox", lambda p: setattr(p, "useCats", int(use_cats)))
    r = evaluate_coco(gt, dt, "bbox", use_cats=use_cats)["bbox"]
    assert_identical(r, ev)


def test_zero_ground_truth_id_reads_as_unmatched():
    """pycocotools stores the matched gt id in dtMatches and tests it for truth: id 0 is a miss."""
    gt, dt = generate(np.random.default_rng(11), n_images=4, n_cats=1, kind="bbox", crowd_p=0.0)
    for a in gt["annotations"]:
        a["id"] -= 1  # ids 0..n-1
    ev = reference(gt, dt, "bbox")
    assert_identical(evaluate_coco(gt, dt, "bbox")["bbox"], ev)
