"""Tiled predictors: equivariance, streaming sinks, instance merging across tiles, RLE encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch import nn

from segpipe.errors import ConfigError
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.predict import Predictor, _crop_to_rle


class _Conv1x1(nn.Module):
    """Translation-equivariant: logits depend on the pixel alone."""

    def __init__(self, c: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, c, 1)
        nn.init.normal_(self.conv.weight, std=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _meta(task: str = "semantic", c: int = 5, arch: str = "unet") -> CheckpointMeta:
    return CheckpointMeta(arch=arch, task=task, num_classes=c, tile_size=[64, 64], tile_overlap=0.25)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("blend", ["gaussian", "linear", "constant"])
def test_tiled_equals_untiled_for_equivariant_model(blend: str) -> None:
    img = _image(150, 211)
    tiled = Predictor(_Conv1x1(5), _meta(), device="cpu", tile=64, overlap=0.25, blend=blend, batch_size=3)
    whole = Predictor(_Conv1x1(5), _meta(), device="cpu", tile=(256, 256))
    a, b = tiled.predict(img), whole.predict(img)
    assert a.labels.dtype == np.uint8 and a.labels.shape == (150, 211)
    assert a.probs.dtype == np.float16 and a.probs.shape == (5, 150, 211)
    assert np.array_equal(a.labels, b.labels)
    assert np.allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)


class _BandRecorder:
    def __init__(self, h: int, w: int) -> None:
        self.arr = np.zeros((h, w), np.uint8)
        self.bands: list[tuple[int, int]] = []

    def __setitem__(self, key: slice, value: np.ndarray) -> None:
        self.bands.append((key.start, key.stop))
        self.arr[key] = value


def test_streams_row_bands_to_sinks() -> None:
    img = _image(300, 90, seed=1)
    pred = Predictor(_Conv1x1(4), _meta(c=4), device="cpu", tile=64, overlap=16)
    rec = _BandRecorder(300, 90)
    probs = np.zeros((4, 300, 90), np.float16)
    out = pred.predict_semantic(img, label_sink=rec, prob_sink=probs)
    assert out.labels is None and out.probs is None
    # contiguous bands, top to bottom, each at most one tile high
    assert rec.bands[0][0] == 0 and rec.bands[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(rec.bands, rec.bands[1:]))
    assert max(b - a for a, b in rec.bands) <= 64
    ref = Predictor(_Conv1x1(4), _meta(c=4), device="cpu", tile=512).predict(img)
    assert np.array_equal(rec.arr, ref.labels)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-2)


def test_predict_batch_and_real_model() -> None:
    from segpipe.models.registry import build_model

    pred = Predictor(build_model("unet", 3, base=8), _meta(c=3), device="cpu", tile=64)
    outs = pred.predict_batch([_image(48, 48, i) for i in range(3)] + [_image(100, 70)])
    assert [o.labels.shape for o in outs] == [(48, 48)] * 3 + [(100, 70)]


@pytest.mark.parametrize("seed", range(5))
def test_crop_to_rle_matches_encode(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = rng.random((ch, cw)) < 0.5
    if seed == 0:
        crop[:] = True  # full columns: runs join across columns
    full = np.zeros((h, w), np.uint8)
    full[y0 : y0 + ch, x0 : x0 + cw] = crop
    ref = mask_utils.encode(np.asfortranarray(full))
    got = _crop_to_rle(crop, y0, x0, h, w)
    assert got["counts"] == ref["counts"].decode()
    assert np.array_equal(mask_utils.decode(got), full)


class _DiskDetector(nn.Module):
    """Finds the bright pixels of a tile and reports them as one instance (an oracle per tile)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for im in images:
            m = (im.mean(0) > 0).float()
            if m.sum() == 0:
                out.append(
                    {
                        "boxes": torch.zeros(0, 4),
                        "labels": torch.zeros(0, dtype=torch.int64),
                        "scores": torch.zeros(0),
                        "masks": torch.zeros(0, 1, *im.shape[-2:]),
                    }
                )
                continue
            ys, xs = torch.nonzero(m, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append(
                {"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9]), "masks": m[None, None]}
            )
        return out


def test_instances_cut_by_tiles_are_merged() -> None:
    h, w = 160, 160
    img = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 80) ** 2 + (xx - 75) ** 2 < 30**2  # straddles every tile border of a 64/16 grid
    img[disk] = 255
    meta = _meta(task="instance", c=2, arch="yolact")
    meta.mean, meta.std = [0.5] * 3, [0.5] * 3
    pred = Predictor(_DiskDetector(), meta, device="cpu", tile=64, overlap=16)
    res = pred.predict(img)
    assert len(res.rles) == 1
    m = mask_utils.decode(res.rles[0]).astype(bool)
    assert np.array_equal(m, disk)
    ys, xs = np.nonzero(disk)
    assert res.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


class _PeakNet(nn.Module):
    """Heatmaps at stride 4 with a peak where the image is brightest, per channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(1, keepdim=True)
        return torch.nn.functional.avg_pool2d(g, 4).repeat(1, 2, 1, 1)


def test_landmark_peaks_decoded_across_tiles() -> None:
    img = np.zeros((200, 180, 3), np.uint8)
    img[150:154, 120:124] = 255
    meta = _meta(task="landmarks", c=2, arch="hourglass")
    meta.mean, meta.std = [0.0] * 3, [1.0] * 3
    res = Predictor(_PeakNet(), meta, device="cpu", tile=64, overlap=16).predict(img)
    assert res.heatmaps.shape == (2, 200, 180) and res.heatmaps.dtype == np.float16
    assert np.allclose(res.keypoints[:, :2], [[122, 152]] * 2, atol=2.5)


@pytest.mark.parametrize("overlap", [0.0, 0.75])
def test_labels_only_logit_blending_and_large_overlap(overlap: float) -> None:
    img = _image(170, 133, seed=3)
    whole = Predictor(_Conv1x1(6), _meta(c=6), device="cpu", tile=(256, 256)).predict(img)
    for logits in (False, True):
        pred = Predictor(_Conv1x1(6), _meta(c=6), device="cpu", tile=64, overlap=overlap, blend_logits=logits)
        out = pred.predict_semantic(img, keep_probs=False)
        assert out.probs is None and out.labels is not None
        assert np.array_equal(out.labels, whole.labels)
    # Probabilities requested: always blended as probabilities, whatever blend_logits says.
    pred = Predictor(_Conv1x1(6), _meta(c=6), device="cpu", tile=64, overlap=overlap, blend_logits=True)
    out = pred.predict(img)
    assert np.allclose(out.probs.astype(np.float32), whole.probs.astype(np.float32), atol=2e-3)


class _Layout(nn.Module):
    """A 1×1 conv whose output is forced into one memory layout."""

    def __init__(self, c: int, channels_last: bool) -> None:
        super().__init__()
        self.inner = _Conv1x1(c)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).contiguous(memory_format=self.fmt)


def test_blend_buffers_follow_the_output_layout() -> None:
    """Channels-last outputs are blended in HWC-backed buffers: the results equal the planar path."""
    img = _image(203, 277, seed=4)
    outs = {}
    for cl in (False, True):
        pred = Predictor(_Layout(7, cl), _meta(c=7), device="cpu", tile=64, overlap=0.25, batch_size=3)
        labels_only = pred.predict_semantic(img, keep_probs=False).labels
        full = pred.predict(img)
        assert np.array_equal(labels_only, full.labels)
        outs[cl] = full
    assert np.array_equal(outs[False].labels, outs[True].labels)
    # The softmax's channel sums run in another order: equal up to float16 rounding.
    assert np.allclose(outs[False].probs.astype(np.float32), outs[True].probs.astype(np.float32), atol=1e-3)
    assert np.allclose(outs[True].probs.astype(np.float32).sum(0), 1.0, atol=1e-2)


class _Pointwise3D(nn.Module):
    """Translation-equivariant in 3-D: logits depend on the voxel alone."""

    def __init__(self, c: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv3d(1, c, 1)
        nn.init.normal_(self.conv.weight, std=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_volume_tiled_in_3d_equals_untiled(blend: str) -> None:
    slab = np.random.default_rng(5).integers(0, 256, (21, 50, 43), dtype=np.uint8)

    def meta(tile: list[int]) -> CheckpointMeta:
        return CheckpointMeta(arch="unet3d", task="semantic", num_classes=4, tile_size=tile, tile_overlap=0.25)

    tiled = Predictor(_Pointwise3D(4), meta([8, 16, 16]), device="cpu", blend=blend, batch_size=3)
    whole = Predictor(_Pointwise3D(4), meta([32, 64, 64]), device="cpu")
    a, b = tiled.predict_volume(slab), whole.predict_volume(slab)
    assert a.labels.shape == (21, 50, 43) and a.probs.shape == (4, 21, 50, 43)
    assert np.array_equal(a.labels, b.labels)
    assert np.allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)
    assert tiled.predict_volume(slab, keep_probs=False).probs is None
    with pytest.raises(ConfigError):
        Predictor(_Conv1x1(4), _meta(c=4), device="cpu").predict_volume(slab)  # a 2-D model


def test_argmax_agrees_on_both_layouts_with_ties_and_nan() -> None:
    """Planar and channels-last bands give np.argmax's answer: the first maximum, and a NaN wins."""
    from segpipe.models.predict import _argmax_channels

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (21, 64, 96)).astype(np.float32)  # many ties
    a[5, 3, 7] = np.nan
    a[0, 10, 10] = np.nan
    a[[3, 9], 20, 30] = np.nan  # two NaNs: the first one wins
    expect = np.argmax(a, axis=0)
    assert expect[20, 30] == 3 and expect[3, 7] == 5
    planar = _argmax_channels(a)
    hwc = _argmax_channels(torch.from_numpy(np.ascontiguousarray(a.transpose(1, 2, 0))).permute(2, 0, 1))
    assert planar.dtype == np.uint8 and hwc.dtype == np.uint8
    np.testing.assert_array_equal(planar, expect)
    np.testing.assert_array_equal(hwc, expect)


