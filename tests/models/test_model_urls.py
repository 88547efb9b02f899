"""A model in object storage (``-m s3://bucket/models/x``): read by the driver and by every worker from the
bucket, with the same outputs as the same model read locally.

A real S3 server (moto, tests/_s3.py) holds four forms of model: a segpipe checkpoint, a plain state
dict (``--arch``), an ONNX file and a Hugging Face SegFormer folder (a prefix). Each is pre-labeled
from its URL in this process and on real ``dask worker`` processes that share no folder with this one
(tests/_dask_cluster.py: ``Nodes``, each with its own working and temporary folder); the stores equal,
array for array, those of a run of the local file, and their config hashes agree (the fingerprint is
the model's bytes, wherever they were read). Each worker copied the model into its own temporary
folder and removed the copy once loaded. A worker refuses in one line a model whose object changed
after the driver read it. Single files are also read over HTTPS (tests/_servers.py: a real TLS server
trusted through ``SSL_CERT_FILE``) and from Azure Blob Storage (Azurite).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from distributed import Client
from PIL import Image

from segpipe.errors import InputError
from segpipe.execution.cluster import ClusterSpec
from segpipe.execution.resources import provide_resources
from segpipe.kernels.prelabel.resources import PredictorOptions, PredictorSetup
from segpipe.models import fetch
from segpipe.models.fetch import CHANGED
from segpipe.models.ref import ModelRef
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from segpipe.storage.location import Location
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import Nodes
from tests._s3 import S3Server, s3_server
from tests._servers import AzureServer, HttpsServer, azurite, https_server
from tests.models.test_sources_dask import _onnx, _segformer, _Tiny

__all__ = ["azurite", "https_server", "s3_server"]  # the fixtures, for pytest

#: (height, width) of the images: multiples of 32 (no architecture pads them), within one tile.
SIZES = [(64, 96), (96, 64)]
#: Every form: its local name under the models folder, and the request's options for it.
FORMS: dict[str, tuple[str, dict[str, Any]]] = {
    "checkpoint": ("unet.ckpt", {}),
    "state_dict": ("weights.pth", {"arch": "pspnet"}),
    "onnx": ("tiny.onnx", {}),
    "huggingface": ("segformer", {}),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("urlimgs")
    rng = np.random.default_rng(11)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four forms, saved locally (random weights)."""
    from segpipe.models.checkpoint import CheckpointMeta, save_checkpoint
    from segpipe.models.registry import build_model

    root = tmp_path_factory.mktemp("urlmodels")
    torch.manual_seed(0)
    kw = {"base": 8, "depth": 2}
    names = ["sky", "road", "car"]
    cats = [{"index": i, "id": i, "name": n, "color": None, "isthing": True} for i, n in enumerate(names)]
    save_checkpoint(root / "unet.ckpt", build_model("unet", 3, **kw).eval(),
                    CheckpointMeta(arch="unet", task="semantic", num_classes=3, categories=cats,
                                   tile_size=[128, 128], tile_overlap=0.25, model_kwargs=kw))
    torch.manual_seed(3)
    torch.save(build_model("pspnet", 4).eval().state_dict(), root / "weights.pth")
    torch.manual_seed(6)
    _onnx(_Tiny(3).eval(), root / "tiny.onnx", {"names": "{0: 'water', 1: 'land', 2: 'cloud'}"})
    _segformer(root / "segformer", ["background", "building", "road", "water"])
    return root


@pytest.fixture(scope="module")
def bucket_models(s3_server: S3Server, models: Path) -> str:
    """The four forms uploaded under ``s3://BUCKET/models/`` (a folder as the objects below its prefix)."""
    name = s3_server.make_bucket()
    loc = Location(f"s3://{name}")
    for p in sorted(models.rglob("*")):
        if p.is_file():
            loc.write_bytes(f"models/{p.relative_to(models).as_posix()}", p.read_bytes())
    return name


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory, images: Path, models: Path) -> dict[str, Path]:
    """Each form read locally, pre-labeled in this process: the reference stores."""
    root = tmp_path_factory.mktemp("localruns")
    out = {}
    for form, (name, kw) in FORMS.items():
        out[form] = run(images, str(models / name), root / f"{form}.zarr", ClusterSpec(workers=0), **kw)
    return out


