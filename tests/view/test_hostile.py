"""``segpipe view`` on hostile but valid inputs: markup in class names and odd file names stay text, and
images a store failed to pre-label are named in the report (not left out without a word)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.view.conftest import read_script_json, summary_of

EVIL = "</script><script>alert(1)</script>"
ODD = "a b#c?d%20é漢.png"


def test_markup_in_class_names_and_odd_file_names_stay_text(tmp_path: Path, collection: Path) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(collection, ds)
    (ds / "annotations.json").unlink()  # label maps and labelmap.txt alone
    lm = ds / "labelmap.txt"
    lm.write_text(lm.read_text().replace("sky:", f"{EVIL}:").replace("road:", "\"q'é <b>:"))
    first = sorted((ds / "images").iterdir())[0].name
    for d in ("images", "masks"):
        (ds / d / first).rename(ds / d / ODD)
    out = tmp_path / "v"
    r = run_cli("view", str(ds), "--out", str(out), "--title", "<img src=x onerror=alert(2)>", "--large", "0",
                "-w", "0")
    assert r.returncode == 0, r.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    for f in [out / "index.html", *(out / "data").iterdir()]:
        assert "</script><script>" not in f.read_text(encoding="utf-8"), f
    s = summary_of(out)
    names = {c["name"] for c in s["classes"]}
    assert EVIL in names and "\"q'é <b>" in names  # the data holds the names as they are (the page shows text)
    item = next(it for it in s["items"] if it["n"] == ODD)
    fr = item["fr"][0]
    # the files of an image are named by its place, never by its name: no URL to encode
    assert (out / f"{fr['b']}.o.t.jpg").is_file() and (out / f"{fr['b']}.p.t.png").is_file()
    details = read_script_json(out / "data" / f"page-{fr['pg']:05d}.js", f"segpipeDetail({fr['pg']}, ")
    assert details[fr["pi"]]["file"] == ODD


def test_images_a_store_failed_to_prelabel_are_named(tmp_path: Path, collection: Path, checkpoint: Path) -> None:
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    src = tmp_path / "photos"
    src.mkdir()
    for p in sorted((collection / "images").iterdir())[:2]:
        shutil.copy(p, src / p.name)
    (src / "broken.png").write_bytes(b"not a png")
    store = tmp_path / "pre.zarr"
    prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=store, threads=1), ClusterSpec(workers=0))
    out = tmp_path / "v"
    r = run_cli("view", str(store), "--out", str(out), "--large", "0", "-w", "0")
    assert r.returncode == 0, r.stderr
    assert "error: broken.png: not pre-labeled" in r.stderr and "Traceback" not in r.stderr
    s = summary_of(out)
    assert s["images"] == 2
    (problem,) = [p for p in s["problems"] if p["file"] == "broken.png"]
    assert problem["problem"].startswith("not pre-labeled: ")


def test_a_gt_that_pairs_with_no_image_is_said(tmp_path: Path, store: Path, collection: Path) -> None:
    gt = tmp_path / "gt"
    shutil.copytree(collection, gt)
    (gt / "annotations.json").unlink()
    for d in ("images", "masks"):
        for p in sorted((gt / d).iterdir())[:4]:  # 4 of 10 renamed: their stems pair with nothing
            p.rename(p.with_name("x" + p.name))
    out = tmp_path / "v"
    r = run_cli("view", str(store), "--gt", str(gt), "--out", str(out), "--large", "0", "-w", "0")
    assert r.returncode == 0, r.stderr
    assert "--gt has no image matching 4 of 10 images" in r.stderr
    s = summary_of(out)
    assert s["problems"][0]["file"] == str(gt) and "4 of 10" in s["problems"][0]["problem"]
    compared = [it for it in s["items"] if "e" in it]
    assert len(compared) == 6
    details = read_script_json(out / "data" / "page-00000.js", "segpipeDetail(0, ")
    for it in compared:  # each compared with the ground truth of its own name, whatever the order
        assert details[it["fr"][0]["pi"]]["gt_file"] == it["n"]


def test_same_stem_in_two_folders_pairs_each_with_its_own_gt(tmp_path: Path, collection: Path,
                                                              checkpoint: Path) -> None:
    import numpy as np

    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
    from segpipe.storage.images import read_label_map
    from segpipe.storage.zarrstore import ZarrStore

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    shutil.copy(collection / "labelmap.txt", ds)
    photos = sorted((collection / "images").iterdir())[:2]
    for folder, photo in zip(("a", "b"), photos, strict=True):  # a/001 and b/001: one stem, two images
        for d in ("images", "masks"):
            (ds / d / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(collection / d / photo.name, ds / d / folder / "001.png")
    store = tmp_path / "pre.zarr"
    prelabel(PrelabelRequest(source=str(ds / "images"), model=str(checkpoint), out=store, threads=1),
             ClusterSpec(workers=0))
    out = tmp_path / "v"
    r = run_cli("view", str(store), "--gt", str(ds), "--out", str(out), "--large", "0", "-w", "0")
    assert r.returncode == 0, r.stderr
    assert "--gt has no image" not in r.stderr
    st = ZarrStore.open(store)
    labels = {st.group(i).attrs["file"]: np.asarray(st.group(i)["labels"][...]) for i in st.image_ids()}
    s = summary_of(out)
    details = read_script_json(out / "data" / "page-00000.js", "segpipeDetail(0, ")
    assert sorted(it["n"] for it in s["items"]) == ["a/001.png", "b/001.png"]
    for it in s["items"]:
        assert details[it["fr"][0]["pi"]]["gt_file"] == it["n"]
        gt = read_label_map(ds / "masks" / it["n"])
        valid = gt != 255
        assert it["e"] == pytest.approx(float((gt[valid] != labels[it["n"]][valid]).mean()), abs=1e-5)


def test_a_gt_of_another_size_is_not_compared_and_says_so(tmp_path: Path, store: Path, collection: Path) -> None:
    from PIL import Image

    gt = tmp_path / "gt"
    shutil.copytree(collection, gt)
    (gt / "annotations.json").unlink()
    for d in ("images", "masks"):
        for p in (gt / d).iterdir():
            with Image.open(p) as im:
                small = im.resize((im.width // 2, im.height // 2), Image.Resampling.NEAREST)
            small.save(p)
    out = tmp_path / "v"
    r = run_cli("view", str(store), "--gt", str(gt), "--out", str(out), "--large", "0", "-w", "0")
    assert r.returncode == 0, r.stderr
    assert "10 of 10 images are not compared with --gt" in r.stderr and "64x32, the labels 128x64" in r.stderr
    s = summary_of(out)
    assert all("e" not in it and "u" not in it and "gn" not in it for it in s["items"])
    details = read_script_json(out / "data" / "page-00000.js", "segpipeDetail(0, ")
    assert all("not compared" in d["gt_note"] for d in details)