@pytest.mark.parametrize("layout", ["planar", "channels_last"])
@pytest.mark.parametrize("probs", [False, True])
def test_tile_outputs_from_logits_match_numpy(layout: str, probs: bool) -> None:
    """Labels are np.argmax of the logits (ties: the first class; NaN wins); probabilities round(255·softmax)."""
    from segpipe.models.predict import labels_and_quantised_probs

    rng = np.random.default_rng(3)
    a = rng.normal(0, 3, (7, 33, 47)).astype(np.float32)
    a[:, 0, :5] = 1.0  # a tie of every class
    a[4, 2, 2] = np.nan
    t = torch.from_numpy(a.copy())
    if layout == "channels_last":
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(1, 2, 0))).permute(2, 0, 1)
    labels, q = labels_and_quantised_probs(t, probs)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.argmax(a, axis=0))
    if not probs:
        assert q is None
        return
    assert q is not None and q.dtype == np.uint8 and q.shape == a.shape and q.flags.c_contiguous
    finite = np.isfinite(a).all(0)
    e = np.exp(a.astype(np.float64) - a.max(0))
    ref = np.round(255 * e / e.sum(0))
    assert np.abs(q.astype(np.int64) - ref)[:, finite].max() <= 1
    assert np.array_equal(q[:, 0, 0], np.full(7, round(255 / 7), np.uint8))


