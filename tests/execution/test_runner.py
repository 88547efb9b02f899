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


def test_only_the_embedded_clusters_workers_are_segpipes():
    """Fast exit is installed only in worker processes segpipe started, never in a user's cluster."""
    import logging

    from distributed import Client, LocalCluster

    from segpipe.execution.cluster import owns_workers

    with open_client(ClusterSpec(workers=1)) as client:
        assert owns_workers(client)
    with open_client(ClusterSpec(workers=0)) as client:
        assert not owns_workers(client)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0", silence_logs=logging.ERROR) as user, \
            Client(user) as client:
        assert not owns_workers(client)


def test_fast_exit_flushes_output_and_skips_finalisation(tmp_path):
    """The handler ends the process with status 0 after flushing; handlers registered before it do not run."""
    import subprocess
    import sys

    marker = tmp_path / "finalised"
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: open(sys.argv[1], 'w').write('x'))\n"
        "from segpipe.execution.plugins import install_fast_exit\n"
        "install_fast_exit()\n"
        "install_fast_exit()  # once per process\n"
        "sys.stdout.write('no newline at the end')\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(marker)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "no newline at the end"
    assert not marker.exists()
