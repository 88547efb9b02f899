"""Bad prompts and bad SAM folders for ``segpipe prelabel --prompts``: one line naming the file and the field.

A box partly outside its image is clipped to it (tests/prelabel/test_prompted.py checks the mask); a box
with nothing inside its image fails that image (exit 1), naming the box in the prompts file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.storage.manifest import stable_id
from tests.badinput._corpus import check_bad_input

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``imgs/a.png`` (64×80), a tiny SAM in ``sam/``, and one bad prompts file or model folder per case."""
    import shutil
    import warnings

    from tests.prelabel.test_prompted import build_sam, export_sam_onnx

    root = tmp_path_factory.mktemp("prompts")
    (root / "imgs").mkdir()
    photo = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(photo).save(root / "imgs" / "a.png")
    build_sam(root / "sam")
    iid = stable_id("a.png")

    def results(name: str, rows: object) -> None:
        (root / name).write_text(json.dumps(rows))

    results("ok.json", [{"image_id": iid, "bbox": [4, 4, 20, 20], "category_id": 1, "score": 0.9}])
    results("short_bbox.json", [{"image_id": iid, "bbox": [4, 4, 20], "category_id": 1, "score": 0.9}])
    results("flat_bbox.json", [{"image_id": iid, "bbox": [4, 4, 0, 20], "category_id": 1, "score": 0.9}])
    results("bad_score.json", [{"image_id": iid, "bbox": [4, 4, 20, 20], "category_id": 1, "score": 7}])
    results("no_category.json", [{"image_id": iid, "bbox": [4, 4, 20, 20], "score": 0.5}])
    results("outside.json", [{"image_id": iid, "bbox": [4, 4, 20, 20], "category_id": 1, "score": 0.9},
                             {"image_id": iid, "bbox": [90, 10, 20, 20], "category_id": 1, "score": 0.9}])
    results("elsewhere.json", [{"image_id": 42, "bbox": [4, 4, 20, 20], "category_id": 1, "score": 0.9}])
    for name, cfg in (("segformer", {"model_type": "segformer"}), ("sam2_video", {"model_type": "sam2_video"}),
                      ("custom", {"model_type": "sam", "auto_map": {"AutoModel": "x.Y"}})):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
    (root / "empty_dir").mkdir()
    with warnings.catch_warnings():  # the exporter's tracer warnings
        warnings.simplefilter("ignore")
        export_sam_onnx(root / "sam", root / "pair")
    enc, dec = (root / "pair" / "encoder.onnx").read_bytes(), (root / "pair" / "decoder.onnx").read_bytes()
    graphs = {"only_decoder": {"decoder.onnx": dec},  # the encoder is missing
              "two_encoders": {"a_encoder.onnx": enc, "b_encoder.onnx": enc, "decoder.onnx": dec},
              "wrong_decoder": {"encoder.onnx": enc, "decoder.onnx": enc},  # the decoder takes an image
              "wrong_encoder": {"encoder.onnx": dec, "decoder.onnx": dec},  # the encoder takes prompts
              "damaged_onnx": {"encoder.onnx": b"\x08\x07", "decoder.onnx": dec},
              "named_missing": {"enc.onnx": enc, "sam_onnx.json": b'{"encoder": "enc.onnx", "decoder": "dec.onnx"}'}}
    for name, files in graphs.items():
        (root / name).mkdir()
        for f, data in files.items():
            (root / name / f).write_bytes(data)
    shutil.copy(root / "pair" / "decoder.onnx", root / "single.onnx")
    return root


