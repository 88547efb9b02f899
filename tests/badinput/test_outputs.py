"""Nothing is deleted or replaced that segpipe did not make (issue 13, point 1).

Every refusal goes through the real CLI and :func:`check_bad_input`: exit 2, one ``error:`` line naming
the option, no traceback, and the case's folder byte-identical afterwards (inputs, the refused output and
everything beside them). The positive cases show that a legitimate replacement still works, whole and
atomically: the earlier output stays until the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segpipe.storage import outputs
from tests.badinput._corpus import check_bad_input, synth_with_unet, tree_state
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/`` (4 synthetic street-view images with ground truth), ``unet.ckpt`` and ``store.zarr``."""
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

    root = tmp_path_factory.mktemp("outputs")
    synth_with_unet(root / "data", root / "unet.ckpt", n=4, seed=5, size=(64, 64))
    prelabel(PrelabelRequest(source=str(root / "data" / "images"), model=str(root / "unet.ckpt"),
                             out=root / "store.zarr", threads=1), ClusterSpec(workers=0))
    return root


@pytest.fixture()
def case(base: Path, tmp_path: Path) -> Path:
    """A private copy of ``base`` (the case's root: nothing under it may change unless declared)."""
    root = tmp_path / "case"
    shutil.copytree(base, root, symlinks=True)
    return root


def _foreign(root: Path, name: str = "mine") -> Path:
    """A folder segpipe did not make, holding a document and an ``images/`` subfolder."""
    d = root / name
    (d / "images").mkdir(parents=True)
    (d / "notes.txt").write_text("my notes\n")
    (d / "images" / "keep.png").write_bytes(b"not really a png")
    return d


