"""plan_stacks removes only the stale groups segpipe made (`images/<id>`, named `str(id)`): a folder of
another name is the user's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segpipe.storage.stacks import plan_stacks
from segpipe.storage.zarrstore import ZarrStore


def _items(ids: list[int], h: int = 6, w: int = 5) -> list[tuple[int, int, int, dict]]:
    return [(i, h, w, {"id": i, "file": f"{i}.png", "width": w, "height": h}) for i in ids]


def test_folders_not_named_by_an_id_are_kept(tmp_path: Path) -> None:
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    ids = list(range(100, 111))
    images = store.path / "images"
    kept = ["0100", "\u0661\u0660\u0661", "-0", "mine"]  # not str(id) of any image: not segpipe's
    for name in [*kept, "102"]:
        (images / name).mkdir(parents=True)
        (images / name / "data.bin").write_bytes(b"user data")
    placed = plan_stacks(store.path, _items(ids), labels_dtype=np.uint8, n_classes=3, probs=False)
    assert 100 in placed and 101 in placed and 102 in placed
    assert not (images / "102").exists()  # a stale group of a now-stacked image: removed
    for name in kept:
        assert (images / name / "data.bin").read_bytes() == b"user data", name


def test_a_folder_named_by_a_non_ascii_digit_is_no_crash(tmp_path: Path) -> None:
    store = ZarrStore.create(tmp_path / "s.zarr", {"task": "semantic", "categories": []})
    (store.path / "images" / "\u00b2").mkdir(parents=True)  # "²".isdigit() is True, int("²") raises
    (store.path / "images" / "--5").mkdir(parents=True)
    placed = plan_stacks(store.path, _items(list(range(100, 111))), labels_dtype=np.uint8, n_classes=3, probs=False)
    assert 100 in placed
    assert (store.path / "images" / "\u00b2").is_dir() and (store.path / "images" / "--5").is_dir()
