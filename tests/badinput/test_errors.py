"""One clear line for every failure, and honest exit codes (issue 13, points 3-5), through the real CLI.

Each case runs ``segpipe`` on one bad input or option and asserts the bad-input promise with
:func:`check_bad_input`: the README's exit code, one ``error:`` line naming the file, the field or the
option, no traceback, no "internal error", and nothing changed outside the declared outputs.

* exceptions that used to escape as "internal error": nesting too deep (VOC XML, pipeline and
  category-map YAML, checkpoint meta), non-UTF-8 YAML, a class-PNG bomb, running out of memory on a
  claimed 100000² image, disk full and read-only outputs (on small tmpfs mounts: skipped where
  ``mount`` is not permitted);
* option ranges checked when parsed (tile, overlap as a fraction, batch, limit, epochs, learning rate,
  workers and threads capped by the machine, the device), unknown commands and options;
* exit 1 and failure lines on stderr whenever an item failed; ``-q`` leaves stderr empty.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input, synth_with_unet
from tests.conftest import run_cli

DEEP = 20000  # nesting levels: far past Python's recursion limit (1000)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ds/`` (4 street-view images, 64², COCO + masks), ``voc/`` (the same as VOC), ``m.ckpt`` (a tiny U-Net)."""
    from segpipe.execution.cluster import ClusterSpec
    from segpipe.pipeline.convert import convert
    from segpipe.pipeline.requests import ConvertRequest

    root = tmp_path_factory.mktemp("errors")
    synth_with_unet(root / "ds", root / "m.ckpt", n=4, seed=1, size=(64, 64))
    convert(ConvertRequest(src=root / "ds", out=root / "voc", to="voc", layout="flat"), ClusterSpec(workers=0))
    return root


@pytest.fixture()
def case(base: Path, tmp_path: Path) -> Path:
    """A fresh copy of the base folder: the case's root."""
    for name in ("ds", "voc", "m.ckpt"):
        src = base / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


PRELABEL = ("-q", "prelabel", "ds", "--model", "m.ckpt", "--out", "o.zarr")
TRAIN = ("-q", "train", "ds", "--arch", "unet", "--out", "t", "--model-arg", "base=4", "--model-arg", "depth=1")


# -------------------------------------------------------------------- exceptions mapped at the readers


def test_voc_xml_nested_too_deeply(case: Path) -> None:
    xml = case / "voc" / "Annotations" / "00000.xml"
    xml.write_text(xml.read_text().replace("</filename>", "</filename>" + "<a>" * DEEP + "</a>" * DEEP))
    check_bad_input("-q", "convert", "voc", "out", "--to", "coco", "-w", "0", root=case, code=2,
                    names=["00000.xml", "nested"], outputs=[case / "out"])


def test_pipeline_yaml_nested_too_deeply(case: Path) -> None:
    (case / "p.yaml").write_text("stages: " + "[" * DEEP + "]" * DEEP + "\n")
    check_bad_input("-q", "run", "p.yaml", root=case, code=2, names=["p.yaml", "nested"])


def test_category_map_yaml_nested_too_deeply(case: Path) -> None:
    (case / "map.yaml").write_text("rename: " + "[" * DEEP + "]" * DEEP + "\n")
    check_bad_input("-q", "convert", "ds", "out", "--to", "voc", "--categories", "map.yaml", "-w", "0", root=case,
                    code=2, names=["map.yaml", "nested"], outputs=[case / "out"])


def test_pipeline_yaml_not_utf8(case: Path) -> None:
    (case / "p.yaml").write_bytes("stages: []\n# caf\xe9\n".encode("latin-1"))
    check_bad_input("-q", "run", "p.yaml", root=case, code=2, names=["p.yaml", "UTF-8"])


def test_category_map_yaml_not_utf8(case: Path) -> None:
    (case / "map.yaml").write_bytes("rename: {caf\xe9: x}\n".encode("latin-1"))
    check_bad_input("-q", "convert", "ds", "out", "--to", "voc", "--categories", "map.yaml", "-w", "0", root=case,
                    code=2, names=["map.yaml", "UTF-8"], outputs=[case / "out"])


