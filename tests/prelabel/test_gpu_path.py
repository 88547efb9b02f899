"""The GPU path, run on the CPU: images stacked into shared forward passes, ``--precision``, and
JPEGs decoded by torch (``--gpu-decode``) with the isolated CPU decoder taking what it refuses.

No GPU is needed: stacking, autocast and the tensor-decoding path are device-agnostic, and each test
runs them on the CPU against the one-image-at-a-time, float32, isolated-decoder path they replace.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.ledger import Ledger
from segpipe.storage.manifest import read_manifest
from segpipe.storage.zarrstore import ZarrStore


def _outputs(store: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{file: (labels, probs)}`` of every image of a store."""
    s = ZarrStore.open(store)
    out = {}
    for e in read_manifest(store / ".segpipe" / "manifest.jsonl"):
        g = s.group(e.id)
        out[e.file] = (np.asarray(g["labels"][...]), np.asarray(g["probs"][...]))
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JPEGs of three sizes, interleaved by name: 7 of 64², 3 of 96×64 (both within the checkpoint's
    128² tile) and one of 200×160 (tiled). A run of one size is cut by the others."""
    from segpipe.synth import synth

    root = tmp_path_factory.mktemp("mixed")
    out = root / "images"
    out.mkdir()
    # in name order: four 64² (one full pass of 4), one more, two of the other small size, ...
    slots = {1: [0, 1, 2, 3, 4, 7, 9], 2: [5, 6, 10], 3: [8]}
    for n, size, seed in ((7, (64, 64), 1), (3, (96, 64), 2), (1, (200, 160), 3)):
        synth("streetview", root / f"s{seed}", n=n, seed=seed, size=size)
        for p, slot in zip(sorted((root / f"s{seed}" / "images").iterdir()), slots[seed], strict=True):
            rgb = np.asarray(Image.open(p).convert("RGB"))
            Image.fromarray(rgb).save(out / f"{slot:02d}.jpg", quality=92)
    return out


def _planned(store: Path, checkpoint: Path) -> list[Any]:
    """The store's tasks as its run planned them (small images in their stack slots)."""
    from segpipe.models.ref import ModelRef
    from segpipe.pipeline.prelabel.plan import plan_tasks
    from segpipe.pipeline.prelabel.store import place_in_stacks

    entries = [e for e in read_manifest(store / ".segpipe" / "manifest.jsonl") if not e.error]
    planned = plan_tasks(entries, ZarrStore.open(store).attrs()["config_hash"])
    return place_in_stacks(ZarrStore.open(store), planned, ModelRef(str(checkpoint), None).meta(), 2, True)


def _forget_receipts(store: Path) -> Ledger:
    """Removes every receipt, as if no task had run (the outputs stay, to be rewritten)."""
    ledger = Ledger(store / ".segpipe")
    for k in list(ledger.keys()):
        ledger.path(k).unlink()
    return ledger


def _rerun_kernel(store: Path, checkpoint: Path, *, batch: int, gpu_decode: bool = False,
                  precision: str = "auto") -> list[tuple[int, ...]]:
    """Redoes every task of ``store`` with the kernel, ``batch`` images per pass; the passes' input shapes."""
    from segpipe.kernels.prelabel.batch import prelabel_batch
    from segpipe.kernels.prelabel.resources import PredictorOptions, PredictorSetup
    from segpipe.kernels.prelabel.tasks import OutputSettings, PrelabelSettings
    from segpipe.models.ref import ModelRef

    planned = _planned(store, checkpoint)
    ledger = _forget_receipts(store)
    resources = PredictorSetup(ModelRef(str(checkpoint), None),
                               PredictorOptions(device="cpu", precision=precision)).build()
    resources.predictor.batch_size = batch  # the CPU runs one per pass (determinism); a GPU runs --batch
    resources.gpu_decode = gpu_decode
    shapes: list[tuple[int, ...]] = []
    hook = resources.predictor.model.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    try:
        results = prelabel_batch(resources, PrelabelSettings(ZarrStore(store), OutputSettings()), planned)
    finally:
        hook.remove()
        resources.close()
    assert [r.status for r in results] == ["done"] * len(planned)
    assert ledger.keys() == {t.key for t in planned}
    return shapes


