"""Model sources without a cluster: detection by content, state-dict keys of every architecture, the
forms' edge cases against the model's eager output, ``--classes``, fingerprints, and the CLI from
pre-labels to COCO and Label Studio exports (which carry the class names)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segpipe.errors import CheckpointError, ConfigError, SegpipeError
from segpipe.models.checkpoint import CheckpointMeta, align_state, infer_num_classes, save_checkpoint
from segpipe.models.predict import Predictor
from segpipe.models.ref import ModelRef
from segpipe.models.registry import build_model, get_model_spec, model_names
from segpipe.models.sources import detect_source
from segpipe.models.sources.classes import COCO_STUFF, COCO_THINGS, resolve_classes
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


def _img(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _x(img: np.ndarray, mean: Any = (0.485, 0.456, 0.406), std: Any = (0.229, 0.224, 0.225)) -> torch.Tensor:
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _assert_probs(pred: Any, logits: torch.Tensor) -> None:
    """The predictor's probabilities are the softmax of ``logits (C, H, W)`` (float16 precision)."""
    p = torch.softmax(logits.float(), 0).numpy()
    assert pred.probs.shape == p.shape
    assert np.abs(pred.probs.astype(np.float32) - p).max() < 2e-3
    clear = (np.sort(p, 0)[-1] - np.sort(p, 0)[-2]) > 1e-3
    np.testing.assert_array_equal(pred.labels[clear], p.argmax(0)[clear])


class _Tiny(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


# ------------------------------------------------------------------------------------ detection by content


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small model in each form, every one under a misleading name ``model.dat``."""
    root = tmp_path_factory.mktemp("forms")
    torch.manual_seed(0)
    net = _Tiny().eval()
    out: dict[str, Path] = {}

    def at(name: str) -> Path:
        (root / name).mkdir()
        out[name] = root / name / "model.dat"
        return out[name]

    save_checkpoint(at("torch"), build_model("unet", 3, base=8), CheckpointMeta.for_arch("unet", 3,
                                                                                        model_kwargs={"base": 8}))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, at("safetensors"))
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 32, 32)), str(at("torchscript")))
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 32, 32),)), str(at("torch_export")))
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(at("onnx")), dynamo=False)
    return out


@pytest.mark.parametrize("form", ["torch", "safetensors", "torchscript", "torch_export", "onnx"])
def test_the_form_is_told_by_content_not_by_extension(forms: dict[str, Path], form: str) -> None:
    assert detect_source(forms[form]).name == form


@pytest.mark.parametrize(("content", "says"), [
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "HDF5 file (a Keras / TensorFlow .h5 model)"),
    (bytes(4) + b"TFL3" + bytes(100), "TensorFlow Lite model"),
    (b"GGUF" + bytes(100), "GGUF file"),
    (b"", "an empty file"),
    (b"hello, not a model at all\n" * 4, "not a model file segpipe knows"),
])
def test_foreign_files_are_one_line_saying_what_they_are(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "m.pt").write_bytes(content)
    with pytest.raises(CheckpointError) as ei:
        detect_source(tmp_path / "m.pt")
    text = str(ei.value)
    assert says in text and "segpipe reads" in text and "\n" not in text


def test_a_zip_without_torch_records_and_a_savedmodel_folder(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.zip", "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match="zip archive without torch records"):
        detect_source(tmp_path / "m.zip")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(CheckpointError, match="TensorFlow SavedModel folder"):
        detect_source(tmp_path / "sm")


# ------------------------------------------------------------------- state dicts of every registered architecture

def _classes_of(arch: str) -> int:
    return 4 if get_model_spec(arch).task != "landmarks" else 5


@pytest.mark.parametrize("arch", model_names())
@pytest.mark.parametrize("prefix", ["", "_orig_mod.module.", "model.net."])
def test_every_architecture_state_dict_matches_whatever_its_prefix(arch: str, prefix: str) -> None:
    """Keys with wrapper prefixes (torch.compile around DDP; Lightning around segpipe's own ``net.``), or
    without segpipe's ``net.`` (torchvision's own keys), map onto the architecture's, and the class count
    comes from the weights (on the meta device: shapes only)."""
    n = _classes_of(arch)
    with torch.device("meta"):
        own = build_model(arch, n).state_dict()
    state = {prefix + k.removeprefix("net."): v for k, v in own.items()}
    aligned = align_state(state, own)
    assert set(aligned) == set(own)
    assert all(tuple(aligned[k].shape) == tuple(v.shape) for k, v in own.items())
    assert infer_num_classes(arch, state) == n


@pytest.mark.parametrize("arch", ["lraspp_mobilenet_v3_large", "unet", "segnet", "hourglass", "yolact",
                                  "maskrcnn_mobilenet_v3"])
def test_plain_state_dicts_load_and_predict_as_the_model(tmp_path: Path, arch: str) -> None:
    """A saved state dict (DDP prefix) read with --arch gives the model's own outputs."""
    torch.manual_seed(0)
    n = _classes_of(arch)
    net = build_model(arch, n).eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "w.pth")
    ref = ModelRef(str(tmp_path / "w.pth"), arch)
    assert ref.meta().num_classes == n
    loaded = ref.source().load(tmp_path / "w.pth", ref._options()).model
    x = _x(_img(64, 64))
    with torch.inference_mode():
        a, b = net(x), loaded(x)
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(b, a)
    else:  # detection models: lists of dicts
        for da, db in zip(a, b):
            for k in da:
                torch.testing.assert_close(db[k], da[k])


