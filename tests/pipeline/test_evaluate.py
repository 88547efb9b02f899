"""``segpipe evaluate`` end to end: real files, the real CLI, real pycocotools and (once) real Dask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from segpipe.core.labelmap import voc_colormap
from segpipe.errors import InputError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.evaluate import EvaluateRequest, ImageSelection, Pairing, evaluate, label_indices
from segpipe.storage.images import read_label_map, read_palette, write_label_png
from segpipe.storage.zarrstore import ZarrStore
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"
SCHEMA = json.loads((REPO / "schemas" / "evaluation_report.schema.json").read_text())


def _testdata() -> Path:
    if not (TESTDATA / "expected.json").exists():
        pytest.skip(f"peer test assets not found at {TESTDATA}")
    return TESTDATA


def _ok(proc, code: int = 0):  # type: ignore[no-untyped-def]
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


# ----------------------------------------------------------------------------------- fixtures


def _write_masks(src: Path, dst: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Copies a mask directory, passing each mask through ``change(stem, labels) -> labels | None``.

    The COCO file is left behind, so the copy is detected as a plain mask directory.
    """
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("annotations.json"))
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[:] = voc_colormap(256)
    for m in sorted((dst / "masks").glob("*.png")):
        old = read_palette(m)
        assert old is not None
        pal[: len(old)] = old
        lab = change(m.stem, read_label_map(m).copy())
        if lab is None:
            m.unlink()
        else:
            write_label_png(m, lab.astype(np.uint8), pal)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from segpipe.synth import synth

    root = tmp_path_factory.mktemp("eval")
    synth("streetview", root / "sv", n=6, seed=0, size=(64, 128))

    def with_void(stem: str, lab: np.ndarray) -> np.ndarray:
        lab[:, :3] = 255  # a void border: ignored whatever is predicted there
        return lab

    _write_masks(root / "sv", root / "gt", with_void)
    rng = np.random.default_rng(0)

    def perturb(stem: str, lab: np.ndarray) -> np.ndarray:
        frac = 0.6 if stem == "00003" else 0.1  # image 4 (id 4) is by far the worst
        noise = rng.random(lab.shape) < frac
        lab[noise] = rng.integers(0, 8, size=int(noise.sum()))
        lab[:, :3] = rng.integers(0, 8, size=(lab.shape[0], 3))  # predictions on void pixels
        return lab

    _write_masks(root / "sv", root / "noisy", perturb)
    _ok(run_cli("-q", "convert", str(root / "gt"), str(root / "voc"), "--from", "maskdir", "--to", "voc",
                "--workers", "0"))
    return {"root": root, "sv": root / "sv", "gt": root / "gt", "noisy": root / "noisy", "voc": root / "voc"}


