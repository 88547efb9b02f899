"""DICOM series as pre-labeling sources: found without a .dcm extension, pre-labeled, exported to NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
pytest.importorskip("pydicom", reason="pydicom (segpipe[medical]) is not installed")

from segpipe.execution.cluster import ClusterSpec  # noqa: E402
from segpipe.pipeline.convert import Conversion, convert  # noqa: E402
from segpipe.pipeline.prelabel import PrelabelRequest, fsck, prelabel  # noqa: E402
from segpipe.storage.manifest import is_dicom_file, list_images  # noqa: E402
from segpipe.storage.volume import open_volume  # noqa: E402
from segpipe.synth.native import synth_native  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    torch.manual_seed(0)
    kw = {"base": 4, "depth": 2}
    path = tmp_path_factory.mktemp("ck") / "tiny.ckpt"
    save_checkpoint(path, build_model("unet", 3, **kw),
                    CheckpointMeta.for_arch("unet", 3, model_kwargs=kw, tile_size=[64, 64], tile_overlap=0.25))
    return path


def test_extensionless_series_is_found_and_prelabeled(tmp_path, tiny_ckpt):
    synth_native("medical", tmp_path / "d", n=2, seed=1, size=(36, 44), fmt="dicom", depth=4)
    root = tmp_path / "d" / "dicom"
    # Scanners write IM0001 or UID file names: strip the extension of one series, UID names for the other.
    for k, f in enumerate(sorted((root / "00000").iterdir())):
        f.rename(f.with_name(f"IM{k:04d}"))
    for k, f in enumerate(sorted((root / "00001").iterdir())):
        f.rename(f.with_name(f"1.2.840.10008.{k}.7"))
    (root / "notes.txt").write_text("not an image")
    assert is_dicom_file(next((root / "00000").iterdir())) and not is_dicom_file(root / "notes.txt")
    assert list_images(root)[1] == ["00000", "00001"]  # each series is one item
    out = tmp_path / "d.zarr"
    rep = prelabel(PrelabelRequest(source=str(root), model=str(tiny_ckpt), out=out, threads=1), ClusterSpec(workers=0))
    assert rep["items"]["volumes"] == 2 and rep["images"]["done"] == 8 and rep["images"]["failed"] == 0
    assert fsck(out)["ok"] == 8
    dst = tmp_path / "nii"
    convert(Conversion(src=out, dst=dst, to="nifti", from_="segpipe_zarr"), ClusterSpec(workers=0))
    # COCO per slice, with the slices rendered as grey PNGs (the run's window) for annotation tools.
    rep = convert(Conversion(src=out, dst=tmp_path / "coco", to="coco", from_="segpipe_zarr", copy_images="copy"),
                  ClusterSpec(workers=0))
    assert rep["images"]["converted"] == 8 and rep["images"]["missing_files"] == 0
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())  # no split: train
    names = sorted(im["file_name"] for im in coco["images"])
    assert names[:2] == ["00000_z00000.png", "00000_z00001.png"]
    from PIL import Image

    vol0 = open_volume(root / "00000")
    with Image.open(tmp_path / "coco" / "images" / "train" / "00000_z00001.png") as im:
        assert im.mode == "L" and im.size == (44, 36)
        np.testing.assert_array_equal(np.asarray(im), vol0.slice(1)[..., 0])
    # VOC (as JPEG, what its loaders open) and Cityscapes write the same rendered slices.
    for fmt, pattern in (("voc", "VOCdevkit/VOC2012/JPEGImages/*.jpg"), ("cityscapes", "leftImg8bit/*/*/*.png")):
        r = convert(Conversion(src=out, dst=tmp_path / fmt, to=fmt, from_="segpipe_zarr", copy_images="copy"),
                    ClusterSpec(workers=0))
        assert r["images"]["missing_files"] == 0 and len(list((tmp_path / fmt).glob(pattern))) == 8
    written = sorted((dst / "labels").rglob("*.nii.gz"))
    assert len(written) == 2
    for series, f in zip(("00000", "00001"), written, strict=True):
        vol = open_volume(root / series)
        img = nib.load(f)
        assert img.shape == (44, 36, 4)
        np.testing.assert_array_equal(img.affine, vol.affine)


def _strip(files: list[Path], tag: str) -> None:
    import pydicom

    for f in files:
        ds = pydicom.dcmread(f)
        if tag in ds:
            delattr(ds, tag)
        ds.save_as(f)


def test_short_series_gap_without_instance_numbers(tmp_path):
    """One slice missing from a 4-slice series whose files carry no InstanceNumber: still reported."""
    from segpipe.errors import FormatError
    from segpipe.synth.native import write_dicom_series

    files = write_dicom_series(tmp_path / "s", np.zeros((4, 8, 8), np.int16), np.diag([-1.0, -1.0, 2.5, 1.0]))
    Path(files[2]).unlink()
    rest = [Path(f) for i, f in enumerate(files) if i != 2]
    _strip(rest, "InstanceNumber")
    with pytest.raises(FormatError, match="1 missing slice"):
        open_volume(tmp_path / "s")


def test_every_other_slice_missing_against_declared_spacing(tmp_path):
    import pydicom

    from segpipe.errors import FormatError
    from segpipe.synth.native import write_dicom_series

    files = write_dicom_series(tmp_path / "s", np.zeros((6, 8, 8), np.int16), np.diag([-1.0, -1.0, 2.5, 1.0]))
    for i, f in enumerate(files):
        if i % 2:
            Path(f).unlink()
        else:
            ds = pydicom.dcmread(f)
            ds.SpacingBetweenSlices = 2.5
            ds.save_as(f)
    _strip([Path(f) for i, f in enumerate(files) if i % 2 == 0], "InstanceNumber")
    with pytest.raises(FormatError, match="missing slice"):
        open_volume(tmp_path / "s")


def test_bad_volumes_fail_alone(tmp_path, tiny_ckpt):
    """A non-invertible NIfTI, a DICOM file without preamble and a series missing a slice each fail with
    one line naming the file and the field; the good volume next to them is pre-labeled."""
    import shutil

    src = tmp_path / "mixed"
    synth_native("medical", tmp_path / "n", n=1, seed=2, size=(32, 40), fmt="nifti", depth=3)
    synth_native("medical", tmp_path / "d", n=1, seed=2, size=(32, 40), fmt="dicom", depth=4)
    src.mkdir()
    shutil.copy(tmp_path / "n" / "volumes" / "00000.nii.gz", src / "good.nii.gz")
    flat = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4))
    flat.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    flat.set_qform(None, code=0)
    nib.save(flat, src / "flat.nii")
    shutil.copytree(tmp_path / "d" / "dicom" / "00000", src / "nopreamble")
    f = src / "nopreamble" / "IM00001.dcm"
    f.write_bytes(f.read_bytes()[132:])
    shutil.copytree(tmp_path / "d" / "dicom" / "00000", src / "gap")
    (src / "gap" / "IM00002.dcm").unlink()
    rep = prelabel(PrelabelRequest(source=str(src), model=str(tiny_ckpt), out=tmp_path / "m.zarr", threads=1),
                   ClusterSpec(workers=0))
    assert rep["items"]["volumes"] == 4 and rep["images"]["done"] == 3  # the good volume's 3 slices
    reasons = {Path(f["file"]).name: f["reason"] for f in rep["failed"]}
    assert set(reasons) == {"flat.nii", "nopreamble", "gap"}, reasons
    assert all("\n" not in r for r in reasons.values())
    assert "affine" in reasons["flat.nii"] and "preamble" in reasons["nopreamble"]
    assert "missing slice" in reasons["gap"] and "ImagePositionPatient" in reasons["gap"]


def test_slice_refs(tmp_path):
    from segpipe.storage.atomic import source_exists, source_suffix
    from segpipe.storage.volume import parse_slice_ref, slice_ref

    synth_native("medical", tmp_path / "n", n=1, seed=0, size=(16, 16), fmt="nifti", depth=2)
    vol = tmp_path / "n" / "volumes" / "00000.nii.gz"
    for window in [(1234567.5, 400.0), (0.1234567, 3.3), (-50.25, 1e-7)]:
        assert parse_slice_ref(slice_ref(vol, 1, window)) == (vol, 1, window)  # exact round trip
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"x")
    assert parse_slice_ref(f"{photo}#z00001") is None  # a missing photo is not a slice
    assert not source_exists(f"{photo}#z00001") and source_suffix(f"{vol}#z00001") == ".png"
    real = tmp_path / "odd#z00001"
    real.write_bytes(b"y")
    assert parse_slice_ref(str(real)) is None and source_exists(real)  # an existing file is a file


def test_malformed_window_is_one_line_and_stores_stay_readable(tmp_path, tiny_ckpt):
    from segpipe.errors import ConfigError, InputError
    from segpipe.formats.zarrstore import StoreReader
    from segpipe.storage.zarrstore import ZarrStore

    synth_native("medical", tmp_path / "n", n=1, seed=0, size=(16, 16), fmt="nifti", depth=2)
    with pytest.raises((ConfigError, InputError), match="window"):
        prelabel(PrelabelRequest(source=str(tmp_path / "n" / "volumes"), model=str(tiny_ckpt),
                                 out=tmp_path / "w.zarr", window="bogus"), ClusterSpec(workers=0))
    assert not (tmp_path / "w.zarr").exists()
    ZarrStore.create(tmp_path / "old.zarr", {"task": "semantic", "categories": [], "config": {"window": "bogus"}})
    assert len(StoreReader(tmp_path / "old.zarr")) == 0