def _deep_meta_checkpoint(src: Path, dst: Path) -> None:
    """``src`` with ``meta.provenance.x`` nested :data:`DEEP` levels, written into its pickle by hand.

    Python's pickler recurses and cannot write such an object; the unpickler builds it iteratively,
    so a hostile file can hold one.
    """
    import torch

    obj = torch.load(src, weights_only=True)
    obj["meta"]["provenance"] = {"x": "PLACEHOLDER"}
    tmp = dst.with_suffix(".tmp")
    torch.save(obj, tmp)
    placeholder = b"X\x0b\x00\x00\x00PLACEHOLDER"  # BINUNICODE, as torch's protocol 2 writes it
    deep = b"}" + b"X\x01\x00\x00\x00a}" * DEEP + b"s" * DEEP  # {"a": {"a": ... {}}} by SETITEMs
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert placeholder in data
                data = data.replace(placeholder, deep)
            zout.writestr(info.filename, data)
    tmp.unlink()


def test_checkpoint_meta_nested_too_deeply(case: Path) -> None:
    _deep_meta_checkpoint(case / "m.ckpt", case / "deep.ckpt")
    check_bad_input("-q", "prelabel", "ds", "--model", "deep.ckpt", "--out", "o.zarr", "-w", "0", root=case,
                    code=2, names=["deep.ckpt", "meta.provenance", "nested"], outputs=[case / "o.zarr"])


def _png_bomb(path: Path, side: int = 20000) -> None:
    """A palette PNG of ``side``² zero pixels: a few hundred kilobytes, past Pillow's bomb limit."""
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    pixels = zlib.compress(b"\x00" * (side + 1) * side, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 3, 0, 0, 0))
                     + chunk(b"PLTE", b"\x00" * 768) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_voc_class_png_bomb(case: Path) -> None:
    _png_bomb(case / "voc" / "SegmentationClass" / "00000.png")
    (case / "voc" / "SegmentationObject" / "00000.png").unlink()  # else the size mismatch is found first
    check_bad_input("-q", "convert", "voc", "out", "--to", "coco", "-w", "0", root=case, code=2,
                    names=["SegmentationClass/00000.png"], outputs=[case / "out"])