def _siblings(path: Path) -> list[str]:
    """Staging or set-aside leftovers beside ``path``."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


# --------------------------------------------------------------------------- prelabel --overwrite


@pytest.mark.parametrize("target", ["data/images", "data", "."], ids=["source", "parent", "cwd"])
def test_prelabel_overwrite_never_deletes_an_input(case: Path, target: str) -> None:
    r = check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", target, "--overwrite", "-w", "0",
                        root=case, code=2, names=["--out"])
    assert "--overwrite" not in r.stderr.replace("--out", "")


@pytest.mark.parametrize("flag", [["--overwrite"], []], ids=["overwrite", "plain"])
def test_prelabel_refuses_a_folder_it_did_not_make(case: Path, flag: list[str]) -> None:
    _foreign(case)
    r = check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", "mine", *flag, "-w", "0",
                        root=case, code=2, names=["mine", "not a segpipe store"])
    assert "--overwrite" not in r.stderr  # the refusal never suggests the flag that used to delete it


@pytest.mark.parametrize("url", ["s3://bucket/x.zarr", "gs://bucket/x.zarr", "https://user:secret@host/x.zarr"])
def test_outputs_in_object_storage_are_refused_not_written_locally(case: Path, url: str) -> None:
    """A URL output of a command not wired to object storage (convert) is refused in one line (no local
    folder ``s3:``, no credential echoed). prelabel and export write there: tests/badinput/test_object_storage.py.
    """
    r = check_bad_input("convert", "store.zarr", url, "--to", "coco", "-w", "0", root=case, code=2,
                        names=["DST", "cannot write to object storage yet"])
    assert "secret" not in r.stderr and not (case / url.split("/")[0]).exists()


def test_prelabel_refuses_a_file_and_a_symlink_to_the_source(case: Path) -> None:
    (case / "doc.txt").write_text("a document\n")
    check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", "doc.txt", "--overwrite", "-w", "0",
                    root=case, code=2, names=["doc.txt"])
    (case / "link.zarr").symlink_to(case / "data" / "images", target_is_directory=True)
    check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", "link.zarr", "--overwrite", "-w", "0",
                    root=case, code=2, names=["--out", "is the input"])


def test_prelabel_overwrite_replaces_a_store_atomically(case: Path) -> None:
    store = case / "store.zarr"
    old = json.loads((store / "zarr.json").read_text())["attributes"]["segpipe"]["config_hash"]
    r = run_cli("prelabel", "data/images", "-m", "unet.ckpt", "-o", "store.zarr", "--overwrite", "--tile", "32",
                "-w", "0", "--threads", "1", cwd=case)
    assert r.returncode == 0, r.stderr
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]["segpipe"]
    assert attrs["config_hash"] != old and attrs["config"]["tile"] == 32
    assert len(list((store / ".segpipe" / "ledger").glob("*.json"))) == 4
    assert _siblings(store) == []


def test_prelabel_overwrite_keeps_the_old_store_when_the_new_run_stops(case: Path) -> None:
    """--on-error fail stops the new run at a corrupt image: the earlier store stays, whole."""
    src = case / "src"
    shutil.copytree(case / "data" / "images", src)
    (src / "00001.png").write_bytes((src / "00001.png").read_bytes()[:100])
    store = case / "store.zarr"
    before = tree_state(store)
    r = run_cli("prelabel", "src", "-m", "unet.ckpt", "-o", "store.zarr", "--overwrite", "--tile", "32",
                "--on-error", "fail", "-w", "0", "--threads", "1", cwd=case)
    assert r.returncode == 1, r.stderr
    assert "earlier store was kept" in r.stdout
    assert tree_state(store) == before and _siblings(store) == []


def test_prelabel_overwrite_killed_leaves_the_old_store(case: Path) -> None:
    """kill -9 while the new store is being written: the old one is intact; the next run cleans up."""
    big = case / "big"
    big.mkdir()
    for i in range(40):
        shutil.copy(case / "data" / "images" / f"{i % 4:05d}.png", big / f"{i:05d}.png")
    store = case / "store.zarr"
    before = tree_state(store)
    proc = subprocess.Popen([sys.executable, "-m", "segpipe", "-q", "prelabel", "big", "-m", "unet.ckpt", "-o",
                             "store.zarr", "--overwrite", "--tile", "32", "-w", "0", "--threads", "1"],
                            cwd=case, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            staging = [p for p in case.iterdir() if p.name.startswith(".store.zarr.segpipe-staging.")]
            if staging and any((staging[0] / ".segpipe" / "ledger").glob("*.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert tree_state(store) == before
    assert _siblings(store)  # the killed run's staging folder is still there ...
    r = run_cli("prelabel", "data/images", "-m", "unet.ckpt", "-o", "store.zarr", "--overwrite", "--tile", "32",
                "-w", "0", "--threads", "1", cwd=case)
    assert r.returncode == 0, r.stderr
    assert _siblings(store) == []  # ... and the next run on the same output removed it


# --------------------------------------------------------------------------------- --json, reports


def test_validate_json_over_its_input(case: Path) -> None:
    check_bad_input("validate", "data/annotations.json", "--json", "data/annotations.json", root=case, code=2,
                    names=["--json"])
    check_bad_input("validate", "data", "--json", "data/problems.json", root=case, code=2, names=["--json"])


def test_evaluate_json_and_report_dir_inside_the_ground_truth(case: Path) -> None:
    check_bad_input("evaluate", "data", "store.zarr", "--json", "data/annotations.json", "-w", "0", root=case,
                    code=2, names=["--json"])
    check_bad_input("evaluate", "data", "store.zarr", "--report-dir", "store.zarr/report", "-w", "0", root=case,
                    code=2, names=["--report-dir"])
    _foreign(case)
    check_bad_input("evaluate", "data", "store.zarr", "--report-dir", "mine", "-w", "0", root=case, code=2,
                    names=["--report-dir", "mine"])


def test_evaluate_report_dir_is_replaced_whole(case: Path) -> None:
    for _ in range(2):
        r = run_cli("evaluate", "data", "store.zarr", "--report-dir", "rep", "--worst", "1", "-w", "0", cwd=case)
        assert r.returncode == 0, r.stderr
    assert (case / "rep" / "report.json").is_file() and (case / "rep" / outputs.MARKER).is_file()
    assert _siblings(case / "rep") == []


# ------------------------------------------------------------------------------ synth, train, demo


def test_synth_refuses_a_dataset_it_did_not_make(case: Path) -> None:
    mine = _foreign(case)
    check_bad_input("synth", "streetview", "mine", "--n", "1", "--size", "32x32", root=case, code=2,
                    names=["mine"])
    assert (mine / "images" / "keep.png").read_bytes() == b"not really a png"


def test_synth_refuses_its_own_output_with_a_users_file_in_it(case: Path) -> None:
    (case / "data" / "my_notes.txt").write_text("mine\n")
    check_bad_input("synth", "streetview", "data", "--n", "1", "--size", "32x32", root=case, code=2,
                    names=["data", "my_notes.txt"])


def test_synth_replaces_its_own_output_whole(case: Path) -> None:
    r = run_cli("synth", "streetview", "data", "--n", "2", "--size", "32x32", "--overwrite", cwd=case)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (case / "data" / "images").iterdir()) == ["00000.png", "00001.png"]
    assert _siblings(case / "data") == []


def test_train_refuses_a_foreign_folder_and_its_own_dataset(case: Path) -> None:
    _foreign(case)
    check_bad_input("train", "data", "--arch", "unet", "--out", "mine", "--epochs", "1", root=case, code=2,
                    names=["--out", "mine"])
    check_bad_input("train", "data", "--arch", "unet", "--out", "data/ckpt", "--epochs", "1", root=case, code=2,
                    names=["--out", "lies inside"])


def test_demo_refuses_a_folder_it_did_not_make(case: Path) -> None:
    _foreign(case)
    check_bad_input("demo", "--out", "mine", root=case, code=2, names=["mine"])


def test_evaluate_checkpoints_refuses_a_foreign_report_dir(case: Path) -> None:
    _foreign(case)
    check_bad_input("evaluate-checkpoints", "data", "unet.ckpt", "--images", "data/images", "--report-dir", "mine",
                    "-w", "0", root=case, code=2, names=["--report-dir", "mine"])


# ---------------------------------------------------------------------------------- convert, export


def test_convert_destination_inside_or_equal_to_the_source(case: Path) -> None:
    check_bad_input("convert", "data", "data/voc", "--to", "voc", "-w", "0", root=case, code=2, names=["DST"])
    check_bad_input("convert", "data/annotations.json", "data/annotations.json", "--to", "coco", "-w", "0",
                    root=case, code=2, names=["DST"])
    check_bad_input("convert", "data/annotations.json", "out", "--to", "coco", "--image-root", "out", "-w", "0",
                    root=case, code=2, names=["DST"])


def test_convert_overwrite_never_swaps_a_users_subfolders(case: Path) -> None:
    _foreign(case)
    r = check_bad_input("convert", "data", "mine", "--to", "coco", "--overwrite", "-w", "0", root=case, code=2,
                        names=["mine"])
    assert "--overwrite" not in r.stderr


def test_convert_overwrite_replaces_its_own_output(case: Path) -> None:
    r = run_cli("convert", "data", "voc", "--to", "voc", "-w", "0", cwd=case)
    assert r.returncode == 0, r.stderr
    check_bad_input("convert", "data", "voc", "--to", "voc", "-w", "0", root=case, code=2,
                    names=["voc", "--overwrite"])  # its own output: the hint may name the flag
    r = run_cli("convert", "data", "voc", "--to", "voc", "--overwrite", "-w", "0", cwd=case)
    assert r.returncode == 0, r.stderr
    assert _siblings(case / "voc") == []


def test_export_destination_inside_the_store(case: Path) -> None:
    check_bad_input("export", "store.zarr", "store.zarr/coco", "--to", "coco", "-w", "0", root=case, code=2,
                    names=["DST"])
    _foreign(case)
    check_bad_input("export", "store.zarr", "mine", "--to", "coco", "--overwrite", "-w", "0", root=case, code=2,
                    names=["mine"])


# ------------------------------------------------------------------------------------- pipelines


@pytest.mark.parametrize("workdir", ["/tmp", "../elsewhere", "sub/../../up"])
def test_pipeline_workdir_outside_its_folder(case: Path, workdir: str) -> None:
    pipe = case / "p.yaml"
    pipe.write_text(f"version: 1\nworkdir: {workdir}\nstages:\n  - synth: {{kind: streetview, out: d, n: 1}}\n")
    check_bad_input("run", "p.yaml", root=case, code=2, names=["p.yaml", "workdir"])
    r = run_cli("validate", "p.yaml", cwd=case)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "workdir" in r.stdout and "Traceback" not in r.stderr


def test_pipeline_workdir_symlink_out_is_flagged(case: Path, tmp_path: Path) -> None:
    (case / "w").symlink_to(tmp_path, target_is_directory=True)
    pipe = case / "p.yaml"
    pipe.write_text("version: 1\nworkdir: w\nstages:\n  - synth: {kind: streetview, out: d, n: 1}\n")
    check_bad_input("run", "p.yaml", root=case, code=2, names=["p.yaml", "workdir"])


# ------------------------------------------------------------------------------- the module itself


def test_leftovers_of_dead_runs_are_cleaned_or_put_back(tmp_path: Path) -> None:
    final = tmp_path / "out"
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    while outputs._alive(dead):
        dead += 1
    host = outputs._HOST
    old = tmp_path / f".out.{outputs.OLD_TAG}.{host}.{dead}.abcd1234"
    (old / "sub").mkdir(parents=True)
    staging = tmp_path / f".out.{outputs.STAGING_TAG}.{host}.{dead}.abcd1234"
    staging.mkdir()
    live = tmp_path / f".out.{outputs.STAGING_TAG}.{host}.{os.getpid()}.abcd1234"
    live.mkdir()
    outputs.clean_leftovers(final)
    assert (final / "sub").is_dir()  # killed between the two renames of a swap: the old output is back
    assert not staging.exists() and not old.exists()
    assert live.exists()  # a live writer's staging folder is not touched


def test_staged_failure_keeps_the_old_output(tmp_path: Path) -> None:
    plan = outputs.check_output(tmp_path / "o", option="OUT", command="synth")
    with outputs.staged(plan) as tmp:
        (tmp / "a.txt").write_text("1")
    plan = outputs.check_output(tmp_path / "o", option="OUT", command="synth")
    with pytest.raises(RuntimeError), outputs.staged(plan) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("the new run failed")
    assert (tmp_path / "o" / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    with outputs.staged(outputs.check_output(tmp_path / "o", option="OUT", command="synth")) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [outputs.MARKER, "b.txt"]


def test_set_aside_restores_the_old_output_on_failure(tmp_path: Path) -> None:
    """The demo builds in place (its store records its own paths): the earlier demo waits beside it."""
    final = tmp_path / "demo-out"
    final.mkdir()
    (final / ".segpipe-demo").write_text("made by segpipe demo\n")  # a demo of an earlier version
    (final / "demo.json").write_text("old")
    plan = outputs.check_output(final, option="--out", command="demo")
    with pytest.raises(KeyboardInterrupt), outputs.set_aside(plan, entries=["demo.json"]) as out:
        (out / "demo.json").write_text("new, half done")
        raise KeyboardInterrupt
    assert (final / "demo.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["demo-out"]
    with outputs.set_aside(outputs.check_output(final, option="--out", command="demo"), entries=["demo.json"]) as out:
        (out / "demo.json").write_text("new")
    assert (final / "demo.json").read_text() == "new" and not (final / ".segpipe-demo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-out"]


# ------------------------------------------- hunt 2: gaps in "nothing is deleted that segpipe did not make"


def test_a_dataset_given_as_its_file_occupies_its_folder(case: Path) -> None:
    """``data/annotations.json`` reads images and masks from ``data/``: no output may go there either."""
    gt = "data/annotations.json"
    check_bad_input("validate", gt, "--json", "data/images/00002.png", root=case, code=2, names=["--json"])
    check_bad_input("-q", "evaluate", gt, "store.zarr", "--json", "data/masks/00003.png", "-w", "0", root=case,
                    code=2, names=["--json"])
    check_bad_input("evaluate", gt, "store.zarr", "--report-dir", "data/masks/rep", "-w", "0", root=case, code=2,
                    names=["--report-dir"])
    check_bad_input("prelabel", gt, "-m", "unet.ckpt", "-o", "data/images/p.zarr", "-w", "0", root=case, code=2,
                    names=["--out"])
    check_bad_input("convert", gt, "data/images/conv", "--to", "voc", "-w", "0", root=case, code=2, names=["DST"])
    check_bad_input("convert", gt, ".", "--to", "voc", "-w", "0", root=case, code=2, names=["DST"])
    check_bad_input("convert", gt, "data/annotations.json", "--to", "coco", "-w", "0", root=case, code=2,
                    names=["DST"])
    r = run_cli("validate", gt, "--json", "v.json", cwd=case)  # beside the dataset: fine
    assert r.returncode in (0, 1) and json.loads((case / "v.json").read_text())["problems"] is not None, r.stderr


def test_a_new_output_beside_a_dataset_file_is_fine(case: Path) -> None:
    """The README's ``segpipe convert instances.json out/voc`` run in the folder that holds the file."""
    data = case / "data"
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    r = run_cli("convert", "annotations.json", "conv", "--to", "voc", "-w", "0", cwd=data)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (data / "conv/VOCdevkit/VOC2012/SegmentationClass").iterdir()), "no masks written"
    r = run_cli("-q", "evaluate", "annotations.json", "../store.zarr", "--report-dir", "rep", "-w", "0", cwd=data)
    assert r.returncode == 0 and (data / "rep").is_dir(), r.stderr
    r = run_cli("convert", "annotations.json", "conv", "--to", "voc", "-w", "0", "--overwrite", cwd=data)
    assert r.returncode == 0, r.stderr  # its own earlier output is replaced
    assert {p: p.read_bytes() for p in before} == before, "an input changed"


