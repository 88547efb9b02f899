"""NIfTI / DICOM volumes: conventions, exact affines through the nifti writer, bad inputs in one line."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
pydicom = pytest.importorskip("pydicom", reason="pydicom (segpipe[medical]) is not installed")

from segpipe.errors import FormatError  # noqa: E402
from segpipe.storage.volume import apply_window, open_volume, parse_window  # noqa: E402
from segpipe.synth.native import SYNTH_WINDOW, synth_native, write_dicom_series  # noqa: E402
from tests.modalities._store import export, make_store  # noqa: E402


def _one_line(e: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.fixture(scope="module")
def med(tmp_path_factory):
    root = tmp_path_factory.mktemp("med")
    synth_native("medical", root / "n", n=1, seed=3, size=(40, 56), fmt="nifti", depth=5)
    synth_native("medical", root / "d", n=1, seed=3, size=(40, 56), fmt="dicom", depth=5)
    return root


def test_axis_convention_and_formats_agree(med):
    v = open_volume(med / "n" / "volumes" / "00000.nii.gz")
    d = open_volume(med / "d" / "dicom" / "00000")
    assert v.shape == d.shape == (5, 40, 56)
    assert v.spacing == d.spacing == (2.5, 0.75, 0.75)
    np.testing.assert_array_equal(v.affine, d.affine)  # DICOM LPS converted to RAS+
    assert v.orientation == d.orientation == ("L", "P", "S")
    data = np.asarray(nib.load(med / "n" / "volumes" / "00000.nii.gz").dataobj)  # (i, j, k) = (W, H, Z)
    for z in range(5):
        np.testing.assert_array_equal(v.raw_slice(z), data[:, :, z].T)
        np.testing.assert_array_equal(d.raw_slice(z), v.raw_slice(z))  # HU after RescaleSlope/Intercept
    assert d.window == SYNTH_WINDOW  # from WindowCenter/Width
    s = d.slice(2)
    assert s.shape == (40, 56, 3) and s.dtype == np.uint8
    # pixel (y, x) of slice z sits at affine @ (x, y, z, 1)
    pos = d.affine @ np.array([3, 7, 2, 1.0])
    ds = pydicom.dcmread(d.files[2])
    lps = np.asarray(ds.ImagePositionPatient, float) + 3 * 0.75 * np.array([1, 0, 0]) + 7 * 0.75 * np.array([0, 1, 0])
    np.testing.assert_allclose(pos[:3], lps * [-1, -1, 1])
    assert pickle.loads(pickle.dumps(v)).slice(1).tobytes() == v.slice(1).tobytes()


def test_windowing():
    assert parse_window("40,400") == (40.0, 400.0)
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]])
    np.testing.assert_array_equal(apply_window(hu, 40, 400)[..., 0], [[0, 0, 128, 255, 255]])
    with pytest.raises(Exception, match="CENTER,WIDTH"):
        parse_window("40")


def test_percentile_window_without_dicom_tags(med, tmp_path):
    v = open_volume(med / "n" / "volumes" / "00000.nii.gz")
    assert v.window[1] > 0
    w = open_volume(med / "n" / "volumes" / "00000.nii.gz", window="40,400")
    assert w.window == (40.0, 400.0)


def test_nifti_affine_exact_through_writer(tmp_path):
    # an oblique, anisotropic affine with float32-exact entries (NIfTI stores the sform as float32)
    aff = np.array([[-0.8125, 0.125, 0.0, 101.5], [0.0625, 0.75, -0.25, -33.25], [0.0, 0.1875, 2.5, 17.0],
                    [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1000, (24, 18, 7), dtype=np.int16)  # (i, j, k)
    img = nib.Nifti1Image(vol, aff)
    img.set_sform(aff, code=1)
    src = tmp_path / "ct.nii.gz"
    nib.save(img, src)
    v = open_volume(src)
    assert v.shape == (7, 18, 24)
    labels = [((v.raw_slice(z) > 0).astype(np.uint8) * (1 + z % 3)) for z in range(v.shape[0])]
    # the pre-labeling writes one group per slice with Volume.slice_attrs; slices in a scrambled order
    order = [3, 0, 6, 1, 5, 2, 4]
    store = make_store(tmp_path / "s.zarr",
                       [(labels[z], {"file": f"ct/{z}.png", **v.slice_attrs("ct", z)}) for z in order])
    export(store, tmp_path / "out", "nifti")
    out = nib.load(tmp_path / "out" / "labels" / "ct.nii.gz")
    np.testing.assert_array_equal(out.affine, v.affine)
    np.testing.assert_array_equal(out.affine, nib.load(src).affine)
    assert out.shape == (24, 18, 7) and out.get_data_dtype() == np.uint8
    back = open_volume(tmp_path / "out" / "labels" / "ct.nii.gz")
    for z in range(7):
        np.testing.assert_array_equal(back.raw_slice(z), labels[z])
    idx = json.loads((tmp_path / "out" / "index.json").read_text())
    assert idx["volumes"][0]["missing_slices"] == []
    assert not (tmp_path / "out" / ".slices").exists()


def test_nifti_writer_missing_store_slice_is_void(tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    attrs = lambda z: {"volume": "v", "z": z, "affine": aff.tolist(), "shape": [3, 4, 5]}  # noqa: E731
    one = np.ones((4, 5), np.uint8)
    store = make_store(tmp_path / "s.zarr", [(one, attrs(0)), (one.copy(), attrs(2))])
    with pytest.warns(UserWarning, match="1 slice"):
        export(store, tmp_path / "out", "nifti")
    data = np.asarray(nib.load(tmp_path / "out" / "labels" / "v.nii.gz").dataobj)
    assert (data[:, :, 1] == 255).all() and (data[:, :, 0] == 1).all()


def test_nifti_non_invertible_affine(tmp_path):
    bad = tmp_path / "flat.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    aff = np.diag([1.0, 0.0, 1.0, 1.0])
    img.set_sform(aff, code=1)
    img.set_qform(None, code=0)
    nib.save(img, bad)
    with pytest.raises(FormatError) as e:
        open_volume(bad)
    _one_line(e, str(bad), "affine", "not invertible")


def test_dicom_missing_slice_detected(med, tmp_path):
    series = tmp_path / "s"
    shutil.copytree(med / "d" / "dicom" / "00000", series)
    (series / "IM00002.dcm").unlink()
    with pytest.raises(FormatError) as e:
        open_volume(series)
    _one_line(e, str(series), "ImagePositionPatient", "1 missing slice", "IM00001.dcm", "IM00003.dcm")


def test_dicom_instance_number_gap_detected(tmp_path):
    hu = np.zeros((3, 8, 8), np.int16)
    files = write_dicom_series(tmp_path / "s", hu, np.diag([-1.0, -1.0, 3.0, 1.0]))
    ds = pydicom.dcmread(files[2])
    ds.InstanceNumber = 5
    ds.save_as(files[2])
    with pytest.raises(FormatError) as e:
        open_volume(tmp_path / "s")
    _one_line(e, "InstanceNumber", "jumps from 2 to 5")


def test_dicom_without_preamble(med, tmp_path):
    series = tmp_path / "s"
    shutil.copytree(med / "d" / "dicom" / "00000", series)
    f = series / "IM00001.dcm"
    f.write_bytes(f.read_bytes()[132:])  # drop the 128-byte preamble and "DICM"
    with pytest.raises(FormatError) as e:
        open_volume(series)
    _one_line(e, str(f), "preamble")


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_dicom_bad_header(med, tmp_path):
    series = tmp_path / "s"
    shutil.copytree(med / "d" / "dicom" / "00000", series)
    f = series / "IM00003.dcm"
    raw = f.read_bytes()
    f.write_bytes(raw[:132] + b"\x02\x00\x10\x00UI\xff\x7f" + b"x" * 20)  # an element longer than the file
    with pytest.raises(FormatError) as e:
        open_volume(series)
    _one_line(e, str(f), "header")
    g = series / "IM00004.dcm"
    shutil.copy(med / "d" / "dicom" / "00000" / "IM00004.dcm", g)
    f.write_bytes(raw)
    ds = pydicom.dcmread(g)
    del ds.ImagePositionPatient
    ds.save_as(g)
    with pytest.raises(FormatError) as e:
        open_volume(series)
    _one_line(e, str(g), "ImagePositionPatient", "missing")
