"""Test-time augmentation and ensembles (segpipe.models.tta) against hand computations on real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from segpipe.errors import ConfigError
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.predict import Predictor, SemanticPredictor
from segpipe.models.tta import TTASpec, averaged_model, check_members, tta_spec

C = 4


def _meta(n: int = C, names: list[str] | None = None, mean: tuple[float, ...] = (0.485, 0.456, 0.406),
          std: tuple[float, ...] = (0.229, 0.224, 0.225), task: str = "semantic") -> CheckpointMeta:
    names = names or [f"c{i}" for i in range(n)]
    cats = [{"index": i, "id": i, "name": nm, "color": None, "isthing": True} for i, nm in enumerate(names)]
    return CheckpointMeta(arch="toy", task=task, num_classes=n, categories=cats, tile_size=[32, 32],
                          tile_overlap=0.25, mean=list(mean), std=list(std))


def _conv(k: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, C, k, padding=k // 2)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _probs(model: nn.Module, meta: CheckpointMeta, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (C, H, W) float32, labels (H, W))`` of the tiled predictor on ``image``."""
    pred: SemanticPredictor = Predictor(model, meta, device="cpu", threads=1, batch_size=1)  # type: ignore[assignment]
    out = pred.predict_semantic(image)
    return out.probs.astype(np.float32), out.labels


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_flips_of_a_flip_equivariant_model_change_nothing() -> None:
    """A 1×1 convolution commutes with flips: its flip-averaged probabilities are its own."""
    meta, model = _meta(), _conv(1, 0)
    image = _image(80, 100)  # several tiles: the blending sees the wrapper's log-probabilities
    plain, plain_labels = _probs(model, meta, image)
    tta, tta_labels = _probs(averaged_model([model], [meta], TTASpec(flips=True)), meta, image)
    np.testing.assert_allclose(tta, plain, atol=2e-3)  # float16 probabilities
    assert (tta_labels == plain_labels).mean() > 0.999


def test_averaging_equals_a_hand_computation() -> None:
    """Flips and scales of a 3×3 convolution, undone and averaged by hand with numpy."""
    meta, model = _meta(), _conv(3, 1)
    x = torch.randn(2, 3, 16, 20)
    with torch.inference_mode():
        got = torch.softmax(averaged_model([model], [meta], TTASpec(flips=True, scales=(1.0, 0.5)))(x), 1).numpy()
        views = []
        for s in (1.0, 0.5):
            xs = x if s == 1.0 else F.interpolate(x, size=(8, 10), mode="bilinear", align_corners=False)
            for axes in ((), (3,), (2,), (2, 3)):
                xn = np.flip(xs.numpy(), axes).copy() if axes else xs.numpy()
                y = np.flip(model(torch.from_numpy(xn)).numpy(), axes) if axes else model(torch.from_numpy(xn)).numpy()
                y = torch.from_numpy(np.ascontiguousarray(y))
                if s != 1.0:
                    y = F.interpolate(y, size=(16, 20), mode="bilinear", align_corners=False)
                views.append(_softmax(y.numpy()))
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-5)


def test_an_ensemble_of_a_model_with_itself_is_the_model() -> None:
    meta, model = _meta(), _conv(3, 2)
    image = _image(70, 90, 1)
    plain, labels = _probs(model, meta, image)
    both, both_labels = _probs(averaged_model([model, model], [meta, meta], None), meta, image)
    np.testing.assert_allclose(both, plain, atol=2e-3)
    assert (both_labels == labels).mean() > 0.999


def test_two_models_average_each_in_its_own_normalisation() -> None:
    """The ensemble's blended probabilities are the mean of each model's own (blending is linear)."""
    ma, mb = _meta(), _meta(mean=(0.5, 0.5, 0.5), std=(0.25, 0.3, 0.2))
    a, b = _conv(3, 3), _conv(3, 4)
    image = _image(70, 90, 2)
    pa, _ = _probs(a, ma, image)
    pb, _ = _probs(b, mb, image)
    both, labels = _probs(averaged_model([a, b], [ma, mb], None), ma, image)
    expected = (pa + pb) / 2
    np.testing.assert_allclose(both, expected, atol=3e-3)
    assert not np.allclose(pa, pb, atol=1e-2)  # the models really differ
    agree = labels == expected.argmax(0)
    assert agree.mean() > 0.99  # near-ties may flip under float16


def test_members_must_share_their_classes() -> None:
    with pytest.raises(ConfigError, match="ensemble members must have the same classes"):
        check_members([_meta(), _meta(names=["a", "b", "c", "d"])], ["a.ckpt", "b.ckpt"], averaging="--ensemble")
    with pytest.raises(ConfigError, match="predicts 3 classes"):
        check_members([_meta(), _meta(3)], ["a.ckpt", "b.ckpt"], averaging="--ensemble")
    with pytest.raises(ConfigError, match="semantic models; i.ckpt is an instance model"):
        check_members([_meta(task="instance")], ["i.ckpt"], averaging="--tta")
    # the normalisation may differ
    check_members([_meta(), _meta(mean=(0.5, 0.5, 0.5))], ["a", "b"], averaging="--ensemble")


@pytest.mark.parametrize(("mode", "scales", "says"), [
    ("flips", None, "--tta must be one of none, flip, flip+scale"),
    ("flip", (1.0,), "--tta-scales applies to --tta flip+scale"),
    ("flip+scale", (0.0,), "--tta-scales 0.0 is not a scale in [0.25, 4.0]"),
    ("flip+scale", (float("nan"),), "is not a scale"),
    ("flip+scale", (1.0, 1.0), "names a scale twice"),
    ("flip+scale", (), "names no scale"),
])
def test_bad_tta_options_are_refused(mode: str, scales: tuple[float, ...] | None, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("+", r"\+").replace("[", r"\[").replace(".", r"\.")):
        tta_spec(mode, scales)


def test_tta_specs() -> None:
    assert tta_spec("none", None) is None
    assert tta_spec("flip", None) == TTASpec(flips=True, scales=(1.0,))
    spec = tta_spec("flip+scale", None)
    assert spec is not None and spec.scales == (0.75, 1.0, 1.25) and len(spec.views()) == 12
    assert spec.to_config() == {"flips": ["", "h", "v", "hv"], "scales": [0.75, 1.0, 1.25]}
