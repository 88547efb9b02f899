"""``segpipe view``: a report over real stores and datasets, built on Dask; its numbers checked independently."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from segpipe.core.doubt import image_doubt
from segpipe.storage.images import read_label_map
from segpipe.storage.zarrstore import ZarrStore
from tests.conftest import run_cli
from tests.view.conftest import read_script_json, summary_of


def test_report_files_and_summary(report, store, collection):
    s = summary_of(report)
    assert s["images"] == len(s["items"]) == 10 and s["failed"] == 0
    assert s["source"]["format"] == "segpipe_zarr" and s["gt"]["format"] == "maskdir"
    # the legend is the label map's own colours (the checkpoint has none: the ground truth's are taken)
    lm = [ln.split(":") for ln in (collection / "labelmap.txt").read_text().splitlines() if ln and ln[0] != "#"]
    want = {name: [int(v) for v in rgb.split(",")] for name, rgb, *_ in lm}
    assert {c["name"]: c["color"] for c in s["classes"]} == want
    for it in s["items"]:
        (fr,) = it["fr"]
        assert set(fr["L"]) == {"p", "g", "e"}
        for layer in "opge":
            for tag, size in (("t", 96), ("l", 192)):
                f = report / f"{fr['b']}.{layer}.{tag}.{'jpg' if layer == 'o' else 'png'}"
                im = Image.open(f)
                assert max(im.size) == min(size, 128) and im.size == (min(size, 128), min(size, 128) // 2)
                if layer != "o":
                    assert im.mode == "RGBA"
    assert (report / "index.html").is_file() and (report / ".segpipe-output").is_file()


def test_doubt_and_error_match_an_independent_computation(report, store, collection):
    s = summary_of(report)
    st = ZarrStore.open(store)
    by_name = {}
    for image_id in st.image_ids():
        g = st.group(image_id)
        by_name[g.attrs["file"]] = (np.asarray(g["labels"][...]), np.asarray(g["probs"][...]))
    details = read_script_json(report / "data" / "page-00000.js", "segpipeDetail(0, ")
    for it in s["items"]:
        labels, probs = by_name[it["n"]]
        d = image_doubt(probs)
        assert it["d"] == pytest.approx(d.entropy, abs=1e-5) and it["m"] == pytest.approx(d.margin, abs=1e-5)
        gt = read_label_map(collection / "masks" / it["n"])
        valid = gt != 255
        assert it["e"] == pytest.approx(float((gt[valid] != labels[valid]).mean()), abs=1e-5)
        assert it["c"] == sorted(np.unique(labels[labels != 255]).tolist())
        assert it["gc"] == sorted(np.unique(gt[valid]).tolist())
        det = details[it["fr"][0]["pi"]]
        assert det["file"] == it["n"] and det["gt_file"] == it["n"]
        assert sum(det["gt_classes"].values()) == pytest.approx(valid.mean(), abs=1e-4)
    # the error layer is red exactly where the labels differ (full size: the large images are 128 px wide)
    it = s["items"][0]
    labels, _ = by_name[it["n"]]
    gt = read_label_map(collection / "masks" / it["n"])
    err = np.asarray(Image.open(report / f"{it['fr'][0]['b']}.e.l.png"))
    assert np.array_equal(err[..., 0] == 255, (gt != labels) & (gt != 255))
    assert np.array_equal(err[..., 3] > 0, gt != 255)  # right pixels darkened, void ones untouched


def test_page_is_self_contained(report):
    text = (report / "index.html").read_text()
    assert "<style>" in text and "data/summary.js" in text
    # nothing from the network: no http(s) or protocol-relative URL in the page or its data
    for f in [report / "index.html", *(report / "data").iterdir()]:
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", f.read_text()), f


def test_dataset_alone_and_a_second_run_replaces_the_first(tmp_path, collection):
    out = tmp_path / "v"
    for _ in range(2):
        r = run_cli("view", str(collection), "--out", str(out), "--thumb", "64", "--large", "0", "-w", "0")
        assert r.returncode == 0, r.stderr
    s = summary_of(out)
    assert s["source"]["format"] == "maskdir" and s["gt"] is None and s["roles"]["p"] == "labels"
    assert all(it["fr"][0]["L"] == "p" and it.get("d") is None for it in s["items"])
    assert not list(out.glob("img/*/*.l.*"))  # --large 0: thumbnails only


def test_keypoints_and_instances_are_drawn(tmp_path):
    from segpipe.synth import synth

    synth("landmarks", tmp_path / "lm", n=3, seed=2, size=(64, 64))
    out = tmp_path / "v"
    r = run_cli("view", str(tmp_path / "lm"), "--format", "coco", "--out", str(out), "--large", "0", "-w", "0")
    assert r.returncode == 0, r.stderr
    s = summary_of(out)
    for it in s["items"]:
        assert "k" in it["fr"][0]["L"] and "i" in it["fr"][0]["L"] and it["ni"] >= 1
        k = np.asarray(Image.open(out / f"{it['fr'][0]['b']}.k.t.png"))
        assert (k[..., 3] > 0).sum() > 20  # points and skeleton lines


def test_volume_slices_are_one_item(tmp_path):
    pytest.importorskip("nibabel", reason="nibabel (segpipe[medical]) is not installed")
    from segpipe.synth.native import synth_native

    synth_native("medical", tmp_path / "med", n=1, seed=0, size=(48, 48), fmt="nifti", depth=5)
    out = tmp_path / "v"
    r = run_cli("view", str(tmp_path / "med"), "--out", str(out), "--large", "0", "-w", "0")
    assert r.returncode == 0, r.stderr
    s = summary_of(out)
    (vol,) = s["items"]
    assert vol["kind"] == "volume" and [f["z"] for f in vol["fr"]] == [0, 1, 2, 3, 4]
    assert s["images"] == 5
    photo = np.asarray(Image.open(out / f"{vol['fr'][2]['b']}.o.t.jpg"))
    assert photo.std() > 5  # the slice itself, windowed: not a grey placeholder


def test_serve_prints_its_url_and_serves_the_folder(report):
    env_cmd = [sys.executable, "-m", "segpipe", "view", "--serve", "--out", str(report), "--port", "0"]
    p = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()  # "serving … on http://127.0.0.1:PORT/ (Ctrl-C stops)"
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + p.stderr.read() if p.poll() is not None else line
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(m.group(0) + "index.html", timeout=5) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        assert "data/summary.js" in body
        with urllib.request.urlopen(m.group(0) + "data/summary.js", timeout=5) as resp:
            assert resp.read().startswith(b"window.SEGPIPE = ")
    finally:
        p.terminate()
        p.wait(20)
