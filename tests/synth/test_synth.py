"""Synthetic datasets: deterministic for a seed, annotations exactly consistent with the masks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segpipe.errors import ConfigError
from segpipe.storage.images import read_image, read_label_map
from segpipe.synth import kind_names, parse_size, synth

KINDS = ["streetview", "satellite", "medical", "landmarks"]
SMALL = {"streetview": (96, 192), "satellite": (128, 128), "medical": (96, 96), "landmarks": (96, 96)}


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _connected(mask: np.ndarray) -> bool:
    """4-connectivity by flood fill with repeated dilation inside the mask."""
    ys, xs = np.nonzero(mask)
    seen = np.zeros_like(mask)
    seen[ys[0], xs[0]] = True
    while True:
        grow = seen.copy()
        grow[1:] |= seen[:-1]
        grow[:-1] |= seen[1:]
        grow[:, 1:] |= seen[:, :-1]
        grow[:, :-1] |= seen[:, 1:]
        grow &= mask
        if (grow == seen).all():
            return bool((seen == mask).all())
        seen = grow


def test_kinds_registered() -> None:
    assert set(KINDS) <= set(kind_names())


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed(kind: str, tmp_path: Path) -> None:
    a = synth(kind, tmp_path / "a", n=3, seed=7, size=SMALL[kind])
    synth(kind, tmp_path / "b", n=3, seed=7, size=SMALL[kind])
    synth(kind, tmp_path / "c", n=3, seed=8, size=SMALL[kind])
    da, db, dc = _digest(a.out), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db
    assert da["images/00000.png"] != dc["images/00000.png"]


@pytest.mark.parametrize("kind", KINDS)
def test_annotations_match_masks(kind: str, tmp_path: Path) -> None:
    r = synth(kind, tmp_path, n=6, seed=3, size=SMALL[kind])
    coco = json.loads((tmp_path / "annotations.json").read_text())
    cats = {c["id"]: c for c in coco["categories"]}
    things = {i for i, c in cats.items() if c["isthing"]}
    lines = [ln for ln in (tmp_path / "labelmap.txt").read_text().splitlines() if not ln.startswith("#")]
    assert lines[0].startswith("background:") and len(lines) == len(cats) + 1
    assert r.annotations == len(coco["annotations"]) > 0
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in coco["images"]:
        h, w = im["height"], im["width"]
        assert (h, w) == SMALL[kind]
        stem = Path(im["file_name"]).stem
        labels = read_label_map(tmp_path / "masks" / f"{stem}.png")
        assert read_image(tmp_path / "images" / im["file_name"]).shape == (h, w, 3)
        assert labels.shape == (h, w)
        union = {c: np.zeros((h, w), bool) for c in things}
        for a in by_image.get(im["id"], []):
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert a["category_id"] in things
            assert (labels[m] == a["category_id"]).all()
            assert not (union[a["category_id"]] & m).any()  # instances do not overlap
            union[a["category_id"]] |= m
            assert a["area"] == int(m.sum())
            assert a["bbox"] == [float(v) for v in mask_utils.toBbox(a["segmentation"])]
            assert _connected(m)  # one annotation per connected object
            if kind == "landmarks":
                kp = np.array(a["keypoints"]).reshape(-1, 3)
                assert kp.shape == (4, 3) and a["num_keypoints"] == 4
        for c in things:  # every thing pixel in the label map belongs to exactly one annotation
            assert (union[c] == (labels == c)).all()


def test_jpg_and_default_size(tmp_path: Path) -> None:
    r = synth("medical", tmp_path, n=1, seed=0, image_format="jpg")
    assert (tmp_path / "images" / "00000.jpg").is_file() and r.size == (256, 256)


def test_parse_size() -> None:
    assert parse_size("256x512") == (256, 512)
    assert parse_size("64") == (64, 64)
    with pytest.raises(ConfigError):
        parse_size("big")


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    r = subprocess.run(
        [sys.executable, "-m", "segpipe", "synth", "landmarks", str(out), "--n", "2", "--seed", "1", "--size", "64x80"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    assert len(list((out / "masks").glob("*.png"))) == 2
    bad = subprocess.run([sys.executable, "-m", "segpipe", "synth", "nope", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "streetview" in bad.stderr
