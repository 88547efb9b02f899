"""Prompted pre-labeling (``segpipe prelabel SOURCE --prompts BOXES --model SAM_DIR``) with random-weight SAMs.

Three model folders, each as a user's would be:

* ``sam/``: a SAM built from a small ``SamConfig`` (a 2-layer, 32-wide vision encoder on 128-pixel
  inputs), saved with ``save_pretrained``;
* ``sam2/``: a SAM 2 built from a small ``Sam2Config`` (a 6-block Hiera backbone, 16 to 128 wide),
  saved with ``save_pretrained``;
* ``sam_onnx/``: ``sam/``'s vision encoder and a prompt decoder with segment-anything's ONNX export
  signature (:class:`SamOnnxDecoder`), exported with ``torch.onnx.export``.

The stored masks are checked against the transformers models' own outputs for the same boxes
(``SamModel`` / ``Sam2Model(pixel_values, input_boxes)`` and the processor's post-processing; for the
ONNX pair, ``sam/``'s model with segment-anything's pre-processing, which transformers' PIL SAM
processor does), the encoder's runs are counted (one per image, however many boxes), on real Dask
worker processes too, and the store exports to COCO and feeds a second run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.manifest import stable_id
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests.conftest import run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

#: (height, width) of the source images: landscape, portrait, and one larger than the encoder's input.
SIZES = {"a.png": (90, 150), "b.png": (140, 100), "c.png": (200, 260)}
#: Logits closer than this to the threshold (0) may fall either side with another thread count.
EDGE = 1e-3


def build_sam(folder: Path) -> None:
    """A random-weight SAM (tiny config) and its processor, saved as ``save_pretrained`` saves them."""
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=128,
                             patch_size=16, output_channels=32, global_attn_indexes=[1], window_size=4,
                             num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                   iou_head_hidden_dim=32)
    cfg = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                    mask_decoder_config=decoder.to_dict())
    model = SamModel(cfg).eval()
    # random weights make near-constant masks: spread the decoder's output so masks follow the boxes
    with torch.no_grad():
        for p in model.mask_decoder.parameters():
            p.mul_(4.0)
    model.save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": 128},
                                                   pad_size={"height": 128, "width": 128})).save_pretrained(folder)


def build_sam2(folder: Path) -> None:
    """A random-weight SAM 2 (tiny Hiera backbone on 128-pixel inputs) and its processor, ``save_pretrained``."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    torch.manual_seed(0)
    # strides 4, 8, 16, 32 on 128 pixels: feature maps 32, 16, 8 (the decoder's) and 4; the global-attention
    # block is the second of stage 3 (the first of a stage pools its queries, which needs windows)
    backbone = Sam2HieraDetConfig(hidden_size=16, num_attention_heads=1, image_size=[128, 128],
                                  blocks_per_stage=[1, 2, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                  num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[8, 4, 4, 2],
                                  global_attention_blocks=[4], window_positional_embedding_background_size=[4, 4])
    vision = Sam2VisionConfig(backbone_config=backbone.to_dict(), backbone_channel_list=[128, 64, 32, 16],
                              backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
    prompt = Sam2PromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4)
    decoder = Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    model = Sam2Model(Sam2Config(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                                 mask_decoder_config=decoder.to_dict())).eval()
    with torch.no_grad():  # as build_sam: masks that follow the boxes
        for p in model.mask_decoder.parameters():
            p.mul_(4.0)
    model.save_pretrained(folder)
    Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": 128, "width": 128},
                                                     mask_size={"height": 32, "width": 32})).save_pretrained(folder)


class SamImageEncoder(torch.nn.Module):
    """SAM's vision encoder as segment-anything exports it: ``image (1, 3, S, S)`` → ``image_embeddings``."""

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: Any) -> Any:
        return self.sam.get_image_embeddings(image)


