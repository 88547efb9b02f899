"""The pages in a real browser (headless Chromium): they load from disk with no error, show their overlays
and legend, sort and filter, open details, and lay out as designed (element boxes and coarse pixel statistics)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.view._browser import PageLog, open_browser
from tests.view.conftest import summary_of

#: Screenshots are kept here when set (CI artefacts, or a person looking at them), else in tmp_path.
SHOTS = os.environ.get("SEGPIPE_SHOTS")


@pytest.fixture(scope="module")
def browser():
    with open_browser() as b:
        yield b


def _open(browser, path: Path, fragment: str = ""):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log = PageLog(page)
    page.goto(path.resolve().as_uri() + fragment)
    page.wait_for_load_state("networkidle")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return page, log


def _shot(page, tmp_path: Path, name: str) -> np.ndarray:
    data = page.screenshot()
    for folder in filter(None, [tmp_path, SHOTS]):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_viewer_loads_with_overlays_and_legend(browser, report):
    s = summary_of(report)
    page, log = _open(browser, report / "index.html")
    assert page.locator(".card").count() == len(s["items"]) == 10
    assert page.locator(".card img.o").count() == 10 and page.locator(".card img.p").count() == 10
    assert page.locator(".card img.g").count() == 10 and page.locator(".card img.e").count() == 10
    broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
    assert broken == []
    # the legend: one entry per class, in the label map's colours
    swatches = page.eval_on_selector_all("#legend li", "els => els.map(e => [e.textContent, "
                                         "getComputedStyle(e.querySelector('.swatch')).backgroundColor])")
    want = [[c["name"], "rgb({}, {}, {})".format(*c["color"])] for c in s["classes"]]
    assert [[t.split(next(ch for ch in t if ch.isdigit()))[0] if any(ch.isdigit() for ch in t) else t, rgb]
            for t, rgb in swatches] == want
    # layer toggles: the ground truth is off until asked for, and the checkbox turns it on
    assert page.locator(".card img.g").first.evaluate("e => getComputedStyle(e).visibility") == "hidden"
    page.check("#layers input[data-layer=g]")
    assert page.locator(".card img.g").first.evaluate("e => getComputedStyle(e).visibility") == "visible"
    page.uncheck("#layers input[data-layer=p]")
    assert page.locator(".card img.p").first.evaluate("e => getComputedStyle(e).visibility") == "hidden"
    assert log.errors == []


def test_sorting_filtering_and_pages(browser, report):
    s = summary_of(report)
    page, log = _open(browser, report / "index.html", "#size=4")
    page.select_option("#sort", "doubt")
    shown = [float(v) for v in page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.doubt)")]
    want = sorted((it["d"] for it in s["items"]), reverse=True)
    assert shown == want[:4]  # the most doubtful first, one page of 4
    assert page.locator("#pager button").count() >= 3  # 3 pages + next
    page.click("#pager button:has-text('next')")
    shown2 = [float(v) for v in page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.doubt)")]
    assert shown2 == want[4:8]
    page.select_option("#sort", "error")
    names = page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.name)")
    by_error = [it["n"] for it in sorted(s["items"], key=lambda it: -it["e"])]
    assert names == by_error[:4]
    # filtering by class: the legend's entries filter to the items that have the class
    rare = min((c for c in s["classes"] if any(c["id"] in it["gc"] for it in s["items"])),
               key=lambda c: sum(c["id"] in it["gc"] for it in s["items"]))
    page.select_option("#size", "50")
    page.click(f"#legend li[data-class='{rare['id']}']")
    names = sorted(page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.name)"))
    assert names == sorted(it["n"] for it in s["items"] if rare["id"] in it["gc"] or rare["id"] in it["c"])
    page.click(f"#legend li[data-class='{rare['id']}']")
    page.fill("#q", s["items"][3]["n"])
    assert page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.name)") == [s["items"][3]["n"]]
    assert log.errors == []


def test_detail_view_shows_panels_and_details(browser, report, tmp_path):
    page, log = _open(browser, report / "index.html")
    page.click(".card >> nth=0")
    page.wait_for_selector("#modal .info table.kv")
    assert page.locator("#modal .panel").count() == 4
    titles = page.eval_on_selector_all("#modal .panel h3", "els => els.map(e => e.textContent)")
    assert titles == ["photo", "pre-label", "ground truth", "error (red: differs)"]
    text = page.inner_text("#modal .info")
    assert "mean entropy" in text and "IoU" in text
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth)")
    shot = _shot(page, tmp_path, "viewer-detail.png")
    box = page.locator("#modal .panel >> nth=3").locator("img.e").bounding_box()
    region = shot[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    red = (region[..., 0] > 150) & (region[..., 1] < 90) & (region[..., 2] < 110)
    assert red.mean() > 0.2  # a random-weight model is mostly wrong: the error panel is mostly red
    page.keyboard.press("Escape")
    assert page.locator("#modal").is_hidden()
    assert log.errors == []


def test_layout_matches_the_design(browser, report, tmp_path):
    page, log = _open(browser, report / "index.html")
    shot = _shot(page, tmp_path, "viewer-grid.png")
    header = page.locator("header").bounding_box()
    aside = page.locator("aside").bounding_box()
    grid = page.locator("#grid").bounding_box()
    assert header["y"] == 0 and header["width"] >= 1270
    assert aside["x"] < grid["x"] and aside["y"] >= header["height"] - 1 and aside["width"] < 320
    cards = [page.locator(".card").nth(k).bounding_box() for k in range(10)]
    per_row = sum(1 for c in cards if abs(c["y"] - cards[0]["y"]) < 1)
    assert 3 <= per_row <= 12  # a grid, not a column (96 px thumbnails)
    assert all(cards[k + 1]["x"] > cards[k]["x"] for k in range(per_row - 1))
    stack = page.locator(".card .stack").first.bounding_box()
    assert stack["width"] / stack["height"] == pytest.approx(2.0, rel=0.05)  # the 128x64 images keep their shape
    # coarse pixel statistics: the header is dark, the sidebar light, each thumbnail a real picture
    assert shot[5:int(header["height"]) - 5, :, :].mean() < 60
    side = shot[int(aside["y"]) + 5:int(aside["y"]) + 60, int(aside["x"]) + 5:int(aside["x"] + aside["width"]) - 5]
    assert side.mean() > 200
    thumb = shot[int(stack["y"]):int(stack["y"] + stack["height"]), int(stack["x"]):int(stack["x"] + stack["width"])]
    assert thumb.std() > 15 and abs(thumb.mean() - 68) > 5  # neither blank nor the grey placeholder background
    assert log.errors == []


def test_evaluation_report_page(browser, store, collection, tmp_path):
    out = tmp_path / "eval"
    r = run_cli("evaluate", str(collection), str(store), "--report-dir", str(out), "--worst", "2", "-w", "0")
    assert r.returncode == 0, r.stderr
    page, log = _open(browser, out / "index.html")
    assert page.locator(".tile").count() == 4
    tiles = page.eval_on_selector_all(".tile .note:first-child", "els => els.map(e => e.textContent)")
    assert tiles == ["pixel accuracy", "mean accuracy", "mean IoU", "frequency-weighted IoU"]
    # the confusion matrix has a value in every cell of the classes present, none for absent ones
    cells = page.eval_on_selector_all("table.data >> nth=1 >> td.num", "els => els.map(e => e.textContent)")
    assert cells and all(c.endswith("%") or c == "—" for c in cells)
    imgs = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
    assert {"confusion.png", "per_class.png"} <= {s for s, _ in imgs} and all(w > 0 for _, w in imgs)
    assert sum(1 for s, _ in imgs if s.startswith("worst/")) == 2
    # the per-class table draws each class in its label map's colour
    lm = [ln.split(":") for ln in (collection / "labelmap.txt").read_text().splitlines() if ln and ln[0] != "#"]
    want = {name: "rgb({}, {}, {})".format(*rgb.split(",")) for name, rgb, *_ in lm}
    js = "els => els.map(e => [e.textContent, getComputedStyle(e.querySelector('.swatch')).backgroundColor])"
    got = dict(page.eval_on_selector_all("table.data >> nth=0 >> tr td:first-child", js))
    assert got == want
    _shot(page, tmp_path, "evaluation-report.png")
    assert log.errors == []


def test_browser_tests_say_why_they_skip(monkeypatch):
    from tests.view import _browser

    monkeypatch.setenv("SEGPIPE_CHROMIUM", "/nonexistent/chromium")
    assert _browser.chromium_path() is None
    monkeypatch.delenv("SEGPIPE_CHROMIUM")
    assert _browser.chromium_path() == next((shutil.which(n) for n in _browser.CANDIDATES if shutil.which(n)), None)
