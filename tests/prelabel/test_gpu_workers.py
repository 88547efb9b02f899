"""GPU-aware workers without a GPU: the plan for a simulated 4-GPU machine, pinned worker processes,
model tasks landing only on workers that advertise the ``GPU`` resource, and the CPU fallback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from segpipe.errors import ConfigError
from segpipe.execution.cluster import ClusterSpec, open_client
from segpipe.execution.gpus import GPU_RESOURCE, advertises_gpu, parse_gpus, plan_workers, visible_gpus
from segpipe.pipeline.prelabel import PrelabelRequest, prelabel
from tests._dask_cluster import external_cluster
from tests.conftest import run_cli

FOUR = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def test_visible_gpus_from_the_environment_and_the_driver(tmp_path: Path) -> None:
    assert visible_gpus(FOUR) == ["0", "1", "2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-3a9f,1"}) == ["GPU-3a9f", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at the first invalid one
    proc = tmp_path / "gpus"
    for pci in ("0000:17:00.0", "0000:65:00.0"):
        (proc / pci).mkdir(parents=True)
    assert visible_gpus({}, proc) == ["0", "1"]
    assert visible_gpus({}, tmp_path / "none") == []


def test_a_four_gpu_machine_gets_four_pinned_workers() -> None:
    plan = plan_workers(8, 1, gpus=visible_gpus(FOUR), cores=16)
    assert len(plan) == 4
    assert [w.gpu for w in plan] == ["0", "1", "2", "3"]  # distinct devices
    assert all(w.resources == {GPU_RESOURCE: 1} and w.nthreads == 4 for w in plan)  # 16 cores / 4 GPUs
    assert plan_workers(8, 1, gpus=["0"], cores=2)[0].nthreads == 2  # at least two decode threads
    cpu = plan_workers(3, 2, gpus=[], cores=16)
    assert [(w.gpu, w.nthreads, w.resources) for w in cpu] == [(None, 2, {})] * 3


def test_model_work_plans_gpu_workers_and_falls_back_to_the_cpu() -> None:
    spec = ClusterSpec().for_model("auto", environ=FOUR)
    assert spec.gpus == ("0", "1", "2", "3") and spec.n_workers() == 4 and spec.workers is None
    picked = ClusterSpec().for_model("cuda", "0,2", environ=FOUR)
    assert picked.gpus == ("0", "2") and picked.n_workers() == 2
    assert ClusterSpec().for_model("cpu", environ=FOUR).gpus == ()  # --device cpu: CPU workers
    assert ClusterSpec(workers=0).for_model("auto", environ=FOUR).gpus == ()  # in-process: its own device
    assert ClusterSpec(workers=3).for_model("auto", environ=FOUR).gpus == ()  # --workers N is what was asked
    assert ClusterSpec(scheduler="tcp://127.0.0.1:8786").for_model("auto", environ=FOUR).gpus == ()
    assert ClusterSpec().for_model("auto", environ={"CUDA_VISIBLE_DEVICES": ""}).gpus == ()  # no GPU: CPU
    # small jobs run in this process even where there are GPUs (on the process's own device)
    assert spec.sized(1.0).in_process() and not spec.sized(60.0).in_process()
    assert not picked.sized(1.0).in_process()  # --gpus given: the workers asked for


@pytest.mark.parametrize("text", ["0,9", "a", "1,1"])
def test_bad_gpus_are_one_line_naming_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--gpus"):
        parse_gpus(text, ["0", "1"])
    with pytest.raises(ConfigError, match="--gpus"):
        ClusterSpec().for_model("cpu", "0")


def _pinned(dask_worker: object) -> tuple[str | None, float]:
    resources = dask_worker.state.total_resources  # type: ignore[attr-defined]
    return os.environ.get("CUDA_VISIBLE_DEVICES"), float(resources.get(GPU_RESOURCE, 0))


def test_embedded_gpu_workers_are_pinned_processes_advertising_the_resource() -> None:
    """Real worker processes, each with its own CUDA_VISIBLE_DEVICES (harmless without a GPU)."""
    with open_client(ClusterSpec(gpus=("0", "1"))) as client:
        seen = sorted(client.run(_pinned).values())
        assert advertises_gpu(client)
    assert seen == [("0", 1.0), ("1", 1.0)]


def test_model_tasks_land_only_on_workers_that_advertise_a_gpu(tmp_path: Path, collection: Path,
                                                               checkpoint: Path) -> None:
    """A user's cluster: `dask worker --resources GPU=1` and a CPU-only worker; pre-labels run on the first."""
    from distributed import Client

    with external_cluster(tmp_path, [["--name", "gpu-worker", "--resources", "GPU=1"], ["--name", "cpu-worker"]]) \
            as address, Client(address, timeout="30s") as c:
        gpu_address = next(a for a, w in c.scheduler_info()["workers"].items() if w["name"] == "gpu-worker")
        gpu_pid = c.run(os.getpid, workers=[gpu_address])[gpu_address]
        out = tmp_path / "s.zarr"
        rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out,
                                       threads=1, limit=8), ClusterSpec(scheduler=address), client=c)
        assert rep["images"]["done"] == 8
        workers = {json.loads(p.read_text())["worker"] for p in (out / ".segpipe" / "ledger").glob("*.json")}
        assert {w.rsplit(":", 1)[1] for w in workers} == {str(gpu_pid)}  # never the CPU-only worker
        cpu_out = tmp_path / "cpu.zarr"  # --device cpu asks for no GPU: both workers may run it
        rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=cpu_out,
                                       threads=1, limit=8, device="cpu"), ClusterSpec(scheduler=address), client=c)
        assert rep["images"]["done"] == 8


def test_gpus_option_is_checked_before_anything_starts(tmp_path: Path, collection: Path, checkpoint: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", str(tmp_path / "s.zarr"),
                "--gpus", "7")
    assert r.returncode == 2 and "--gpus" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "s.zarr").exists()