class SamOnnxDecoder(torch.nn.Module):
    """A transformers SAM's prompt encoder + mask decoder with segment-anything's ONNX decoder signature.

    The same steps as segment-anything's ``SamOnnxModel`` (``return_single_mask``, no stability score):
    points shifted to pixel centres and embedded with their labels (-1 padding, 0/1 points, 2/3 box
    corners), the mask input or the no-mask embedding, the decoder's single-mask output, upsampled to
    ``S × S``, cropped to the resized image and upsampled to ``orig_im_size``.
    """

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.sam = sam
        self.side = int(sam.config.prompt_encoder_config.image_size)

    def forward(self, image_embeddings: Any, point_coords: Any, point_labels: Any, mask_input: Any,
                has_mask_input: Any, orig_im_size: Any) -> tuple[Any, Any, Any]:
        pe, side = self.sam.prompt_encoder, self.side
        sparse = pe.shared_embedding((point_coords + 0.5)[:, None], (side, side))
        labels = point_labels[:, None, :, None]
        sparse = sparse * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(len(pe.point_embed)):
            sparse = sparse + pe.point_embed[i].weight * (labels == i)
        dense = (has_mask_input * pe.mask_embed(mask_input)
                 + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1))
        low, iou = self.sam.mask_decoder(image_embeddings=image_embeddings,
                                         image_positional_embeddings=self.sam.get_image_wide_positional_embeddings(),
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         multimask_output=False)
        low, iou = low[:, 0], iou[:, 0]
        up = torch.nn.functional.interpolate(low, (side, side), mode="bilinear", align_corners=False)
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (side / size.max()) + 0.5).to(torch.int64)
        up = up[..., : resized[0], : resized[1]]
        hw = orig_im_size.to(torch.int64)
        up = torch.nn.functional.interpolate(up, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)
        return up, iou, low


def export_sam_onnx(sam_folder: Path, folder: Path, encoder: str = "encoder.onnx",
                    decoder: str = "decoder.onnx") -> None:
    """Exports ``sam_folder``'s model as an ONNX encoder/decoder pair (segment-anything's layout) into ``folder``."""
    from transformers import SamModel

    sam = SamModel.from_pretrained(sam_folder).eval()
    side = int(sam.config.vision_config.image_size)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        emb = sam.get_image_embeddings(torch.zeros(1, 3, side, side))
        torch.onnx.export(SamImageEncoder(sam), (torch.randn(1, 3, side, side),), str(folder / encoder),
                          input_names=["image"], output_names=["image_embeddings"], opset_version=17, dynamo=False)
        dummy = {"image_embeddings": torch.randn(*emb.shape),
                 "point_coords": torch.randint(0, side, (1, 5, 2)).float(),
                 "point_labels": torch.randint(0, 4, (1, 5)).float(),
                 "mask_input": torch.randn(1, 1, 4 * emb.shape[2], 4 * emb.shape[3]),
                 "has_mask_input": torch.tensor([1.0]), "orig_im_size": torch.tensor([150.0, 225.0])}
        torch.onnx.export(SamOnnxDecoder(sam), tuple(dummy.values()), str(folder / decoder),
                          input_names=list(dummy), output_names=["masks", "iou_predictions", "low_res_masks"],
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                          opset_version=17, dynamo=False)


def boxes_for(name: str, n: int, rng: np.random.Generator) -> list[list[float]]:
    """``n`` random ``[x, y, w, h]`` boxes inside image ``name``."""
    h, w = SIZES[name]
    out = []
    for _ in range(n):
        x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
        out.append([round(x0, 2), round(y0, 2), round(rng.uniform(8, w - x0), 2), round(rng.uniform(8, h - y0), 2)])
    return out


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sam/`` (the model), ``imgs/`` (three photos) and ``results.json`` (COCO results naming them by id).

    ``a.png`` has 20 boxes (more than one decoder batch), ``b.png`` 3, one of them reaching past the
    right border (clipped), ``c.png`` none; two boxes name an image that is not in ``imgs/``.
    """
    return make_case(tmp_path_factory.mktemp("prompted"))


def make_case(root: Path) -> Path:
    """Writes the :func:`case` files into ``root`` (the three model folders of :data:`MODELS`)."""
    import warnings

    build_sam(root / "sam")
    build_sam2(root / "sam2")
    with warnings.catch_warnings():  # the exporter's tracer warnings are about its own Python branches
        warnings.simplefilter("ignore")
        export_sam_onnx(root / "sam", root / "sam_onnx")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(3)
    for name, (h, w) in SIZES.items():
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "imgs" / name)
    results: list[dict[str, Any]] = []
    for name, n in (("a.png", 20), ("b.png", 3)):
        for k, b in enumerate(boxes_for(name, n, rng)):
            results.append({"image_id": stable_id(name), "bbox": b, "category_id": 3 if k % 2 else 7,
                             "score": round(0.5 + k / 100, 2)})
    results[-1]["bbox"] = [60.0, 20.0, 80.0, 50.0]  # b.png is 100 wide: clipped to x1 = 100
    results += [{"image_id": 12345, "bbox": [1, 1, 5, 5], "category_id": 3, "score": 0.9}] * 2
    (root / "results.json").write_text(json.dumps(results))
    return root


#: The model folders of :func:`case`, each run the same way.
MODELS = ("sam", "sam2", "sam_onnx")


def reference(case: Path, kind: str, image: np.ndarray,
              boxes_xyxy: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The transformers model's own masks for ``boxes_xyxy``: ``(K, H, W)`` bool, and their logits.

    ``kind`` is a folder of :data:`MODELS`; the ONNX pair's reference is the SAM it was exported from,
    with transformers' PIL SAM processor (segment-anything's PIL bilinear resize).
    """
    from transformers import Sam2Model, Sam2Processor, SamImageProcessorPil, SamModel, SamProcessor

    if kind == "sam2":
        model2 = Sam2Model.from_pretrained(case / "sam2").eval()
        proc2 = Sam2Processor.from_pretrained(case / "sam2")
        inputs = proc2(images=image, input_boxes=[boxes_xyxy], return_tensors="pt")
        with torch.inference_mode():
            out = model2(**inputs, multimask_output=False)
        logits = proc2.post_process_masks(out.pred_masks, inputs["original_sizes"], binarize=False)[0][:, 0].numpy()
        return logits > 0, logits
    model = SamModel.from_pretrained(case / "sam").eval()
    if kind == "sam_onnx":
        proc = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 128},
                                                                 pad_size={"height": 128, "width": 128}))
    else:
        proc = SamProcessor.from_pretrained(case / "sam")
    inputs = proc(images=image, input_boxes=[boxes_xyxy], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, multimask_output=False)
    logits = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                     binarize=False)[0][:, 0].numpy()
    masks = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    return masks[:, 0].numpy(), logits


