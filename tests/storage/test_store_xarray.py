"""A store written by ``segpipe prelabel`` opens in xarray, group by group, with the values segpipe reads.

Also: a stack slot no task wrote reads as void in any tool (never as background), segpipe's own
readers report such an image instead of reading it, and stores written before dimension names and
label fill values still read and evaluate the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from segpipe.storage.stacks import SHARD, read_index
from segpipe.storage.zarrstore import ZarrStore, dimension_names, label_attributes
from tests.badinput._corpus import synth_with_unet
from tests.conftest import run_cli

xr = pytest.importorskip("xarray")

N_STACKED = SHARD + 1  # one shard full, one with a single image: 7 slots never written


def _ok(proc, code: int = 0):  # type: ignore[no-untyped-def]
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def prelabeled(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xr")
    data, ckpt = root / "data", root / "unet.ckpt"
    synth_with_unet(data, ckpt, n=N_STACKED, seed=3, size=(32, 48))
    odd = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(odd).save(data / "images" / "zz_odd.png")  # one size alone: a group of its own
    store = root / "p.zarr"
    _ok(run_cli("-q", "prelabel", str(data / "images"), "-m", str(ckpt), "-o", str(store), "-w", "0"))
    return {"root": root, "data": data, "store": store}


def _open(store: Path, group: str):  # type: ignore[no-untyped-def]
    return xr.open_zarr(store, group=group, consolidated=False)


def test_every_group_opens_in_xarray(prelabeled):
    path = prelabeled["store"]
    store = ZarrStore.open(path)
    cats = store.attrs()["categories"]
    ids = {int(c["id"]) for c in cats}
    names = [c["name"] for c in cats]
    root = _open(path, "")
    assert root.attrs["categories"] == cats  # top level, as well as under "segpipe"
    index = read_index(path)
    stacks = {s for s, _ in index.values()}
    assert stacks == {"32x48"} and len(index) == N_STACKED
    ds = _open(path, "stacks/32x48")
    assert ds["labels"].dims == ("slot", "y", "x") and ds["probs"].dims == ("slot", "class", "y", "x")
    assert ds.sizes == {"slot": 2 * SHARD, "y": 32, "x": 48, "class": len(cats)}
    for name in ("ids", "attrs", "done"):
        assert ds[name].dims == ("slot",)
    lab = ds["labels"]
    assert lab.attrs["flag_values"] == [int(c["id"]) for c in cats]
    assert lab.attrs["flag_meanings"].split() == ["_".join(n.split()) for n in names]
    assert lab.attrs["void_value"] == 255 and 255 not in ids
    assert {d["class"] for d in lab.attrs["image-label"]["properties"]} == set(names)
    assert ds.attrs["categories"] == cats
    labels, probs, slot_ids, done = (ds[k].values for k in ("labels", "probs", "ids", "done"))
    for image_id, (_, slot) in index.items():
        assert int(slot_ids[slot]) == image_id and done[slot] == 1
        assert np.array_equal(labels[slot], store.read(image_id, "labels"))
        assert np.array_equal(probs[slot], store.read(image_id, "probs"))
    unwritten = [j for j in range(2 * SHARD) if slot_ids[j] < 0]
    assert len(unwritten) == SHARD - 1
    assert (labels[unwritten] == 255).all()  # never written: void, never background (0)
    # the image alone of its size: a group of its own
    (gid,) = [i for i in store.image_ids() if i not in index]
    g = _open(path, f"images/{gid}")
    assert g["labels"].dims == ("y", "x") and g["probs"].dims == ("class", "y", "x")
    assert g.sizes == {"y": 40, "x": 56, "class": len(cats)}
    assert np.array_equal(g["labels"].values, store.read(gid, "labels"))
    assert np.array_equal(g["probs"].values, store.read(gid, "probs"))
    assert g["labels"].attrs["flag_meanings"] == lab.attrs["flag_meanings"]
    assert g.attrs["file"] == "zz_odd.png"
    assert zarr.open_array(str(path / "images" / str(gid) / "labels"), mode="r").fill_value == 255


def test_instance_and_landmark_arrays_have_dimension_names(tmp_path):
    store = ZarrStore.create(tmp_path / "i.zarr", {"task": "instance", "categories": []})
    g = store.image_group(1, {"id": 1, "file": "a.png", "width": 8, "height": 6})
    ig = g.require_group("instances")
    ZarrStore.write_array(ig, "rle", np.array(["abc", "de"], dtype=str))
    ZarrStore.write_array(ig, "boxes", np.ones((2, 4), np.float32))
    ZarrStore.write_array(ig, "scores", np.array([0.5, 0.9], np.float32))
    ZarrStore.write_array(ig, "labels", np.array([1, 2], np.int32))
    ZarrStore.write_array(g, "heatmaps", np.zeros((3, 6, 8), np.float16))
    ZarrStore.write_array(g, "keypoints", np.zeros((1, 3, 3), np.float32))
    ZarrStore.write_array(g, "panoptic", np.zeros((6, 8), np.int32))
    inst = _open(tmp_path / "i.zarr", "images/1/instances")
    assert {k: v.dims for k, v in inst.data_vars.items()} == {
        "rle": ("instance",), "boxes": ("instance", "xywh"), "scores": ("instance",), "labels": ("instance",)}
    assert list(inst["rle"].values) == ["abc", "de"]
    img = _open(tmp_path / "i.zarr", "images/1")
    assert img["heatmaps"].dims == ("landmark", "y", "x") and img["keypoints"].dims == ("object", "landmark", "xyc")
    assert img["panoptic"].dims == ("y", "x")
    assert dimension_names("labels", 3, stacked=True) == ("slot", "y", "x")
    assert label_attributes([{"id": 3, "name": "traffic light", "color": [1, 2, 3]}])["flag_meanings"] == \
        "traffic_light"


def _strip_new_metadata(store: Path) -> int:
    """Makes the store look as one written before: no dimension names, no label attributes."""
    n = 0
    for doc_path in store.rglob("zarr.json"):
        doc = json.loads(doc_path.read_text())
        if doc.get("node_type") == "array" and "dimension_names" in doc:
            del doc["dimension_names"]
            doc["attributes"] = {}
            doc_path.write_text(json.dumps(doc, indent=2))
            n += 1
    return n


def test_old_stores_still_read_and_evaluate_the_same(prelabeled, tmp_path):
    import shutil

    old = tmp_path / "old.zarr"
    shutil.copytree(prelabeled["store"], old)
    assert _strip_new_metadata(old) > 5
    gt = prelabeled["data"]
    reports = []
    for store in (prelabeled["store"], old):
        out = tmp_path / f"{store.stem}.json"
        _ok(run_cli("evaluate", str(gt), str(store), "-w", "0", "--json", str(out)), 1)  # zz_odd.png: no GT mask
        reports.append(json.loads(out.read_text()))
    new, back = reports
    assert new["images"]["evaluated"] == N_STACKED and back["images"] == new["images"]
    assert back["confusion"] == new["confusion"] and back["mean_iou"] == new["mean_iou"]
    s = ZarrStore.open(old)
    for i in s.image_ids():
        assert np.array_equal(s.read(i, "labels"), ZarrStore.open(prelabeled["store"]).read(i, "labels"))


def test_an_unwritten_slot_is_reported_not_read_as_background(prelabeled, tmp_path):
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(prelabeled["store"], bad)
    index = read_index(bad)
    # the lone image of the second shard
    image_id, (stack, slot) = next((i, (s, j)) for i, (s, j) in index.items() if j == SHARD)
    shard = bad / "stacks" / stack / "labels" / f"c.{slot // SHARD}.0.0"
    shard.unlink()  # its labels never reached the disk
    arr = xr.open_zarr(bad, group=f"stacks/{stack}", consolidated=False)["labels"].values
    assert (arr[slot] == 255).all()  # any tool: void
    out = tmp_path / "r.json"
    proc = run_cli("evaluate", str(prelabeled["data"]), str(bad), "-w", "0", "--json", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = json.loads(out.read_text())
    assert rep["images"]["evaluated"] == N_STACKED - 1
    info = ZarrStore.open(prelabeled["store"]).group(image_id).attrs
    bad_lines = [p for p in rep["problems"] if p["severity"] == "error" and p["file"] == info["file"]]
    assert len(bad_lines) == 1 and str(shard) in bad_lines[0]["message"], rep["problems"]
    assert "labels" in bad_lines[0]["message"]
