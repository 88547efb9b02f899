"""NIfTI label volumes as ground truth: read one sample per slice, paired with the pre-labeling's slices,
the format contract on synthetic volumes, evaluation end to end, and same-named volumes in sub-folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")

from segpipe.errors import FormatError, UnsafePathError  # noqa: E402
from segpipe.execution.cluster import ClusterSpec  # noqa: E402
from segpipe.formats import detect_format, get_format  # noqa: E402
from segpipe.formats.derive import derive_class_map  # noqa: E402
from segpipe.pipeline.convert import Conversion, convert  # noqa: E402
from segpipe.pipeline.evaluate import EvaluateRequest, evaluate  # noqa: E402
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel, slice_id  # noqa: E402
from segpipe.pipeline.validate import validate_path  # noqa: E402
from segpipe.storage.manifest import ManifestEntry  # noqa: E402
from segpipe.synth.native import synth_native  # noqa: E402
from tests.modalities._store import export, make_store  # noqa: E402

DEPTH, N = 6, 2


@pytest.fixture(scope="module")
def med(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nii") / "med"
    synth_native("medical", root, n=N, seed=5, size=(32, 32), fmt="nifti", depth=DEPTH)
    return root


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, med) -> Path:
    """A random-weight U-Net whose categories are the ground truth's (ids 0..4)."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    meta = get_format("nifti").reader(med).meta
    torch.manual_seed(0)
    kw = {"base": 4, "depth": 2}
    cats = [{"index": i, "id": c.id, "name": c.name, "color": None, "isthing": False}
            for i, c in enumerate(meta.categories)]
    path = tmp_path_factory.mktemp("ck") / "tiny.ckpt"
    save_checkpoint(path, build_model("unet", len(cats), **kw),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                                   tile_size=[64, 64], tile_overlap=0.25, model_kwargs=kw))
    return path


def _read(path: Path) -> dict[str, tuple]:
    spec = get_format("nifti")
    reader = spec.reader(path)
    return {s.image.file_name: (s, spec.materialize(s, reader.meta), reader.meta) for s in reader.samples()}


def _named(m, meta) -> np.ndarray:
    cm, _ = derive_class_map(m, meta)
    names = {c.id: c.name for c in meta.categories}
    return np.array([names.get(int(v), "void" if v == m.void_value else f"?{v}") for v in cm.ravel()],
                    dtype=object).reshape(cm.shape)


def test_reader_streams_one_sample_per_slice(med):
    assert detect_format(med) == "nifti"
    reader = get_format("nifti").reader(med)
    assert len(reader) == N * DEPTH and not reader.problems
    assert [c.name for c in reader.meta.categories] == [
        line.split(":")[0] for line in (med / "labelmap.txt").read_text().splitlines() if not line.startswith("#")]
    got = _read(med)
    assert len(got) == N * DEPTH
    for v in range(N):
        name = f"{v:05d}.nii.gz"
        data = np.asarray(nib.load(med / "labels" / name).dataobj)  # (i, j, k) = (W, H, Z)
        entry = ManifestEntry(id=1, file=name, path=str(med / "volumes" / name), kind="volume", depth=DEPTH)
        for z in range(DEPTH):
            s, m, _ = got[f"{v:05d}_z{z:05d}.png"]  # the slice's image name
            assert s.image.id == slice_id(entry, z)  # the pre-labeling's image id of this slice
            assert s.image.attributes["file"] == f"{name}#z{z:05d}"  # and the file it records
            assert s.image_path is not None and s.image_path.startswith(str(med / "volumes" / name))
            assert (s.image.width, s.image.height) == (32, 32) and s.image.attributes["volume"] == f"{v:05d}"
            np.testing.assert_array_equal(m.class_map, data[:, :, z].T)


