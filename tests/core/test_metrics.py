"""segpipe.core.metrics: FCN semantic metrics, panoptic quality, keypoint heatmaps, PCK/NME."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segpipe.core.metrics import (
    ConfusionMatrix,
    PanopticAccumulator,
    decode_heatmaps,
    encode_heatmaps,
    gaussian_heatmap,
    nme,
    pck,
)

# ---------------------------------------------------------------------------------------------
# Semantic: known answers
# ---------------------------------------------------------------------------------------------


def test_perfect_prediction():
    gt = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    m = ConfusionMatrix(3)
    m.update(gt, gt)
    r = m.compute()
    assert r["pixel_accuracy"] == 1.0
    assert r["mean_accuracy"] == 1.0
    assert r["mean_iou"] == 1.0
    assert r["fw_iou"] == 1.0
    assert r["dice"].tolist() == [1.0, 1.0, 1.0]


def test_hand_computed_values():
    # n = [[2, 1], [0, 1]]: 2 px of class 0 right, 1 px of class 0 predicted 1, 1 px of class 1 right.
    gt = np.array([0, 0, 0, 1], dtype=np.uint8).reshape(2, 2)
    pred = np.array([0, 0, 1, 1], dtype=np.uint8).reshape(2, 2)
    m = ConfusionMatrix(2)
    m.update(gt, pred)
    r = m.compute()
    assert r["confusion"].tolist() == [[2, 1], [0, 1]]
    assert r["pixel_accuracy"] == 3 / 4
    assert r["accuracy"].tolist() == [2 / 3, 1.0]
    assert r["mean_accuracy"] == (2 / 3 + 1) / 2
    # IoU_0 = 2 / (3 + 2 - 2) = 2/3 ; IoU_1 = 1 / (1 + 2 - 1) = 1/2
    assert r["iou"].tolist() == pytest.approx([2 / 3, 1 / 2], abs=0)
    assert r["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-15)
    assert r["fw_iou"] == pytest.approx((3 * 2 / 3 + 1 * 1 / 2) / 4, abs=1e-15)
    assert r["dice"].tolist() == pytest.approx([2 * 2 / (3 + 2), 2 * 1 / (1 + 2)], abs=1e-15)


def test_ignore_index_pixels_are_skipped_whatever_the_prediction():
    gt = np.array([[0, 255], [1, 255]], dtype=np.uint8)
    pred = np.array([[0, 200], [1, 7]], dtype=np.uint8)  # out-of-range predictions on ignored pixels
    m = ConfusionMatrix(2, ignore_index=255)
    m.update(gt, pred)
    assert m.mat.tolist() == [[1, 0], [0, 1]]
    assert m.compute()["mean_iou"] == 1.0


def test_ignore_index_inside_class_range_drops_that_row_only():
    gt = np.array([0, 1, 1, 2], dtype=np.uint8).reshape(1, 4)
    pred = np.array([1, 1, 0, 2], dtype=np.uint8).reshape(1, 4)
    m = ConfusionMatrix(3, ignore_index=0)
    m.update(gt, pred)
    assert m.mat.tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_absent_class_is_nan_and_left_out_of_means():
    gt = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    m = ConfusionMatrix(3)
    m.update(gt, gt)
    r = m.compute()
    assert math.isnan(r["iou"][2]) and math.isnan(r["accuracy"][2]) and math.isnan(r["dice"][2])
    assert r["mean_iou"] == 1.0 and r["mean_accuracy"] == 1.0 and r["fw_iou"] == 1.0


def test_class_only_in_prediction_counts_zero_iou_but_not_accuracy():
    gt = np.array([[0, 0], [0, 0]], dtype=np.uint8)
    pred = np.array([[0, 0], [0, 2]], dtype=np.uint8)
    m = ConfusionMatrix(3)
    m.update(gt, pred)
    r = m.compute()
    assert r["iou"][2] == 0.0 and r["dice"][2] == 0.0
    assert math.isnan(r["accuracy"][2])
    assert math.isnan(r["iou"][1])
    assert r["mean_iou"] == pytest.approx((3 / 4 + 0.0) / 2)
    assert r["mean_accuracy"] == 3 / 4  # class 2 has t_i = 0: left out
    assert r["fw_iou"] == pytest.approx(3 / 4)  # weight t_2 = 0


def test_all_wrong():
    gt = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    pred = 1 - gt
    m = ConfusionMatrix(2)
    m.update(gt, pred)
    r = m.compute()
    assert r["pixel_accuracy"] == 0 and r["mean_accuracy"] == 0 and r["mean_iou"] == 0 and r["fw_iou"] == 0


def test_empty_matrix_gives_nan():
    r = ConfusionMatrix(4).compute()
    assert all(math.isnan(r[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"))


@pytest.mark.parametrize("gt_dtype", [np.uint8, np.int32, np.int64, np.uint16])
def test_prediction_out_of_range_on_valid_pixel_raises(gt_dtype):
    gt = np.zeros((3, 3), dtype=gt_dtype)
    pred = np.zeros((3, 3), dtype=np.int64)
    pred[1, 1] = 5
    with pytest.raises(ValueError, match=r"prediction label 5 on a valid pixel is outside \[0, 3\)"):
        ConfusionMatrix(3).update(gt, pred)
    pred[1, 1] = -1
    with pytest.raises(ValueError, match="prediction label -1"):
        ConfusionMatrix(3).update(gt, pred)


def test_ground_truth_out_of_range_raises():
    gt = np.zeros((3, 3), dtype=np.uint8)
    gt[0, 0] = 7
    with pytest.raises(ValueError, match="ground-truth label 7 is outside"):
        ConfusionMatrix(3).update(gt, np.zeros_like(gt))


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        ConfusionMatrix(3).update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="merge"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))


# ---------------------------------------------------------------------------------------------
# Semantic: explicit-loop reference on random maps
# ---------------------------------------------------------------------------------------------


def reference_metrics(gt: np.ndarray, pred: np.ndarray, c: int, ignore: int) -> dict:
    """The FCN formulas written out class by class (slow and obvious)."""
    valid = gt != ignore
    n = np.zeros((c, c), dtype=np.int64)
    for i in range(c):
        for j in range(c):
            n[i, j] = np.count_nonzero(valid & (gt == i) & (pred == j))
    t = [n[i, :].sum() for i in range(c)]
    col = [n[:, i].sum() for i in range(c)]
    ious, accs, dices = [], [], []
    for i in range(c):
        denom = t[i] + col[i] - n[i, i]
        ious.append(n[i, i] / denom if denom else math.nan)
        accs.append(n[i, i] / t[i] if t[i] else math.nan)
        dices.append(2 * n[i, i] / (t[i] + col[i]) if t[i] + col[i] else math.nan)
    present_iou = [v for v in ious if not math.isnan(v)]
    present_acc = [v for v in accs if not math.isnan(v)]
    total = sum(t)
    fw = sum(t[i] * ious[i] for i in range(c) if t[i]) / total
    return {
        "confusion": n,
        "pixel_accuracy": sum(n[i, i] for i in range(c)) / total,
        "mean_accuracy": sum(present_acc) / len(present_acc),
        "mean_iou": sum(present_iou) / len(present_iou),
        "fw_iou": fw,
        "iou": ious,
        "accuracy": accs,
        "dice": dices,
    }


@pytest.mark.parametrize(
    ("c", "gt_dtype", "pred_dtype"),
    [(19, np.uint8, np.uint8), (5, np.uint8, np.int64), (21, np.int32, np.int16), (300, np.int64, np.int64)],
)
def test_matches_loop_reference_on_random_maps(c, gt_dtype, pred_dtype):
    rng = np.random.default_rng(c)
    gt = rng.integers(0, min(c, 250), (37, 53)).astype(gt_dtype)
    gt[rng.random(gt.shape) < 0.1] = 255 if c < 255 else 299  # ignored pixels
    ignore = 255 if c < 255 else 299
    pred = rng.integers(0, min(c, 250), (37, 53)).astype(pred_dtype)
    pred[gt == ignore] = rng.integers(0, 120, int((gt == ignore).sum()))  # anything on ignored pixels
    pred = np.where(gt == 0, 0, pred).astype(pred_dtype)  # some agreement
    m = ConfusionMatrix(c, ignore_index=ignore)
    m.update(gt, pred)
    r = m.compute()
    ref = reference_metrics(gt.astype(np.int64), pred.astype(np.int64), c, ignore)
    assert np.array_equal(r["confusion"], ref["confusion"])
    for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert r[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-15)
    for k in ("iou", "accuracy", "dice"):
        np.testing.assert_allclose(r[k], np.array(ref[k], dtype=float), rtol=1e-12, equal_nan=True)


def test_fast_and_masked_paths_agree_on_a_large_map():
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 19, (300, 1000), dtype=np.uint8)  # > one 128 Ki chunk
    gt[:20] = 255
    pred = rng.integers(0, 19, gt.shape, dtype=np.uint8)
    fast = ConfusionMatrix(19)
    fast.update(gt, pred)
    masked = ConfusionMatrix(19)
    masked.mat += masked._histogram_masked(gt.reshape(-1), pred.reshape(-1))
    assert fast == masked


# ---------------------------------------------------------------------------------------------
# Semantic: sharding (hypothesis)
# ---------------------------------------------------------------------------------------------

label_maps = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.lists(
        st.tuples(
            st.lists(st.sampled_from([0, 1, 2, 3, 255]), min_size=12, max_size=12),
            st.lists(st.integers(0, 3), min_size=12, max_size=12),
        ),
        min_size=n,
        max_size=n,
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps, st.integers(min_value=1, max_value=5))
def test_confusion_sharded_equals_one_pass(pairs, n_shards):
    maps = [(np.array(g, np.uint8).reshape(3, 4), np.array(p, np.uint8).reshape(3, 4)) for g, p in pairs]
    one = ConfusionMatrix(4)
    for g, p in maps:
        one.update(g, p)
    shards = [ConfusionMatrix(4) for _ in range(n_shards)]
    for i, (g, p) in enumerate(maps):
        shards[i % n_shards].update(g, p)
    total = ConfusionMatrix(4)
    for s in reversed(shards):
        total.merge(s)
    assert total == one
    a, b, c = (shards + [ConfusionMatrix(4)] * 3)[:3]
    assert (a + b) + c == a + (b + c)


# ---------------------------------------------------------------------------------------------
# Panoptic
# ---------------------------------------------------------------------------------------------

OFFSET = 256 * 256 * 256


def reference_pq_image(stats, gt_ids, gt_segs, pred_ids, pred_segs):
    """A direct transcription of panopticapi's pq_compute_single_core loop body (dicts and np.unique)."""
    gt_segms = {el["id"]: dict(el) for el in gt_segs}
    pred_segms = {el["id"]: dict(el) for el in pred_segs}
    labels, cnt = np.unique(pred_ids, return_counts=True)
    for label, c in zip(labels, cnt, strict=True):
        if label == 0:
            continue
        pred_segms[int(label)]["area"] = int(c)
    pan = gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64)
    gt_pred_map = {}
    labels, cnt = np.unique(pan, return_counts=True)
    for label, inter in zip(labels, cnt, strict=True):
        gt_pred_map[(int(label // OFFSET), int(label % OFFSET))] = int(inter)
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in gt_pred_map.items():
        if g not in gt_segms or p not in pred_segms:
            continue
        if gt_segms[g]["iscrowd"] == 1 or gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
            continue
        union = pred_segms[p]["area"] + gt_segms[g]["area"] - inter - gt_pred_map.get((0, p), 0)
        iou = inter / union
        if iou > 0.5:
            s = stats.setdefault(gt_segms[g]["category_id"], [0.0, 0, 0, 0])
            s[0] += iou
            s[1] += 1
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = {}
    for g, info in gt_segms.items():
        if g in gt_matched:
            continue
        if info["iscrowd"] == 1:
            crowd[info["category_id"]] = g
            continue
        stats.setdefault(info["category_id"], [0.0, 0, 0, 0])[3] += 1
    for p, info in pred_segms.items():
        if p in pred_matched:
            continue
        inter = gt_pred_map.get((0, p), 0)
        if info["category_id"] in crowd:
            inter += gt_pred_map.get((crowd[info["category_id"]], p), 0)
        if inter / info["area"] > 0.5:
            continue
        stats.setdefault(info["category_id"], [0.0, 0, 0, 0])[2] += 1


def random_panoptic_pair(rng, h=24, w=32, n_gt=6, n_pred=7, cats=(1, 2, 3, 4)):
    """Blocky GT with VOID and a crowd segment; a perturbed prediction."""
    gt = np.zeros((h, w), np.int64)
    segs = []
    for k in range(n_gt):
        sid = int(rng.integers(1, 1 << 24))
        while any(s["id"] == sid for s in segs):
            sid = int(rng.integers(1, 1 << 24))
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        gt[y : y + rng.integers(3, 12), x : x + rng.integers(3, 14)] = sid
        segs.append(
            {"id": sid, "category_id": int(rng.choice(cats)), "iscrowd": int(k == 0 and rng.random() < 0.5)}
        )
    present = set(np.unique(gt).tolist())
    segs = [s for s in segs if s["id"] in present]
    for s in segs:
        s["area"] = int((gt == s["id"]).sum())
    pred = np.roll(gt, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2))).copy()
    psegs = [
        {"id": s["id"], "category_id": s["category_id"] if rng.random() < 0.8 else int(rng.choice(cats))}
        for s in segs
    ]
    for _ in range(n_pred - len(psegs)):
        sid = int(rng.integers(1, 1 << 24))
        if any(s["id"] == sid for s in psegs):
            continue
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        pred[y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = sid
        psegs.append({"id": sid, "category_id": int(rng.choice(cats))})
    present = set(np.unique(pred).tolist())
    psegs = [s for s in psegs if s["id"] in present]
    return gt, segs, pred, psegs


CATS = {1: True, 2: True, 3: False, 4: False}


def test_panoptic_matches_panopticapi_loop_on_random_images():
    rng = np.random.default_rng(0)
    acc = PanopticAccumulator(CATS)
    ref: dict = {}
    for _ in range(40):
        gt, segs, pred, psegs = random_panoptic_pair(rng)
        acc.update_from_maps(gt, segs, pred, psegs)
        reference_pq_image(ref, gt, segs, pred, psegs)
    got = acc.stats()
    for cid in CATS:
        iou, tp, fp, fn = ref.get(cid, [0.0, 0, 0, 0])
        assert (got[cid]["tp"], got[cid]["fp"], got[cid]["fn"]) == (tp, fp, fn)
        assert got[cid]["iou"] == pytest.approx(iou, abs=1e-12)
    r = acc.compute()
    assert r["all"]["n"] == sum(1 for c in CATS if sum(ref.get(c, [0, 0, 0, 0])[1:]) > 0)
    for key in ("all", "things", "stuff"):
        assert 0.0 <= r[key]["pq"] <= r[key]["sq"] <= 1.0


def test_panoptic_hand_example():
    # GT: segment 1 (cat 1) 4 px, segment 2 (cat 2, crowd) 4 px, VOID 4 px.
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    gsegs = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 1}]
    # Pred: 10 matches seg 1 on 3 px plus 1 VOID px (IoU = 3 / (4 + 4 - 3 - 1) = 0.75);
    # 20 (cat 2) lies on the crowd region: ignored; 30 (cat 1) mostly on VOID: ignored; 40 (cat 2) FP.
    pred = np.array([[10, 10, 20, 20], [10, 40, 20, 20], [10, 30, 30, 0]])
    psegs = [
        {"id": 10, "category_id": 1},
        {"id": 20, "category_id": 2},
        {"id": 30, "category_id": 1},
        {"id": 40, "category_id": 2},
    ]
    acc = PanopticAccumulator({1: True, 2: False})
    image_pq = acc.update_from_maps(gt, gsegs, pred, psegs)
    s = acc.stats()
    assert s[1] == {"iou": 0.75, "tp": 1, "fp": 0, "fn": 0}
    assert s[2] == {"iou": 0.0, "tp": 0, "fp": 1, "fn": 0}
    r = acc.compute()
    assert r["things"] == {"pq": 0.75, "sq": 0.75, "rq": 1.0, "n": 1}
    assert r["stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    assert r["all"]["pq"] == 0.375 and image_pq == 0.375


def test_panoptic_input_errors():
    acc = PanopticAccumulator({1: True})
    gt = np.array([[1, 1]])
    with pytest.raises(ValueError, match="not in its segment list"):
        acc.update_from_maps(
            gt, [{"id": 1, "category_id": 1, "iscrowd": 0}], np.array([[1, 5]]), [{"id": 1, "category_id": 1}]
        )
    with pytest.raises(ValueError, match="not in the map"):
        acc.update_from_maps(
            gt,
            [{"id": 1, "category_id": 1, "iscrowd": 0}],
            gt,
            [{"id": 1, "category_id": 1}, {"id": 9, "category_id": 1}],
        )
    with pytest.raises(ValueError, match="unknown category_id 3"):
        acc.update_from_maps(
            gt, [{"id": 1, "category_id": 1, "iscrowd": 0}], gt, [{"id": 1, "category_id": 3}]
        )


def test_panoptic_large_ids_use_the_search_path():
    big = 1 << 40
    gt = np.array([[big, big], [0, 7]], dtype=np.int64)
    segs = [{"id": big, "category_id": 1, "iscrowd": 0}, {"id": 7, "category_id": 1, "iscrowd": 0}]
    acc = PanopticAccumulator({1: True})
    acc.update_from_maps(gt, segs, gt, [{"id": big, "category_id": 1}, {"id": 7, "category_id": 1}])
    assert acc.compute()["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(2, 7))
def test_panoptic_sharded_equals_one_pass(seed, n_shards, n_images):
    rng = np.random.default_rng(seed)
    images = [random_panoptic_pair(rng, h=12, w=16, n_gt=4, n_pred=5) for _ in range(n_images)]
    one = PanopticAccumulator(CATS)
    shards = [PanopticAccumulator(CATS) for _ in range(n_shards)]
    for i, im in enumerate(images):
        one.update_from_maps(*im)
        shards[i % n_shards].update_from_maps(*im)
    total = PanopticAccumulator(CATS)
    for s in shards[::-1]:
        total.merge(s)
    for cid, s in one.stats().items():
        t = total.stats()[cid]
        assert (t["tp"], t["fp"], t["fn"]) == (s["tp"], s["fp"], s["fn"])
        assert t["iou"] == pytest.approx(s["iou"], abs=1e-12)
    # associativity: (a+b)+c == a+(b+c)
    a, b, c = (shards + [PanopticAccumulator(CATS)] * 3)[:3]

    def combined(*parts):
        out = PanopticAccumulator(CATS)
        for p in parts:
            out.merge(p)
        return out

    left = combined(combined(a, b), c).compute()
    right = combined(a, combined(b, c)).compute()
    for x, y in zip(left["per_class"], right["per_class"], strict=True):
        assert (x["tp"], x["fp"], x["fn"]) == (y["tp"], y["fp"], y["fn"])
        assert x["pq"] == pytest.approx(y["pq"], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Keypoints
# ---------------------------------------------------------------------------------------------


def test_gaussian_window_is_6_sigma_plus_1_with_peak_1():
    hm = gaussian_heatmap(64, 64, (30.4, 20.6), sigma=2)
    ys, xs = np.nonzero(hm)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (30 - 6, 30 + 6, 21 - 6, 21 + 6)  # 13 × 13 = 6σ+1
    assert hm[21, 30] == 1.0 and hm.max() == 1.0
    assert hm[21, 31] == pytest.approx(math.exp(-1 / 8), rel=1e-6)
    assert hm.dtype == np.float32


def test_gaussian_is_clipped_at_borders_and_outside_is_empty():
    hm = gaussian_heatmap(10, 10, (0, 0), sigma=1)
    assert hm[0, 0] == 1.0 and np.count_nonzero(hm) == 16  # the 4 × 4 quadrant of the 7 × 7 window
    assert not gaussian_heatmap(10, 10, (-10, 5), sigma=1).any()


def test_encode_skips_invisible_and_decode_round_trips():
    kps = np.array([[10, 12, 2], [40, 5, 1], [3, 3, 0]], dtype=np.float64)
    hms = encode_heatmaps(kps, 32, 48, sigma=2)
    assert hms.shape == (3, 32, 48) and hms.dtype == np.float32
    assert not hms[2].any()
    dec = decode_heatmaps(hms)
    assert dec[:2, :2].tolist() == [[10, 12], [40, 5]]  # symmetric peaks: no sub-pixel shift
    assert dec[:2, 2].tolist() == [1.0, 1.0]
    assert dec[2].tolist() == [0.0, 0.0, 0.0]  # all-zero map: first argmax, confidence 0


def test_decode_quarter_offset_towards_higher_neighbour():
    hm = np.zeros((1, 5, 5), np.float32)
    hm[0, 2, 2] = 1.0
    hm[0, 2, 3] = 0.6  # right neighbour higher than left → x + 0.25
    hm[0, 1, 2] = 0.3  # upper neighbour higher than lower → y - 0.25
    assert decode_heatmaps(hm)[0].tolist() == [2.25, 1.75, 1.0]
    edge = np.zeros((1, 5, 5), np.float32)
    edge[0, 0, 2] = 1.0
    edge[0, 0, 3] = 0.5
    assert decode_heatmaps(edge)[0].tolist() == [2.0, 0.0, 1.0]  # on the border: not refined


def test_decode_ties_resolve_to_first_argmax():
    hm = np.zeros((1, 4, 4), np.float32)
    hm[0, 1, 2] = hm[0, 2, 1] = 0.9
    assert decode_heatmaps(hm)[0, :2].tolist() == [2.0, 1.0]


def test_pck_and_nme_known_values():
    gt = np.zeros((2, 2, 2))
    pred = np.array([[[1.0, 0.0], [3.0, 4.0]], [[0.0, 0.5], [10.0, 0.0]]])
    vis = np.array([[True, True], [True, False]])
    norm = np.array([10.0, 1.0])
    # distances / alpha·norm: sample 0: 1 <= 2, 5 > 2 ; sample 1: 0.5 > 0.2 ; hidden ignored
    assert pck(pred, gt, vis, norm, alpha=0.2) == pytest.approx(1 / 3)
    assert pck(pred, gt, vis, norm, alpha=0.5) == 1.0  # 1 <= 5, 5 <= 5, 0.5 <= 0.5 (inclusive)
    assert pck(pred, gt, vis, norm, alpha=0.45) == pytest.approx(1 / 3)
    assert pck(pred, gt, vis, norm, alpha=0.2, per_keypoint=True).tolist() == [0.5, 0.0]
    # NME: sample 0 mean(1, 5)/10 = 0.3 ; sample 1 0.5/1 = 0.5 → 0.4
    assert nme(pred, gt, norm, vis) == pytest.approx(0.4)
    assert math.isnan(pck(pred, gt, np.zeros((2, 2), bool), norm))