def test_num_classes_when_the_weights_cannot_tell(tmp_path: Path) -> None:
    """A backbone without its head: inference fails with a pointer to --num-classes; with it the meta is read,
    and loading names the missing head in one line."""
    net = build_model("unet", 3)
    head = [k for k in net.state_dict() if ".head." in k]
    assert head
    torch.save({k: v for k, v in net.state_dict().items() if k not in head}, tmp_path / "nohead.pt")
    with pytest.raises(CheckpointError, match="pass --num-classes"):
        ModelRef(str(tmp_path / "nohead.pt"), "unet").meta()
    ref = ModelRef(str(tmp_path / "nohead.pt"), "unet", num_classes=3)
    assert ref.meta().num_classes == 3
    with pytest.raises(CheckpointError, match="weights do not fit unet: 2 missing .e.g. net.head.weight"):
        ref.predictor(device="cpu")


# ---------------------------------------------------------------------------------- forms: edge cases


def test_torchscript_whose_probe_fails_needs_num_classes(tmp_path: Path) -> None:
    """A traced model with a fixed reshape cannot run the 128-pixel probe: one line asks for --num-classes;
    with it (and its tile) it predicts as the model does."""

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(x).reshape(1, 3, 64, 64)

    torch.manual_seed(1)
    net = Fixed().eval()
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 64, 64)), str(tmp_path / "f.pt"))
    with pytest.raises(CheckpointError, match="test pass to count the classes failed.*pass --num-classes"):
        ModelRef(str(tmp_path / "f.pt")).meta()
    ref = ModelRef(str(tmp_path / "f.pt"), num_classes=3)
    assert ref.meta().num_classes == 3
    img = _img(64, 64)
    pred = ref.predictor(device="cpu", tile=64).predict(img)
    with torch.inference_mode():
        _assert_probs(pred, net(_x(img))[0])


def test_static_onnx_pads_small_images_and_fills_its_batch(tmp_path: Path) -> None:
    """An ONNX graph exported for 2 × 3 × 64 × 64 only: its tile is 64, a smaller image is padded (and
    cropped back), and single tiles are run in a batch of two."""
    torch.manual_seed(2)
    net = _Tiny(3).eval()
    torch.onnx.export(net, (torch.randn(2, 3, 64, 64),), str(tmp_path / "s.onnx"), dynamo=False)
    meta = ModelRef(str(tmp_path / "s.onnx")).meta()
    assert meta.tile_size == [64, 64] and meta.num_classes == 3
    pred = Predictor.from_checkpoint(tmp_path / "s.onnx", device="cpu", batch_size=1)
    img = _img(40, 64)
    out = pred.predict(img)
    x = nn.functional.pad(_x(img), (0, 0, 0, 24), mode="replicate")
    with torch.inference_mode():
        _assert_probs(out, net(x)[0, :, :40])


def test_static_torch_export_takes_its_input_size(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = _Tiny(2).eval()
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 64, 96),)), str(tmp_path / "s.pt2"))
    ref = ModelRef(str(tmp_path / "s.pt2"))
    assert ref.meta().tile_size == [64, 96]
    img = _img(64, 96)
    with torch.inference_mode():
        _assert_probs(ref.predictor(device="cpu").predict(img), net(_x(img))[0])


