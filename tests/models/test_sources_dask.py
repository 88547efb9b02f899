"""Every model source through ``segpipe prelabel`` on real Dask workers, against the model's own eager output.

Each test builds a small random-weight model here, saves it in one form (a state dict with a wrapper
prefix, .safetensors, TorchScript, a torch.export program, ONNX, a Hugging Face or an smp folder, a
builder of the user's), pre-labels a few images with it on an external scheduler with two worker
processes (tests/_dask_cluster.py), and compares what the store holds with what the model itself
computes on the same normalised image: the label maps equal the argmax of its logits and the stored
probabilities (uint8, round(255 p)) its softmax within quantisation. The images fit one tile, so the
comparison is exact up to float noise.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segpipe.execution.cluster import ClusterSpec
from segpipe.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster

#: (height, width) of the test images: multiples of 32, so no architecture pads them.
SIZES = [(64, 96), (64, 96), (96, 64)]

BUILDER = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict:
        return {"out": self.head(self.body(x))}


def build(num_classes: int, width: int = 8) -> nn.Module:
    return Net(num_classes)
'''


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three random RGB photos (two sizes)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(7)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the user's builder module ``mynets.py``, on PYTHONPATH for the driver and the workers."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "mynets.py").write_text(BUILDER)
    return root


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory, plugin_dir: Path) -> Iterator[str]:
    """An external scheduler with two single-threaded worker processes that can import ``mynets``."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), *([old] if old else [])])
    try:
        with external_cluster(tmp_path_factory.mktemp("cluster"), [["--nworkers", "1"]] * 2) as address:
            yield address
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def run(images: Path, model: Path | str, out: Path, scheduler: str, **kw: Any) -> dict[str, Any]:
    """``prelabel`` on the external cluster; every image done."""
    rep = prelabel(PrelabelRequest(source=str(images), model=str(model), out=out, threads=1, **kw),
                   ClusterSpec(scheduler=scheduler))
    assert rep["images"]["done"] == len(SIZES) and rep["images"]["failed"] == 0, rep
    return rep


def stored(out: Path) -> dict[str, Any]:
    """``{file name: the image's group}`` of a store."""
    store = ZarrStore.open(out)
    entries = [json.loads(ln) for ln in (out / ".segpipe" / "manifest.jsonl").read_text().splitlines()]
    return {e["file"]: store.group(int(e["id"])) for e in entries}


def normalised(path: Path, mean: Any = IMAGENET_MEAN, std: Any = IMAGENET_STD) -> torch.Tensor:
    """The image as the model's input ``(1, 3, H, W)``: ``(x / 255 − mean) / std``."""
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def assert_semantic(out: Path, images: Path, logits_of: Callable[[torch.Tensor], torch.Tensor],
                    mean: Any = IMAGENET_MEAN, std: Any = IMAGENET_STD) -> dict[str, Any]:
    """Each stored label map is the argmax of ``logits_of(x)`` (category ids) and the stored probabilities
    its softmax; returns the store's attributes."""
    attrs = ZarrStore.open(out).attrs()
    ids = np.array([c["id"] for c in attrs["categories"]])
    groups = stored(out)
    assert len(groups) == len(SIZES)
    for name, g in groups.items():
        with torch.inference_mode():
            logits = logits_of(normalised(images / name, mean, std))[0].float()
        p = torch.softmax(logits, 0).numpy()
        top = np.sort(p, 0)
        clear = (top[-1] - top[-2]) > 1e-4  # a near tie may go either way in float
        labels = g["labels"][...]
        assert labels.shape == p.shape[1:]
        assert clear.mean() > 0.95
        np.testing.assert_array_equal(labels[clear], ids[p.argmax(0)][clear])
        q = g["probs"][...].astype(np.float64) / 255.0
        assert q.shape == p.shape
        assert np.abs(q - p).max() <= 1.0 / 255.0
    return attrs


def names(out: Path) -> list[str]:
    """The store's category names, in class order."""
    return [c["name"] for c in ZarrStore.open(out).attrs()["categories"]]


# ------------------------------------------------------------------------------------------ state dicts


