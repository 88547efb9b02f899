"""segpipe applies its worker settings on any Dask worker, a user's ``dask worker`` included.

Real ``dask scheduler`` / ``dask worker`` processes (tests/_dask_cluster.py): the settings are read
back from each worker with ``client.run`` and checked by what they change: the profiler's samples, and
the page faults of allocating a 1 MiB buffer.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from segpipe.execution.plugins import NANNY_TRIM_THRESHOLD, restore_malloc_thresholds
from segpipe.execution.resources import provide_resources
from segpipe.execution.worker_plugin import worker_settings
from tests._dask_cluster import Nodes

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PidSetup:
    """Resources that are only this process's id: a plugin with nothing heavy to build."""

    def build(self) -> int:
        return os.getpid()


def faults_per_megabyte() -> float:
    """Minor page faults of allocating, filling and freeing a 1 MiB buffer, averaged over 40 rounds."""
    a = np.ones(2**20, np.uint8)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
        a = np.ones(2**20, np.uint8)
        del a
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40


def busy(seconds: float) -> int:
    """Keeps a task thread busy (for the profiler to sample)."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def test_restore_is_a_no_op_without_the_nannys_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert restore_malloc_thresholds() is False
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")  # the user's own value is kept
    assert restore_malloc_thresholds() is False
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(NANNY_TRIM_THRESHOLD))
    assert restore_malloc_thresholds(None) is False  # the worker's config unsets it: nothing to undo


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_TRIM_THRESHOLD_ and mallopt are glibc's")
def test_settings_are_applied_on_a_users_workers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_TRIM_THRESHOLD_", "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED")}
    env["PYTHONPATH"] = str(REPO)  # the workers unpickle this module's setup and probes
    with Nodes(tmp_path, env) as nodes:
        address = nodes.start_scheduler()
        # "plain": `dask worker` as documented (a nanny, distributed's defaults). "profiled": the user
        # asked for the profiler, and runs without a nanny (so without its MALLOC_TRIM_THRESHOLD_).
        nodes.start_worker("plain")
        nodes.start_worker("profiled", "--no-nanny", env={"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "True"})
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
            by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
            plain, profiled = by_name["plain"], by_name["profiled"]

            before = client.run(worker_settings)
            assert before[plain] == {"profiler": ["profile", "profile-cycle"], "plugin": False,
                                     "MALLOC_TRIM_THRESHOLD_": str(NANNY_TRIM_THRESHOLD), "malloc_restored": False}
            assert before[profiled]["MALLOC_TRIM_THRESHOLD_"] is None
            faults_before = client.run(faults_per_megabyte, workers=[plain])[plain]
            assert faults_before > 200  # each 1 MiB buffer is a fresh mmap: 256 pages faulted in

            with provide_resources(client, PidSetup()):
                after = client.run(worker_settings)
                faults_after = client.run(faults_per_megabyte, workers=[plain])[plain]
                for w in (plain, profiled):
                    client.submit(busy, 1.5, workers=[w], pure=False).result()
                time.sleep(0.2)
                samples = {w: client.profile(workers=[w])["count"] for w in (plain, profiled)}

            assert after[plain] == {"profiler": [], "plugin": True, "malloc_restored": True,
                                    "MALLOC_TRIM_THRESHOLD_": str(NANNY_TRIM_THRESHOLD)}
            assert after[profiled] == {"profiler": ["profile", "profile-cycle"], "plugin": True,
                                       "malloc_restored": False, "MALLOC_TRIM_THRESHOLD_": None}
            assert faults_after < 8  # the heap is reused, as in a process started without the variable
            assert samples[plain] == 0 and samples[profiled] > 20  # 10 ms sampling over 1.5 s
            # Settings outlive the run: a worker stays tuned after the plugin is unregistered.
            assert client.run(worker_settings, workers=[plain])[plain]["profiler"] == []
