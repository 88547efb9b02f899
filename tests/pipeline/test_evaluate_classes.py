"""``segpipe evaluate`` with two flat folders of label PNGs and classes the two sides name differently.

Every figure is checked against an independent computation: a numpy confusion matrix over the same
files (and torchmetrics' ``MulticlassJaccardIndex`` where it is installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.class_match import match_classes
from segpipe.pipeline.evaluate import EvaluateRequest, evaluate
from segpipe.storage.images import write_label_png
from tests.conftest import run_cli

H, W = 24, 32
GT_NAMES = ["background", "road", "car", "sky"]


def _ok(proc, code: int = 0):  # type: ignore[no-untyped-def]
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


def _png(path: Path, lab: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(path, lab.astype(np.uint8), None)


def _labelmap(folder: Path, names: list[str]) -> None:
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{i},{i},{i}::" for i, n in enumerate(names)]
    (folder / "labelmap.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _maps(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lab = np.zeros((H, W), np.uint8)
        lab[: H // 3] = 3  # sky
        lab[H // 2 :] = 1  # road
        lab[H // 2 : H - 4, 5:12] = 2  # a car
        lab[rng.random((H, W)) < 0.05] = 255  # void specks
        out.append(lab)
    return out


def _perturb(lab: np.ndarray, seed: int, values: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.where(lab == 255, rng.integers(0, values, lab.shape), lab)
    noise = rng.random(lab.shape) < 0.2
    p[noise] = rng.integers(0, values, int(noise.sum()))
    return p.astype(np.uint8)


def _confusion(pairs: list[tuple[np.ndarray, np.ndarray]], c: int) -> np.ndarray:
    """Independent: rows ground truth, columns prediction, void (255) left out."""
    mat = np.zeros((c, c), np.int64)
    for g, p in pairs:
        keep = g != 255
        mat += np.bincount(g[keep].astype(np.int64) * c + p[keep], minlength=c * c).reshape(c, c)
    return mat


def _miou(mat: np.ndarray) -> float:
    tp = np.diag(mat).astype(float)
    union = mat.sum(0) + mat.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present]))


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> dict[str, object]:
    """gt/{a,b,c,d}.png and pred/{a,b,c,e}.png: d has no prediction, e no ground truth."""
    root = tmp_path_factory.mktemp("labelpngs")
    gts = dict(zip("abcd", _maps(0, 4)))
    preds = {s: _perturb(gts[s], k) for k, s in enumerate("abc")}
    preds["e"] = _perturb(gts["a"], 9)
    for s, lab in gts.items():
        _png(root / "gt" / f"{s}.png", lab)
    for s, lab in preds.items():
        _png(root / "pred" / f"{s}.png", lab)
    return {"root": root, "gt": gts, "pred": preds}


def test_flat_label_png_folders_pair_by_stem(dumps, tmp_path):
    root = dumps["root"]
    gts, preds = dumps["gt"], dumps["pred"]
    out = tmp_path / "r.json"
    proc = _ok(run_cli("evaluate", str(root / "gt"), str(root / "pred"), "-w", "0", "--json", str(out)), 1)
    rep = json.loads(out.read_text())
    assert rep["gt"]["format"] == rep["pred"]["format"] == "labelpngs"
    assert rep["images"] == {"gt": 4, "pred": 4, "evaluated": 3, "failed": 0, "unmatched_gt": 1,
                             "unmatched_pred": 1}
    codes = {(p["code"], p["file"]) for p in rep["problems"]}
    assert ("eval.no_prediction", "d.png") in codes and ("eval.no_ground_truth", "e.png") in codes
    assert "d.png" in proc.stderr and "e.png" in proc.stderr
    mat = _confusion([(gts[s], preds[s]) for s in "abc"], 4)
    assert rep["confusion"] == mat.tolist()
    assert rep["mean_iou"] == pytest.approx(_miou(mat), abs=1e-12)
    assert [c["name"] for c in rep["per_class"]] == ["class_0", "class_1", "class_2", "class_3"]
    assert rep["classes"]["warnings"] == []  # made-up names are not compared


def test_categories_map_names_the_classes(dumps, tmp_path):
    root = dumps["root"]
    cats = tmp_path / "cats.yaml"
    cats.write_text("0: background\n1: road\n2: car\n3: sky\n", encoding="utf-8")
    out = tmp_path / "r.json"
    _ok(run_cli("evaluate", str(root / "gt"), str(root / "pred"), "-w", "0", "--categories", str(cats),
                "--json", str(out)), 1)
    rep = json.loads(out.read_text())
    assert [c["name"] for c in rep["per_class"]] == GT_NAMES
    proc = _ok(run_cli("evaluate", str(root / "gt"), str(root / "pred"), "-w", "0", "--categories",
                       str(tmp_path / "missing.yaml")), 2)
    assert "missing.yaml" in proc.stderr


def test_explicit_format_and_torchmetrics_agree(dumps):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    root = dumps["root"]
    rep = evaluate(EvaluateRequest.build(root / "gt", root / "pred", gt_format="labelpngs", pred_format="labelpngs"),
                   ClusterSpec(workers=0))
    g = torch.tensor(np.stack([dumps["gt"][s] for s in "abc"]).astype(np.int64))
    p = torch.tensor(np.stack([dumps["pred"][s] for s in "abc"]).astype(np.int64))
    metric = tm.MulticlassJaccardIndex(num_classes=4, ignore_index=255, average="macro")
    assert rep["mean_iou"] == pytest.approx(float(metric(p, g)), abs=1e-6)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory) -> dict[str, object]:
    """GT names 1 road, 2 car; PRED names 1 car, 2 road, and adds 4 truck on a few pixels."""
    root = tmp_path_factory.mktemp("swapped")
    gts = dict(zip("abc", _maps(1, 3)))
    swap = np.array([0, 2, 1, 3, 4] + [0] * 251, np.uint8)
    preds = {}
    for k, (s, lab) in enumerate(gts.items()):
        p = _perturb(lab, 20 + k)
        p[:2, :6] = 4  # truck, which GT does not have
        preds[s] = p
        _png(root / "gt" / f"{s}.png", lab)
        _png(root / "pred" / f"{s}.png", swap[p])  # PRED's own ids
    _labelmap(root / "gt", GT_NAMES)
    _labelmap(root / "pred", ["background", "car", "road", "sky", "truck"])
    return {"root": root, "gt": gts, "pred": preds, "swap": swap}


def test_names_differ_warns_and_records(swapped, tmp_path):
    root = swapped["root"]
    out = tmp_path / "r.json"
    proc = _ok(run_cli("evaluate", str(root / "gt"), str(root / "pred"), "-w", "0", "--json", str(out)), 1)
    rep = json.loads(out.read_text())
    warn = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: GT and PRED name")]
    assert warn == ["warning: GT and PRED name 2 classes differently: 1 (road vs car), 2 (car vs road); "
                    "pass --match-classes name"], proc.stderr
    assert any(ln.startswith("warning: GT has no class 4 (truck) of PRED") for ln in proc.stderr.splitlines())
    assert rep["classes"]["match"] == "id"
    assert rep["classes"]["renamed"] == [{"id": 1, "gt": "road", "pred": "car"}, {"id": 2, "gt": "car", "pred": "road"}]
    assert rep["classes"]["pred_only"] == [{"pred_id": 4, "name": "truck"}]
    assert rep["images"]["failed"] == 3  # every image predicts truck (4), which is no GT class


def test_match_classes_by_name(swapped, tmp_path):
    root = swapped["root"]
    out = tmp_path / "r.json"
    proc = _ok(run_cli("evaluate", str(root / "gt"), str(root / "pred"), "-w", "0", "--match-classes", "name",
                       "--json", str(out)))
    rep = json.loads(out.read_text())
    assert rep["images"]["evaluated"] == 3 and rep["images"]["failed"] == 0
    assert [(c["id"], c["name"]) for c in rep["per_class"]] == [*enumerate(GT_NAMES), (4, "truck")]
    # independent: the ground truth against the prediction's classes in GT ids (truck a 5th class)
    mat = _confusion([(swapped["gt"][s], swapped["pred"][s]) for s in "abc"], 5)
    assert rep["confusion"] == mat.tolist()
    assert rep["mean_iou"] == pytest.approx(_miou(mat), abs=1e-12)
    assert rep["per_class"][4]["iou"] == 0.0
    c = rep["classes"]
    assert c["match"] == "name" and c["renamed"] == []
    assert c["remapped"] == [{"pred_id": 1, "id": 2, "name": "car"}, {"pred_id": 2, "id": 1, "name": "road"}]
    assert c["pred_only"] == [{"pred_id": 4, "id": 4, "name": "truck"}]
    assert "warning: GT has no class truck (PRED 4) of PRED" in proc.stderr


def test_match_classes_by_name_refusals(swapped, tmp_path):
    root = swapped["root"]
    dup = tmp_path / "dup"
    dup.mkdir()
    for f in (root / "pred").iterdir():
        (dup / f.name).write_bytes(f.read_bytes())
    _labelmap(dup, ["background", "car", "Road", "sky", "road "])
    proc = _ok(run_cli("evaluate", str(root / "gt"), str(dup), "-w", "0", "--match-classes", "name"), 2)
    assert "names two classes" in proc.stderr and "road" in proc.stderr
    (dup / "labelmap.txt").unlink()  # values only: nothing to match by name
    proc = _ok(run_cli("evaluate", str(root / "gt"), str(dup), "-w", "0", "--match-classes", "name"), 2)
    assert "PRED names no classes" in proc.stderr


def test_match_classes_unit():
    m = match_classes([0, 1, 2], ["background", "road", "car"], {1: "car", 2: "ROAD", 5: "bus"}, mode="name")
    assert m.class_ids == (0, 1, 2, 5) and m.names == ("background", "road", "car", "bus")
    assert dict(m.pred_map or ()) == {0: 0, 1: 2, 2: 1, 5: 5}
    m = match_classes([0, 1, 2], ["background", "road", "car"], {1: "car", 2: "road", 0: "bus"}, mode="name")
    assert dict(m.pred_map or ()) == {0: 3, 1: 2, 2: 1} and m.class_ids == (0, 1, 2, 3)  # 0 taken: a free id
    assert [d["name"] for d in m.report["gt_only"]] == ["background"]
    m = match_classes([0, 1], ["background", "road"], {0: "background", 1: "road"})
    assert m.warnings == [] and m.pred_map is None
