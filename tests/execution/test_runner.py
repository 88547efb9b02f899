"""The runner on a real LocalCluster (worker processes) and in-process."""

import os

import pytest

from segpipe.errors import FormatError
from segpipe.execution.cluster import ClusterSpec, open_client
from segpipe.execution.runner import run_tasks


def square_pid(x):
    return x * x, os.getpid()


def fail_on_three(x):
    if x == 3:
        raise FormatError("bad value", path="f.json", where=f"items[{x}]")
    return x


def test_local_cluster_runs_in_worker_processes():
    seen = []
    with open_client(ClusterSpec(workers=2)) as client:
        out = dict(run_tasks(client, square_pid, ((f"t-{i}", (i,)) for i in range(20)), total=20, max_in_flight=3,
                             progress=lambda d, t, f: seen.append(d)))
    assert {k: v[0] for k, v in out.items()} == {f"t-{i}": i * i for i in range(20)}
    assert os.getpid() not in {v[1] for v in out.values()}
    assert seen[-1] == 20


def test_task_error_keeps_its_fields():
    with open_client(ClusterSpec(workers=1)) as client:
        with pytest.raises(FormatError) as e:
            list(run_tasks(client, fail_on_three, ((f"f-{i}", (i,)) for i in range(6)), total=6))
    assert str(e.value) == "f.json: items[3]: bad value"


def test_in_process():
    with open_client(ClusterSpec(workers=0)) as client:
        out = list(run_tasks(client, square_pid, ((str(i), (i,)) for i in range(4)), total=4))
    assert [r[0] for _, r in out] == [0, 1, 4, 9]
    assert {r[1] for _, r in out} == {os.getpid()}


def _worker_settings():
    import dask

    return dask.config.get("distributed.worker.profile.enabled"), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_embedded_workers_run_without_profiler_and_malloc_trim():
    """Both cost CPU inference time in a worker (bench/RESULTS.md): the embedded cluster turns them off."""
    with open_client(ClusterSpec(workers=1)) as client:
        (settings,) = client.run(_worker_settings).values()
    assert tuple(settings) == (False, None)