CASES = [
    # (case, prompts, model, extra options, exit code, names in the error line)
    ("prompts file missing", "missing.json", "sam", (), 2, ("missing.json", "--prompts")),
    ("bbox of three numbers", "short_bbox.json", "sam", (), 2, ("short_bbox.json", "[0].bbox")),
    ("bbox without area", "flat_bbox.json", "sam", (), 2, ("flat_bbox.json", "[0].bbox", "no area")),
    ("score above 1", "bad_score.json", "sam", (), 2, ("bad_score.json", "[0].score")),
    ("no category_id", "no_category.json", "sam", (), 2, ("no_category.json", "[0].category_id")),
    ("no box names an image of the source", "elsewhere.json", "sam", (), 2, ("elsewhere.json", "image_id 42")),
    ("model is no SAM", "ok.json", "segformer", (), 2, ("config.json", "model_type", "not a SAM model")),
    ("SAM 2 video folder", "ok.json", "sam2_video", (), 2, ("config.json", "sam2_video", "model_type")),
    ("SAM folder with custom code", "ok.json", "custom", (), 2, ("config.json", "auto_map")),
    ("folder without config.json", "ok.json", "empty_dir", (), 2, ("empty_dir", "no config.json")),
    ("ONNX pair without its encoder", "ok.json", "only_decoder", (), 2, ("only_decoder", "no encoder")),
    ("ONNX folder with two encoders", "ok.json", "two_encoders", (), 2, ("two_encoders", "2 encoders")),
    ("ONNX decoder with an encoder's inputs", "ok.json", "wrong_decoder", (), 2,
     ("decoder.onnx", "graph inputs", "image_embeddings, point_coords, point_labels")),
    ("ONNX encoder with a decoder's inputs", "ok.json", "wrong_encoder", (), 2,
     ("encoder.onnx", "graph inputs", "(1, 3, S, S)")),
    ("ONNX graph onnxruntime cannot load", "ok.json", "damaged_onnx", (), 2, ("encoder.onnx", "onnxruntime")),
    ("sam_onnx.json naming a missing graph", "ok.json", "named_missing", (), 2, ("sam_onnx.json", "decoder")),
    ("a single ONNX file as the SAM", "ok.json", "single.onnx", (), 2, ("single.onnx", "single ONNX file")),
    ("model folder missing", "ok.json", "nowhere", (), 2, ("nowhere", "no such model folder")),
    ("--classes with prompts", "ok.json", "sam", ("--classes", "VOC"), 2, ("--classes", "--prompts")),
    ("--tta with prompts", "ok.json", "sam", ("--tta", "flip"), 2, ("--tta", "--prompts")),
    ("--task semantic with prompts", "ok.json", "sam", ("--task", "semantic"), 2, ("--task",)),
    ("box outside its image", "outside.json", "sam", (), 1, ("outside.json", "[1].bbox", "80x64")),
]


@pytest.mark.parametrize(("case", "prompts", "model", "extra", "code", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_prompts_are_one_line(root: Path, tmp_path: Path, case: str, prompts: str, model: str,
                                  extra: tuple[str, ...], code: int, names: tuple[str, ...]) -> None:
    out = root / f"out-{case.replace(' ', '_')}.zarr"
    check_bad_input("prelabel", "imgs", "--model", model, "--out", out.name, "-w", "0", "--prompts", prompts,
                    *extra, root=root, code=code, names=names, outputs=[out], cwd=root)


def test_a_semantic_store_is_no_prompts(root: Path, tmp_path: Path) -> None:
    """A store of semantic labels has no boxes: refused, naming the store and its task."""
    from segpipe.storage.zarrstore import ZarrStore

    ZarrStore.create(root / "semantic.zarr", {"task": "semantic", "categories": []})
    check_bad_input("prelabel", "imgs", "--model", "sam", "--out", "o.zarr", "-w", "0", "--prompts",
                    "semantic.zarr", root=root, code=2, names=("semantic.zarr", "task"),
                    outputs=[root / "o.zarr"], cwd=root)


@pytest.mark.parametrize(("model", "named"), [("sam", "config.json"), ("pair", "pair")])
def test_a_sam_folder_without_prompts_says_to_pass_them(root: Path, model: str, named: str) -> None:
    """A transformers SAM folder, or an ONNX encoder/decoder pair, given as a segmentation model."""
    check_bad_input("prelabel", "imgs", "--model", model, "--out", "o2.zarr", "-w", "0", root=root, code=2,
                    names=(named, "--prompts"), outputs=[root / "o2.zarr"], cwd=root)