def test_pipeline_ingest_out_never_replaces_a_users_file_or_an_input(case: Path) -> None:
    pipe = case / "p.yaml"
    pipe.write_text("version: 1\nstages:\n  - ingest: {source: data/images, out: unet.ckpt}\n")
    check_bad_input("run", "p.yaml", root=case, code=2, names=["unet.ckpt"])
    pipe.write_text("version: 1\nstages:\n  - ingest: {source: data/images, out: data/m.jsonl}\n"
                    "  - evaluate: {gt: data, pred: store.zarr, task: semantic}\n")
    check_bad_input("run", "p.yaml", root=case, code=2, names=["ingest.out", "data"])
    pipe.write_text("version: 1\nstages:\n  - ingest: {source: data/images, out: m.jsonl}\n")
    for _ in range(2):  # its own earlier manifest is replaced
        r = run_cli("run", "p.yaml", cwd=case)
        assert r.returncode == 0, r.stderr
    assert len((case / "m.jsonl").read_text().splitlines()) == 4


def test_validate_flags_a_stage_output_outside_the_workdir(case: Path) -> None:
    (case / "p.yaml").write_text("version: 1\nstages:\n  - synth: {kind: streetview, out: ../escaped, n: 1}\n")
    before = tree_state(case.parent)
    r = run_cli("validate", "p.yaml", cwd=case)
    assert r.returncode == 1 and "stages[0].synth.out" in r.stdout and "outside the work folder" in r.stdout, r.stdout
    assert tree_state(case.parent) == before


