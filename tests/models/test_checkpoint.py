"""Checkpoints round-trip, describe themselves, and refuse pickles that would run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from segpipe.errors import CheckpointError
from segpipe.models.checkpoint import (
    CheckpointMeta,
    build_from_checkpoint,
    load_checkpoint,
    provenance,
    save_checkpoint,
)
from segpipe.models.registry import build_model


def _meta() -> CheckpointMeta:
    return CheckpointMeta.for_arch(
        "unet",
        3,
        categories=[
            {"index": i, "id": i, "name": n, "color": c, "isthing": i > 0}
            for i, (n, c) in enumerate([("bg", [0, 0, 0]), ("a", [255, 0, 0]), ("b", [0, 255, 0])])
        ],
        model_kwargs={"base": 8},
        tile_size=[128, 128],
        tile_overlap=0.25,
        provenance=provenance(dataset="synth", epochs=2, metrics={"mean_iou": 0.5}),
    )


def test_round_trip(tmp_path: Path) -> None:
    model = build_model("unet", 3, base=8)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    p = save_checkpoint(
        tmp_path / "m.ckpt",
        model,
        _meta(),
        optimizer=opt.state_dict(),
        train_state={"epoch": 3, "best": 0.5, "rng": torch.get_rng_state()},
    )
    ck = load_checkpoint(p)
    assert ck.meta == _meta().__class__.from_dict(_meta().to_dict()) or ck.meta.arch == "unet"
    assert ck.meta.categories[1]["name"] == "a" and ck.meta.provenance["metrics"]["mean_iou"] == 0.5
    assert ck.train_state is not None and ck.train_state["epoch"] == 3
    assert ck.optimizer is not None
    rebuilt = build_from_checkpoint(ck)
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    assert torch.allclose(rebuilt(x), model(x))
    assert not list(tmp_path.glob("*.partial*"))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_malicious_checkpoint_refused_and_payload_never_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"format": "segpipe.checkpoint", "meta": {}, "state_dict": {"w": torch.zeros(1)}, "x": _Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert "refused" in str(ei.value) and "\n" not in str(ei.value)
    assert not marker.exists()


def test_plain_state_dict_with_arch(tmp_path: Path) -> None:
    model = build_model("unet", 5, base=8)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="--arch"):
        load_checkpoint(tmp_path / "plain.pth")
    ck = load_checkpoint(tmp_path / "plain.pth", arch="unet")
    assert ck.meta.num_classes == 5 and ck.meta.task == "semantic"
    ck.meta.model_kwargs = {"base": 8}
    build_from_checkpoint(ck)


def test_infer_num_classes_yolact() -> None:
    from segpipe.models.checkpoint import infer_num_classes

    assert infer_num_classes("yolact", build_model("yolact", 7).state_dict()) == 7


def test_garbage_file(tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_meta_must_be_plain(tmp_path: Path) -> None:
    meta = _meta()
    meta.provenance["bad"] = object()
    with pytest.raises(CheckpointError, match="only plain values"):
        save_checkpoint(tmp_path / "m.ckpt", build_model("unet", 3, base=8), meta)


def _read_meta_in_fresh_process(path: Path, arch: str | None = None) -> tuple[dict[str, object] | str, bool]:
    """``read_meta`` in a new interpreter: (the meta dict or the error line, whether torch got imported)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from segpipe.errors import SegpipeError\n"
        "from segpipe.models.checkpoint import read_meta\n"
        "try:\n"
        "    out = read_meta(sys.argv[1], arch=sys.argv[2] or None).to_dict()\n"
        "except SegpipeError as e:\n"
        "    out = str(e)\n"
        "print(json.dumps([out, 'torch' in sys.modules]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path), arch or ""], capture_output=True, text=True, check=True)
    out, torch_imported = json.loads(r.stdout)
    return out, bool(torch_imported)


def test_read_meta_needs_no_torch_and_equals_load(tmp_path: Path) -> None:
    model = build_model("unet", 3, base=8)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    opt.step()
    p = save_checkpoint(tmp_path / "m.ckpt", model, _meta(), optimizer=opt.state_dict(),
                        train_state={"epoch": 1, "rng": torch.get_rng_state()})
    meta, torch_imported = _read_meta_in_fresh_process(p)
    assert meta == load_checkpoint(p).meta.to_dict()
    assert not torch_imported  # the driver of a run reads the meta without paying for torch


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_read_meta_refuses_what_load_refuses(tmp_path: Path, how: str) -> None:
    from segpipe.models.checkpoint import read_meta

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"format": "segpipe.checkpoint", "version": 1, "meta": _meta().to_dict(),
               "state_dict": {"w": torch.zeros(1)}, "x": _Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refused"):
        read_meta(path)
    assert not marker.exists()