def test_stacked_passes_store_what_one_image_per_pass_stores(tmp_path: Path, mixed: Path, checkpoint: Path) -> None:
    """Up to ``batch`` same-size images per pass, written in order: labels equal, probabilities within one level."""
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(mixed), model=str(checkpoint), out=out, threads=1),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 11
    single = _outputs(out)
    shapes = _rerun_kernel(out, checkpoint, batch=4)
    stacked = _outputs(out)
    # the 64² images share passes of up to 4 (runs cut by the other sizes); the tiled one is tiled
    whole = [s for s in shapes if s[2:] != (128, 128)]
    assert [s[0] for s in whole] == [4, 1, 2, 1, 1, 1]  # runs of one size, cut at 4 and at a size change
    assert any(s[2:] == (128, 128) for s in shapes)  # 200×160 went through the tiler
    assert set(stacked) == set(single)
    for f, (labels, probs) in single.items():
        np.testing.assert_array_equal(stacked[f][0], labels, err_msg=f)
        assert np.abs(stacked[f][1].astype(int) - probs.astype(int)).max() <= 1, f
    from segpipe.pipeline.prelabel import fsck

    assert fsck(out)["ok"] == 11


def test_a_failed_image_in_a_stack_fails_alone(tmp_path: Path, mixed: Path, checkpoint: Path) -> None:
    """A truncated JPEG among same-size images: its failure is reported, the others of its pass are stored."""
    src = tmp_path / "imgs"
    shutil.copytree(mixed, src)
    bad = sorted(src.iterdir())[1]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 10 and [f["file"] for f in rep["failed"]] == [bad.name]
    from segpipe.kernels.prelabel.batch import prelabel_batch
    from segpipe.kernels.prelabel.resources import PredictorOptions, PredictorSetup
    from segpipe.kernels.prelabel.tasks import Failure, OutputSettings, PrelabelSettings
    from segpipe.models.ref import ModelRef

    planned = _planned(out, checkpoint)
    resources = PredictorSetup(ModelRef(str(checkpoint), None), PredictorOptions(device="cpu")).build()
    resources.predictor.batch_size = 4
    resources.gpu_decode = True  # torch's decoder (on the CPU here) refuses it: the isolated decoder says why
    try:
        _forget_receipts(out)
        results = prelabel_batch(resources, PrelabelSettings(ZarrStore(out), OutputSettings()), planned)
        failed = [r for r in results if isinstance(r, Failure)]
        assert [r.file for r in failed] == [bad.name] and "corrupt" in failed[0].reason
        assert sum(r.status == "done" for r in results) == 10
        _forget_receipts(out)
        stop = prelabel_batch(resources, PrelabelSettings(ZarrStore(out), OutputSettings(), stop_on_failure=True),
                              planned)
    finally:
        resources.close()
    index = [t.entry.file for t in planned].index(bad.name)
    assert [r.status for r in stop] == ["done"] * index + ["failed"]  # --on-error fail: nothing after it


def test_a_pass_reduced_at_once_equals_each_image_reduced_alone() -> None:
    """The accelerator's reduction of a whole pass (run here on the CPU) gives each image's outputs."""
    import torch

    from segpipe.kernels.prelabel.image import outputs_on_device
    from segpipe.models.predict import labels_and_quantised_probs

    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 16, 24) * 4).to(torch.bfloat16)  # bf16, as autocast returns them
    whole = outputs_on_device(logits, True)
    assert [o[0].shape for o in whole] == [(16, 24)] * 3 and whole[0][0].dtype == np.uint8
    for j, (labels, probs) in enumerate(whole):
        ref_labels, ref_probs = labels_and_quantised_probs(logits[j].float(), True)
        np.testing.assert_array_equal(labels, ref_labels)
        assert probs is not None and ref_probs is not None and probs.flags.c_contiguous
        assert np.abs(probs.astype(int) - ref_probs.astype(int)).max() <= 1
    assert all(q is None for _, q in outputs_on_device(logits, False))