def test_nifti_format_contract(med, tmp_path):
    """The contract of tests/formats/test_contract.py, on volumes: write without loss, detect, validate,
    read back the same slices with pixel-identical label maps, nothing written outside the output."""
    fmt, problems = validate_path(med, "nifti")
    assert fmt == "nifti" and not [p for p in problems if p.severity == "error"], [str(p) for p in problems]
    outside_before = set(tmp_path.iterdir())
    dst = tmp_path / "out"
    rep = convert(Conversion(src=med, dst=dst, to="nifti"), ClusterSpec(workers=0))
    assert not rep["losses"]["totals"], rep["losses"]["totals"]
    assert set(tmp_path.iterdir()) - outside_before == {dst}, "wrote outside the output folder"
    assert detect_format(dst) == "nifti"
    _, problems = validate_path(dst, "nifti")
    assert not [p for p in problems if p.severity == "error"], [str(p) for p in problems]
    src, back = _read(med), _read(dst)
    assert sorted(back) == sorted(src)
    for name, (s0, m0, meta0) in src.items():
        s1, m1, meta1 = back[name]
        assert s1.image.id == s0.image.id and (s1.image.width, s1.image.height) == (s0.image.width, s0.image.height)
        assert np.array_equal(_named(m1, meta1), _named(m0, meta0)), name
    for v in range(N):
        a, b = nib.load(dst / "labels" / f"{v:05d}.nii.gz"), nib.load(med / "labels" / f"{v:05d}.nii.gz")
        np.testing.assert_array_equal(a.affine, b.affine)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def _one_line(e: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_label_volume_not_matching_its_image_is_one_line(med, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(med, root)
    lab = root / "labels" / "00001.nii.gz"
    img = nib.load(lab)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(data[:, :, :DEPTH - 1], img.affine), lab)  # one slice short
    with pytest.raises(FormatError) as e:
        get_format("nifti").reader(root)
    _one_line(e, str(lab), "shape", "volumes/00001.nii.gz", f"[{DEPTH - 1}, 32, 32]")
    moved = img.affine.copy()
    moved[0, 3] += 5.0
    nib.save(nib.Nifti1Image(data, moved), lab)
    with pytest.raises(FormatError) as e:
        get_format("nifti").reader(root)
    _one_line(e, str(lab), "affine", "volumes/00001.nii.gz")
    _, problems = validate_path(root, "nifti")
    assert [p.code for p in problems] == ["nifti.unreadable"]


def test_evaluate_pairs_every_slice_with_the_store(med, tiny_ckpt, tmp_path, cli):
    store = tmp_path / "med.zarr"
    rep = prelabel(PrelabelRequest(source=str(med / "volumes"), model=str(tiny_ckpt), out=store, threads=1,
                                   window="40,400"), ClusterSpec(workers=0))
    assert rep["images"]["done"] == N * DEPTH
    # the command of the review: `segpipe evaluate OUT OUT.zarr --task semantic`
    r = cli("evaluate", str(med), str(store), "--task", "semantic", "--workers", "0",
            "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["gt"]["format"] == "nifti" and report["pred"]["format"] == "segpipe_zarr"
    counts = report["images"]
    assert counts["evaluated"] == counts["gt"] == counts["pred"] == N * DEPTH
    assert counts["unmatched_gt"] == counts["unmatched_pred"] == counts["failed"] == 0
    assert 0.0 <= report["semantic"]["mean_iou"] <= 1.0
    # the ground truth against itself is perfect
    same = evaluate(EvaluateRequest(gt=med, pred=med, task="semantic"), ClusterSpec(workers=0))
    assert same["images"]["evaluated"] == N * DEPTH and same["images"]["unmatched_pred"] == 0
    assert same["semantic"]["mean_iou"] == pytest.approx(1.0)


def test_same_named_volumes_in_subfolders(med, tiny_ckpt, tmp_path):
    coll = tmp_path / "coll"
    for v, sub in enumerate(("p1", "p2")):
        (coll / sub).mkdir(parents=True)
        shutil.copy(med / "volumes" / f"{v:05d}.nii.gz", coll / sub / "ct.nii.gz")
    store = tmp_path / "c.zarr"
    rep = prelabel(PrelabelRequest(source=str(coll), model=str(tiny_ckpt), out=store, threads=1, window="40,400"),
                   ClusterSpec(workers=0))
    assert rep["items"]["volumes"] == 2 and rep["images"]["done"] == 2 * DEPTH
    dst = tmp_path / "nii"
    convert(Conversion(src=store, dst=dst, to="nifti", from_="segpipe_zarr"), ClusterSpec(workers=0))
    for sub in ("p1", "p2"):
        a, b = nib.load(dst / "labels" / sub / "ct.nii.gz"), nib.load(coll / sub / "ct.nii.gz")
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.affine, b.affine)  # each volume keeps its own affine
    assert not np.array_equal(nib.load(dst / "labels" / "p1" / "ct.nii.gz").affine,
                              nib.load(dst / "labels" / "p2" / "ct.nii.gz").affine)
    idx = json.loads((dst / "index.json").read_text())
    assert [(v["volume"], v["labels"], v["file"]) for v in idx["volumes"]] == [
        ("p1/ct", "labels/p1/ct.nii.gz", "p1/ct.nii.gz"), ("p2/ct", "labels/p2/ct.nii.gz", "p2/ct.nii.gz")]
    assert not (dst / ".slices").exists()
    # the export reads back as ground truth that pairs with the store slice by slice (and equals it)
    back = evaluate(EvaluateRequest(gt=dst, pred=store, task="semantic"), ClusterSpec(workers=0))
    assert back["images"]["evaluated"] == 2 * DEPTH and back["images"]["unmatched_pred"] == 0
    assert back["semantic"]["pixel_accuracy"] == pytest.approx(1.0)


def test_writer_never_writes_outside_labels(tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    one = np.ones((4, 5), np.uint8)

    def attrs(vid: str, z: int) -> dict:
        return {"volume": vid, "z": z, "affine": aff.tolist(), "shape": [1, 4, 5]}

    store = make_store(tmp_path / "s.zarr", [(one, attrs("a/b", 0)), (one.copy(), attrs("b", 0))])
    export(store, tmp_path / "ok", "nifti")
    assert (tmp_path / "ok" / "labels" / "a" / "b.nii.gz").is_file()
    assert (tmp_path / "ok" / "labels" / "b.nii.gz").is_file()
    bad = make_store(tmp_path / "bad.zarr", [(one, attrs("../../evil", 0))])
    with pytest.raises(UnsafePathError):
        export(bad, tmp_path / "out", "nifti")
    assert not list(tmp_path.rglob("evil*"))


def test_prelabel_a_nifti_dataset_root_pre_labels_its_image_volumes(med, tiny_ckpt, tmp_path):
    """Pre-labeling the synth root (labels/ + volumes/ + volumes.json) takes the image volumes it names,
    with the same slice ids as pre-labeling volumes/ itself, so it evaluates against that root."""
    store = tmp_path / "root.zarr"
    rep = prelabel(PrelabelRequest(source=str(med), model=str(tiny_ckpt), out=store, threads=1, window="40,400"),
                   ClusterSpec(workers=0))
    assert rep["items"]["volumes"] == N and rep["images"]["done"] == N * DEPTH
    entry = ManifestEntry(0, "00000.nii.gz", str(med / "volumes" / "00000.nii.gz"))
    from segpipe.storage.zarrstore import ZarrStore

    assert slice_id(entry, 0) in ZarrStore.open(store).image_ids()
    ev = evaluate(EvaluateRequest(gt=med, pred=store, task="semantic"), ClusterSpec(workers=0))
    assert ev["images"]["evaluated"] == N * DEPTH and ev["images"]["unmatched_gt"] == 0


def test_ground_truth_to_coco_renders_slice_images(med, tmp_path):
    """COCO per slice from NIfTI ground truth: each slice becomes a grey PNG in volumes.json's window."""
    from PIL import Image

    from segpipe.storage.volume import open_volume

    rep = convert(Conversion(src=med, dst=tmp_path / "coco", to="coco", copy_images="copy"), ClusterSpec(workers=0))
    assert rep["images"]["converted"] == N * DEPTH and rep["images"]["missing_files"] == 0
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())  # no split: train
    assert len(coco["images"]) == N * DEPTH
    window = tuple(json.loads((med / "volumes.json").read_text())["window"])
    vol = open_volume(med / "volumes" / "00001.nii.gz", window=window)
    with Image.open(tmp_path / "coco" / "images" / "train" / "00001_z00003.png") as im:
        np.testing.assert_array_equal(np.asarray(im), vol.slice(3)[..., 0])
