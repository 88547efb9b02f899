"""segpipe.core.doubt against scipy's entropy and a plain sort, for quantised and float probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from segpipe.core.doubt import DoubtAccumulator, entropy_map, image_doubt, margin_map, normalise_probs


def _random_probs(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    logits = rng.normal(size=(c, h, w)) * rng.uniform(0.1, 4.0)
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


@pytest.mark.parametrize("c", [2, 3, 8, 21])
def test_entropy_matches_scipy(c):
    p = _random_probs(np.random.default_rng(c), c, 7, 9)
    ref = scipy_entropy(p.reshape(c, -1), base=c, axis=0).reshape(7, 9)
    assert np.allclose(entropy_map(p), ref, atol=1e-5)
    q = np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)  # as the store keeps them
    ref_q = scipy_entropy(q.reshape(c, -1).astype(np.float64), base=c, axis=0).reshape(7, 9)  # scipy normalises
    has = q.sum(axis=0) > 0
    assert np.allclose(entropy_map(q)[has], ref_q[has], atol=1e-5)


def test_margin_is_top_two_difference():
    p = _random_probs(np.random.default_rng(1), 5, 6, 4)
    s = np.sort(p, axis=0)
    assert np.allclose(margin_map(p), s[-1] - s[-2], atol=1e-6)


def test_extremes_and_empty_pixels():
    certain = np.zeros((4, 2, 2), np.uint8)
    certain[2] = 255
    assert np.all(entropy_map(certain) == 0) and np.all(margin_map(certain) == 1)
    flat = np.full((4, 2, 2), 64, np.uint8)
    assert np.allclose(entropy_map(flat), 1.0) and np.allclose(margin_map(flat), 0.0)
    empty = np.zeros((4, 2, 2), np.uint8)  # an unwritten chunk: no distribution, not "certain"
    p, valid = normalise_probs(empty)
    assert not valid.any()
    d = image_doubt(empty)
    assert d.pixels == 0 and np.isnan(d.entropy) and d.to_dict()["entropy"] is None


def test_blocks_merge_to_one_pass():
    p = _random_probs(np.random.default_rng(7), 6, 40, 30)
    whole = image_doubt(p)
    acc = DoubtAccumulator()
    parts = [DoubtAccumulator().update(p[:, y:y + 13]) for y in range(0, 40, 13)]
    for part in reversed(parts):  # any order
        acc.merge(part)
    got = acc.compute()
    assert got.pixels == whole.pixels == 1200
    assert got.entropy == pytest.approx(whole.entropy, rel=1e-9)
    assert got.margin == pytest.approx(whole.margin, rel=1e-9)
    assert got.low_margin == pytest.approx(whole.low_margin, rel=1e-9)
    assert whole.entropy == pytest.approx(float(entropy_map(p).mean()), rel=1e-6)


def test_mask_limits_the_pixels():
    p = _random_probs(np.random.default_rng(3), 3, 4, 4)
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    d = image_doubt(p, mask)
    assert d.pixels == 8 and d.entropy == pytest.approx(float(entropy_map(p)[:2].mean()), rel=1e-6)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="probabilities must be"):
        normalise_probs(np.zeros(5))