def test_host_staging_pins_on_cuda_only() -> None:
    """On the CPU a batch is used where it is; on CUDA (where there is one) it arrives whole from a pinned buffer."""
    import pickle

    import torch

    from segpipe.models.devices import HostStaging

    batch = torch.arange(2 * 4 * 4 * 3, dtype=torch.int64).reshape(2, 4, 4, 3).to(torch.uint8)
    cpu = HostStaging(torch.device("cpu"))
    assert cpu.to_device(batch) is batch
    copy = pickle.loads(pickle.dumps(cpu))
    assert copy.device == cpu.device and copy.to_device(batch) is batch
    if torch.cuda.is_available():
        gpu = HostStaging(torch.device("cuda"))
        first = gpu.to_device(batch)
        second = gpu.to_device(batch + 1)  # the buffer is reused once the first copy has left it
        assert first.is_cuda and torch.equal(first.cpu(), batch) and torch.equal(second.cpu(), batch + 1)
        assert gpu._buf.is_pinned()


def test_precision_bf16_on_the_cpu_stays_close(tmp_path: Path, mixed: Path, checkpoint: Path) -> None:
    """--precision bf16 autocasts on the CPU too: recorded in the config, label maps mostly equal."""
    import torch

    from segpipe.models.devices import autocast_dtype
    from segpipe.models.predict import Predictor

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert autocast_dtype("auto", torch.device("cuda")) is (torch.bfloat16 if cuda_bf16 else None)
    assert autocast_dtype("fp32", torch.device("cuda")) is None

    img = np.asarray(Image.open(sorted(mixed.iterdir())[0]).convert("RGB"))
    bf = Predictor.from_checkpoint(checkpoint, device="cpu", precision="bf16")
    dtypes: list[Any] = []
    bf.model.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    assert bf.amp_dtype is torch.bfloat16 and Predictor.from_checkpoint(checkpoint, device="cpu").amp_dtype is None
    bf.predict(img)
    assert dtypes == [torch.bfloat16]

    stores = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.zarr"
        rep = prelabel(PrelabelRequest(source=str(mixed), model=str(checkpoint), out=out, threads=1,
                                       precision=precision), ClusterSpec(workers=0))
        assert rep["images"]["done"] == 11
        assert ZarrStore.open(out).attrs()["config"]["precision"] == precision  # part of every task key
        stores[precision] = _outputs(out)
    same = total = 0
    for f, (labels, probs) in stores["fp32"].items():
        bl, bp = stores["bf16"][f]
        same += int((bl == labels).sum())
        total += labels.size
        assert np.abs(bp.astype(int) - probs.astype(int)).mean() < 2.0, f
    assert same / total > 0.95


