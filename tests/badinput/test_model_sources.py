"""Bad models and model options for ``segpipe prelabel``: one line saying what the file is and which form
segpipe wants, exit 2, nothing written, nothing run from the file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.badinput._corpus import check_bad_input


class _Tiny(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.c = nn.Conv2d(channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x)


class _FixedShape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x).reshape(1, 3, 64, 64)


def _hf(folder: Path, **cfg: object) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bad model (or a model for a bad option) per case, and ``imgs/`` with one photo."""
    from segpipe.models.registry import build_model

    root = tmp_path_factory.mktemp("models")
    (root / "imgs").mkdir()
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(root / "imgs" / "a.png")
    torch.manual_seed(0)
    unet = build_model("unet", 3)
    torch.save(unet.state_dict(), root / "plain.pth")
    torch.save(nn.Sequential(nn.Conv2d(3, 3, 1)), root / "whole_model.pt")  # torch.save(model): a pickle of objects
    torch.save(build_model("hourglass", 4).state_dict(), root / "hourglass.pth")
    (root / "keras.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(256))
    (root / "model.tflite").write_bytes(bytes(4) + b"TFL3" + bytes(256))
    (root / "empty.pt").write_bytes(b"")
    (root / "notes.pt").write_text("these are not weights\n" * 10)
    (root / "garbage.onnx").write_bytes(b"\x00\x01\x02 definitely not protobuf" * 8)
    with zipfile.ZipFile(root / "archive.pt", "w") as z:
        z.writestr("readme.txt", "hello")
    (root / "savedmodel").mkdir()
    (root / "savedmodel" / "saved_model.pb").write_bytes(b"\x08\x01")
    (root / "emptyfolder").mkdir()
    _hf(root / "bert", model_type="bert", architectures=["BertModel"])
    _hf(root / "remote", model_type="segformer", architectures=["SegformerForSemanticSegmentation"],
        auto_map={"AutoModelForSemanticSegmentation": "modeling_evil.Evil"}, id2label={"0": "a"})
    _hf(root / "mask2former", model_type="mask2former", architectures=["Mask2FormerForUniversalSegmentation"],
        id2label={"0": "a", "1": "b"})
    _hf(root / "oneformer", model_type="oneformer", architectures=["OneFormerForUniversalSegmentation"])
    _hf(root / "smpnoweights", _model_class="Unet", encoder_name="resnet18", classes=2)
    torch.onnx.export(_Tiny(channels=1), (torch.randn(1, 1, 32, 32),), str(root / "gray.onnx"), dynamo=False)
    torch.jit.save(torch.jit.trace(_FixedShape(), torch.randn(1, 3, 64, 64)), str(root / "fixed.ts"))
    (root / "two.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("- a\n- [b\n")
    return root


#: (case, model, extra options, what the one line must name, what it must say)
CASES = [
    ("plain state dict, no --arch", "plain.pth", (), "plain.pth", "pass --arch NAME"),
    ("torch.save(model)", "whole_model.pt", (), "whole_model.pt", "a pickle of Python objects"),
    ("Keras HDF5", "keras.h5", (), "keras.h5", "HDF5 file (a Keras / TensorFlow .h5 model)"),
    ("TFLite", "model.tflite", (), "model.tflite", "TensorFlow Lite model"),
    ("empty file", "empty.pt", (), "empty.pt", "an empty file"),
    ("text file", "notes.pt", (), "notes.pt", "segpipe reads a segpipe checkpoint"),
    ("zip of other things", "archive.pt", (), "archive.pt", "zip archive without torch records"),
    ("TensorFlow SavedModel", "savedmodel", (), "savedmodel", "TensorFlow SavedModel folder"),
    ("folder without a model", "emptyfolder", (), "emptyfolder", "a folder without a model segpipe knows"),
    ("not ONNX", "garbage.onnx", (), "garbage.onnx", "onnxruntime cannot load it"),
    ("ONNX of 1-channel images", "gray.onnx", (), "gray.onnx", "segpipe feeds (N, 3, H, W) images"),
    ("Hugging Face, not segmentation", "bert", (), "config.json", "not a segmentation model segpipe runs"),
    ("Hugging Face custom code", "remote", (), "config.json", "needs trust_remote_code"),
    ("universal model without --task", "mask2former", (), "mask2former", "pass --task semantic, instance"),
    ("universal model, landmarks", "mask2former", ("--task", "landmarks"), "mask2former", "not landmarks"),
    ("OneFormer", "oneformer", ("--task", "semantic"), "config.json", "segpipe does not run OneFormer"),
    ("a folder's config.json", "bert/config.json", (), "config.json", "pass the folder that holds it"),
    ("smp folder without weights", "smpnoweights", (), "smpnoweights", "has no weights"),
    ("TorchScript whose classes cannot be counted", "fixed.ts", (), "fixed.ts", "pass --num-classes"),
    ("--arch not importable", "plain.pth", ("--arch", "nosuchpkg_h5.nets:build"), "--arch",
     "cannot import 'nosuchpkg_h5.nets'"),
    ("--arch of another network", "plain.pth", ("--arch", "lraspp_mobilenet_v3_large"), "plain.pth",
     "cannot infer the number of classes"),
    ("--num-classes that does not fit", "plain.pth", ("--arch", "unet", "--num-classes", "5"), "plain.pth",
     "weights do not fit unet"),
    ("--classes count", "plain.pth", ("--arch", "unet", "--classes", "two.yaml"), "two.yaml",
     "lists 2 classes; the model has 3"),
    ("--classes malformed", "plain.pth", ("--arch", "unet", "--classes", "broken.yaml"), "broken.yaml",
     "not valid YAML/JSON"),
    ("--classes missing", "plain.pth", ("--arch", "unet", "--classes", "nope.yaml"), "--classes nope.yaml",
     "no such file, and not a named table"),
    ("--classes table of another size", "plain.pth", ("--arch", "unet", "--classes", "COCO"), "--classes COCO",
     "tables of 80 or 81 or 91 or 133 classes"),
    ("--classes for a landmarks model", "hourglass.pth", ("--arch", "hourglass", "--classes", "VOC"), "--classes",
     "landmarks model"),
]


@pytest.mark.parametrize(("case", "model", "extra", "name", "says"), CASES, ids=[c[0] for c in CASES])
def test_bad_model_is_one_line(models: Path, case: str, model: str, extra: tuple[str, ...], name: str,
                               says: str) -> None:
    out = models / "o.zarr"
    check_bad_input("prelabel", "imgs", "--model", model, "--out", out.name, "-w", "0", *extra,
                    root=models, code=2, names=(name, says), outputs=[out])
    assert not out.exists(), case


def test_a_pickled_model_never_runs(models: Path, tmp_path: Path) -> None:
    """A pickle whose reduce would run a command is refused before anything in it runs."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, (f"touch {marker}",))

    (models / "evil.pt").write_bytes(pickle.dumps({"w": Evil()}))
    try:
        check_bad_input("prelabel", "imgs", "--model", "evil.pt", "--out", "o.zarr", "-w", "0", root=models, code=2,
                        names=("evil.pt", "nothing from it was executed"), outputs=[models / "o.zarr"])
    finally:
        (models / "evil.pt").unlink()
    assert not marker.exists()
