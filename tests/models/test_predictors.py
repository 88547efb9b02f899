"""The predictor factory and the tiler: one class per task behind ``Predictor``, one sliding window."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from segpipe.core.tiles import tile_grid
from segpipe.errors import ConfigError
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.predict import (
    InstancePredictor,
    KeypointRCNNPredictor,
    LandmarkPredictor,
    PanopticPredictor,
    Predictor,
    SemanticPredictor,
    register_predictor,
)
from segpipe.models.predictors.tiler import Tiler


def _meta(task: str = "semantic", arch: str = "unet", c: int = 3) -> CheckpointMeta:
    return CheckpointMeta(arch=arch, task=task, num_classes=c, tile_size=[64, 64], tile_overlap=0.25)


@pytest.mark.parametrize(
    ("task", "arch", "cls"),
    [
        ("semantic", "unet", SemanticPredictor),
        ("instance", "yolact", InstancePredictor),
        ("panoptic", "panoptic_fpn", PanopticPredictor),
        ("landmarks", "hourglass", LandmarkPredictor),
        ("landmarks", "keypointrcnn_resnet50_fpn", KeypointRCNNPredictor),
    ],
)
def test_predictor_builds_the_class_of_the_task(task: str, arch: str, cls: type) -> None:
    p = Predictor(nn.Identity(), _meta(task, arch), device="cpu")
    assert type(p) is cls and isinstance(p, Predictor) and p.task == task


def test_a_task_class_refuses_another_tasks_model_and_unknown_tasks_are_named() -> None:
    kp = LandmarkPredictor(nn.Identity(), _meta("landmarks", "keypointrcnn_resnet50_fpn"), device="cpu")
    assert type(kp) is KeypointRCNNPredictor
    with pytest.raises(ConfigError, match="InstancePredictor predicts 'instance'"):
        InstancePredictor(nn.Identity(), _meta("semantic"), device="cpu")
    with pytest.raises(ConfigError, match="known: instance, landmarks, panoptic, semantic"):
        Predictor(nn.Identity(), _meta("depth"), device="cpu")
    with pytest.raises(ValueError, match="already has a predictor"):
        register_predictor("semantic")(SemanticPredictor)


def test_predictor_pickles_and_reads_changed_settings() -> None:
    p = Predictor(nn.Conv2d(3, 3, 1), _meta(), device="cpu", batch_size=4)
    p.batch_size = 2  # the worker plugin sets it after construction
    assert p.tiler.batch_size == 2
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    ref = p.predict(img)
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert type(q) is SemanticPredictor
        out = q.predict(img)
        assert np.array_equal(out.labels, ref.labels) and np.array_equal(out.probs, ref.probs)


@pytest.mark.parametrize(("h", "w"), [(150, 211), (40, 300), (64, 64), (30, 20)])
def test_tiler_grid_matches_core_tiles_and_bands_cover_the_image(h: int, w: int) -> None:
    t = Tiler((64, 64), 0.25, batch_size=3)
    g = t.grid(h, w)
    ov = (g.oy, g.ox)
    assert g.tiles() == tile_grid(h, w, (min(64, h), min(64, w)), ov)
    ends = [y + g.rows_final(r) for r, y in enumerate(g.ys)]
    assert ends[-1] == h and ends == sorted(ends)
    img = np.arange(h * w * 4, dtype=np.int64).reshape(h, w, 4)
    seen = [(tile, a) for chunk, arrays in t.batches(img, g.tiles()) for tile, a in zip(chunk, arrays)]
    assert all(len(chunk) <= 3 for chunk, _ in t.batches(img, g.tiles()))
    for tile, a in seen:
        assert np.array_equal(a, img[tile.y0 : tile.y1, tile.x0 : tile.x1, :3])


def test_blend_rows_hands_over_each_row_once_with_weights_summing_the_blend() -> None:
    """A constant soft output of 1 blends to exactly 1 everywhere: every row is finished once, in order."""
    h, w = 150, 130
    t = Tiler((64, 64), 16, blend="gaussian", batch_size=2)
    got = np.zeros((2, h, w), np.float32)
    bands: list[tuple[int, int]] = []

    def forward(tiles: list[np.ndarray]) -> torch.Tensor:
        return torch.ones((len(tiles), 2, *tiles[0].shape[:2]))

    def on_band(y0: int, y1: int, acc: torch.Tensor, wsum: torch.Tensor) -> None:
        bands.append((y0, y1))
        got[:, y0:y1] = (acc / wsum).numpy()

    t.blend_rows(np.zeros((h, w, 3), np.uint8), 2, forward, lambda out: (out, None), on_band)
    assert bands[0][0] == 0 and bands[-1][1] == h and all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    np.testing.assert_allclose(got, 1.0, rtol=1e-6)