def test_device_decoding_and_its_cpu_fallback(tmp_path: Path) -> None:
    """Plain upright JPEGs go to torch's decoder (here on the CPU), with the CPU decoder's pixels; a PNG,
    an EXIF-rotated or CMYK JPEG, a size other than the manifest's or a URL stay with the CPU decoder."""
    import torch

    from segpipe.kernels.prelabel.image import decode_on_device, device_decodable
    from segpipe.models.devices import gpu_decode_enabled
    from segpipe.storage.images import read_image

    rng = np.random.default_rng(0)
    rgb = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    files: dict[str, Path] = {}
    for name, mode, kw in (("rgb.jpg", "RGB", {}), ("gray.jpg", "L", {}), ("cmyk.jpg", "CMYK", {}),
                           ("png.png", "RGB", {})):
        im = Image.fromarray(rgb).convert(mode)
        files[name] = tmp_path / name
        im.save(files[name], **kw)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the GPU decoder applies no EXIF orientation
    files["rot.jpg"] = tmp_path / "rot.jpg"
    Image.fromarray(rgb).save(files["rot.jpg"], exif=exif.tobytes())
    assert device_decodable(str(files["rgb.jpg"]), 64, 48) is not None
    assert device_decodable(str(files["gray.jpg"]), 64, 48) is not None
    assert device_decodable(str(files["rgb.jpg"]), 48, 64) is None  # not the manifest's size
    for name in ("cmyk.jpg", "png.png", "rot.jpg"):
        assert device_decodable(str(files[name]), 64, 48) is None, name
    assert device_decodable("s3://bucket/rgb.jpg", 64, 48) is None
    assert device_decodable(str(tmp_path / "missing.jpg"), 64, 48) is None

    class OnCpu:
        device = torch.device("cpu")

    order = ["rgb.jpg", "png.png", "gray.jpg", "rot.jpg"]
    got = decode_on_device(OnCpu(), [(str(files[n]), 64, 48) for n in order])  # type: ignore[arg-type]
    assert sorted(got) == [0, 2]
    for i in got:
        np.testing.assert_array_equal(got[i].numpy(), read_image(files[order[i]]))
    trunc = tmp_path / "trunc.jpg"
    data = files["rgb.jpg"].read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    assert device_decodable(str(trunc), 64, 48) is not None  # its header is whole: its pixels are not
    # a file the decoder refuses sends its whole batch back to the CPU decoder
    assert decode_on_device(OnCpu(), [(str(files["rgb.jpg"]), 64, 48), (str(trunc), 64, 48)]) == {}  # type: ignore[arg-type]

    assert not gpu_decode_enabled("auto", torch.device("cpu")) and not gpu_decode_enabled("on", torch.device("cpu"))
    assert not gpu_decode_enabled("off", torch.device("cuda"))
    assert gpu_decode_enabled("auto", torch.device("cuda")) == hasattr(torch.ops.image, "decode_jpegs_cuda")


def test_device_decoded_stacks_store_what_the_cpu_decoder_stores(tmp_path: Path, mixed: Path,
                                                                 checkpoint: Path) -> None:
    """The tensor path end to end: images decoded by torch, stacked, predicted, written, as the arrays path."""
    out = tmp_path / "s.zarr"
    prelabel(PrelabelRequest(source=str(mixed), model=str(checkpoint), out=out, threads=1), ClusterSpec(workers=0))
    arrays = _outputs(out)
    _rerun_kernel(out, checkpoint, batch=4, gpu_decode=True)
    tensors = _outputs(out)
    for f, (labels, probs) in arrays.items():
        np.testing.assert_array_equal(tensors[f][0], labels, err_msg=f)
        assert np.abs(tensors[f][1].astype(int) - probs.astype(int)).max() <= 1, f


def test_precision_and_gpu_decode_on_real_dask_workers(tmp_path: Path, mixed: Path, checkpoint: Path) -> None:
    """bf16 with --gpu-decode auto on two worker processes stores the bytes of the same run in this process."""
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}.zarr"
        rep = prelabel(PrelabelRequest(source=str(mixed), model=str(checkpoint), out=out, threads=1,
                                       precision="bf16", gpu_decode="auto", batch=4), ClusterSpec(workers=workers))
        assert rep["images"]["done"] == 11 and not rep["failed"]
        cfg = ZarrStore.open(out).attrs()["config"]
        assert cfg["precision"] == "bf16" and "gpu_decode" not in cfg  # auto keeps the key of a CPU decode
        runs[workers] = _outputs(out)
    for f, (labels, probs) in runs[0].items():
        np.testing.assert_array_equal(runs[2][f][0], labels, err_msg=f)
        np.testing.assert_array_equal(runs[2][f][1], probs, err_msg=f)


def test_gpu_decode_on_is_recorded_in_the_config(tmp_path: Path) -> None:
    """--gpu-decode on changes the pixels a GPU decodes: it is part of the task keys; auto and off are not."""
    from segpipe.pipeline.prelabel.config import output_config

    class Meta:
        task = "semantic"
        tile_size = [128, 128]
        tile_overlap = 0.25

    base = {"source": "x", "model": "m.ckpt", "out": tmp_path / "o.zarr"}
    cfgs = {v: output_config(PrelabelRequest(**base, gpu_decode=v), "fp", Meta()) for v in ("auto", "off", "on")}
    assert cfgs["auto"] == cfgs["off"] and cfgs["on"]["gpu_decode"] == "on"
    assert "precision" not in cfgs["auto"]