def test_json_never_replaces_a_device_or_a_users_file(case: Path, tmp_path: Path) -> None:
    (case / "mynull").symlink_to("/dev/null")
    check_bad_input("validate", "data", "--json", "mynull", root=case, code=2, names=["--json", "regular file"])
    fifo = tmp_path / "fifo"  # outside the case: hashing the case would block on it
    os.mkfifo(fifo)
    check_bad_input("validate", "data", "--json", str(fifo), root=case, code=2, names=["--json"])
    assert fifo.is_fifo()
    (case / "essay.txt").write_text("my essay\n")
    check_bad_input("validate", "data", "--json", "essay.txt", root=case, code=2, names=["essay.txt", "--json"])
    check_bad_input("evaluate", "data", "store.zarr", "--json", "essay.txt", "-w", "0", root=case, code=2,
                    names=["essay.txt", "--json"])
    (case / "old.json").write_text('{"path": "data", "format": "coco", "problems": []}\n')  # before segpipe_version
    for target in ("v.json", "v.json", "old.json"):  # re-running onto its own earlier JSON works
        r = run_cli("validate", "data", "--json", target, cwd=case)
        assert r.returncode in (0, 1) and "segpipe_version" in json.loads((case / target).read_text()), r.stderr


def test_store_overwrite_refuses_a_users_files_at_its_top(case: Path) -> None:
    (case / "store.zarr" / "notes.txt").write_text("x\n")
    (case / "store.zarr" / "mywork").mkdir()
    r = check_bad_input("prelabel", "data/images", "-m", "unet.ckpt", "-o", "store.zarr", "--overwrite", "-w", "0",
                        root=case, code=2, names=["store.zarr", "mywork"])
    assert "--overwrite" not in r.stderr


