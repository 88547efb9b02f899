"""Who runs an engine's shards (``segpipe.evaluation.shards``): the caller's map, an executor, or this process.

The engines give pycocotools' (and one pass's) numbers whichever runs their shards, and a caller's
map sees every shard, once, through the engine's own kernel.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from segpipe.errors import InputError
from segpipe.evaluation.cocoeval import evaluate_coco
from segpipe.evaluation.semantic import evaluate_semantic
from segpipe.evaluation.shards import in_process, shard_map
from tests.evaluation.test_eval_cocoeval import pycocotools_direct, synthetic
from tests.evaluation.test_eval_semantic import make_pairs


class ThreadMap:
    """A caller's map: the shards on two real threads, each call's kernel and shard count recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, fn, payloads):  # type: ignore[no-untyped-def]
        self.calls.append((getattr(fn, "__name__", None) or fn.func.__name__, len(payloads)))
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(fn, payloads))


def test_the_map_is_chosen_in_order_run_client_here():
    with ThreadPoolExecutor(2) as pool:
        assert shard_map(pool)(math.factorial, [5, 3, 4, 0]) == [120, 6, 24, 1]  # payload order
        mine = ThreadMap()
        assert shard_map(pool, mine) is mine
    assert shard_map() is in_process
    assert in_process(math.factorial, [3, 2]) == [6, 2]
    with pytest.raises(InputError, match="has no submit"):
        shard_map(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("backend,kernel", [("fast", "match_shard"), ("pycocotools", "evaluate_shard")])
def test_evaluate_coco_through_a_callers_map(backend, kernel):
    gt, dt = synthetic(11, n_images=30)
    run = ThreadMap()
    r = evaluate_coco(gt, dt, ("bbox", "segm"), shards=3, run=run, backend=backend)
    for t in ("bbox", "segm"):
        assert np.array_equal(r[t].stats, pycocotools_direct(gt, dt, t).stats)
    assert [name for name, _ in run.calls] == [kernel, kernel]  # one call per iou type, the engine's kernel
    assert all(1 <= n <= 3 for _, n in run.calls)
    if backend == "pycocotools":
        assert [n for _, n in run.calls] == [3, 3]


def test_evaluate_semantic_through_a_callers_map():
    pairs = make_pairs(9)
    shards = [pairs[:4], pairs[4:6], pairs[6:]]
    run = ThreadMap()
    r = evaluate_semantic(shards, 5, sharded=True, run=run, worst_n=3)
    one = evaluate_semantic(pairs, 5, worst_n=3)
    assert np.array_equal(r.confusion, one.confusion) and r.worst == one.worst and r.num_images == 9
    assert run.calls == [("evaluate_semantic_shard", 3)]
