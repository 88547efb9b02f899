"""Exports of a store whose images would share an output file, or whose source image changed since the run.

Stores are made by real ``prelabel`` runs from JSONL manifests (4 synthetic 64x64 street-view images,
a tiny U-Net), exported through the CLI:

* two manifest names of one stem (``img.png`` / ``img.jpg``): COCO used to write one
  ``semantic_train/<stem>.png`` for both while its JSON listed both (exit 0), so a reader paired both
  images with one mask. Now the export is refused like VOC's, naming both images and the file they
  share, and nothing is written (also ``coco_panoptic``);
* an entry given a new id on ``--resume`` leaves two images of one ``file_name`` in the store: refused
  the same way;
* ``--images copy`` after the source image was replaced: the copy used to pair the new image with the
  old mask. The copied file is checked against the sha256 the run recorded; that image fails, named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input, synth_with_unet
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` (4 street-view images of 64x64) and ``unet.ckpt``."""
    root = tmp_path_factory.mktemp("exportnames")
    synth_with_unet(root / "data", root / "unet.ckpt", n=4, seed=3, size=(64, 64))
    return root


def _case(base: Path, tmp_path: Path, entries: list[tuple[int, str, int]]) -> Path:
    """A case folder with ``m.jsonl`` of ``(id, file, index of the source image)`` and its store ``s.zarr``."""
    root = tmp_path / "case"
    shutil.copytree(base / "data", root / "data")
    _manifest(root, "m.jsonl", entries)
    r = run_cli("prelabel", "m.jsonl", "-m", str(base / "unet.ckpt"), "-o", "s.zarr", "-w", "0", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def _manifest(root: Path, name: str, entries: list[tuple[int, str, int]]) -> None:
    images = sorted((root / "data" / "images").glob("*.png"))
    (root / name).write_text("".join(json.dumps({"id": i, "file": f, "path": str(images[k])}) + "\n"
                                     for i, f, k in entries))


@pytest.mark.parametrize("to,folder", [("coco", "annotations/semantic_train"), ("coco_panoptic", "panoptic")])
def test_two_names_of_one_stem_are_refused(base: Path, tmp_path: Path, to: str, folder: str) -> None:
    root = _case(base, tmp_path, [(1, "img.png", 0), (2, "img.jpg", 1), (3, "other.png", 2)])
    check_bad_input("export", "s.zarr", "out", "--to", to, "-w", "0", root=root, code=2, outputs=[root / "out"],
                    names=["'img.png'", "'img.jpg'", f"{folder}/img.png", "out"])
    assert not (root / "out").exists()


@pytest.mark.parametrize("to,shared", [("coco", "annotations/semantic_train/b.png"), ("labelstudio", "images/b.png")])
def test_two_ids_of_one_file_name_after_resume_are_refused(base: Path, tmp_path: Path, to: str, shared: str) -> None:
    """Image 2 becomes id 22 in the manifest, its file another image: ``--resume`` adds it, the store keeps
    id 2 under the same name. COCO would write one label map, Label Studio one copied image, for both."""
    root = _case(base, tmp_path, [(1, "a.png", 0), (2, "b.png", 1)])
    _manifest(root, "m2.jsonl", [(1, "a.png", 0), (22, "b.png", 2)])
    r = run_cli("prelabel", "m2.jsonl", "-m", str(base / "unet.ckpt"), "-o", "s.zarr", "-w", "0", "--resume",
                cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    check_bad_input("export", "s.zarr", "out", "--to", to, "-w", "0", "--images", "copy", root=root, code=2,
                    outputs=[root / "out"], names=["images 2 'b.png' and 22 'b.png'", shared])
    assert not (root / "out").exists()


def test_distinct_names_still_export(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path, [(1, "x/a.png", 0), (2, "a.png", 1), (3, "x/b.jpg", 2)])
    r = run_cli("export", "s.zarr", "out", "--to", "coco", "-w", "0", "--images", "copy", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    sem = root / "out" / "annotations" / "semantic_train"
    assert sorted(p.relative_to(sem).as_posix() for p in sem.rglob("*.png")) == ["a.png", "x/a.png", "x/b.png"]


@pytest.mark.parametrize("to,copied", [("coco", "out/images/train/{}"), ("voc", "out/VOCdevkit/VOC2012/JPEGImages")])
def test_a_source_image_changed_after_the_run_fails_that_image(base: Path, tmp_path: Path, to: str,
                                                                copied: str) -> None:
    root = _case(base, tmp_path, [(1, "a.png", 0), (2, "b.png", 1), (3, "c.png", 2)])
    images = sorted((root / "data" / "images").glob("*.png"))
    shutil.copyfile(images[3], images[1])  # b.png's source replaced by another image after the run
    r = check_bad_input("export", "s.zarr", "out", "--to", to, "-w", "0", "--images", "copy", root=root, code=1,
                        outputs=[root / "out"], one_line=False,
                        names=["b.png", str(images[1]), "the source image changed since it was pre-labeled",
                               "re-run prelabel --resume"])
    assert "2/3 images, 1 failed" in r.stdout, r.stdout
    out = root / copied.format("")
    assert sorted(p.stem for p in out.iterdir()) == ["a", "c"]  # the changed image is not copied


def test_an_unchanged_source_copies_every_image(base: Path, tmp_path: Path) -> None:
    root = _case(base, tmp_path, [(1, "a.png", 0), (2, "b.png", 1)])
    r = run_cli("export", "s.zarr", "out", "--to", "coco", "-w", "0", "--images", "copy", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    images = sorted((root / "data" / "images").glob("*.png"))
    assert (root / "out" / "images" / "train" / "b.png").read_bytes() == images[1].read_bytes()