@pytest.mark.parametrize("extra", ["deep", "partial"])
def test_export_overwrite_refuses_a_users_file_anywhere(case: Path, extra: str) -> None:
    r = run_cli("export", "store.zarr", "ex9", "--to", "coco", "-w", "0", cwd=case)
    assert r.returncode == 0, r.stderr
    if extra == "deep":
        sub = next(p for p in sorted((case / "ex9").iterdir()) if p.is_dir() and not p.name.startswith("."))
        mine = sub / "mynotes.txt"
    else:  # a name that merely contains ".partial." is no segpipe temp file
        mine = case / "ex9" / "thesis.partial.docx"
    mine.write_text("x\n")
    check_bad_input("export", "store.zarr", "ex9", "--to", "coco", "--overwrite", "-w", "0", root=case, code=2,
                    names=["ex9", mine.name])
    mine.unlink()
    r = run_cli("export", "store.zarr", "ex9", "--to", "coco", "--overwrite", "-w", "0", cwd=case)
    assert r.returncode == 0, r.stderr


def _dead_pid() -> int:
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    while outputs._alive(dead):
        dead += 1
    return dead


def test_fsck_repair_cleans_a_killed_runs_staging_folder(case: Path) -> None:
    staging = case / f".store.zarr.{outputs.STAGING_TAG}.{outputs._HOST}.{_dead_pid()}.abcd1234"
    (staging / ".segpipe").mkdir(parents=True)
    (staging / "zarr.json").write_text("{}")
    r = run_cli("fsck", "store.zarr", cwd=case)
    assert r.returncode == 1 and staging.name in r.stderr, r.stderr
    assert staging.exists()
    r = run_cli("fsck", "store.zarr", "--repair", cwd=case)
    assert r.returncode == 0, r.stderr
    assert not staging.exists() and _siblings(case / "store.zarr") == []


