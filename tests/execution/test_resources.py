"""Per-worker resources: built once per worker process from a setup record, handed to every task."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segpipe.execution.cluster import ClusterSpec, open_client
from segpipe.execution.plugins import WithResources, local_resources
from segpipe.execution.resources import provide_resources
from segpipe.execution.runner import run_tasks


@dataclass
class Journal:
    """Resources of one process: the process that built them, and a log of builds and closes."""

    pid: int
    log: Path

    def close(self) -> None:
        with self.log.open("a") as f:
            f.write(f"close {self.pid}\n")


@dataclass(frozen=True)
class JournalSetup:
    """Builds a :class:`Journal` in the process that runs it, and notes the build in ``log``."""

    log: Path

    def build(self) -> Journal:
        with self.log.open("a") as f:
            f.write(f"build {os.getpid()}\n")
        return Journal(os.getpid(), self.log)


def square_where(resources: Journal, x: int) -> tuple[int, int, int]:
    """``x²``, the pid that built the resources handed over, the pid that ran the task."""
    return x * x, resources.pid, os.getpid()


def _events(log: Path, kind: str) -> list[int]:
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith(kind)]


def test_each_worker_builds_its_resources_once_and_hands_them_to_its_tasks(tmp_path: Path) -> None:
    setup = JournalSetup(tmp_path / "log.txt")
    with open_client(ClusterSpec(workers=2)) as client:
        with provide_resources(client, setup):
            out = dict(run_tasks(client, WithResources(square_where, setup), ((f"t-{i}", (i,)) for i in range(16)),
                                 total=16, max_in_flight=4))
            built = _events(setup.log, "build")
        # unregistered at the end of the block: each worker released what it built
        closed = _events(setup.log, "close")
    assert {k: v[0] for k, v in out.items()} == {f"t-{i}": i * i for i in range(16)}
    assert len(built) == 2 and len(set(built)) == 2 and os.getpid() not in built
    assert all(res_pid == task_pid for _, res_pid, task_pid in out.values())  # its own worker's resources
    assert sorted(closed) == sorted(built)


def test_in_process_runs_build_them_here_once_per_setup(tmp_path: Path) -> None:
    a, b = JournalSetup(tmp_path / "a.txt"), JournalSetup(tmp_path / "b.txt")
    with open_client(ClusterSpec(workers=0, threads_per_worker=2)) as client:
        with provide_resources(client, a):
            out = [r for _, r in run_tasks(client, WithResources(square_where, a), ((str(i), (i,)) for i in range(6)),
                                           total=6)]
    assert sorted(r[0] for r in out) == [0, 1, 4, 9, 16, 25]  # two threads: in the order they finish
    assert {r[1] for r in out} == {r[2] for r in out} == {os.getpid()}
    assert _events(a.log, "build") == [os.getpid()]
    assert local_resources(a) is local_resources(a)  # kept for the next run with the same setup
    assert local_resources(b).log == b.log  # another setup builds its own
    assert len(_events(a.log, "build")) == 1 and len(_events(b.log, "build")) == 1