def run(images: Path, model: str, out: Path, cluster: ClusterSpec, **kw: Any) -> Path:
    rep = prelabel(PrelabelRequest(source=str(images), model=model, out=out, threads=1, **kw), cluster)
    assert rep["images"]["done"] == len(SIZES) and rep["images"]["failed"] == 0, rep
    return out


def arrays(out: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{file name: {array: its values}}`` of every image of a store (labels, probabilities)."""
    store = ZarrStore.open(out)
    entries = [json.loads(ln) for ln in (out / ".segpipe" / "manifest.jsonl").read_text().splitlines()]
    got = {}
    for e in entries:
        g = store.group(int(e["id"]))
        got[e["file"]] = {k: g[k][...] for k in ("labels", "probs")}
    return got


def assert_same_store(got: Path, want: Path, url: str) -> None:
    a, b = ZarrStore.open(got).attrs(), ZarrStore.open(want).attrs()
    assert a["config_hash"] == b["config_hash"]  # the fingerprint is the model's bytes, wherever read
    assert a["categories"] == b["categories"]
    assert a["model"]["spec"] == url
    x, y = arrays(got), arrays(want)
    assert sorted(x) == sorted(y) == [f"im{i}.png" for i in range(len(SIZES))]
    for name in x:
        for k in ("labels", "probs"):
            np.testing.assert_array_equal(x[name][k], y[name][k], err_msg=f"{name} {k}")
    assert all(np.ptp(v["probs"]) > 0 for v in x.values())  # the model saw the images: not a constant output


def url_of(bucket: str, form: str) -> str:
    return f"s3://{bucket}/models/{FORMS[form][0]}"


@pytest.mark.parametrize("form", list(FORMS))
def test_model_from_the_bucket_in_process(tmp_path: Path, images: Path, bucket_models: str,
                                          local_runs: dict[str, Path], form: str) -> None:
    url = url_of(bucket_models, form)
    out = run(images, url, tmp_path / "s.zarr", ClusterSpec(workers=0), **FORMS[form][1])
    assert_same_store(out, local_runs[form], url)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing written beside the output


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Nodes]:
    """A scheduler and two workers in folders of their own (they share nothing with this process but S3)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with Nodes(tmp_path_factory.mktemp("urlnodes"), env) as n:
        address = n.start_scheduler()
        for name in ("w1", "w2"):
            n.start_worker(name)
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=120)
        yield n


def _copies() -> Any:
    """A function for ``client.run``: a worker's private folder of model copies and the files it still holds.

    Made here so that it travels by value (the workers cannot import this test module).
    """
    def copies(dask_worker: Any) -> list[str]:
        fetch = sys.modules.get("segpipe.models.fetch")
        root = fetch._ROOT[1] if fetch is not None and fetch._ROOT is not None else None
        if root is None:
            return []
        return [str(root), *sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())]
    return copies


@pytest.mark.parametrize("form", list(FORMS))
def test_model_from_the_bucket_on_workers_that_share_no_folder(tmp_path: Path, images: Path, bucket_models: str,
                                                               local_runs: dict[str, Path], nodes: Nodes,
                                                               form: str) -> None:
    url = url_of(bucket_models, form)
    out = run(images, url, tmp_path / "s.zarr", ClusterSpec(scheduler=nodes.address), **FORMS[form][1])
    assert_same_store(out, local_runs[form], url)
    with Client(nodes.address, timeout="30s") as c:
        held = c.run(_copies())
        names = {a: w["name"] for a, w in c.scheduler_info()["workers"].items()}
    for addr, got in held.items():
        # the worker read its copy in its own temporary folder, and removed it once the model was loaded
        root = nodes.root / names[addr] / "tmp"
        assert got and Path(got[0]).parent == root and Path(got[0]).name.startswith("segpipe-model-"), got
        assert got[1:] == [], got
    for name in ("scheduler", "w1", "w2"):
        assert list(nodes.folder(name).iterdir()) == [], name


