"""Mixed-mode street-view folders: `segpipe prelabel` decodes every mode, and every export is upright.

The model is a pure function of a pixel's colour (a depth-0 U-Net whose 3×3 convolutions only use their
centre tap: bright → ``road``, dark → ``background``), so the expected label map of any image is its
upright pattern. The upright pattern (bright left half plus a bright top strip) changes under each of
the 8 EXIF orientations, so a mask left in stored coordinates, or transposed the wrong way, fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.storage.images import read_image, read_label_map
from segpipe.synth.native import exif_stored

#: Upright sides: multiples of 16, so the pattern's edges fall on JPEG MCU borders in every orientation.
H, W = 64, 96
EXIF_TAG = 0x0112


def upright_pattern(h: int = H, w: int = W) -> np.ndarray:
    """``(h, w) bool``: True (bright) in the left half and in the top quarter."""
    yy, xx = np.mgrid[:h, :w]
    return (xx < w // 2) | (yy < h // 4)


def _rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def _exif(o: int) -> bytes:
    ex = Image.Exif()
    ex[EXIF_TAG] = o
    return ex.tobytes()


def make_mixed_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """Writes one image per mode and orientation; returns ``{file: upright (h, w)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, tuple[int, int]] = {}
    p = upright_pattern()
    rgb = _rgb(p)
    rgba = np.dstack([rgb, np.full((H, W), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(rgb[..., 0], mode="L").save(folder / "gray.png")
    Image.fromarray(rgb[..., 0], mode="L").save(folder / "gray_q95.jpg", quality=95)
    Image.fromarray(np.where(p, 65535, 0).astype(np.uint16)).save(folder / "gray16.png")
    pal = Image.fromarray(p.astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.save(folder / "palette.png")
    for name in ("rgba.png", "cmyk.jpg", "gray.png", "gray_q95.jpg", "gray16.png", "palette.png"):
        sizes[name] = (H, W)
    for o in range(1, 9):
        stored = exif_stored(rgb, o)
        Image.fromarray(stored).save(folder / f"exif_{o}.jpg", quality=95, exif=_exif(o))
        sizes[f"exif_{o}.jpg"] = (H, W)
    # EXIF on other modes and containers: a CMYK JPEG and a PNG with an eXIf chunk, both rotated.
    Image.fromarray(exif_stored(rgb, 6)).convert("CMYK").save(folder / "cmyk_exif6.jpg", quality=95, exif=_exif(6))
    Image.fromarray(exif_stored(rgb, 8)).save(folder / "png_exif8.png", exif=_exif(8))
    sizes["cmyk_exif6.jpg"] = sizes["png_exif8.png"] = (H, W)
    # A smaller image: sizes vary in a real collection.
    small = _rgb(upright_pattern(32, 48))
    Image.fromarray(exif_stored(small, 5)).save(folder / "small_exif5.jpg", quality=95, exif=_exif(5))
    sizes["small_exif5.jpg"] = (32, 48)
    return sizes


def colour_checkpoint(path: Path) -> Path:
    """A checkpoint whose prediction is a function of each pixel's colour alone: background, road, sky."""
    import torch
    from torch import nn

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    kw: dict[str, Any] = {"base": 2, "depth": 0}
    model = build_model("unet", 3, **kw)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    with torch.no_grad():
        c1, c2, head = convs
        c1.weight.zero_()
        c1.weight[0, :, 1, 1] = 1.0    # s = sum of normalised channels (in [-3, 3])
        c1.weight[1, :, 1, 1] = -1.0   # -s
        c2.weight.zero_()
        c2.weight[0, 0, 1, 1] = c2.weight[1, 1, 1, 1] = 1.0
        head.weight.zero_()
        head.weight[0, :, 0, 0] = torch.tensor([-1.0, 1.0])  # background: dark
        head.weight[1, :, 0, 0] = torch.tensor([1.0, -1.0])  # road: bright
        assert head.bias is not None
        head.bias.copy_(torch.tensor([0.0, 0.0, -100.0]))     # sky never wins
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": False}
            for i, n in enumerate(["background", "road", "sky"])]
    meta = CheckpointMeta(arch="unet", task="semantic", num_classes=3, categories=cats, tile_size=[64, 64],
                          tile_overlap=0.25, model_kwargs=kw, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, tuple[int, int]], dict]:
    """The mixed folder, pre-labeled by the real CLI on 2 worker processes."""
    tmp = tmp_path_factory.mktemp("sv")
    sizes = make_mixed_folder(tmp / "photos")
    ck = colour_checkpoint(tmp / "colour.ckpt")
    store = tmp / "s.zarr"
    p = subprocess.run(
        [sys.executable, "-m", "segpipe", "--quiet", "prelabel", str(tmp / "photos"), "--model", str(ck),
         "--out", str(store), "--workers", "2", "--threads", "1", "--no-probs", "--on-error", "fail"],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = list((store / ".segpipe" / "runs").glob("*.json"))
    return tmp, store, sizes, json.loads(run.read_text())


def test_decoder_reads_every_mode_upright(tmp_path: Path) -> None:
    sizes = make_mixed_folder(tmp_path)
    for name, (h, w) in sizes.items():
        got = read_image(tmp_path / name) > 127
        assert got.shape == (h, w, 3), name
        assert np.array_equal(got[..., 0], upright_pattern(h, w)), name


def test_prelabel_mixed_folder_zero_failures(prelabelled) -> None:
    _, store, sizes, rep = prelabelled
    assert rep["images"]["failed"] == 0 and rep["images"]["done"] == len(sizes) == 17, rep["failed"]


def test_stored_label_maps_are_upright(prelabelled) -> None:
    from segpipe.storage.zarrstore import ZarrStore

    _, store, sizes, _ = prelabelled
    seen = set()
    for _, g in ZarrStore.open(store).iter_groups():  # own groups and stacked images alike
        name = Path(str(g.attrs["file"])).name
        h, w = sizes[name]
        assert (g.attrs["height"], g.attrs["width"]) == (h, w), name
        labels = np.asarray(g["labels"][...])
        assert labels.shape == (h, w), name
        assert np.array_equal(labels == 1, upright_pattern(h, w)), name
        seen.add(name)
    assert seen == set(sizes)


def _check(name: str, road: np.ndarray, sizes: dict[str, tuple[int, int]]) -> None:
    h, w = sizes[Path(name).name if Path(name).name in sizes else name]
    assert road.shape == (h, w), name
    assert np.array_equal(road, upright_pattern(h, w)), name


def _export(store: Path, dst: Path, to: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "segpipe", "--quiet", "export", str(store), str(dst), "--to", to,
                        "--workers", "0", "--images", "copy"], capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 1), p.stdout + p.stderr   # 1 only for reported losses
    return json.loads((dst / "conversion_report.json").read_text())


def _stem_sizes(sizes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {Path(k).stem: v for k, v in sizes.items()}


def test_every_export_is_upright(prelabelled) -> None:
    tmp, store, sizes, _ = prelabelled
    by_stem = _stem_sizes(sizes)

    # COCO: one region per class and image, in upright coordinates, with upright width / height
    _export(store, tmp / "coco", "coco")
    coco = json.loads((tmp / "coco" / "annotations" / "instances_train.json").read_text())  # no split: train
    road_id = next(c["id"] for c in coco["categories"] if c["name"] == "road")
    imgs = {im["id"]: im for im in coco["images"]}
    assert len(imgs) == len(sizes)
    for im in imgs.values():
        assert (im["height"], im["width"]) == sizes[Path(im["file_name"]).name]
    for a in coco["annotations"]:
        if a["category_id"] == road_id:
            im = imgs[a["image_id"]]
            _check(Path(im["file_name"]).name, rle_ops.decode(a["segmentation"]).astype(bool), sizes)

    # VOC: SegmentationClass label = position in labelmap.txt
    _export(store, tmp / "voc", "voc")
    names = [ln.split(":")[0] for ln in (tmp / "voc/VOCdevkit/VOC2012/labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    road = names.index("road")
    pngs = sorted((tmp / "voc/VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))
    assert len(pngs) == len(sizes)
    for f in pngs:
        _check(f.stem, read_label_map(f) == road, by_stem)

    # mask directory
    _export(store, tmp / "md", "maskdir")
    names = [ln.split(":")[0] for ln in (tmp / "md" / "labelmap.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    masks = sorted((tmp / "md" / "masks").rglob("*.png"))
    assert len(masks) == len(sizes)
    for f in masks:
        _check(f.stem, read_label_map(f) == names.index("road"), by_stem)

    # Label Studio: brush RLE of the road class at original_width × original_height (upright)
    from segpipe.formats.labelstudio.brush import rle_to_mask

    _export(store, tmp / "ls", "labelstudio")
    tasks = json.loads((tmp / "ls" / "tasks.json").read_text())
    assert len(tasks) == len(sizes)
    for t in tasks:
        name = Path(t["data"]["file_name"]).name
        regions = [r for p in t["predictions"] for r in p["result"]
                   if r["type"] == "brushlabels" and r["value"]["brushlabels"] == ["road"]]
        assert len(regions) == 1, name
        r = regions[0]
        h, w = r["original_height"], r["original_width"]
        _check(name, rle_to_mask(r["value"]["rle"], h, w) > 0, sizes)

    # Cityscapes: road = official label id 7; leftImg8bit PNGs are upright pixels
    _export(store, tmp / "cs", "cityscapes")
    labs = sorted((tmp / "cs" / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(labs) == len(sizes)
    for f in labs:
        stem = f.name[: -len("_gtFine_labelIds.png")]
        _check(stem, read_label_map(f) == 7, by_stem)
        img = Path(str(f).replace("gtFine", "leftImg8bit", 1).replace("_gtFine_labelIds.png", "_leftImg8bit.png"))
        _check(stem, read_image(img, exif=False)[..., 0] > 127, by_stem)
