"""Every registered model builds with random init and runs a forward pass on a tiny CPU input."""

from __future__ import annotations

import pytest
import torch

from segpipe.errors import UnknownNameError
from segpipe.models.registry import ModelSpec, build_model, count_parameters, get_model_spec, model_names

torch.set_num_threads(2)

#: Built at full size but too slow for the default suite on 2 cores (~130 M parameters each).
HEAVY = {"fcn32s", "fcn16s", "fcn8s", "fcn_resnet101", "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"}
#: Small test-time options for the detection models (no resizing to 512).
DET_KW = {"min_size": 64, "max_size": 96}


def _params(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def test_registry_lists_all_tasks() -> None:
    names = model_names()
    expected = {
        "fcn32s",
        "fcn16s",
        "fcn8s",
        "fcn_resnet50",
        "fcn_resnet101",
        "unet",
        "segnet",
        "pspnet",
        "gcn",
        "deeplabv3_resnet50",
        "deeplabv3_mobilenet_v3_large",
        "deeplabv3plus",
        "lraspp_mobilenet_v3_large",
        "maskrcnn_resnet50_fpn",
        "maskrcnn_mobilenet_v3",
        "yolact",
        "panoptic_fpn",
        "hourglass",
        "keypointrcnn_resnet50_fpn",
    }
    assert expected <= set(names)
    assert {get_model_spec(n).task for n in names} == {"semantic", "instance", "panoptic", "landmarks"}


def test_builtin_dims_match_the_registered_specs() -> None:
    """The torch-free table the driver reads (arch_dims) says what each registered architecture says."""
    from segpipe.models.registry import BUILTIN_DIMS, arch_dims, get_model_spec, model_names

    builtin = {n for n in model_names()  # other tests may register stubs of their own
               if getattr(get_model_spec(n).builder, "__module__", "").startswith("segpipe.models.architectures")}
    assert set(BUILTIN_DIMS) == builtin
    assert {n: get_model_spec(n).dims for n in builtin} == BUILTIN_DIMS
    assert arch_dims("unet3d") == 3 and arch_dims("unet") == 2 and arch_dims("no_such_arch") == 2


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unet"):
        get_model_spec("no-such-net")


def test_duplicate_registration_raises() -> None:
    spec = get_model_spec("unet")
    from segpipe.models.registry import register_model

    with pytest.raises(ValueError):
        register_model(ModelSpec("unet", "semantic", spec.builder, (64, 64), "dup"))


def test_parameter_count_on_meta_device() -> None:
    assert count_parameters("unet", 3) == sum(p.numel() for p in build_model("unet", 3).parameters())


@pytest.mark.parametrize("name", _params(model_names("semantic")))
def test_semantic_forward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 3).eval()
    dims = get_model_spec(name).dims
    # Not multiples of the stride on purpose: the models pad and crop.
    x = torch.randn(1, 3, 64, 72) if dims == 2 else torch.randn(1, 1, 10, 30, 22)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (1, 3, *x.shape[2:])
    assert torch.isfinite(out).all()


def test_unet3d_is_a_3d_model_with_3d_tiles() -> None:
    from segpipe.models.checkpoint import CheckpointMeta

    spec = get_model_spec("unet3d")
    assert spec.dims == 3 and spec.task == "semantic"
    assert CheckpointMeta.for_arch("unet3d", 4).tile_size == [spec.default_depth, *spec.default_input]


@pytest.mark.parametrize("name", _params(model_names("instance")))
def test_instance_forward(name: str) -> None:
    torch.manual_seed(0)
    kw = DET_KW if name.startswith("maskrcnn") else {}
    model = build_model(name, 3, **kw).eval()
    with torch.inference_mode():
        out = model([torch.randn(3, 64, 64)])
    assert set(out[0]) >= {"boxes", "labels", "scores", "masks"}
    assert out[0]["masks"].shape[1:] == (1, 64, 64)


@pytest.mark.parametrize("name", _params(model_names("instance")))
def test_instance_train_step_gives_losses(name: str) -> None:
    torch.manual_seed(0)
    kw = DET_KW if name.startswith("maskrcnn") else {}
    model = build_model(name, 3, **kw).train()
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:50] = 1
    target = {"boxes": torch.tensor([[12.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks}
    losses = model([torch.randn(3, 64, 64), torch.randn(3, 64, 64)], [target, target])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_panoptic_forward_and_fusion() -> None:
    torch.manual_seed(0)
    model = build_model("panoptic_fpn", 4, thing_classes=[2, 3], instance_kwargs=DET_KW).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64))
    ids, segments = model.fuse(out[0], score_thresh=0.0)
    assert ids.shape == (64, 64)
    assert {int(i) for i in ids.unique()} - {0} == {s["id"] for s in segments}


def test_panoptic_fusion_unknown_channel() -> None:
    from segpipe.models.architectures.panoptic import panoptic_fusion

    sem = torch.zeros(3, 8, 8)
    sem[1] = 1.0  # stuff class 1 everywhere ...
    sem[2, :, 4:] = 5.0  # ... but the semantic head sees thing class 2 on the right half
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, :4, 4:] = 0.99  # one instance explains only the top-right quarter
    inst = {
        "boxes": torch.tensor([[4.0, 0.0, 8.0, 4.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.9]),
        "masks": masks,
    }
    ids, segs = panoptic_fusion(sem, inst, [2])
    thing = next(s for s in segs if s["isthing"])
    assert (ids[:4, 4:] == thing["id"]).all()
    assert (ids[4:, 4:] == 0).all()  # thing pixels no instance explains are unknown → void
    stuff = next(s for s in segs if not s["isthing"])
    assert (ids[:, :4] == stuff["id"]).all() and stuff["category_id"] == 1


def test_hourglass_heatmaps() -> None:
    model = build_model("hourglass", 4, channels=32, num_stacks=2).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 4, 16, 24)
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))
    assert len(outs) == 2 and outs[0].shape == (2, 4, 16, 16)


@pytest.mark.slow
def test_keypointrcnn_forward() -> None:
    model = build_model("keypointrcnn_resnet50_fpn", 4, **DET_KW).eval()
    with torch.inference_mode():
        out = model([torch.randn(3, 64, 64)])
    assert "keypoints" in out[0]