def stored_instances(out: Path, name: str) -> dict[str, Any]:
    """The instance arrays and attributes ``prelabel`` stored for image ``name``."""
    store = ZarrStore.open(out)
    g = store.group(stable_id(name))
    ig = g["instances"]
    rles = [str(c) for c in ig["rle"][...]] if "rle" in ig else []
    h, w = SIZES[name]
    return {"masks": np.array([rle_ops.decode({"size": [h, w], "counts": c}) for c in rles], dtype=bool)
                     .reshape(-1, h, w),
            "scores": ig["scores"][...], "labels": ig["labels"][...], "boxes": ig["boxes"][...],
            "attrs": dict(g.attrs)}


def expected_boxes(case: Path, name: str) -> list[dict[str, Any]]:
    """The results of ``name``, boxes as xyxy clipped to the image."""
    h, w = SIZES[name]
    rows = [r for r in json.loads((case / "results.json").read_text()) if r["image_id"] == stable_id(name)]
    for r in rows:
        x, y, bw, bh = r["bbox"]
        r["xyxy"] = [min(max(x, 0), w), min(max(y, 0), h), min(max(x + bw, 0), w), min(max(y + bh, 0), h)]
    return rows


def assert_matches_model(case: Path, out: Path, kind: str = "sam") -> None:
    """Every stored mask equals the transformers model's for its box (up to logits within EDGE of 0)."""
    torch.set_num_threads(1)
    for name in ("a.png", "b.png"):
        rows = expected_boxes(case, name)
        got = stored_instances(out, name)
        image = np.asarray(Image.open(case / "imgs" / name).convert("RGB"))
        want, logits = reference(case, kind, image, [r["xyxy"] for r in rows])
        assert got["masks"].shape == want.shape
        differ = got["masks"] != want
        assert not (differ & (np.abs(logits) > EDGE)).any(), f"{name}: {int(differ.sum())} pixels differ"
        assert 0 < want.sum() < want.size  # the check compares masks, not empty or full planes
        assert got["labels"].tolist() == [r["category_id"] for r in rows]
        np.testing.assert_array_equal(got["scores"], np.array([r["score"] for r in rows], np.float32))
        # one encoder pass for all the image's boxes (20 boxes: two decoder batches)
        assert got["attrs"]["prompts"] == {"boxes": len(rows), "encoder_passes": 1}
    empty = stored_instances(out, "c.png")
    assert len(empty["scores"]) == 0 and empty["attrs"]["prompts"] == {"boxes": 0, "encoder_passes": 0}