def test_binary_smp_model_is_background_and_foreground(tmp_path: Path) -> None:
    """One output channel with a sigmoid head: two classes, p(foreground) = sigmoid(logit)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(4)
    net = smp.FPN(encoder_name="resnet18", encoder_weights=None, classes=1, activation="sigmoid").eval()
    net.save_pretrained(tmp_path / "fpn")
    meta = ModelRef(str(tmp_path / "fpn")).meta()
    assert meta.num_classes == 2 and meta.arch == "smp/FPN"
    img = _img(64, 64)
    out = ModelRef(str(tmp_path / "fpn")).predictor(device="cpu").predict(img)
    with torch.inference_mode():
        fg = net(_x(img))[0, 0]  # the model's own sigmoid
    assert np.abs(out.probs[1].astype(np.float32) - fg.numpy()).max() < 2e-3


def test_hugging_face_refusals(tmp_path: Path) -> None:
    import transformers as T

    bert = tmp_path / "bert"
    T.BertModel(T.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
                             vocab_size=30)).save_pretrained(bert)
    with pytest.raises(CheckpointError, match="Hugging Face bert model .*not a segmentation model"):
        ModelRef(str(bert)).meta()
    cfg = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling_x.X"}}))
    with pytest.raises(CheckpointError, match="needs trust_remote_code"):
        ModelRef(str(bert)).meta()


def test_universal_model_needs_a_task(tmp_path: Path) -> None:
    (tmp_path / "m2f").mkdir()
    (tmp_path / "m2f" / "config.json").write_text(json.dumps({
        "model_type": "mask2former", "architectures": ["Mask2FormerForUniversalSegmentation"],
        "id2label": {"0": "a", "1": "b"}}))
    with pytest.raises(CheckpointError, match="universal segmentation model.*--task semantic, instance or panoptic"):
        ModelRef(str(tmp_path / "m2f")).meta()
    assert ModelRef(str(tmp_path / "m2f"), task="instance").meta().task == "instance"


def test_driver_reads_meta_without_torch_or_transformers(tmp_path: Path, forms: dict[str, Path]) -> None:
    """Detection and the meta of a segpipe checkpoint, an ONNX model and a Hugging Face folder import neither
    torch nor transformers on the driver."""
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "segformer",
                                                "architectures": ["SegformerForSemanticSegmentation"],
                                                "id2label": {"0": "a", "1": "b"}}))
    code = textwrap.dedent("""
        import json, sys
        from segpipe.models.ref import ModelRef
        out = [ModelRef(p).meta().num_classes for p in sys.argv[1:]]
        print(json.dumps([out, "torch" in sys.modules, "transformers" in sys.modules]))
    """)
    r = subprocess.run([sys.executable, "-c", code, str(forms["torch"]), str(forms["onnx"]), str(hf)],
                       capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [[3, 4, 2], False, False]


# ---------------------------------------------------------------------------------- the user's own builder


def test_builder_spec_object_and_entry_point_plugin(tmp_path: Path) -> None:
    """``--arch pkg.mod:SPEC`` (a ModelSpec object) and an installed entry point in ``segpipe.models`` run
    through the CLI on a 2-worker cluster that imports the package from PYTHONPATH."""
    pkg = tmp_path / "site"
    (pkg / "mypkg").mkdir(parents=True)
    (pkg / "mypkg" / "__init__.py").write_text("")
    (pkg / "mypkg" / "nets.py").write_text(textwrap.dedent("""
        from torch import nn
        from segpipe.models.registry import ModelSpec


        class Wrapped(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

            def forward(self, x):
                return self.conv(x)


        SPEC = ModelSpec("tinyconv", "semantic", lambda n, pretrained_backbone=False, **kw: Wrapped(n),
                         (64, 64), "a 3x3 convolution", stride=1)
    """))
    dist = pkg / "mypkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[segpipe.models]\ntinyconv = mypkg.nets:SPEC\n")
    sys.path.insert(0, str(pkg))
    try:
        from mypkg.nets import Wrapped

        torch.manual_seed(5)
        net = Wrapped(3).eval()
        torch.save(net.state_dict(), tmp_path / "w.pt")
        (tmp_path / "imgs").mkdir()
        img = _img(64, 64)
        Image.fromarray(img).save(tmp_path / "imgs" / "a.png")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg), str(REPO)]), CI="1")
        for arch in ("mypkg.nets:SPEC", "tinyconv"):
            out = tmp_path / f"{arch.replace(':', '_')}.zarr"
            r = subprocess.run([sys.executable, "-m", "segpipe", "prelabel", str(tmp_path / "imgs"), "-m",
                                str(tmp_path / "w.pt"), "--arch", arch, "-o", str(out), "-w", "2"],
                               capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
            assert r.returncode == 0, r.stderr
            from segpipe.storage.zarrstore import ZarrStore

            store = ZarrStore.open(out)
            entry = json.loads((out / ".segpipe" / "manifest.jsonl").read_text().splitlines()[0])
            labels = store.group(int(entry["id"]))["labels"][...]
            with torch.inference_mode():
                want = net(_x(img))[0].argmax(0).numpy()
            assert (labels == want).mean() > 0.99
            assert store.attrs()["model"]["arch"] == arch
    finally:
        sys.path.remove(str(pkg))
        for m in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
            del sys.modules[m]


def test_builder_that_cannot_be_imported_is_one_line() -> None:
    with pytest.raises(SegpipeError, match="cannot import 'no_such_pkg_h5.nets'.*PYTHONPATH"):
        get_model_spec("no_such_pkg_h5.nets:build")
    with pytest.raises(SegpipeError, match="has no 'nope'"):
        get_model_spec("json:nope")
    with pytest.raises(SegpipeError, match="not a builder function"):
        get_model_spec("json.decoder:NaN")


# ------------------------------------------------------------------------------------------------ --classes


def test_named_tables_by_class_count() -> None:
    voc = resolve_classes("VOC", 21)
    assert voc[0]["name"] == "background" and voc[15] == {"index": 15, "id": 15, "name": "person",
                                                         "color": [192, 128, 128], "isthing": True}
    assert [c["id"] for c in resolve_classes("voc", 20)][:2] == [1, 2]
    things = resolve_classes("COCO", 80)
    assert (things[0]["name"], things[0]["id"], things[79]["name"], things[79]["id"]) == ("person", 1,
                                                                                          "toothbrush", 90)
    pan = resolve_classes("coco", 133)
    assert len(pan) == 133 and pan[80]["name"] == "banner" and pan[80]["id"] == 92 and not pan[80]["isthing"]
    assert len({c["id"] for c in pan}) == 133
    with pytest.raises(ConfigError, match="tables of 21 or 20 classes; the model has 5"):
        resolve_classes("VOC", 5)


def test_coco_tables_agree_with_torchvision_and_cityscapes_with_its_format() -> None:
    from torchvision.models._meta import _COCO_CATEGORIES

    from segpipe.formats.cityscapes.labels import LABELS

    assert [(i, n) for i, n in enumerate(_COCO_CATEGORIES) if n not in ("N/A", "__background__")] == \
        list(COCO_THINGS)
    c91 = resolve_classes("COCO", 91)
    assert [c["name"] for c in c91 if c["isthing"]] == [n for _, n in COCO_THINGS]
    assert all(c["id"] == c["index"] for c in c91)
    assert len(COCO_STUFF) == 53
    city = resolve_classes("Cityscapes", 19)
    train = sorted((lab for lab in LABELS if lab.train_id != 255), key=lambda lab: lab.train_id)
    assert [(c["name"], tuple(c["color"]), c["isthing"]) for c in city] == \
        [(lab.name, lab.color, lab.has_instances) for lab in train]


@pytest.mark.parametrize(("name", "text"), [
    ("names.yaml", "- sky\n- road\n- car\n"),
    ("names.yml", "names: {0: sky, 1: road, 2: car}\n"),
    ("names.json", '["sky", "road", "car"]'),
    ("labelmap.txt", "# label:color_rgb:parts:actions\nsky:70,130,180::\nroad\ncar:0,0,142::\n"),
])
def test_class_files(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    cats = resolve_classes(str(tmp_path / name), 3)
    assert [c["name"] for c in cats] == ["sky", "road", "car"] and [c["id"] for c in cats] == [0, 1, 2]
    if name.endswith(".txt"):
        assert cats[0]["color"] == [70, 130, 180] and cats[1]["color"] is None


@pytest.mark.parametrize(("text", "says"), [
    ("- a\n- b\n", "lists 2 classes; the model has 3"),
    ("- a\n- a\n- b\n", "'a' repeats the name of class 0"),
    ("{0: a, 2: b, 3: c}\n", "class indices must be 0..2 without gaps"),
    ("- a\n- {name: b, id: -1}\n- c\n", "[1].id: -1 is not a category id"),
    ("- a\n- {name: b, color: [1, 2]}\n- c\n", "[1].color"),
    ("[a, b\n", "not valid YAML/JSON"),
])
def test_bad_class_files_are_one_line(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as ei:
        resolve_classes(str(tmp_path / "c.yaml"), 3)
    assert says in str(ei.value) and "c.yaml" in str(ei.value) and "\n" not in str(ei.value)


def test_fingerprint_counts_the_options_and_the_classes_content(tmp_path: Path, forms: dict[str, Path]) -> None:
    from segpipe.storage.manifest import file_sha256

    p = str(forms["onnx"])
    legacy = hashlib.sha256(f"{file_sha256(p)}|None".encode()).hexdigest()
    assert ModelRef(p).fingerprint() == legacy  # stores made before --classes resume
    (tmp_path / "c.txt").write_text("a\nb\nc\nd\n")
    a = ModelRef(p, classes=str(tmp_path / "c.txt")).fingerprint()
    (tmp_path / "c.txt").write_text("a\nb\nc\ne\n")
    b = ModelRef(p, classes=str(tmp_path / "c.txt")).fingerprint()
    assert len({legacy, a, b, ModelRef(p, num_classes=4).fingerprint()}) == 4


# ---------------------------------------------------------------------------------- CLI and exports


def test_cli_classes_reach_the_coco_and_label_studio_exports(tmp_path: Path) -> None:
    """``segpipe prelabel -w 2 --classes labelmap.txt`` on an ONNX model; the COCO and Label Studio exports
    carry the names (and the label map's colours)."""
    torch.manual_seed(6)
    net = _Tiny(3).eval()
    torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), str(tmp_path / "m.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(_img(64, 80, seed=i)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "labelmap.txt").write_text("meadow:0,128,0::\nforest:0,64,0::\nlake:0,0,200::\n")
    r = run_cli("prelabel", "imgs", "-m", "m.onnx", "-o", "s.zarr", "-w", "2", "--classes", "labelmap.txt",
                cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    r = run_cli("export", "s.zarr", "coco", "--to", "coco", "--layout", "single", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["meadow", "forest", "lake"]
    r = run_cli("export", "s.zarr", "ls", "--to", "labelstudio", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    xml = (tmp_path / "ls" / "label_config.xml").read_text()
    for name, colour in (("meadow", "#008000"), ("forest", "#004000"), ("lake", "#0000c8")):
        assert f'value="{name}" background="{colour}"' in xml.replace("#0000C8", "#0000c8")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    used = {lab for t in tasks for p in t.get("predictions", []) for res in p["result"]
            for lab in res["value"].get("brushlabels", [])}
    assert used and used <= {"meadow", "forest", "lake"}


def test_maskformer_folder_runs_the_processors_post_processing(tmp_path: Path) -> None:
    """MaskFormer (v1) is a universal model too: its semantic labels are its processor's, and its instance
    and panoptic outputs are the processor's segments."""
    import transformers as T

    torch.manual_seed(7)
    cfg = T.MaskFormerConfig(
        backbone_config=T.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                     out_features=["stage1", "stage2", "stage3", "stage4"]),
        decoder_config=T.DetrConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                    decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=5),
        fpn_feature_size=32, mask_feature_size=32, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
        label2id={"a": 0, "b": 1, "c": 2})
    model = T.MaskFormerForInstanceSegmentation(cfg).eval()
    model.save_pretrained(tmp_path / "mf")
    proc = T.MaskFormerImageProcessor()
    proc.save_pretrained(tmp_path / "mf")
    img = _img(64, 64)
    with torch.inference_mode():
        q = model(pixel_values=_x(img))
        sem = proc.post_process_semantic_segmentation(q, target_sizes=[(64, 64)])[0].numpy()
        pan = proc.post_process_panoptic_segmentation(q, threshold=0.5, label_ids_to_fuse=set(),
                                                      target_sizes=[(64, 64)])[0]
    out = Predictor.from_checkpoint(tmp_path / "mf", task="semantic", device="cpu").predict(img)
    assert (out.labels == sem).mean() > 0.99
    p = Predictor.from_checkpoint(tmp_path / "mf", task="panoptic", device="cpu").predict(img)
    np.testing.assert_array_equal(p.ids, pan["segmentation"].numpy().clip(0))
    inst = Predictor.from_checkpoint(tmp_path / "mf", task="instance", device="cpu", score_thresh=0.0).predict(img)
    assert set(inst.labels.tolist()) <= {0, 1, 2} and len(inst.rles) == len(inst.scores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_forms_on_the_gpu_match_the_cpu(forms: dict[str, Path]) -> None:
    """On a GPU: an ONNX model (the CUDA provider when onnxruntime has it, else its CPU provider) and a
    TorchScript model give the CPU's results."""
    from segpipe.models.sources.onnx import OnnxRunner

    img = _img(64, 96)
    for form in ("onnx", "torchscript", "torch_export"):
        cpu = Predictor.from_checkpoint(forms[form], device="cpu").predict(img)
        gpu = Predictor.from_checkpoint(forms[form], device="cuda", amp=False).predict(img)
        assert np.abs(gpu.probs.astype(np.float32) - cpu.probs.astype(np.float32)).max() < 2e-3, form
    import onnxruntime as ort

    runner = OnnxRunner(str(forms["onnx"]))
    want = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else \
        "CPUExecutionProvider"
    assert runner.providers("cuda")[0] == want