def test_out_of_memory_on_a_claimed_100000_squared_image(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A polygon on an image recorded as 100000² (no file to check the size against) needs 37 GiB.

    The ceiling is raised so that the allocation is attempted; an address-space limit on the command
    makes it fail here as it would on any machine without 37 GiB.
    """
    data = json.loads((case / "ds" / "annotations.json").read_text())
    first = data["images"][0]
    first["width"] = first["height"] = 100_000
    for a in data["annotations"]:
        if a["image_id"] == first["id"]:
            a["segmentation"] = [[1, 1, 50, 1, 50, 50, 1, 50]]
    (case / "claim").mkdir()  # a folder of its own (DST may not lie in the dataset's folder), without images
    (case / "claim" / "big.json").write_text(json.dumps(data))
    monkeypatch.setenv("SEGPIPE_MAX_PIXELS", str(10**11))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = 3 << 30  # the command inherits it; pytest itself only waits meanwhile
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip("address-space limit already below 3 GiB")
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        check_bad_input("-q", "convert", "claim/big.json", "out", "--to", "voc", "--images", "none", "-w", "0",
                        root=case, code=2, names=["00000.png", "image 1", "out of memory"], outputs=[case / "out"])
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------- disk full and read-only outputs


@contextmanager
def _mounted(where: Path, size: str, read_only: bool) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where`` (read-only if asked); skips the test where mounting is not allowed."""
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs",
                        str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        where.rmdir()


@pytest.fixture(params=["full", "read-only"])
def small_fs(request: pytest.FixtureRequest, case: Path) -> Iterator[tuple[Path, str]]:
    """A 4 KiB tmpfs (one page), or a read-only one, inside the case; with the words the error line must say."""
    read_only = request.param == "read-only"
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with _mounted(case / "mnt", "4k", read_only) as mnt:
        yield mnt, "EROFS" if read_only else "ENOSPC"


WRITERS = {
    "synth": (("-q", "synth", "streetview", "{out}", "--n", "4", "--size", "64x64"), "replaced"),
    "convert": (("-q", "convert", "ds", "{out}", "--to", "voc", "-w", "0"), "replaced"),
    "export": (("-q", "export", "s.zarr", "{out}", "--to", "coco", "-w", "0"), "replaced"),
    "prelabel": (("-q", "prelabel", "ds", "--model", "m.ckpt", "--out", "{out}", "-w", "0"), "--resume"),
    "evaluate": (("-q", "evaluate", "ds", "s.zarr", "-w", "0", "--report-dir", "{out}"), "kept"),
    "train": (TRAIN[:6] + ("{out}",) + TRAIN[7:] + ("--epochs", "1"), "kept"),
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_disk_full_and_read_only_name_the_output_and_what_was_kept(
        command: str, case: Path, small_fs: tuple[Path, str]) -> None:
    mnt, errno_name = small_fs
    if command in ("export", "evaluate"):
        from segpipe.execution.cluster import ClusterSpec
        from segpipe.pipeline.prelabel import PrelabelRequest, prelabel

        prelabel(PrelabelRequest(source=str(case / "ds"), model=str(case / "m.ckpt"), out=case / "s.zarr",
                                 threads=1), ClusterSpec(workers=0))
    args, kept = WRITERS[command]
    out = f"mnt/{command}-out"
    check_bad_input(*(a.format(out=out) for a in args), root=case, code=2, names=[out, errno_name, kept],
                    outputs=[mnt])


# ----------------------------------------------------------------------------- option ranges, parse time


@pytest.mark.parametrize(("args", "option"), [
    (PRELABEL + ("-w", "0", "--tile", "0"), "--tile"),
    (PRELABEL + ("-w", "0", "--overlap", "1.0"), "--overlap"),
    (PRELABEL + ("-w", "0", "--overlap", "5"), "--overlap"),
    (PRELABEL + ("-w", "0", "--overlap", "nan"), "--overlap"),
    (PRELABEL + ("-w", "0", "--overlap", "0.99", "--tile", "16"), "--overlap"),
    (PRELABEL + ("--device", "bogus"), "--device"),
    (PRELABEL + ("--device", "cuda:99"), "--device"),
    (PRELABEL + ("-w", "0", "--limit", "0"), "--limit"),
    (PRELABEL + ("-w", "0", "--batch", "0"), "--batch"),
    (PRELABEL + ("--workers", "-1"), "--workers"),
    (PRELABEL + ("--workers", "10000"), "--workers"),
    (PRELABEL + ("-w", "0", "--threads", "100000"), "--threads"),
    (PRELABEL + ("-w", "0", "--threads", "0"), "--threads"),
    (TRAIN + ("--lr", "nan"), "--lr"),
    (TRAIN + ("--lr", "0"), "--lr"),
    (TRAIN + ("--epochs", "-1"), "--epochs"),
    (TRAIN + ("--batch", "0"), "--batch"),
    (TRAIN + ("--device", "cuda:99"), "--device"),
    (("-q", "convert", "ds", "out", "--to", "voc", "-w", "-1"), "--workers"),
    (("-q", "export", "ds", "out", "--to", "coco", "-w", "10000"), "--workers"),
    (("-q", "evaluate", "ds", "ds", "-w", "10000"), "--workers"),
    (("-q", "synth", "streetview", "sy", "--n", "0"), "--n"),
    (("-q", "synth", "streetview", "sy", "--seed", "-1"), "--seed"),
    (TRAIN + ("--seed", "-1"), "--seed"),
    (TRAIN + ("--model-arg", "base=-3"), "--model-arg"),
    (("-q", "train", "ds", "--arch", "nope", "--out", "t"), "--arch"),
    (("-q", "evaluate", "ds", "ds", "-w", "0", "--on-error", "nope"), "--on-error"),
    (("nosuch",), "nosuch"),
    (("synth", "-q"), "-q"),
    (("synth", "streetview", "sy", "--nope"), "--nope"),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_option_out_of_range_is_one_line_before_anything_starts(case: Path, args: tuple[str, ...],
                                                                  option: str) -> None:
    # The device and worker checks come before any cluster starts: a default cluster (no -w) would take
    # seconds to start, and a CUDA device that is not there would fail on its workers.
    check_bad_input(*args, root=case, code=2, names=[option], timeout=120)


def test_overlap_is_a_fraction_of_the_tile(case: Path) -> None:
    """0.5 of a 32-pixel tile is 16 pixels: the run's config records the fraction given."""
    r = run_cli(*PRELABEL, "-w", "0", "--tile", "32", "--overlap", "0.5", "--threads", "1", cwd=case)
    assert r.returncode == 0, r.stderr
    import zarr

    attrs = zarr.open_group(str(case / "o.zarr"), mode="r").attrs["segpipe"]
    assert attrs["config"]["overlap"] == 0.5 and attrs["config"]["tile"] == 32


# --------------------------------------------------------------------------- exit codes and -q


def _truncate_one_image(case: Path) -> str:
    victim = sorted((case / "ds" / "images").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:200])
    return victim.name


def test_prelabel_failed_image_under_skip_exits_1_with_the_line_on_stderr(case: Path) -> None:
    name = _truncate_one_image(case)
    r = check_bad_input(*PRELABEL, "-w", "0", "--threads", "1", root=case, code=1, names=[name],
                        outputs=[case / "o.zarr"], one_line=False)
    assert name not in r.stdout and f"error: {name}: " in r.stderr
    assert "3 done" in r.stdout


def test_convert_failed_image_under_skip_exits_1(case: Path) -> None:
    name = _truncate_one_image(case)
    r = check_bad_input("-q", "convert", "ds", "out", "--to", "voc", "--on-error", "skip", "-w", "0", root=case,
                        code=1, names=[name], outputs=[case / "out"], one_line=False)
    assert name not in r.stdout


def test_run_with_a_failed_prelabel_image_exits_1(case: Path) -> None:
    name = _truncate_one_image(case)
    (case / "p.yaml").write_text("workers: 0\nstages:\n  - prelabel: {source: ds, model: m.ckpt, out: o.zarr}\n")
    check_bad_input("-q", "run", "p.yaml", root=case, code=1, names=["p.yaml", "stage 1"],
                    outputs=[case / "o.zarr"], one_line=False)
    assert name


def test_quiet_leaves_stderr_empty(case: Path) -> None:
    for args in (("-q", "synth", "streetview", "sy", "--n", "2", "--size", "64x64"),
                 (*TRAIN, "--epochs", "1"),
                 (*PRELABEL, "-w", "0", "--threads", "1")):
        r = run_cli(*args, cwd=case)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip() == "", (args, r.stderr)


# ------------------------------------------------------------------- checkpoints that do not fit


def test_checkpoint_of_an_unknown_arch_names_the_file_and_meta_arch(case: Path) -> None:
    import torch

    obj = torch.load(case / "m.ckpt", weights_only=True)
    obj["meta"]["arch"] = "nope"
    torch.save(obj, case / "nope.ckpt")
    r = check_bad_input("-q", "prelabel", "ds", "--model", "nope.ckpt", "--out", "o.zarr", "-w", "0", root=case,
                        code=2, names=["nope.ckpt", "meta.arch", "unknown model 'nope'"], outputs=[case / "o.zarr"])
    assert "--arch" not in r.stderr


def test_weights_that_do_not_fit_name_the_file_and_the_first_key(case: Path) -> None:
    """One line: the checkpoint file, the first mismatching key with both shapes, and how many more."""
    import dataclasses

    from segpipe.models.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(case / "m.ckpt")
    save_checkpoint(case / "mis.ckpt", ck.state_dict,
                    dataclasses.replace(ck.meta, model_kwargs={**ck.meta.model_kwargs, "base": 16}))
    r = check_bad_input("-q", "prelabel", "ds", "--model", "mis.ckpt", "--out", "o.zarr", "-w", "0", root=case,
                        code=2, names=["mis.ckpt", "weights do not fit unet", "[8, 3, 3, 3]", "[16, 3, 3, 3]", "more"],
                        outputs=[case / "o.zarr"])
    assert "[" + "'" not in r.stderr and "\\t" not in r.stderr  # no Python list of torch's lines


def test_train_disk_full_while_saving_the_checkpoint(case: Path) -> None:
    """torch.save reports a full disk as RuntimeError (inline_container.cc): the disk-full line all the same."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with _mounted(case / "mnt", "16k", False) as mnt:  # the metrics fit, the checkpoint does not
        check_bad_input(*TRAIN[:6], "mnt/t", *TRAIN[7:], "--epochs", "1", root=case, code=2,
                        names=["mnt/t", "ENOSPC", "kept"], outputs=[mnt])
