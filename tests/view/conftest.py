"""Fixtures of the viewer tests: a synthetic collection, a random-weight U-Net, its store, and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def read_script_json(path: Path, prefix: str) -> object:
    """The JSON inside a data script (``window.SEGPIPE = {...};`` or ``segpipeDetail(N, [...]);``)."""
    text = path.read_text(encoding="utf-8").strip()
    assert text.startswith(prefix), text[:80]
    body = text[len(prefix):]
    body = body[:-2] if body.endswith(");") else body.rstrip(";")
    return json.loads(body)


def summary_of(report: Path) -> dict:
    """``data/summary.js`` of a view report, its item columns as one dict per item (as the page reads them)."""
    data = read_script_json(report / "data" / "summary.js", "window.SEGPIPE = ")
    assert isinstance(data, dict)
    cols = data["items"]
    n = len(next(iter(cols.values()))) if cols else 0
    items = [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(n)]
    for it in items:
        for f in it.get("fr", []):
            f.setdefault("b", f"img/{f['pg']:05d}/{f['pi']:04d}")
    data["items"] = items
    return data


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    """10 synthetic street-view images (64x128) with ground truth."""
    from segpipe.synth import synth

    out = tmp_path_factory.mktemp("viewdata") / "data"
    synth("streetview", out, n=10, seed=5, size=(64, 128))
    return out


def make_checkpoint(path: Path, collection: Path, seed: int = 0) -> Path:
    """A small random-weight U-Net whose categories are the collection's (no colours: the ground truth's
    colours are the legend's)."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    names = [ln.split(":")[0] for ln in (collection / "labelmap.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    torch.manual_seed(seed)
    kw = {"base": 4, "depth": 2}
    save_checkpoint(path, build_model("unet", len(cats), **kw),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                                   tile_size=[64, 64], tile_overlap=0.25, model_kwargs=kw))
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, collection) -> Path:
    """:func:`make_checkpoint` with seed 0."""
    return make_checkpoint(tmp_path_factory.mktemp("viewckpt") / "unet.ckpt", collection)


@pytest.fixture(scope="session")
def store(tmp_path_factory, collection, checkpoint) -> Path:
    """The collection pre-labeled into a store, with probabilities (in this process: the view is under test)."""
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    out = tmp_path_factory.mktemp("viewstore") / "pre.zarr"
    prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, probs=True,
                             threads=1), ClusterSpec(workers=0))
    return out


@pytest.fixture(scope="session")
def report(tmp_path_factory, store, collection) -> Path:
    """``segpipe view STORE --gt DATASET`` through the CLI, on an embedded Dask cluster of 2 workers."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("viewreport") / "report"
    r = run_cli("view", str(store), "--gt", str(collection), "--out", str(out), "--page-size", "10",
                "--thumb", "96", "--large", "192", "-w", "2", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"report: {out.resolve() / 'index.html'}" in r.stdout
    return out


@pytest.fixture()
def copy_of(tmp_path):
    """Copies a folder into this test's tmp_path (tests that change a report work on a copy)."""
    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy
