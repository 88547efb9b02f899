"""segpipe.evaluation.semantic: streaming, loaders, shards, worst images, errors."""

from __future__ import annotations

import functools
import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from segpipe.core.metrics import ConfusionMatrix
from segpipe.errors import InputError
from segpipe.evaluation.semantic import evaluate_semantic, evaluate_shard


def make_pairs(n=6, c=5, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        gt = rng.integers(0, c, (20, 30), dtype=np.uint8)
        gt[:2] = 255
        pred = gt.copy()
        noise = rng.random(gt.shape) < 0.1 * i  # image i gets worse with i
        pred[noise] = rng.integers(0, c, int(noise.sum()))
        pred[:2] = 0
        pairs.append((f"img{i}", gt, pred))
    return pairs


def _load(pairs, i, which):
    return pairs[i][which]


def test_stream_equals_one_confusion_matrix():
    pairs = make_pairs()
    ref = ConfusionMatrix(5)
    for _, g, p in pairs:
        ref.update(g, p)
    r = evaluate_semantic(pairs, 5, class_names=["a", "b", "c", "d", "e"], worst_n=2)
    assert np.array_equal(r.confusion, ref.mat)
    assert r.mean_iou == ref.compute()["mean_iou"]
    assert r.num_images == 6
    assert [k for k, _ in r.worst] == ["img5", "img4"]  # noisiest first
    assert r.per_class()[0] == {
        "id": 0,
        "name": "a",
        "iou": float(r.iou[0]),
        "accuracy": float(r.accuracy[0]),
        "dice": float(r.dice[0]),
    }


def test_two_tuples_and_loaders():
    pairs = make_pairs(3)
    lazy = [(functools.partial(_load, pairs, i, 1), functools.partial(_load, pairs, i, 2)) for i in range(3)]
    r = evaluate_semantic(lazy, 5, worst_n=1)
    assert np.array_equal(r.confusion, evaluate_semantic(pairs, 5).confusion)
    assert r.worst[0][0] == 2  # keys default to the pair's index


def test_sharded_in_processes_equals_stream():
    pairs = make_pairs(8)
    shards = [pairs[:3], pairs[3:5], pairs[5:]]
    with ProcessPoolExecutor(2) as pool:
        r = evaluate_semantic(shards, 5, sharded=True, client=pool, worst_n=3)
    one = evaluate_semantic(pairs, 5, worst_n=3)
    assert np.array_equal(r.confusion, one.confusion) and r.worst == one.worst and r.num_images == 8
    total = ConfusionMatrix(5)
    for s in shards:
        total.merge(evaluate_shard(s, 5))
    assert np.array_equal(total.mat, one.confusion)


def test_bad_label_names_the_image():
    pairs = make_pairs(2)
    pairs[1][2][5, 5] = 9
    with pytest.raises(InputError, match=r"prediction label 9 on a valid pixel") as e:
        evaluate_semantic(pairs, 5)
    assert e.value.where == "image img1"
    with pytest.raises(InputError, match="must be"):
        evaluate_semantic([np.zeros((2, 2))], 5)


def test_image_without_valid_pixels_is_not_a_worst_candidate():
    gt = np.full((4, 4), 255, np.uint8)
    r = evaluate_semantic([("empty", gt, np.zeros_like(gt))], 3, worst_n=3)
    assert r.worst == [] and math.isnan(r.mean_iou)