def _reference(gt_dir: Path, pred_dir: Path, n_classes: int = 8) -> dict[str, object]:
    """Straightforward numpy: one confusion matrix over all valid pixels, FCN formulas."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    per_image = {}
    for k, g in enumerate(sorted((gt_dir / "masks").glob("*.png")), start=1):
        gt = read_label_map(g).astype(np.int64)
        pr = read_label_map(pred_dir / "masks" / g.name).astype(np.int64)
        valid = gt != 255
        img = np.bincount(gt[valid] * n_classes + pr[valid], minlength=n_classes**2).reshape(n_classes, n_classes)
        cm += img
        inter = np.diag(img)
        union = img.sum(0) + img.sum(1) - inter
        per_image[k] = float(np.mean(inter[union > 0] / union[union > 0]))
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return {
        "pixel_accuracy": inter.sum() / cm.sum(),
        "mean_iou": float(np.nanmean(iou)),
        "iou": iou,
        "confusion": cm,
        "per_image": per_image,
    }


# ----------------------------------------------------------------------------------- COCO AP


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_cocoapi_fake_results_reproduce_pycocotools(iou_type, tmp_path):
    td = _testdata()
    exp = json.loads((td / "expected.json").read_text())["cocoapi_fake_results"]
    out = tmp_path / "r.json"
    proc = run_cli(
        "-q", "evaluate", str(td / exp["gt"]), str(td / exp[iou_type]["results"]), "--task", "instance",
        "--iou-types", iou_type, "--img-ids", "first:100", "--shards", "3", "--workers", "0", "--json", str(out),
    )
    _ok(proc)
    assert "AP50" in proc.stdout  # the headline table
    rep = json.loads(out.read_text())
    jsonschema.validate(rep, SCHEMA)
    sec = rep["instance"][iou_type]
    assert sec["stats"] == pytest.approx(exp[iou_type]["peer_documented_full"]["stats"], abs=1e-12)
    assert sec["AP"] == sec["stats"][0] and sec["ARl"] == sec["stats"][11]
    assert rep["images"]["gt"] == 100 and len(sec["per_class"]) == 80


def test_default_iou_types_follow_the_predictions(tmp_path):
    td = _testdata()
    exp = json.loads((td / "expected.json").read_text())["cocoapi_fake_results"]
    rep = evaluate(
        EvaluateRequest(gt=td / exp["gt"], pred=td / exp["bbox"]["results"], task="instance", img_ids="first:5"),
        ClusterSpec(workers=0),
    )
    assert list(rep["instance"]) == ["bbox"]  # box results: no masks to evaluate
    assert rep["images"]["gt"] == 5


def test_coco_dataset_as_its_own_prediction_is_perfect(data):
    rep = evaluate(
        EvaluateRequest(gt=data["sv"] / "annotations.json", pred=data["sv"] / "annotations.json", task="instance"),
        ClusterSpec(workers=0),
    )
    assert set(rep["instance"]) == {"segm", "bbox"}
    for sec in rep["instance"].values():
        assert sec["AP"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- semantic


def test_semantic_against_itself_and_a_voc_copy(data, tmp_path):
    for pred, fmt in ((data["gt"], "maskdir"), (data["voc"], "auto")):
        out = tmp_path / f"{pred.name}.json"
        _ok(run_cli("-q", "evaluate", str(data["gt"]), str(pred), "--gt-format", "maskdir", "--pred-format", fmt,
                    "--workers", "0", "--json", str(out)))
        rep = json.loads(out.read_text())
        sem = rep["semantic"]
        assert sem["mean_iou"] == 1.0 and sem["pixel_accuracy"] == 1.0, pred
        assert rep["images"]["evaluated"] == 6 and not rep["problems"]
        names = [c["name"] for c in sem["per_class"]]
        assert names[:3] == ["background", "sky", "road"] and [c["id"] for c in sem["per_class"]] == list(range(8))


def test_semantic_perturbed_matches_numpy_reference_on_dask(data, tmp_path):
    ref = _reference(data["gt"], data["noisy"])
    req = EvaluateRequest(gt=data["gt"], pred=data["noisy"], task="semantic", shards=3, worst=2,
                          report_dir=tmp_path / "rep")
    rep = evaluate(req, ClusterSpec(workers=2))  # real Dask worker processes, 3 shards merged
    sem = rep["semantic"]
    np.testing.assert_array_equal(np.array(sem["confusion"]), ref["confusion"])
    assert sem["mean_iou"] == pytest.approx(ref["mean_iou"], abs=1e-12)
    assert sem["pixel_accuracy"] == pytest.approx(ref["pixel_accuracy"], abs=1e-12)
    assert [c["iou"] for c in sem["per_class"]] == pytest.approx(list(ref["iou"]), abs=1e-12)
    # the worst images, with their per-image mIoU, from the worst up
    per_image = ref["per_image"]
    assert isinstance(per_image, dict)
    worst = sorted(per_image, key=per_image.get)[:2]
    assert [w["image"][0] for w in rep["worst"]["semantic"]] == worst == [4, sorted(per_image, key=per_image.get)[1]]
    assert rep["worst"]["semantic"][0]["score"] == pytest.approx(per_image[4], abs=1e-12)
    # one pass in this process gives the same matrix
    one = evaluate(EvaluateRequest(gt=data["gt"], pred=data["noisy"], shards=1), ClusterSpec(workers=0))
    assert one["semantic"]["confusion"] == sem["confusion"]
    # the report folder
    d = tmp_path / "rep"
    for name in ("report.json", "summary.md", "per_class.csv", "confusion.png", "per_class.png"):
        assert (d / name).is_file(), name
    saved = json.loads((d / "report.json").read_text())
    jsonschema.validate(saved, SCHEMA)
    assert len(list((d / "worst").glob("*.png"))) == 2
    assert all((d / w["overlay"]).is_file() for w in saved["worst"]["semantic"])


def test_missing_prediction_is_a_problem_exit_1(data, tmp_path):
    pred = tmp_path / "partial"
    _write_masks(data["gt"], pred, lambda stem, lab: None if stem == "00002" else lab)
    for f in (pred / "images").glob("00002.*"):
        f.unlink()  # the image is gone from the predictions altogether
    out = tmp_path / "r.json"
    proc = _ok(run_cli("-q", "evaluate", str(data["gt"]), str(pred), "--gt-format", "maskdir", "--workers", "0",
                       "--json", str(out)), 1)
    assert "no prediction" in proc.stderr
    rep = json.loads(out.read_text())
    assert rep["images"] == {"gt": 6, "pred": 5, "evaluated": 5, "failed": 0, "unmatched_gt": 1, "unmatched_pred": 0}
    assert rep["semantic"]["mean_iou"] == 1.0


def test_zarr_store_as_prediction(data, tmp_path):
    from segpipe.formats import get_format

    spec = get_format("maskdir")
    reader = spec.reader(data["sv"])
    store = ZarrStore.create(
        tmp_path / "pred.zarr",
        {"task": "semantic", "categories": [{"id": c.id, "name": c.name} for c in reader.meta.categories]},
    )
    for s in reader.samples():
        g = store.image_group(s.image.id, {"file": s.image.file_name, "width": s.image.width,
                                           "height": s.image.height})
        ZarrStore.write_array(g, "labels", spec.materialize(s, reader.meta).class_map)
    extra = store.image_group(99, {"file": "extra.png", "width": 128, "height": 64})
    ZarrStore.write_array(extra, "labels", np.zeros((64, 128), dtype=np.uint8))
    out = tmp_path / "r.json"
    _ok(run_cli("-q", "evaluate", str(data["gt"]), str(tmp_path / "pred.zarr"), "--gt-format", "maskdir",
                "--workers", "0", "--json", str(out)))
    rep = json.loads(out.read_text())
    assert rep["pred"]["format"] == "segpipe_zarr"
    assert rep["semantic"]["mean_iou"] == 1.0
    assert rep["images"]["unmatched_pred"] == 1 and rep["problems"][0]["severity"] == "warning"


def test_label_indices_refuses_unknown_values():
    gt = np.array([[0, 1], [255, 2]], dtype=np.uint8)
    g, p = label_indices(gt, 255, np.array([[0, 1], [9, 2]], dtype=np.uint8), [0, 1, 2], None)
    assert g.tolist() == [[0, 1], [3, 2]] and p.tolist() == [[0, 1], [0, 2]]  # 9 sits on void: fine
    with pytest.raises(InputError, match=r"prediction values \[9\]"):
        label_indices(gt, 255, np.array([[9, 1], [0, 2]], dtype=np.uint8), [0, 1, 2], None)
    with pytest.raises(InputError, match=r"ground-truth values \[2\]"):
        label_indices(gt, 255, gt, [0, 1], None)
    g, _ = label_indices(gt, 255, gt, [0, 1], ignore_index=2)
    assert g.tolist() == [[0, 1], [2, 2]]


def test_pairing_by_id_then_stem_and_selection():
    from segpipe.core.records import ImageInfo, Sample

    preds = [Sample(ImageInfo(i, name, 4, 4)) for i, name in ((1, "b.png"), (7, "a.png"), (3, "c.png"))]
    pairing = Pairing(preds)
    # id 1 exists but names b: the stem a wins; c is found by its stem
    assert pairing.match(ImageInfo(1, "dir/a.jpg", 4, 4)).image.id == 7  # type: ignore[union-attr]
    assert pairing.match(ImageInfo(5, "c.jpg", 4, 4)).image.id == 3  # type: ignore[union-attr]
    assert pairing.match(ImageInfo(9, "zzz.jpg", 4, 4)) is None
    assert pairing.match(ImageInfo(1, "zzz.jpg", 4, 4)) is None  # same id, other file: not a pair
    assert pairing.match(ImageInfo(1, "", 4, 4)).image.id == 1  # type: ignore[union-attr]  # no name: by id
    assert pairing.unmatched() == []
    assert ImageSelection("first:2").select([5, 3, 9]) == [3, 5]
    assert ImageSelection("9,3").select([5, 3, 9]) == [3, 9]


# ----------------------------------------------------------------------------------- panoptic


def test_panoptic_sample_against_itself(tmp_path):
    td = _testdata()
    js = td / "panopticapi" / "sample_data" / "panoptic_examples.json"
    _ok(run_cli("-q", "evaluate", str(js), str(js), "--task", "panoptic", "--workers", "0",
                "--report-dir", str(tmp_path / "rep")))
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    jsonschema.validate(rep, SCHEMA)
    assert rep["panoptic"]["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 8}
    assert rep["panoptic"]["things"]["n"] == 4 and rep["panoptic"]["stuff"]["n"] == 4
    assert len(list((tmp_path / "rep" / "worst").glob("panoptic_*.png"))) == 2


def test_panoptic_store_prediction_materialized_on_workers(tmp_path):
    """A store of panoptic predictions goes through the reader → worker path (not the JSON one)."""
    from segpipe.formats import get_format

    td = _testdata()
    js = td / "panopticapi" / "sample_data" / "panoptic_examples.json"
    spec = get_format("coco_panoptic")
    reader = spec.reader(js)
    cats = [{"id": c.id, "name": c.name, "isthing": c.isthing} for c in reader.meta.categories]
    store = ZarrStore.create(tmp_path / "pan.zarr", {"task": "panoptic", "categories": cats})
    for s in reader.samples():
        ids, segs = spec.materialize(s, reader.meta).panoptic
        g = store.image_group(s.image.id, {"file": s.image.file_name, "width": s.image.width,
                                           "height": s.image.height})
        g.attrs["segments"] = [{"id": x.id, "category_id": x.category_id, "iscrowd": x.iscrowd} for x in segs]
        ZarrStore.write_array(g, "panoptic", ids.astype(np.int32))
    rep = evaluate(EvaluateRequest(gt=js, pred=tmp_path / "pan.zarr", task="panoptic"), ClusterSpec(workers=0))
    assert rep["pred"]["format"] == "segpipe_zarr"
    assert rep["panoptic"]["all"]["pq"] == pytest.approx(1.0)
    assert rep["images"]["evaluated"] == 2
    jsonschema.validate(rep, SCHEMA)


# ----------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_one_line_exit_2(data, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    gt = str(data["sv"] / "annotations.json")
    for args in (
        (str(tmp_path / "missing.json"), gt),
        (str(bad), gt, "--gt-format", "coco", "--task", "instance"),
        (gt, str(results), "--task", "instance"),
        (gt, gt, "--task", "nonsense"),
        (gt, gt, "--img-ids", "first:x"),
    ):
        proc = run_cli("-q", "evaluate", *args, "--workers", "0")
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_keypoints_task_needs_sigmas_for_other_skeletons(tmp_path):
    from segpipe.synth import synth

    synth("landmarks", tmp_path / "lm", n=3, seed=0, size=(64, 64))
    ann = str(tmp_path / "lm" / "annotations.json")
    proc = run_cli("-q", "evaluate", ann, ann, "--task", "keypoints", "--workers", "0")
    assert proc.returncode == 2 and "--kpt-sigmas" in proc.stderr
    out = tmp_path / "kp.json"
    _ok(run_cli("-q", "evaluate", ann, ann, "--task", "keypoints", "--kpt-sigmas", ".05,.05,.05,.05",
                "--workers", "0", "--json", str(out)))
    rep = json.loads(out.read_text())
    jsonschema.validate(rep, SCHEMA)
    assert list(rep["instance"]) == ["keypoints"] and rep["instance"]["keypoints"]["AP"] == pytest.approx(1.0)


def test_keypoints_from_a_landmark_store_match_pycocotools(tmp_path):
    """A landmark model's store is evaluated as COCO keypoint results, exactly as pycocotools does."""
    import torch
    import zarr
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
    from segpipe.synth import synth

    synth("landmarks", tmp_path / "lm", n=4, seed=1, size=(64, 64))
    ann = tmp_path / "lm" / "annotations.json"
    gt = json.loads(ann.read_text())
    kcat = next(c for c in gt["categories"] if c.get("keypoints"))
    torch.manual_seed(0)
    kw = {"channels": 16, "num_stacks": 1}
    ckpt = tmp_path / "hg.ckpt"
    save_checkpoint(ckpt, build_model("hourglass", len(kcat["keypoints"]), **kw),
                    CheckpointMeta(arch="hourglass", task="landmarks", num_classes=len(kcat["keypoints"]),
                                   categories=gt["categories"], tile_size=[64, 64], tile_overlap=0.25,
                                   model_kwargs=kw, keypoints=list(kcat["keypoints"])))
    store = tmp_path / "lm.zarr"
    prelabel(PrelabelRequest(source=str(tmp_path / "lm"), model=str(ckpt), out=store, device="cpu"),
             ClusterSpec(workers=0))
    # A random model finds nothing: give the store near-miss landmarks (the ground truth plus noise, one
    # row per object, then one spurious row) so that AP is neither 0 nor 1.
    s = ZarrStore.open(store)
    rng = np.random.default_rng(0)
    for image_id in s.image_ids():
        rows = [np.asarray(a["keypoints"], np.float32).reshape(-1, 3) for a in gt["annotations"]
                if a["image_id"] == image_id]
        rows = [np.concatenate([r[:, :2] + rng.normal(0, 0.7, (len(r), 2)), rng.random((len(r), 1))], 1)
                for r in rows] + [rng.random((len(kcat["keypoints"]), 3)) * 64]
        grp = zarr.open_group(str(store / "images" / str(image_id)), mode="r+")
        digest = ZarrStore.write_array(grp, "keypoints", np.stack(rows).astype(np.float32))
        for p in (store / ".segpipe" / "ledger").glob("*.json"):  # reads verify receipts: vouch for the new rows
            rec = json.loads(p.read_text())
            if rec["image_id"] == image_id:
                p.write_text(json.dumps({**rec, "outputs": {**rec["outputs"], "keypoints": digest}}))
    sigmas = (0.1, 0.1, 0.1, 0.1)
    rep = evaluate(EvaluateRequest(gt=ann, pred=store, task="keypoints", kpt_sigmas=sigmas),
                   ClusterSpec(workers=0))
    # The same detections, built by hand from the store's arrays, through pycocotools.
    dts = []
    for image_id in s.image_ids():
        for row in s.read(image_id, "keypoints").astype(np.float64):
            flat = np.stack([row[:, 0], row[:, 1], np.full(len(row), 2.0)], 1).ravel().tolist()
            x0, y0 = row[:, 0].min(), row[:, 1].min()
            dts.append({"image_id": image_id, "category_id": kcat["id"], "keypoints": flat,
                        "score": float(row[:, 2].mean()),
                        "bbox": [x0, y0, row[:, 0].max() - x0, row[:, 1].max() - y0]})
    assert dts
    coco = COCO(str(ann))
    ev = COCOeval(coco, coco.loadRes(dts), "keypoints")
    ev.params.kpt_oks_sigmas = np.array(sigmas)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.05 < ev.stats[0] < 0.95
    assert rep["instance"]["keypoints"]["AP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert rep["instance"]["keypoints"]["AR"] == pytest.approx(ev.stats[5], abs=1e-12)
