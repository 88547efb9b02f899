"""Resume trusts a multi-chunk group array only when every chunk its receipt vouches for is there."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr

from segpipe.storage.verify import _Files
from segpipe.storage.zarrstore import array_digest


def _group_array(root: Path, data: np.ndarray) -> Path:
    """A store-like ``images/7/labels`` array of 2x2 chunks; returns its folder."""
    folder = root / "images" / "7" / "labels"
    arr = zarr.create_array(store=str(folder), shape=data.shape, chunks=(4, 4), dtype=data.dtype, fill_value=0)
    arr[...] = data
    return folder


def test_a_missing_chunk_of_a_multi_chunk_array_is_found(tmp_path: Path) -> None:
    data = np.arange(64, dtype=np.uint8).reshape(8, 8) % 5 + 1  # no chunk is all fill value
    folder = _group_array(tmp_path, data)
    digest = array_digest(data)
    assert _Files(tmp_path).group_problem(7, {"labels": digest}) is None
    chunk = next(p for p in (folder / "c").rglob("*") if p.is_file())
    chunk.unlink()
    problem = _Files(tmp_path).group_problem(7, {"labels": digest})
    assert problem is not None and problem[0] == folder and "missing chunk file" in problem[1]


def test_chunks_never_written_because_they_are_empty_still_pass(tmp_path: Path) -> None:
    data = np.zeros((8, 8), np.uint8)
    data[:4, :4] = 3  # three chunks hold only the fill value: zarr writes no file for them
    folder = _group_array(tmp_path, data)
    assert sum(1 for p in (folder / "c").rglob("*") if p.is_file()) == 1
    assert _Files(tmp_path).group_problem(7, {"labels": array_digest(data)}) is None
    shutil.rmtree(folder / "c")
    assert _Files(tmp_path).group_problem(7, {"labels": array_digest(data)}) is not None