def test_read_meta_other_files_take_the_torch_path(tmp_path: Path) -> None:
    model = build_model("unet", 5, base=8)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    meta, _ = _read_meta_in_fresh_process(tmp_path / "plain.pth", arch="unet")
    assert meta == load_checkpoint(tmp_path / "plain.pth", arch="unet").meta.to_dict()
    err, _ = _read_meta_in_fresh_process(tmp_path / "plain.pth")
    assert isinstance(err, str) and "--arch" in err
    good = save_checkpoint(tmp_path / "m.ckpt", build_model("unet", 3, base=8), _meta())
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a truncated copy
    err, _ = _read_meta_in_fresh_process(tmp_path / "cut.ckpt")
    assert isinstance(err, str) and "cannot read checkpoint" in err


def _payload(meta: dict[str, object] | None = None, **extra: object) -> dict[str, object]:
    d: dict[str, object] = {"format": "segpipe.checkpoint", "version": 1, "meta": meta or _meta().to_dict(),
                            "state_dict": {"w": torch.zeros(2)}, "optimizer": None, "train_state": None}
    d.update(extra)
    return d


def _rezip(src: bytes, dst: Path, *, drop: str = "", rename: dict[str, str] | None = None,
           replace: dict[str, bytes] | None = None, deflate: str = "") -> None:
    """A copy of torch zip ``src`` with records dropped, renamed, replaced or deflated."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name = info.filename
            if drop and name.endswith(drop):
                continue
            data = (replace or {}).get(name.rsplit("/", 1)[-1], zin.read(name))
            method = zipfile.ZIP_DEFLATED if deflate and name.endswith(deflate) else zipfile.ZIP_STORED
            zout.writestr((rename or {}).get(name, name), data, compress_type=method)


def _outcome(read: object, path: Path) -> tuple[str, str]:
    """``("ok", the meta's repr)`` or ``("error", the one-line message)`` of a meta reader."""
    try:
        return "ok", repr(read(path).to_dict())  # type: ignore[operator]
    except CheckpointError as e:
        return "error", str(e)


@pytest.mark.parametrize("case", ["polyglot", "junk_prefix", "only_pickle", "other_folder", "fake_storage",
                                  "missing_tensor", "deflated_pickle", "tensor_in_meta", "tensor_version",
                                  "tensor_in_provenance"])
def test_read_meta_agrees_with_load_on_odd_files(tmp_path: Path, case: str) -> None:
    """Whatever the file, the driver's torch-free reader gives load_checkpoint's meta or its error."""
    import io

    from segpipe.models.checkpoint import read_meta

    buf = io.BytesIO()
    torch.save(_payload(), buf)
    good = buf.getvalue()
    path = tmp_path / f"{case}.ckpt"
    if case == "polyglot":  # a legacy torch file with another checkpoint's zip appended: torch reads the first
        legacy = io.BytesIO()
        torch.save(_payload(), legacy, _use_new_zipfile_serialization=False)
        other = io.BytesIO()
        torch.save(_payload({**_meta().to_dict(), "num_classes": 7}), other)
        path.write_bytes(legacy.getvalue() + other.getvalue())
    elif case == "junk_prefix":
        path.write_bytes(b"JUNK" * 10 + good)
    elif case == "only_pickle":
        _rezip(good, path, drop="version")
    elif case == "other_folder":
        _rezip(good, path, rename={"archive/data.pkl": "zzz/data.pkl"})
    elif case == "fake_storage":
        import zipfile

        pkl = zipfile.ZipFile(io.BytesIO(good)).read("archive/data.pkl")
        _rezip(good, path, replace={"data.pkl": pkl.replace(b"FloatStorage", b"EvilzStorage")})
    elif case == "missing_tensor":
        _rezip(good, path, drop="data/0")
    elif case == "deflated_pickle":
        _rezip(good, path, deflate="data.pkl")
    elif case == "tensor_in_meta":
        torch.save(_payload({**_meta().to_dict(), "num_classes": torch.tensor(3)}), path)
    elif case == "tensor_version":
        torch.save(_payload(version=torch.tensor(1)), path)
    else:
        torch.save(_payload({**_meta().to_dict(), "provenance": {"miou": torch.tensor(0.5)}}), path)
    assert _outcome(read_meta, path) == _outcome(lambda p: load_checkpoint(p).meta, path)