def test_torchvision_lraspp_state_dict_is_read_with_arch(tmp_path, images, scheduler) -> None:
    """The issue's case: torchvision's own state dict (no ``net.`` prefix), classes inferred from the weights."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                     num_classes=4).eval()
    torch.save(net.state_dict(), tmp_path / "lraspp.pth")
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "lraspp.pth", out, scheduler, arch="lraspp_mobilenet_v3_large")
    assert_semantic(out, images, lambda x: net(x)["out"])
    assert names(out) == [f"class_{i}" for i in range(4)]


def test_ddp_deeplabv3_with_aux_head_and_voc_classes(tmp_path, images, scheduler) -> None:
    """``module.`` (DDP) before torchvision's keys, an auxiliary head in the weights, ``--classes VOC``."""
    import torchvision

    torch.manual_seed(1)
    net = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ddp.pt")
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "ddp.pt", out, scheduler, arch="deeplabv3_mobilenet_v3_large", classes="VOC")
    attrs = assert_semantic(out, images, lambda x: net(x)["out"])
    assert names(out)[:3] == ["background", "aeroplane", "bicycle"] and len(names(out)) == 21
    assert attrs["categories"][15]["color"] == [192, 128, 128]  # person, VOC's colour


def test_lightning_container_with_model_prefix_and_num_classes(tmp_path, images, scheduler) -> None:
    """A trainer's ``{"state_dict": {"model.…"}}`` of segpipe's U-Net, ``--num-classes`` given."""
    from segpipe.models.registry import build_model

    torch.manual_seed(2)
    net = build_model("unet", 3).eval()
    torch.save({"epoch": 4, "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "lightning.ckpt")
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "lightning.ckpt", out, scheduler, arch="unet", num_classes=3)
    assert_semantic(out, images, net)


def test_safetensors_found_by_content_with_compile_prefix(tmp_path, images, scheduler) -> None:
    """A plain state dict in safetensors under another extension, keys prefixed by torch.compile."""
    from safetensors.torch import save_file

    from segpipe.models.registry import build_model

    torch.manual_seed(3)
    net = build_model("pspnet", 5).eval()
    save_file({f"_orig_mod.{k}": v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "weights.bin")
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "weights.bin", out, scheduler, arch="pspnet")
    assert_semantic(out, images, net)


# --------------------------------------------------------------------------------- graphs: TorchScript, .pt2, ONNX


class _Tiny(nn.Module):
    """A small fully convolutional net with a stride-2 stage (its output is at half resolution)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.b = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _upsampled(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The eager logits at input resolution (bilinear, as the processors and segpipe resize them)."""
    def f(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(net(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return f


def test_torchscript_with_its_extra_file(tmp_path, images, scheduler) -> None:
    """torch.jit.save with a segpipe.json extra file naming the classes and the normalisation."""
    torch.manual_seed(4)
    net = _Tiny().eval()
    extra = {"classes": ["sky", "road", "car", "tree", "house"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    torch.jit.save(torch.jit.script(net), str(tmp_path / "m.ts"), _extra_files={"segpipe.json": json.dumps(extra)})
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "m.ts", out, scheduler)
    assert_semantic(out, images, _upsampled(net), mean=[0.5] * 3, std=[0.25] * 3)
    assert names(out) == extra["classes"]


def test_torch_export_program_with_dynamic_sizes(tmp_path, images, scheduler) -> None:
    torch.manual_seed(5)
    net = _Tiny(4).eval()
    h, w = torch.export.Dim("h", min=16, max=2048), torch.export.Dim("w", min=16, max=2048)
    ep = torch.export.export(net, (torch.randn(1, 3, 64, 64),), dynamic_shapes=({2: 2 * h, 3: 2 * w},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "m.pt2", out, scheduler)
    assert_semantic(out, images, _upsampled(net))
    assert len(names(out)) == 4  # the output shape says it


def _onnx(net: nn.Module, path: Path, props: dict[str, str], dynamic: bool = True) -> None:
    import onnx

    kw: dict[str, Any] = {"dynamic_axes": {"img": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}}} \
        if dynamic else {}
    torch.onnx.export(net, (torch.randn(1, 3, 64, 96),), str(path), dynamo=False, input_names=["img"],
                      output_names=["logits"], opset_version=17, **kw)
    model = onnx.load(str(path))
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))


def test_onnx_with_metadata_props(tmp_path, images, scheduler) -> None:
    """ONNX Runtime on the workers; Ultralytics-style names and 0..255 mean/std from metadata_props."""
    torch.manual_seed(6)
    net = _Tiny(3).eval()
    _onnx(net, tmp_path / "m.onnx", {"names": "{0: 'water', 1: 'land', 2: 'cloud'}",
                                     "mean": "[127.5, 127.5, 127.5]", "std": "63.75, 63.75, 63.75"})
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "m.onnx", out, scheduler)
    assert_semantic(out, images, _upsampled(net), mean=[0.5] * 3, std=[0.25] * 3)
    assert names(out) == ["water", "land", "cloud"]


# ----------------------------------------------------------------------------------------- Hugging Face, smp


def _segformer(folder: Path, labels: list[str]) -> nn.Module:
    import transformers as T

    torch.manual_seed(8)
    cfg = T.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                            patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                            decoder_hidden_size=16, num_labels=len(labels),
                            id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = T.SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():  # transformers initialises the head near zero: spread the classes apart
        model.decode_head.classifier.weight.mul_(200.0)
    model.save_pretrained(folder)
    T.SegformerImageProcessor(image_mean=[0.4, 0.4, 0.4], image_std=[0.2, 0.3, 0.2]).save_pretrained(folder)
    return model


def test_hugging_face_segformer_folder(tmp_path, images, scheduler) -> None:
    """A SegFormer folder: id2label names the classes, preprocessor_config.json the normalisation; the
    labels equal the image processor's own post-processing."""
    import transformers as T

    labels = ["background", "building", "road", "water"]
    model = _segformer(tmp_path / "segformer", labels)
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "segformer", out, scheduler)
    mean, std = [0.4] * 3, [0.2, 0.3, 0.2]
    assert_semantic(out, images, lambda x: nn.functional.interpolate(
        model(pixel_values=x).logits, size=x.shape[-2:], mode="bilinear", align_corners=False), mean=mean, std=std)
    assert names(out) == labels
    proc = T.SegformerImageProcessor.from_pretrained(tmp_path / "segformer")
    for name, g in stored(out).items():
        im = Image.open(images / name).convert("RGB")
        inputs = proc(images=im, do_resize=False, return_tensors="pt")
        with torch.inference_mode():
            seg = proc.post_process_semantic_segmentation(model(**inputs), target_sizes=[im.size[::-1]])[0]
        assert (g["labels"][...] == seg.numpy()).mean() > 0.99


def _mask2former(folder: Path) -> tuple[nn.Module, Any]:
    import transformers as T

    torch.manual_seed(9)
    labels = ["person", "car", "sky"]
    cfg = T.Mask2FormerConfig(
        backbone_config=T.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                     out_features=["stage1", "stage2", "stage3", "stage4"]),
        feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
        encoder_layers=1, decoder_layers=2, num_queries=6, num_attention_heads=2, num_labels=3,
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = T.Mask2FormerForUniversalSegmentation(cfg).eval()
    model.save_pretrained(folder)
    proc = T.Mask2FormerImageProcessor()
    proc.save_pretrained(folder)
    return model, proc


@pytest.fixture(scope="module")
def mask2former(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, Any]:
    folder = tmp_path_factory.mktemp("m2f") / "mask2former"
    model, proc = _mask2former(folder)
    return folder, model, proc


def _queries(model: nn.Module, proc: Any, path: Path) -> tuple[Any, tuple[int, int]]:
    im = Image.open(path).convert("RGB")
    inputs = proc(images=im, do_resize=False, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == im.size[::-1]  # sides of 32: no padding
    with torch.inference_mode():
        return model(pixel_values=inputs["pixel_values"]), im.size[::-1]


def test_mask2former_semantic(tmp_path, images, scheduler, mask2former) -> None:
    """``--task semantic``: the stored labels are the processor's semantic post-processing."""
    folder, model, proc = mask2former
    out = tmp_path / "s.zarr"
    run(images, folder, out, scheduler, task="semantic")
    assert names(out) == ["person", "car", "sky"]

    def scores(x: torch.Tensor) -> torch.Tensor:
        r = proc.post_process_semantic_segmentation(model(pixel_values=x), target_sizes=[x.shape[-2:]],
                                                    return_segmentation_scores=True)
        return r[0]["segmentation_scores"][None].clamp_min(1e-30).log()

    assert_semantic(out, images, scores)


def test_mask2former_instance(tmp_path, images, scheduler, mask2former) -> None:
    """``--task instance``: every stored instance is one of the processor's (mask, class, score); the others
    are below ``--min-score`` or duplicates of a better one of their class (mask IoU above 0.5)."""
    from pycocotools import mask as mask_utils

    folder, model, proc = mask2former
    out = tmp_path / "s.zarr"
    run(images, folder, out, scheduler, task="instance", min_score=0.05)
    total = 0
    for name, g in stored(out).items():
        q, (h, w) = _queries(model, proc, images / name)
        r = proc.post_process_instance_segmentation(q, threshold=0.05, target_sizes=[(h, w)],
                                                    return_binary_maps=True)[0]
        ref = [(m.numpy().astype(bool), s["label_id"], s["score"]) for m, s in zip(r["segmentation"],
                                                                                 r["segments_info"])] \
            if r["segments_info"] else []
        ig = g["instances"]
        labels, scores = ig["labels"][...], ig["scores"][...]
        rles = [{"size": [h, w], "counts": c} for c in (ig["rle"][...] if len(labels) else [])]
        masks = [mask_utils.decode(r_).astype(bool) for r_ in rles]
        used = set()
        for m, lab, sc in zip(masks, labels, scores):
            j = next(j for j, (rm, rl, rs) in enumerate(ref)
                     if j not in used and rl == lab and abs(rs - sc) < 1e-5 and np.array_equal(rm, m))
            used.add(j)
        for j, (rm, rl, rs) in enumerate(ref):
            if j in used:
                continue
            iou = [np.logical_and(rm, m).sum() / max(1, np.logical_or(rm, m).sum())
                   for m, lab, sc in zip(masks, labels, scores) if lab == rl and sc >= rs]
            assert iou and max(iou) > 0.5, f"{name}: the processor's instance {j} is missing"
        total += len(labels)
    assert total > 0


def test_mask2former_panoptic_fuses_the_stuff_classes(tmp_path, images, scheduler, mask2former) -> None:
    """``--task panoptic`` with ``--classes`` marking sky as stuff: the ids and segments are the processor's
    panoptic post-processing with that class fused."""
    folder, model, proc = mask2former
    (tmp_path / "classes.yaml").write_text("- person\n- {name: car, color: [0, 0, 142]}\n"
                                           "- {name: sky, isthing: false}\n")
    out = tmp_path / "s.zarr"
    run(images, folder, out, scheduler, task="panoptic", classes=str(tmp_path / "classes.yaml"))
    cats = ZarrStore.open(out).attrs()["categories"]
    assert [(c["name"], c["isthing"]) for c in cats] == [("person", True), ("car", True), ("sky", False)]
    for name, g in stored(out).items():
        q, (h, w) = _queries(model, proc, images / name)
        r = proc.post_process_panoptic_segmentation(q, threshold=0.5, label_ids_to_fuse={2}, target_sizes=[(h, w)])[0]
        np.testing.assert_array_equal(g["panoptic"][...], r["segmentation"].numpy().clip(0))
        want = {s["id"]: s["label_id"] for s in r["segments_info"]}
        assert {s["id"]: s["category_id"] for s in g.attrs["segments"]} == want


def test_smp_folder(tmp_path, images, scheduler) -> None:
    import segmentation_models_pytorch as smp

    torch.manual_seed(10)
    net = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=3, encoder_depth=3,
                   decoder_channels=(16, 8, 4)).eval()
    net.save_pretrained(tmp_path / "unet")
    out = tmp_path / "s.zarr"
    run(images, tmp_path / "unet", out, scheduler, classes=str(_labelmap(tmp_path)))
    assert_semantic(out, images, net)
    assert names(out) == ["background", "crop", "weed"]


def _labelmap(root: Path) -> Path:
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncrop:0,200,0::\n"
                                       "weed:200,0,0::\n")
    return root / "labelmap.txt"


# ------------------------------------------------------------------------------------- the user's builder


def test_builder_function_on_the_workers(tmp_path, images, scheduler, plugin_dir, monkeypatch) -> None:
    """``--arch mynets:build``: the workers import the module from PYTHONPATH; its dict output is adapted."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    import mynets

    torch.manual_seed(11)
    net = mynets.build(6).eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "mine.pt")
    out = tmp_path / "s.zarr"
    rep = run(images, tmp_path / "mine.pt", out, scheduler, arch="mynets:build")
    assert_semantic(out, images, lambda x: net(x)["out"])
    assert len(names(out)) == 6 and ZarrStore.open(out).attrs()["model"]["arch"] == "mynets:build"
    assert rep["images"]["done"] == 3
    sys.modules.pop("mynets", None)