@pytest.mark.parametrize("kind", MODELS)
def test_boxes_become_the_models_masks_in_process(case: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "p.zarr"
    rep = prelabel(PrelabelRequest(source=str(case / "imgs"), model=str(case / kind), out=out,
                                   prompts=case / "results.json", min_score=0.0), ClusterSpec(workers=0))
    assert rep["images"] == {"total": 3, "done": 3, "skipped_already_done": 0, "failed": 0, "not_run": 0}
    assert rep["prompts"] == {"file": str(case / "results.json"), "boxes": 25, "matched": 23,
                              "unmatched_boxes": 2, "unmatched_images": 1, "ignored": 0}
    assert rep["model"]["task"] == "instance"
    assert_matches_model(case, out, kind)
    cats = ZarrStore.open(out).attrs()["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(3, "category_3"), (7, "category_7")]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An external scheduler with two single-threaded worker processes."""
    with external_cluster(tmp_path_factory.mktemp("cluster"), [["--nworkers", "1"]] * 2) as address:
        yield address


@pytest.mark.parametrize("kind", MODELS)
def test_on_real_dask_workers_each_image_is_embedded_once(case: Path, tmp_path: Path, scheduler: str,
                                                          kind: str) -> None:
    out = tmp_path / "p.zarr"
    rep = prelabel(PrelabelRequest(source=str(case / "imgs"), model=str(case / kind), out=out, threads=1,
                                   prompts=case / "results.json", min_score=0.0), ClusterSpec(scheduler=scheduler))
    assert rep["images"]["done"] == 3 and rep["images"]["failed"] == 0, rep
    assert_matches_model(case, out, kind)
    workers = {json.loads(p.read_text())["worker"] for p in (out / ".segpipe" / "ledger").glob("*.json")}
    assert workers and all(":" in w for w in workers)


def test_cli_warns_about_unmatched_boxes_exports_coco_and_feeds_a_second_run(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.zarr"
    r = run_cli("prelabel", str(case / "imgs"), "--model", str(case / "sam"), "--out", str(out), "-w", "0",
                "--prompts", str(case / "results.json"), "--min-score", "0.6")
    assert r.returncode == 0, r.stderr
    assert f"warning: {case / 'results.json'}: 2 of 25 boxes name 1 images that are not in" in r.stderr
    kept = [x for x in expected_boxes(case, "a.png") + expected_boxes(case, "b.png") if x["score"] >= 0.6]
    r = run_cli("fsck", str(out))  # every receipt matches the instance arrays it vouches for
    assert r.returncode == 0 and "3/3 receipts ok" in r.stdout, r.stdout + r.stderr
    r = run_cli("export", str(out), str(tmp_path / "coco"), "--to", "coco", "-w", "0")
    assert r.returncode == 0, r.stderr
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    anns = coco["annotations"]
    assert len(anns) == len(kept)
    assert sorted(a["category_id"] for a in anns) == sorted(x["category_id"] for x in kept)
    assert {c["id"]: c["name"] for c in coco["categories"]} == {3: "category_3", 7: "category_7"}
    r = run_cli("export", str(out), str(tmp_path / "ls"), "--to", "labelstudio", "-w", "0")
    assert r.returncode == 0, r.stderr
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    results = [x for t in tasks for p in t["predictions"] for x in p["result"]]
    assert len(results) == len(kept) > 0
    # the exported COCO dataset (boxes by file name) and the store itself are prompts for another run
    for prompts in (tmp_path / "coco", out):
        out2 = tmp_path / f"again-{prompts.name}.zarr"
        rep = prelabel(PrelabelRequest(source=str(case / "imgs"), model=str(case / "sam"), out=out2,
                                       prompts=prompts, min_score=0.0), ClusterSpec(workers=0))
        assert rep["prompts"]["matched"] == len(kept) and rep["prompts"]["unmatched_boxes"] == 0, rep["prompts"]
        assert rep["images"]["done"] == 3
        got = stored_instances(out2, "a.png")
        assert len(got["scores"]) == sum(x["image_id"] == stable_id("a.png") for x in kept)


def test_a_pipeline_file_takes_prompts(case: Path, tmp_path: Path) -> None:
    """``prompts`` is a key of a pipeline file's prelabel stage (relative paths are the file's)."""
    (tmp_path / "run.yaml").write_text(
        "version: 1\nname: prompted\nworkers: 0\nstages:\n"
        f"  - prelabel: {{source: {case / 'imgs'}, model: {case / 'sam'}, out: p.zarr, "
        f"prompts: {case / 'results.json'}, min_score: 0.0}}\n")
    r = run_cli("run", "run.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_matches_model(case, tmp_path / "p.zarr")
