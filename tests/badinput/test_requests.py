"""Bad requests in the corpus (issue 15): a value a command's request refuses, from the command line or a pipeline file.

The request models (``segpipe/pipeline/requests.py``) check what click cannot (``HxW`` sizes, options
that apply to one target only, a stage number) and pipeline files get every check the command line
has. Each case keeps the promise: exit 2 (cannot run), one ``error:`` line naming the option or the
file and its key, no traceback, nothing written, the inputs untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input, tree_state
from tests.conftest import run_cli


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A folder with a small COCO dataset (``ds/a.json``) the commands below would read."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.json").write_text('{"images": [], "annotations": [], "categories": []}')
    return tmp_path


COMMAND_LINES = [
    (("-q", "convert", "ds/a.json", "out", "--to", "voc", "--image-url-prefix", "http://x/"),
     ["--image-url-prefix", "labelstudio", "'voc'"]),
    (("-q", "convert", "ds/a.json", "out", "--to", "geojson", "--layout", "flat"), ["--layout", "'geojson'"]),
    (("-q", "convert", "ds/a.json", "out", "--to", "nosuch"), ["--to", "unknown format 'nosuch'", "coco"]),
    (("-q", "export", "ds", "out", "--to", "segpipe_zarr"), ["--to", "store"]),
    (("-q", "synth", "streetview", "sy", "--size", "axb"), ["--size", "'axb' is not HxW"]),
    (("-q", "synth", "streetview", "sy", "--size", "8x8"), ["--size", "8 is not >= 16"]),
    (("-q", "synth", "street", "sy"), ["KIND", "unknown synth 'street'", "streetview"]),
    (("-q", "train", "ds", "--arch", "unet", "--out", "t", "--crop", "0x5"), ["--crop", "0 is not >= 1"]),
    (("-q", "train", "ds", "--arch", "unet", "--out", "t", "--model-arg", "base"), ["--model-arg", "KEY=VALUE"]),
    # --stage 0 ran nothing and said nothing before: stages are numbered from 1
    (("-q", "run", "p.yaml", "--stage", "0"), ["--stage", "0 is not >= 1"]),
    # the commands that build their request since issue 15 point 3: the request parses the lists
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "p.zarr", "--percentiles", "2"),
     ["--percentiles", "'2' is not LOW,HIGH"]),
    (("-q", "prelabel", "ds", "-m", "m.ckpt", "-o", "p.zarr", "--bands", "4,0,2"), ["--bands", "0 is not >= 1"]),
    (("-q", "evaluate", "ds/a.json", "ds/a.json", "--kpt-sigmas", ".05,x", "--json", "e.json"),
     ["--kpt-sigmas", "'x' is not a number"]),
    (("-q", "evaluate", "ds/a.json", "ds/a.json", "--iou-types", "segm,mask"),
     ["--iou-types", "'mask' is not one of segm, bbox, keypoints"]),
    (("-q", "view", "ds", "--on-error", "ignore"), ["--on-error", "'ignore'"]),
]


@pytest.mark.parametrize(("args", "names"), COMMAND_LINES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_a_value_the_request_refuses_is_one_line(root: Path, args: tuple[str, ...], names: list[str]) -> None:
    (root / "p.yaml").write_text("version: 1\nstages:\n  - synth: {kind: streetview, out: sy, n: 1}\n")
    check_bad_input(*args, root=root, code=2, names=names, timeout=120)
    assert not (root / "sy").exists() and not (root / "out").exists() and not (root / "t").exists()
    assert sorted(p.name for p in root.iterdir()) == ["ds", "p.yaml"]  # nor p.zarr, e.json, view-report


STAGES = [
    ("synth: {kind: streetview, out: sy, n: 0}", ["p.yaml", "stages[0].synth.n", "0 is not >= 1"]),
    ("synth: {kind: streetview, out: sy, colour: red}",
     ["p.yaml", "stages[0].synth.colour", "not a key of synth stages (known: kind, out, n"]),
    ("synth: {kind: streetview, out: sy, size: 64x64x3}", ["p.yaml", "stages[0].synth.size", "is not HxW"]),
    ("export: {store: s.zarr, out: e, to: segpipe_zarr}", ["p.yaml", "stages[0].export.to"]),
    ("convert: {src: ds/a.json, out: c, to: voc, images: move}",
     ["p.yaml", "stages[0].convert.images", "'move' is not one of copy, link, none"]),
    ("prelabel: {source: ds, model: m.ckpt, out: p.zarr, percentiles: [98, 2]}",
     ["p.yaml", "stages[0].prelabel.percentiles", "LOW,HIGH"]),
    ("evaluate: {gt: ds, pred: p.zarr, task: pose}", ["p.yaml", "stages[0].evaluate.task", "'pose' is not one of"]),
    ("train: {dataset: ds, arch: unet, out: t, device: gpu}",
     ["p.yaml", "stages[0].train.device", "'gpu' is not auto, cpu, cuda or cuda:N"]),
]


@pytest.mark.parametrize(("stage", "names"), STAGES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_stage_gets_every_check_of_its_command(root: Path, stage: str, names: list[str]) -> None:
    (root / "p.yaml").write_text(f"version: 1\nstages:\n  - {stage}\n")
    check_bad_input("-q", "run", "p.yaml", root=root, code=2, names=names, timeout=120)
    assert sorted(p.name for p in root.iterdir()) == ["ds", "p.yaml"]
    # and validate lists the same problem, on stdout, exit 1
    before = tree_state(root)
    r = run_cli("validate", "p.yaml", cwd=root)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in names), r.stdout
    assert tree_state(root) == before
