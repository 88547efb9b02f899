"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 for tests of a user's cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def external_cluster(tmp_path: Path, workers: Sequence[Sequence[str]]) -> Iterator[str]:
    """Starts a scheduler and one ``dask worker`` per entry of ``workers`` (its extra arguments).

    Args:
        tmp_path: Where the scheduler file goes.
        workers: Extra command-line arguments of each worker, e.g. ``[["--resources", "GPU=1"], []]``.

    Yields:
        The scheduler's address, once every worker has joined. Every process is stopped after.
    """
    dask = Path(sys.executable).parent / "dask"
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, CI="1")
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for extra in workers:
            procs.append(subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--no-dashboard",
                                           *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(len(workers), timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
