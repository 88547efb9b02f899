"""Pre-labels for annotators: --tta and --ensemble on real Dask workers, the doubt each worker stores, and
the Label Studio export's score and review_order.csv built from it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from segpipe.core.doubt import image_doubt
from segpipe.execution.cluster import ClusterSpec
from segpipe.kernels.prelabel.doubt import MAX_REGIONS, instance_doubt, record_doubt, semantic_doubt, speck_pixels
from segpipe.models.ref import ModelRef
from segpipe.models.tta import TTASpec, averaged_predictor
from segpipe.pipeline.prelabel import PrelabelRequest, fsck, prelabel
from segpipe.storage.ledger import Ledger
from segpipe.storage.zarrstore import ZarrStore, quantise_probs
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """Another random-weight U-Net of the same classes (another seed)."""
    import torch

    from segpipe.models.checkpoint import load_checkpoint, save_checkpoint
    from segpipe.models.registry import build_model

    meta = load_checkpoint(checkpoint).meta
    torch.manual_seed(7)
    model = build_model("unet", meta.num_classes, **meta.model_kwargs)
    path = tmp_path_factory.mktemp("ckpt2") / "unet2.ckpt"
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def tta_store(tmp_path_factory: pytest.TempPathFactory, collection: Path, checkpoint: Path,
              second_checkpoint: Path) -> Path:
    """4 images pre-labeled with --tta flip and an ensemble of two models, on two Dask worker processes."""
    out = tmp_path_factory.mktemp("tta") / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, limit=4,
                                   threads=1, tta="flip", ensemble=(str(second_checkpoint),)),
                   ClusterSpec(workers=2))
    assert rep["images"]["done"] == 4 and not rep["failed"], rep["failed"]
    return out


def _receipts(store: Path) -> dict[int, dict]:
    ledger = Ledger(store / ".segpipe")
    recs = [ledger.read(k) for k in ledger.keys()]
    return {int(r["image_id"]): r for r in recs}


def test_workers_store_the_averaged_probabilities(tta_store: Path, collection: Path, checkpoint: Path,
                                                  second_checkpoint: Path) -> None:
    """What the workers stored is what the averaged predictor gives in this process."""
    store = ZarrStore(tta_store)
    config = store.attrs()["config"]
    assert config["tta"] == {"flips": ["", "h", "v", "hv"], "scales": [1.0]}
    assert config["ensemble"] == [ModelRef(str(second_checkpoint)).fingerprint()]
    pred = averaged_predictor([ModelRef(str(checkpoint)), ModelRef(str(second_checkpoint))],
                              TTASpec(flips=True), device="cpu", threads=1, batch_size=1)
    plain = ModelRef(str(checkpoint)).predictor(device="cpu", threads=1, batch_size=1)
    from PIL import Image

    differs = 0
    for image_id, rec in _receipts(tta_store).items():
        image = np.asarray(Image.open(collection / "images" / rec["file"]).convert("RGB"))
        want = pred.predict_semantic(image)
        got_probs = store.read(image_id, "probs")
        assert np.abs(got_probs.astype(int) - quantise_probs(want.probs.astype(np.float32)).astype(int)).max() <= 1
        assert (store.read(image_id, "labels") == want.labels).mean() > 0.999
        differs += int(np.abs(plain.predict_semantic(image).probs.astype(np.float32)
                              - want.probs.astype(np.float32)).max() > 1e-2)
    assert differs == 4  # the averaging changed every image's probabilities
    assert fsck(tta_store)["ok"] == 4


def test_each_receipt_holds_the_doubt_of_its_stored_probabilities(tta_store: Path) -> None:
    store = ZarrStore(tta_store)
    for image_id, rec in _receipts(tta_store).items():
        d = rec["doubt"]
        probs, labels = store.read(image_id, "probs"), store.read(image_id, "labels")
        ref = image_doubt(probs, low_margin=0.2).to_dict()
        assert d["kind"] == "semantic"
        assert d["doubt"] == d["entropy"] == ref["entropy"]
        assert (d["margin"], d["low_margin"], d["pixels"]) == (ref["margin"], ref["low_margin"], ref["pixels"])
        # regions: scipy's 8-connected components of each class of the stored label map
        total = sum(ndimage.label(labels == c, structure=np.ones((3, 3)))[1] for c in np.unique(labels))
        assert d["regions_total"] == total
        assert len(d["regions"]) == min(total, MAX_REGIONS)
        # most doubtful first, specks (a few pixels) after every larger region
        speck = speck_pixels(labels.size)
        keys = [(r["area"] < speck, -r["doubt"]) for r in d["regions"]]
        assert keys == sorted(keys)
        r = d["regions"][0]
        x, y, w, h = r["bbox"]
        inside = labels[y : y + h, x : x + w] == r["category_id"]
        assert r["area"] <= inside.sum()


def test_label_studio_export_scores_tasks_and_writes_the_review_order(tta_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ls"
    r = run_cli("export", str(tta_store), str(out), "--to", "labelstudio", "-w", "0")
    assert r.returncode == 0, r.stderr
    doubt = {rec["file"]: rec["doubt"]["doubt"] for rec in _receipts(tta_store).values()}
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == 4
    for t in tasks:
        pred = t["predictions"][0]
        assert pred["score"] == round(1.0 - doubt[t["data"]["file_name"]], 6)
        assert all(0.0 <= reg["score"] <= 1.0 for reg in pred["result"])  # class regions keep their confidence
    with (out / "review_order.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(x["rank"]) for x in rows] == [1, 2, 3, 4]
    assert {x["file_name"] for x in rows} == set(doubt)
    got = [float(x["doubt"]) for x in rows]
    assert got == sorted(doubt.values(), reverse=True)
    assert all(float(x["score"]) == round(1 - float(x["doubt"]), 6) for x in rows)
    assert all(x["region_category"] and len(x["region_bbox"].split()) == 4 for x in rows)


def test_record_doubt_keeps_it_in_a_group_of_its_own(tmp_path: Path) -> None:
    """An image with a group of its own gets the record in the group's attributes too (real zarr)."""
    rng = np.random.default_rng(0)
    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    logits = rng.normal(size=(3, 24, 32)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(0)
    q = quantise_probs(p)
    labels = p.argmax(0).astype(np.uint8)
    g.create_array("probs", data=q)
    g.create_array("labels", data=labels)
    rec = record_doubt("semantic", g)
    assert rec == semantic_doubt(labels, q)
    assert dict(zarr.open_group(tmp_path / "g.zarr", mode="r").attrs)["doubt"] == rec
    assert rec["doubt"] == image_doubt(q).to_dict()["entropy"]
    assert sum(r["area"] for r in rec["regions"]) <= 24 * 32

    ig = zarr.open_group(tmp_path / "i.zarr", mode="w").require_group("instances")
    ig.create_array("scores", data=np.array([0.9, 0.4, 0.7], dtype=np.float32))
    rec = record_doubt("instance", zarr.open_group(tmp_path / "i.zarr", mode="a"))
    assert rec is not None and rec["doubt"] == pytest.approx(0.6) and rec["instances"] == 3
    assert rec["doubt_mean"] == pytest.approx(1 - (0.9 + 0.4 + 0.7) / 3, abs=1e-6)
    assert instance_doubt(np.zeros(0))["doubt"] is None
    assert record_doubt("landmarks", g) is None


def test_a_pipeline_file_resolves_ensemble_members_like_the_model(tmp_path: Path) -> None:
    """``ensemble:`` in a pipeline file: files relative to the work folder, ``ARCH:WEIGHTS`` as written."""
    from segpipe.pipeline.run import resolve

    (tmp_path / "b.ckpt").write_bytes(b"x")
    req = PrelabelRequest.model_validate({"source": "imgs", "model": "a.ckpt", "out": "o.zarr",
                                          "ensemble": ["b.ckpt", "deeplabv3_resnet50:DEFAULT"], "tta": "flip+scale",
                                          "tta_scales": [0.5, 1]})
    got = resolve(req, tmp_path, "prelabel")
    assert got.ensemble == (str(tmp_path / "b.ckpt"), "deeplabv3_resnet50:DEFAULT")
    assert got.tta_scales == (0.5, 1.0)
    assert PrelabelRequest.model_validate({"source": "i", "model": "m", "out": "o", "ensemble": "b,c"}).ensemble == \
        ("b", "c")


def test_a_large_image_is_measured_band_by_band(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above REGION_PIXELS the means come from row bands of the stored zarr array (no regions)."""
    import segpipe.kernels.prelabel.doubt as kd
    from segpipe.core.doubt import doubt_maps, entropy_map, margin_map

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 50, 20)).astype(np.float32) * 2
    q = quantise_probs(np.exp(logits) / np.exp(logits).sum(0))
    ent, mar, valid = doubt_maps(q)
    assert np.array_equal(ent, entropy_map(q)) and np.array_equal(mar, margin_map(q)) and valid.all()
    g = zarr.open_group(tmp_path / "big.zarr", mode="w")
    g.create_array("probs", data=q, chunks=(4, 16, 20))
    g.create_array("labels", data=q.argmax(0).astype(np.uint8))
    monkeypatch.setattr(kd, "BAND_ROWS", 16)
    monkeypatch.setattr(kd, "REGION_PIXELS", 500)
    rec = record_doubt("semantic", g)
    ref = image_doubt(q).to_dict()
    assert rec is not None and rec["regions"] == [] and rec["pixels"] == ref["pixels"] == 1000
    for key in ("entropy", "margin", "low_margin"):
        assert rec[key] == pytest.approx(ref[key], abs=2e-6)


def test_a_doubtful_speck_ranks_after_a_doubtful_region() -> None:
    """A 1-pixel island (nearly always doubtful) is not where review starts: the larger doubtful region is."""
    labels = np.zeros((128, 128), np.uint8)
    probs = np.zeros((2, 128, 128), np.uint8)
    probs[0] = 250  # background: sure
    probs[1] = 5
    labels[20:40, 20:40] = 1  # a 400-pixel region of class 1, fairly unsure (0.7 / 0.3)
    probs[1, 20:40, 20:40], probs[0, 20:40, 20:40] = 178, 77
    labels[100, 100] = 1  # a 1-pixel speck of class 1, as unsure as can be (0.5 / 0.5)
    probs[:, 100, 100] = 127
    d = semantic_doubt(labels, probs)
    first, second = d["regions"][0], d["regions"][1]
    assert (first["category_id"], first["area"], first["bbox"]) == (1, 400, [20, 20, 20, 20])
    speck = next(r for r in d["regions"] if r["area"] == 1)
    assert speck["doubt"] > first["doubt"]  # the speck is the more doubtful, yet ranks last
    assert d["regions"][-1] is speck and second["area"] > 1
    assert speck_pixels(labels.size) == 16  # 0.1% of 16,384 pixels
