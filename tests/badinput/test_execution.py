"""Bad input to the execution layer: worker counts the machine cannot take, through every route.

The CLI refuses ``--workers``/``--threads`` out of range when it parses them (tests/badinput/test_errors.py).
These cases reach :class:`~segpipe.execution.cluster.ClusterSpec` without that check, through a
pipeline file's ``workers:``: ``--workers 10000`` used to start a cluster that died of "Too many open
files", and ``--threads 100000`` segfaulted in torch's thread pool.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.badinput._corpus import check_bad_input


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    """A folder with one small image (a pipeline that would pre-label it)."""
    import numpy as np
    from PIL import Image

    (tmp_path / "ds").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ds" / "a.png")
    return tmp_path


def _pipeline(root: Path, head: str) -> None:
    (root / "p.yaml").write_text(f"{head}\nstages:\n  - prelabel: {{source: ds, model: m.ckpt, out: o.zarr}}\n")


def test_pipeline_workers_above_the_machines_cap_is_one_line(case: Path) -> None:
    _pipeline(case, "workers: 10000")
    r = check_bad_input("-q", "run", "p.yaml", root=case, code=2, names=["--workers 10000", "at most"], timeout=60)
    assert "Too many open files" not in r.stderr


@pytest.fixture()
def few_open_files() -> Iterator[int]:
    """Lowers this process's open-files soft limit (its children inherit it) to leave room for 5 workers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    from segpipe.execution.cluster import FDS_PER_WORKER, FDS_RESERVED

    low = FDS_RESERVED + 5 * FDS_PER_WORKER + FDS_PER_WORKER // 2  # 5 workers, not 6
    if soft != resource.RLIM_INFINITY and soft < low:
        pytest.skip(f"the open-files limit is already {soft}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        yield low
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pipeline_workers_above_the_open_files_limit_is_one_line(case: Path, few_open_files: int) -> None:
    """Within 4 per core, but not within the open-files limit (on any machine of 2 cores or more)."""
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: 6 workers are above 4 per core already")
    _pipeline(case, "workers: 6")
    check_bad_input("-q", "run", "p.yaml", root=case, code=2,
                    names=["--workers 6", "at most 5", f"open-files limit of {few_open_files}"], timeout=60)


def test_pipeline_negative_workers_is_one_line(case: Path) -> None:
    _pipeline(case, "workers: -1")
    check_bad_input("-q", "run", "p.yaml", root=case, code=2, names=["workers"], timeout=60)


@pytest.mark.parametrize(("args", "option"), [
    (("--workers", "10000"), "--workers"),
    (("-w", "0", "--threads", "100000"), "--threads"),
], ids=["workers", "threads"])
def test_prelabel_option_beyond_the_machine_is_one_line(case: Path, args: tuple[str, ...], option: str) -> None:
    """The same refusals on the command line (where the CLI checks them first)."""
    check_bad_input("-q", "prelabel", "ds", "--model", "m.ckpt", "--out", "o.zarr", *args, root=case, code=2,
                    names=[option], timeout=120)
