"""Bad input to ``segpipe view``: one line naming the option or the file, exit 2, nothing written beside it."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    """A tiny synthetic dataset to view."""
    from segpipe.synth import synth

    synth("streetview", tmp_path / "data", n=2, seed=1, size=(32, 64))
    return tmp_path


@pytest.mark.parametrize(("option", "value", "names"), [
    ("--thumb", "8", ["--thumb", "32..2048"]),
    ("--large", "100", ["--large", "at least --thumb"]),
    ("--page-size", "3", ["--page-size", "10..5000"]),
])
def test_option_out_of_range(case: Path, option: str, value: str, names: list[str]) -> None:
    check_bad_input("view", "data", "--out", "rep", option, value, "-w", "0", root=case, code=2, names=names)
    assert not (case / "rep").exists()


def test_missing_source_and_missing_ground_truth(case: Path) -> None:
    check_bad_input("view", "nothere", "--out", "rep", root=case, code=2, names=["nothere", "no such file"])
    check_bad_input("view", "data", "--gt", "nogt", "--out", "rep", root=case, code=2, names=["nogt"])


def test_out_is_a_folder_segpipe_did_not_make(case: Path) -> None:
    (case / "mine").mkdir()
    (case / "mine" / "notes.txt").write_text("keep me")
    check_bad_input("view", "data", "--out", "mine", "-w", "0", root=case, code=2, names=["mine", "--out"])


def test_out_inside_the_source(case: Path) -> None:
    check_bad_input("view", "data", "--out", "data/images/rep", "-w", "0", root=case, code=2,
                    names=["--out", "data"])


def test_no_source_without_serve(case: Path) -> None:
    check_bad_input("view", "--out", "rep", root=case, code=2, names=["SOURCE", "--serve"])


def test_serve_a_folder_without_a_report(case: Path) -> None:
    (case / "empty").mkdir()
    check_bad_input("view", "--serve", "--out", "empty", "--port", "0", root=case, code=2,
                    names=["empty", "index.html"])


@pytest.fixture()
def store_case(case: Path) -> Path:
    """``case`` with ``pre.zarr``: its images pre-labeled by a random-weight U-Net (photos stay in data/images)."""
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
    from tests.view.conftest import make_checkpoint

    make_checkpoint(case / "unet.ckpt", case / "data")
    prelabel(PrelabelRequest(source=str(case / "data" / "images"), model=str(case / "unet.ckpt"),
                             out=case / "pre.zarr", probs=True, threads=1), ClusterSpec(workers=0))
    return case


def test_out_inside_the_photo_folder_of_a_store(store_case: Path) -> None:
    # The store keeps its photos where they were: a report among them would change the dataset.
    check_bad_input("view", "pre.zarr", "--out", "data/images/rep", "-w", "0", root=store_case, code=2,
                    names=["--out", "data/images"])


def test_gt_that_numbers_the_classes_differently(store_case: Path) -> None:
    # Same ids, other names: its layer, the legend and the error would pair different classes.
    gt = store_case / "gt"
    shutil.copytree(store_case / "data", gt)
    lm = gt / "labelmap.txt"
    lm.write_text(lm.read_text().replace("sky:", "SKY_:").replace("road:", "sky:").replace("SKY_:", "road:"))
    (gt / "annotations.json").unlink()  # the label maps alone: the classes come from labelmap.txt
    check_bad_input("view", "pre.zarr", "--gt", "gt", "--out", "rep", "-w", "0", root=store_case, code=2,
                    names=["--gt", "gt", "'sky' vs 'road'"])


def test_undetectable_source_or_gt_names_this_commands_option(case: Path) -> None:
    (case / "empty").mkdir()
    r = check_bad_input("view", "empty", "--out", "rep", "-w", "0", root=case, code=2, names=["empty", "--format"])
    assert "--from" not in r.stderr
    r = check_bad_input("view", "data", "--gt", "empty", "--out", "rep", "-w", "0", root=case, code=2,
                        names=["empty", "--gt-format"])
    assert "--from" not in r.stderr


def test_serve_on_a_busy_port_is_refused_before_the_report_is_built(case: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        check_bad_input("view", "data", "--out", "rep", "--serve", "--port", port, "-w", "0", root=case, code=2,
                        names=["--port", port])
    assert not (case / "rep").exists()
