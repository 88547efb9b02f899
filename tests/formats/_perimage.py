"""Helpers shared by the tests of the per-image-file formats (``test_yolo.py``, ``test_labelme.py``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.execution.cluster import ClusterSpec
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.pipeline.convert import Conversion, convert
from segpipe.pipeline.validate import validate_path

REPO = Path(__file__).resolve().parents[2]
PEERS_PY = REPO / ".venv-peers" / "bin" / "python"


def convert_in_process(src: Path, dst: Path, to: str, **kw) -> dict:
    """``convert`` without workers; returns the report."""
    return convert(Conversion(src=src, dst=dst, to=to, **kw), ClusterSpec(workers=0))


def convert_lossless(src: Path, dst: Path, to: str, src_format: str = "coco") -> tuple[dict, dict]:
    """Converts ``src`` to ``to`` (read back as ``to``): lossless, detected, valid, the same images.

    Returns:
        ``(source, output)`` as :func:`tests.formats.test_contract._read` gives them, by file stem.
    """
    from tests.formats.test_contract import _read

    rep = convert_in_process(src, dst, to)
    assert rep["losses"]["lossless"], rep["losses"]["totals"]
    assert detect_format(dst) == to
    _, problems = validate_path(dst, to)
    assert not problems, [str(p) for p in problems]
    a, b = _read(src, src_format), _read(dst, to)
    assert sorted(a) == sorted(b)
    return a, b


def random_image(path: Path, w: int, h: int, seed: int = 0) -> bytes:
    """Writes a random RGB image (format by suffix) and returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


def ring_and_island_maskdir(root: Path) -> Path:
    """A maskdir label map: a ring of road around an island of car, a second road part and a void pixel."""
    cm = np.zeros((20, 30), np.uint8)
    cm[2:12, 2:12] = 1  # a ring of class 1 ...
    cm[5:8, 5:8] = 2  # ... around an island of class 2
    cm[14:18, 20:28] = 1  # a second component of class 1
    cm[0, 29] = 255  # void
    (root / "masks").mkdir(parents=True)
    Image.fromarray(cm).save(root / "masks" / "a.png")
    random_image(root / "images" / "a.png", 30, 20)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nroad:1,1,1::\n"
                                       "car:2,2,2::\n")
    return root


def same_stem_coco(root: Path, annotations: list[dict] | None = None) -> Path:
    """COCO of two images whose files share a stem (``a.png``, ``a.jpg``); returns its JSON."""
    images = []
    for i, fn in enumerate(("a.png", "a.jpg")):
        random_image(root / "images" / fn, 20, 12, seed=i)
        images.append({"id": i + 1, "file_name": fn, "width": 20, "height": 12})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations or [],
                                                       "categories": [{"id": 1, "name": "x"}]}))
    return root / "annotations.json"


def write_shard_twice(src: Path, out: Path, to: str) -> tuple[ShardResult, ShardResult]:
    """Writes all of a COCO source as shard 0, then shard 0 again (as Dask re-runs a shard whose worker died).

    The first run's files are left as a killed worker may leave them: every label file cut to its first
    byte. Returns both results; ``finalize`` runs after the second.
    """
    spec = get_format("coco")
    reader = spec.reader(src)
    writer = get_format(to).writer(out, reader.meta, WriteOptions())
    writer.prepare()
    first = writer.write_shard(0, (spec.materialize(s, reader.meta) for s in reader.samples()))
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".txt", ".json") and ".segpipe-claims" not in p.parts:
            p.write_bytes(p.read_bytes()[:1])
    again = writer.write_shard(0, (spec.materialize(s, reader.meta) for s in reader.samples()))
    writer.finalize([again])
    return first, again


def run_peer(script: str, *args: str, cwd: Path | None, env: dict[str, str], not_importable: tuple[str, ...],
             hint: str, missing: str) -> dict:
    """Runs ``tests/formats/<script>`` in the peers' venv; returns its last ``RESULT`` JSON (skips without it).

    Args:
        script: The peer script beside this file.
        args: Its arguments.
        cwd: Its working folder.
        env: Variables added to the environment.
        not_importable: stderr markers of a peer that is not installed (the test skips).
        hint: The skip message when the peers' venv is absent.
        missing: The skip message's start when the peer is not importable.
    """
    if not PEERS_PY.exists():
        pytest.skip(hint)
    r = subprocess.run([str(PEERS_PY), str(Path(__file__).with_name(script)), *args], capture_output=True,
                       text=True, cwd=cwd, env=dict(os.environ, **env), timeout=600)
    if r.returncode and any(m in r.stderr for m in not_importable):
        pytest.skip(f"{missing} in .venv-peers: {r.stderr.strip().splitlines()[-1]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])