def test_worker_refuses_a_model_object_changed_since_the_driver_read_it(tmp_path: Path, models: Path,
                                                                         bucket_models: str, nodes: Nodes) -> None:
    loc = Location(f"s3://{bucket_models}")
    loc.write_bytes("moving/unet.ckpt", (models / "unet.ckpt").read_bytes())
    url = f"s3://{bucket_models}/moving/unet.ckpt"
    ref = ModelRef(url).pinned()  # what the driver read
    assert ref.pin is not None and ref.pin.objects[0].etag
    loc.write_bytes("moving/unet.ckpt", (models / "unet.ckpt").read_bytes() + b"\0")  # replaced mid-run
    setup = PredictorSetup(ref, PredictorOptions(device="cpu"))
    with Client(nodes.address, timeout="30s") as c, pytest.raises(InputError) as e:
        with provide_resources(c, setup):
            pass
    assert str(e.value) == f"{url}: {CHANGED}"
    # the object put back as it was: the same bytes, accepted
    loc.write_bytes("moving/unet.ckpt", (models / "unet.ckpt").read_bytes())
    with Client(nodes.address, timeout="30s") as c, provide_resources(c, setup):
        assert all(not v[1:] for v in c.run(_copies()).values())


def test_ensemble_member_from_the_bucket(tmp_path: Path, images: Path, models: Path, bucket_models: str) -> None:
    """``--ensemble`` takes URLs too: the local pair and the bucket pair store the same averages."""
    local = run(images, str(models / "unet.ckpt"), tmp_path / "local.zarr", ClusterSpec(workers=0),
                ensemble=(str(models / "unet.ckpt"),), tta="flip")
    url = url_of(bucket_models, "checkpoint")
    got = run(images, url, tmp_path / "url.zarr", ClusterSpec(workers=0), ensemble=(url,), tta="flip")
    assert_same_store(got, local, url)


@pytest.mark.parametrize("form", ["checkpoint", "onnx"])
def test_model_file_over_https(tmp_path: Path, images: Path, models: Path, local_runs: dict[str, Path],
                               https_server: HttpsServer, form: str) -> None:
    """A single file over HTTPS (a server that gives ETags but ignores If-Match: the sha256 decides)."""
    name = FORMS[form][0]
    url = https_server.put(f"{tmp_path.name}/{name}", (models / name).read_bytes())
    out = run(images, url, tmp_path / "s.zarr", ClusterSpec(workers=0), **FORMS[form][1])
    assert_same_store(out, local_runs[form], url)


def test_https_model_replaced_by_other_bytes_is_refused(tmp_path: Path, models: Path,
                                                        https_server: HttpsServer) -> None:
    data = (models / "unet.ckpt").read_bytes()
    url = https_server.put(f"{tmp_path.name}/unet.ckpt", data)
    ref = ModelRef(url).pinned()
    assert ref.pin is not None
    (https_server.root / tmp_path.name / "unet.ckpt").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size
    fetch.release(ref.pin)  # this process's copy dropped: it copies again, as a worker does
    with pytest.raises(InputError) as e:
        ref.load()
    assert str(e.value) == f"{url}: {CHANGED}"


def test_model_file_in_azure_blob_storage(tmp_path: Path, images: Path, models: Path, local_runs: dict[str, Path],
                                          azurite: AzureServer) -> None:
    container = azurite.make_container()
    Location(f"az://{container}").write_bytes("models/unet.ckpt", (models / "unet.ckpt").read_bytes())
    url = f"az://{container}/models/unet.ckpt"
    out = run(images, url, tmp_path / "s.zarr", ClusterSpec(workers=0))
    assert_same_store(out, local_runs["checkpoint"], url)
