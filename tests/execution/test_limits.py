"""The execution layer refuses worker counts and caps thread counts the machine cannot take (library API)."""

from __future__ import annotations

import threading
import time

import pytest

from segpipe.errors import ConfigError
from segpipe.execution import cluster
from segpipe.execution.cluster import ClusterSpec, InProcessClient, max_threads, max_workers
from segpipe.execution.runner import run_tasks


def test_workers_above_the_cap_are_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--workers 10000 is more than this machine takes: at most \d+"):
        ClusterSpec(workers=10000)
    with pytest.raises(ConfigError, match="--workers"):
        ClusterSpec(workers=-1)
    assert ClusterSpec(workers=max_workers()).n_workers() == max_workers()
    # an existing scheduler's workers are its own: the local cap does not apply
    assert ClusterSpec(workers=10000, scheduler="tcp://127.0.0.1:8786").scheduler


def test_open_files_limit_bounds_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "open_files_limit", lambda: cluster.FDS_RESERVED + 3 * cluster.FDS_PER_WORKER)
    monkeypatch.setattr(cluster, "cores", lambda: 64)
    assert max_workers() == 3
    with pytest.raises(ConfigError, match="at most 3 .*open-files limit"):
        ClusterSpec(workers=4)
    monkeypatch.setattr(cluster, "open_files_limit", lambda: 10)
    assert max_workers() == 1  # never 0: one worker always gets a try


def test_threads_are_capped_and_must_be_positive() -> None:
    assert ClusterSpec(threads_per_worker=100000).threads_per_worker == max_threads()
    assert ClusterSpec(workers=1).worker_threads(100000) == max_threads()
    with pytest.raises(ConfigError, match="--threads"):
        ClusterSpec(threads_per_worker=0)
    with pytest.raises(ConfigError, match="--threads"):
        ClusterSpec().worker_threads(0)


def test_default_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "cores", lambda: 8)
    assert ClusterSpec(workers=2).worker_threads() == 4
    assert ClusterSpec(workers=0).worker_threads() == 8
    assert ClusterSpec(workers=16).worker_threads() == 1
    assert ClusterSpec(scheduler="tcp://127.0.0.1:8786").worker_threads() == 8


def _slow_square(x: int) -> tuple[int, str]:
    time.sleep(0.05)
    return x * x, threading.current_thread().name


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    time.sleep(0.01)
    return x


def test_in_process_tasks_run_on_the_clients_threads() -> None:
    seen: list[int] = []
    out = dict(run_tasks(InProcessClient(threads=3), _slow_square, ((str(i), (i,)) for i in range(12)), total=12,
                         max_in_flight=2, progress=lambda d, t, f: seen.append(d)))
    assert {k: v[0] for k, v in out.items()} == {str(i): i * i for i in range(12)}
    assert len({v[1] for v in out.values()}) > 1  # several threads, none of them this one
    assert threading.current_thread().name not in {v[1] for v in out.values()}
    assert seen == list(range(1, 13))


def test_in_process_threads_raise_the_first_error() -> None:
    with pytest.raises(ValueError, match="three"):
        list(run_tasks(InProcessClient(threads=2), _fail_on_three, ((str(i), (i,)) for i in range(8)), total=8))