def test_a_killed_in_place_replacement_gives_back_the_complete_old_output(case: Path) -> None:
    """Killed while building in place (the demo's way): the next check of that output puts the old one back."""
    aside = case / f".data.{outputs.ASIDE_TAG}.{outputs._HOST}.{_dead_pid()}.abcd1234"
    os.rename(case / "data", aside)
    half = case / "data"
    half.mkdir()
    outputs.write_marker(half, "synth")
    (half / "images").mkdir()  # the new run had just begun
    old = tree_state(aside)
    check_bad_input("synth", "streetview", "data", "--n", "1", "--size", "32x32", root=case, code=2,
                    names=["data", "--overwrite"], outputs=[half, aside])
    assert tree_state(case / "data") == old and not aside.exists()


def test_synth_and_train_replace_their_output_only_with_overwrite(case: Path) -> None:
    r = check_bad_input("synth", "streetview", "data", "--n", "3", "--size", "32x32", root=case, code=2,
                        names=["data", "--overwrite"])
    assert "earlier `segpipe synth`" in r.stderr
    ck = case / "ck"
    ck.mkdir()
    (ck / "best.ckpt").write_bytes((case / "unet.ckpt").read_bytes())
    outputs.write_marker(ck, "train", ["*.ckpt", "metrics.jsonl"])
    check_bad_input("train", "data", "--arch", "unet", "--out", "ck", "--epochs", "1", root=case, code=2,
                    names=["ck", "--overwrite"])


def test_schemas_replace_a_symlink_never_write_through_it(case: Path) -> None:
    (case / "mine.txt").write_text("mine\n")
    sch = case / "sch"
    sch.mkdir()
    (sch / "coco.schema.json").symlink_to("../mine.txt")
    r = run_cli("schemas", "sch", cwd=case)
    assert r.returncode == 0, r.stderr
    assert (case / "mine.txt").read_text() == "mine\n"
    assert not (sch / "coco.schema.json").is_symlink() and json.loads((sch / "coco.schema.json").read_text())
