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


class Nodes:
    """A ``dask scheduler`` and ``dask worker`` processes that share no folder, as on separate machines.

    Each process runs in its own empty working folder (``ROOT/<name>/work``), with its own temporary
    folder and Dask scratch space (``ROOT/<name>/tmp``), and in its own session, so that killing one
    (nanny and worker together, as a lost node) leaves the others. Use as a context manager: every
    process still running is stopped at the end.

    Args:
        root: Where the nodes' folders go.
        env: The environment every process starts with (each worker may add its own).
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = dict(os.environ if env is None else env, CI="1")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def folder(self, name: str) -> Path:
        """The working folder of node ``name`` (empty when it started)."""
        return self.root / name / "work"

    def _start(self, name: str, args: list[str], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        work, tmp = self.folder(name), self.root / name / "tmp"
        work.mkdir(parents=True)
        tmp.mkdir()
        full = {**self.env, "TMPDIR": str(tmp), **(env or {})}
        log = open(self.root / name / "log.txt", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], cwd=work, env=full,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_scheduler(self) -> str:
        """Starts the scheduler; returns its address."""
        sched_file = self.root / "scheduler.json"
        proc = self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                         "--scheduler-file", str(sched_file)], None)
        deadline = time.time() + 60
        while not sched_file.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {self.log('scheduler')[-2000:]}")
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        return self.address

    def start_worker(self, name: str, *extra: str, env: dict[str, str] | None = None) -> None:
        """Starts ``dask worker ADDRESS --name NAME --nthreads 1 EXTRA…`` (joins the scheduler later)."""
        self._start(name, ["worker", self.address, "--name", name, "--nthreads", "1", "--no-dashboard",
                           "--local-directory", str(self.root / name / "tmp"), *extra], env)

    def kill(self, name: str) -> None:
        """Kills node ``name`` at once (SIGKILL to its whole session: nanny and worker)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def log(self, name: str) -> str:
        """What node ``name`` printed."""
        return (self.root / name / "log.txt").read_text(errors="replace")

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill(name)
