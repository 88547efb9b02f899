"""Fixtures for pre-labeling tests: a synthetic collection and a small self-describing checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    """24 synthetic street-view images (128×256) with ground truth."""
    from segpipe.synth import synth

    out = tmp_path_factory.mktemp("collection")
    synth("streetview", out, n=24, seed=3, size=(128, 256))
    return out


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, collection) -> Path:
    """A small random-weight U-Net checkpoint whose categories are the collection's."""
    import torch

    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    data = json.loads((collection / "annotations.json").read_text())
    names = [ln.split(":")[0] for ln in (collection / "labelmap.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    assert len(cats) >= len(data["categories"])
    torch.manual_seed(0)
    kw = {"base": 8, "depth": 2}
    model = build_model("unet", len(cats), **kw)
    meta = CheckpointMeta(arch="unet", task="semantic", num_classes=len(cats), categories=cats,
                          tile_size=[128, 128], tile_overlap=0.25, model_kwargs=kw)
    path = tmp_path_factory.mktemp("ckpt") / "unet.ckpt"
    save_checkpoint(path, model, meta)
    return path
