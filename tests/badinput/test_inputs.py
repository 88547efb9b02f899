"""Bad-input corpus: inputs checked against themselves (issue 13, point 3).

Recorded image sizes against the image files, label values against the categories, checkpoint
categories and normalisation, and pixel counts against the ceilings — each through the real CLI.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.badinput._corpus import check_bad_input, tree_state
from tests.conftest import run_cli
from tests.datagen import make_coco


def check_reported(
    *args: str, root: Path, code: int, names: tuple[str, ...], outputs: tuple[Path, ...] = (), timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The bad-input promise for commands that report problems as lines of a report.

    ``validate`` prints its problems on stdout and ``prelabel`` its failed items there too (the summary
    goes to stderr), so :func:`check_bad_input`'s ``error:`` lines on stderr do not apply yet: the
    problem line must name ``names`` on either stream; the exit code, no traceback, no internal error
    and the untouched inputs are asserted the same way.
    """
    before = tree_state(root, outputs)
    r = run_cli(*args, cwd=root, timeout=timeout)
    after = tree_state(root, outputs)
    where = f"segpipe {' '.join(args)}\nrc={r.returncode}\nstderr:\n{r.stderr[-3000:]}\nstdout:\n{r.stdout[-3000:]}"
    text = r.stdout + r.stderr
    assert r.returncode == code, where
    assert "Traceback" not in text and "internal error" not in text.lower(), where
    lines = [ln for ln in text.splitlines() if all(n in ln for n in names)]
    assert len(lines) == 1, where
    assert before == after, where
    return r


# ---------------------------------------------------------------------------- recorded image sizes


def _coco_wrong_size(root: Path, width: int = 100, height: int | None = None) -> Path:
    """A COCO dataset (polygons only) whose first image record disagrees with its file (64x48)."""
    ann = make_coco(root / "coco", n_images=2, keypoints=False, objects=3)
    d = json.loads(ann.read_text())
    d["images"][0]["width"] = width
    if height is not None:
        d["images"][0]["height"] = height
    d["annotations"] = [a for a in d["annotations"] if isinstance(a["segmentation"], list)]
    ann.write_text(json.dumps(d))
    return ann


def test_validate_decode_flags_a_recorded_size_that_disagrees_with_the_image(tmp_path: Path) -> None:
    _coco_wrong_size(tmp_path)
    check_reported("validate", "coco/annotations.json", "--images", "decode", root=tmp_path, code=1,
                   names=("coco/annotations.json", "image 10 (img_000.png): width", "64x48"))


def test_convert_refuses_a_recorded_size_that_disagrees_with_the_image(tmp_path: Path) -> None:
    _coco_wrong_size(tmp_path)
    out = tmp_path / "voc"
    check_bad_input("convert", "coco/annotations.json", "voc", "--to", "voc", "-w", "0", root=tmp_path, code=2,
                    names=("image 10 (img_000.png): width", "img_000.png is 64x48"), outputs=[out])
    assert not out.exists()


def test_convert_skip_never_writes_a_wrong_size_mask(tmp_path: Path) -> None:
    _coco_wrong_size(tmp_path)
    out = tmp_path / "voc"
    check_bad_input("convert", "coco/annotations.json", "voc", "--to", "voc", "-w", "0", "--on-error", "skip",
                    root=tmp_path, code=1, one_line=False, names=("image 10 (img_000.png): width",), outputs=[out])
    masks = sorted((out / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))  # the default layout
    assert [m.name for m in masks] == ["img_001.png"]  # the mismatched image has no mask at all
    with Image.open(masks[0]) as im:
        assert im.size == (64, 48)


def test_recorded_size_over_the_ceiling_is_refused_before_allocating(tmp_path: Path) -> None:
    """A claimed 100000² image once made convert allocate 37 GiB (a missing image file: no file to compare)."""
    root = tmp_path / "big"
    root.mkdir()
    (root / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 100000, "height": 100000}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 10, 0, 10, 10]],
                         "bbox": [0, 0, 10, 10], "area": 50, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}],
    }))
    out = tmp_path / "voc"
    check_bad_input("convert", "big/annotations.json", "voc", "--to", "voc", "-w", "0", root=tmp_path, code=2,
                    names=("image 1 (a.png)", "100000x100000", "SEGPIPE_MAX_PIXELS"), outputs=[out])
    check_reported("validate", "big/annotations.json", root=tmp_path, code=1,
                   names=("big/annotations.json", "100000x100000", "SEGPIPE_MAX_PIXELS"))