def test_input_normalisation_is_fused_float32_channels_last() -> None:
    """uint8 and float64 tiles both become normalised float32 with the HWC view's strides."""
    pred = Predictor(_Conv1x1(5), _meta(), device="cpu")
    img = _image(32, 48)
    mean = np.array(pred.meta.mean) * 255.0
    std = np.array(pred.meta.std) * 255.0
    expect = ((img.astype(np.float64) - mean) / std).transpose(2, 0, 1)[None]
    for tile in (img, img.astype(np.float64)):
        x = pred._to_tensor([tile])
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_allclose(x.numpy(), expect, atol=1e-5)


def test_in_memory_probabilities_equal_streamed_bands() -> None:
    """Probabilities written straight into an in-memory float16 array equal those handed to a sink."""

    class Bands:
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.a = np.full(shape, np.nan, np.float16)

        def __setitem__(self, key: tuple[slice, slice], value: np.ndarray) -> None:
            self.a[key] = value

    pred = Predictor(_Conv1x1(5), _meta(), device="cpu", batch_size=3)
    img = _image(150, 211, seed=4)
    mem = pred.predict_semantic(img)
    sink = Bands((5, 150, 211))
    pred.predict_semantic(img, prob_sink=sink)
    assert mem.probs is not None and not np.isnan(sink.a).any()
    np.testing.assert_array_equal(mem.probs, sink.a)