def test_exif_sizes_are_upright_and_pass(tmp_path: Path) -> None:
    """Recorded sizes are upright (EXIF applied): a rotated JPEG with upright records is no mismatch."""
    r = run_cli("synth", "streetview", "sv", "--n", "4", "--seed", "3", "--exif", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("validate", "sv/annotations.json", "--images", "decode", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------- label values vs categories


def _maskdir_with_unknown_value(root: Path) -> Path:
    d = root / "md"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(d / "images" / "a.png")
    m = np.zeros((16, 20), np.uint8)
    m[2:6, 2:6] = 1
    m[8:10, 8:12] = 7  # no category: labelmap.txt has background and car only
    m[0, 0] = 255  # void is no loss
    Image.fromarray(m, mode="L").save(d / "masks" / "a.png")
    (d / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:128,0,0::\n")
    return d


def _cityscapes_with_unknown_value(root: Path) -> Path:
    d = root / "cs"
    city = d / "gtFine" / "train" / "aachen"
    city.mkdir(parents=True)
    m = np.zeros((16, 20), np.uint8)
    m[2:6, 2:6] = 7  # road
    m[8:10, 8:12] = 200  # no label of the Cityscapes table
    Image.fromarray(m, mode="L").save(city / "aachen_000000_000019_gtFine_labelIds.png")
    return d


@pytest.mark.parametrize("source", ["maskdir", "cityscapes"])
def test_label_values_that_are_no_category_are_a_reported_loss(tmp_path: Path, source: str) -> None:
    src = (_maskdir_with_unknown_value if source == "maskdir" else _cityscapes_with_unknown_value)(tmp_path)
    bad = "7" if source == "maskdir" else "200"
    r = run_cli("convert", src.name, "out", "--to", "coco", "--images", "none", "-w", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    losses = json.loads((tmp_path / "out" / "conversion_report.json").read_text())["losses"]
    assert not losses["lossless"]
    assert losses["by_category"]["unknown_class_pixels_to_void"] == {bad: 8}
    check_bad_input("convert", src.name, "strict", "--to", "coco", "--images", "none", "--strict", "-w", "0",
                    root=tmp_path, code=1, names=(src.name, "unknown_class_pixels_to_void=8"),
                    outputs=[tmp_path / "strict", tmp_path / "out"])
    assert not (tmp_path / "strict").exists()


# --------------------------------------------------------------------- checkpoint categories, std

_KW = {"base": 4, "depth": 2}


def _cats(ids: list[Any]) -> list[dict[str, Any]]:
    return [{"index": i, "id": v, "name": f"c{i}", "color": None, "isthing": False} for i, v in enumerate(ids)]


_CHECKPOINTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "negative_id": ({"categories": _cats([0, 1, -7])}, "meta.categories[2].id", "-7 does not fit"),
    "id_70000": ({"categories": _cats([0, 1, 70000])}, "meta.categories[2].id", "70000 does not fit"),
    "id_2_40": ({"categories": _cats([0, 1, 2**40])}, "meta.categories[2].id", f"{2**40} does not fit"),
    "duplicate_id": ({"categories": _cats([0, 1, 1])}, "meta.categories[2].id", "repeats"),
    "no_categories": ({"categories": []}, "meta.categories", "no categories"),
    "float_id": ({"categories": _cats([0, 1, 2.5])}, "meta.categories[2].id", "not an integer"),
    "string_id": ({"categories": _cats([0, 1, "2"])}, "meta.categories[2].id", "not an integer"),
    "std_zero": ({"std": [0.0, 0.2, 0.2]}, "meta.std[0]", "> 0"),
    "std_negative": ({"std": [0.2, -1.0, 0.2]}, "meta.std[1]", "> 0"),
    "std_nan": ({"std": [0.2, 0.2, math.nan]}, "meta.std[2]", "> 0"),
    "std_two_values": ({"std": [0.2, 0.2]}, "meta.std", "needs 3 values"),
    # A tile_overlap of 1 or more once meant pixels silently (1.5: a 1-pixel overlap, recorded as 1.5).
    "overlap_1_5": ({"tile_overlap": 1.5}, "meta.tile_overlap", "not a fraction of the tile in [0, 1)"),
    "overlap_negative": ({"tile_overlap": -0.25}, "meta.tile_overlap", "not a fraction"),
    # Names and model indices: each once passed with exit 0; an unknown task failed every image (exit 1).
    "duplicate_name": ({"categories": [{**c, "name": "c0"} for c in _cats([0, 1, 2])]},
                       "meta.categories[1].name", "repeats the name"),
    "index_50_of_3": ({"categories": [*_cats([0, 1]), {**_cats([0, 1, 2])[2], "index": 50}]},
                      "meta.categories[2].index", "outside the model's classes 0..2"),
    "duplicate_index": ({"categories": [*_cats([0, 1]), {**_cats([0, 1, 2])[2], "index": 1}]},
                        "meta.categories[2].index", "repeats the index"),
    "bogus_task": ({"task": "bogus"}, "meta.task", "unknown task 'bogus'"),
}


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One malformed checkpoint per case (``<case>.ckpt``) and an ``imgs/`` folder with one photo."""
    torch = pytest.importorskip("torch")
    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = build_model("unet", 3, **_KW)
    for case, (fields, _, _) in _CHECKPOINTS.items():
        kw: dict[str, Any] = {"task": "semantic", "categories": _cats([0, 1, 2]), "model_kwargs": _KW,
                              "tile_size": [64, 64], **fields}
        save_checkpoint(root / f"{case}.ckpt", model, CheckpointMeta(arch="unet", num_classes=3, **kw))
    (root / "imgs").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "imgs" / "a.png")
    return root


@pytest.mark.parametrize("case", sorted(_CHECKPOINTS))
def test_malformed_checkpoint_meta_is_refused(bad_checkpoints: Path, case: str) -> None:
    _, field, says = _CHECKPOINTS[case]
    out = bad_checkpoints / f"{case}.zarr"
    check_bad_input("prelabel", "imgs", "--model", f"{case}.ckpt", "--out", out.name, "-w", "0",
                    root=bad_checkpoints, code=2, names=(f"{case}.ckpt: {field}", says), outputs=[out])
    assert not out.exists()  # refused before the store is made


# --------------------------------------------------------------------------------- pixel ceilings


def _tiny_tiff(path: Path, width: int, height: int) -> None:
    """A classic TIFF header of one uncompressed strip claiming ``width × height`` bytes it does not hold."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
               (277, 3, 1), (278, 4, height), (279, 4, min(width * height, 2**32 - 1))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
        for tag, typ, v in entries
    ) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    save_checkpoint(path, build_model("unet", 3, **_KW),
                    CheckpointMeta.for_arch("unet", 3, model_kwargs=_KW, tile_size=[64, 64]))
    return path


def test_tiny_tiff_claiming_200000_squared_fails_alone_without_planning(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "scenes").mkdir()
    _tiny_tiff(tmp_path / "scenes" / "big.tif", 200_000, 200_000)
    assert (tmp_path / "scenes" / "big.tif").stat().st_size < 200
    out = tmp_path / "s.zarr"
    r = check_reported("prelabel", "scenes", "--model", str(tiny_model), "--out", out.name, "-w", "0",
                       "--on-error", "fail", root=tmp_path, code=1, outputs=(out,), timeout=120,
                       names=("big.tif", "200000x200000", "SEGPIPE_MAX_SCENE_PIXELS"))
    # Refused at ingest: no block task was planned (once 9.6k). The scene is still an item of the run:
    # the summary once said "1 failed of 0 images".
    assert "0 done, 0 already done, 1 failed of 1 images" in r.stdout


def test_sparse_geotiff_claiming_1e6_squared_fails_alone(tmp_path: Path, tiny_model: Path) -> None:
    rasterio = pytest.importorskip("rasterio")

    (tmp_path / "scenes").mkdir()
    n = 1_000_000
    with rasterio.open(tmp_path / "scenes" / "sparse.tif", "w", driver="GTiff", width=n, height=n, count=3,
                       dtype="uint8", tiled=True, blockxsize=16384, blockysize=16384, SPARSE_OK=True,
                       BIGTIFF="YES", crs="EPSG:32633", transform=rasterio.Affine(10, 0, 500000, 0, -10, 6000000)):
        pass
    out = tmp_path / "s.zarr"
    check_reported("prelabel", "scenes", "--model", str(tiny_model), "--out", out.name, "-w", "0",
                   "--on-error", "fail", root=tmp_path, code=1, outputs=(out,), timeout=120,
                   names=("sparse.tif", "1000000x1000000", "SEGPIPE_MAX_SCENE_PIXELS"))


def _png_header(path: Path, width: int, height: int) -> None:
    """A 69-byte grey PNG whose header claims ``width × height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_class_png_bomb_is_one_line(tmp_path: Path) -> None:
    d = tmp_path / "md"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "images" / "a.png")
    _png_header(d / "masks" / "a.png", 100_000, 100_000)
    out = tmp_path / "out"
    check_bad_input("convert", "md", "out", "--to", "coco", "-w", "0", root=tmp_path, code=2,
                    names=("masks/a.png", "100000x100000", "SEGPIPE_MAX_PIXELS"), outputs=[out])


@pytest.mark.parametrize("var", ["SEGPIPE_MAX_PIXELS", "SEGPIPE_MAX_SCENE_PIXELS"])
@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_malformed_pixel_ceiling_variable_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      var: str, value: str) -> None:
    make_coco(tmp_path / "coco", n_images=1, keypoints=False)
    monkeypatch.setenv(var, value)  # run_cli passes the environment on
    check_bad_input("validate", "coco/annotations.json", root=tmp_path, code=2, names=(var, repr(value)))


def test_raised_ceiling_lets_a_large_image_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_coco(tmp_path / "coco", n_images=1, keypoints=False)  # 64x48 = 3072 pixels
    monkeypatch.setenv("SEGPIPE_MAX_PIXELS", "3000")
    check_reported("validate", "coco/annotations.json", "--images", "decode", root=tmp_path, code=1,
                   names=("64x48", "SEGPIPE_MAX_PIXELS"))
    monkeypatch.setenv("SEGPIPE_MAX_PIXELS", "3072")
    r = run_cli("validate", "coco/annotations.json", "--images", "decode", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- category-map ids


@pytest.mark.parametrize(("new_id", "says"), [
    (255, "255 is the void value"),  # once "lossless", exit 0, and every car pixel written as void
    (70000, "70000 does not fit the uint8/uint16 label maps"),  # once wrapped to 4464, reported under "4464"
], ids=["void_255", "id_70000"])
def test_category_map_id_that_is_void_or_does_not_fit_is_refused(tmp_path: Path, new_id: int, says: str) -> None:
    _maskdir_with_unknown_value(tmp_path)
    (tmp_path / "cm.yaml").write_text(f"ids: {{car: {new_id}}}\n")
    out = tmp_path / "out"
    check_bad_input("convert", "md", "out", "--to", "voc", "--categories", "cm.yaml", "-w", "0", root=tmp_path,
                    code=2, names=(f"cm.yaml: ids.car: {says}",), outputs=[out])
    assert not out.exists()


# ------------------------------------------------------------------------------- tiling, options


def test_overlap_that_leaves_a_stride_of_one_pixel_is_refused_before_any_work(tmp_path: Path,
                                                                              tiny_model: Path) -> None:
    """0.99 of a 128-pixel tile is a 1-pixel stride: ~50k tiles for a 256x512 image, effectively a hang."""
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((256, 512, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    out = tmp_path / "s.zarr"
    r = check_bad_input("prelabel", "imgs", "--model", str(tiny_model), "--out", out.name, "-w", "0",
                        "--tile", "128", "--overlap", "0.99", root=tmp_path, code=2, outputs=[out], timeout=60,
                        names=("--overlap 0.99", "128-pixel tile (--tile)", "stride of 1 px", "at least 8 px"))
    assert "--overlap 0.937 or less" in r.stderr  # the hint once suggested 0.988
    assert not out.exists()


@pytest.mark.parametrize(("args", "names"), [
    (("--min-score", "nan"), ("--min-score", "nan is not a score in [0, 1]")),
    (("--min-score", "1.5"), ("--min-score", "1.5 is not a score in [0, 1]")),
    (("--resume", "--overwrite"), ("--resume", "--overwrite", "not both")),
], ids=["min_score_nan", "min_score_1_5", "resume_and_overwrite"])
def test_prelabel_option_conflicts_and_ranges(tmp_path: Path, tiny_model: Path, args: tuple[str, ...],
                                              names: tuple[str, ...]) -> None:
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "imgs", "--model", str(tiny_model), "--out", out.name, "-w", "0", *args,
                    root=tmp_path, code=2, names=names, outputs=[out], timeout=60)
    assert not out.exists()


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_evaluate_img_ids_not_in_the_ground_truth_is_an_error(tmp_path: Path, task: str) -> None:
    """``--img-ids 99999`` once gave "0/0 images evaluated", metrics n/a and exit 0."""
    if task == "instance":
        make_coco(tmp_path / "coco", n_images=2, keypoints=False)
        gt = pred = "coco/annotations.json"
    else:
        _maskdir_with_unknown_value(tmp_path)
        gt = pred = "md"
    out = tmp_path / "e.json"
    check_bad_input("evaluate", gt, pred, "--task", task, "--img-ids", "99999", "--json", out.name, "-w", "0",
                    root=tmp_path, code=2, names=("--img-ids", "99999", "no image of the ground truth"),
                    outputs=[out])
    assert not out.exists()


# ------------------------------------------------------------------------- VOC recorded size


def test_validate_voc_blames_the_xml_size_not_the_mask(tmp_path: Path) -> None:
    """A wrong ``<width>`` once made validate blame the (correct) mask: "mask is 4x3 but the image is 6x3"."""
    from segpipe.core.labelmap import voc_colormap
    from segpipe.storage.images import write_label_png

    voc = tmp_path / "voc"
    for d in ("Annotations", "SegmentationClass", "JPEGImages"):
        (voc / d).mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>6</width><height>3</height><depth>3</depth></size>"
        "</annotation>")
    Image.new("RGB", (4, 3)).save(voc / "JPEGImages" / "a.png")
    write_label_png(voc / "SegmentationClass" / "a.png", np.zeros((3, 4), np.uint8), voc_colormap(256))
    r = check_reported("validate", "voc", "--images", "decode", root=tmp_path, code=1,
                       names=("Annotations/a.xml", "size.width", "recorded size 6x3", "JPEGImages/a.png is 4x3"))
    assert "mask is" not in r.stdout + r.stderr


# ---------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(("lines", "field", "says"), [
    # two lines with one id: one image's outputs were written over the other's, the run said "2 done"
    ([{"id": 1, "file": "a.png", "path": "p/0.png"}, {"id": 1, "file": "b.png", "path": "p/1.png"}],
     "entry 2, field id", "id 1 is already used by entry 1"),
    # two lines with one file name: their exported masks overwrote each other
    ([{"id": 1, "file": "c.png", "path": "p/0.png"}, {"id": 2, "file": "c.png", "path": "p/1.png"}],
     "entry 2, field file", "file 'c.png' is already used by entry 1"),
], ids=["same id", "same file"])
def test_a_manifest_naming_one_id_or_file_twice_is_refused(tmp_path: Path, tiny_model: Path, lines: list[dict],
                                                            field: str, says: str) -> None:
    (tmp_path / "p").mkdir()
    for k in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(tmp_path / "p" / f"{k}.png")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({**ln, "path": str(tmp_path / ln["path"])}) + "\n"
                                              for ln in lines))
    out = tmp_path / "s.zarr"
    check_bad_input("prelabel", "m.jsonl", "--model", str(tiny_model), "--out", out.name, "-w", "0",
                    root=tmp_path, code=2, names=("m.jsonl", field, says), outputs=[out])
    assert not out.exists()
