"""Nodes that share nothing but the store (issue 16, point 3): a real scheduler, two real workers, S3.

A moto S3 server on 127.0.0.1 (tests/_s3.py), a ``dask scheduler`` and two ``dask worker`` processes,
each started in its own empty working folder with its own temporary folder (tests/_dask_cluster.py:
``Nodes``), and the CLI in a folder of its own. The collection is read from the bucket and pre-labeled
into a store in the bucket with ``segpipe prelabel s3://… --out s3://… --scheduler tcp://…``:

1. the CLI is killed a third of the way (``SIGKILL`` to its process group);
2. ``--resume`` finishes, and a worker node (nanny and worker) is killed half-way through it: the run
   completes on the other one, without redoing what the first run finished (its receipts are kept
   byte for byte, and the report counts them as skipped);
3. exactly one output per image, with the same digests as an in-process run of the local files: the
   same-size images are stacked (store layout 2), one slot each, their shard objects written whole by
   the task that owns them (a shard lost with its node is redone whole, never half-written);
   ``segpipe fsck`` is clean; ``segpipe export`` from the bucket, to a local folder and into the bucket,
   reads back the same COCO json as the export of the local run;
4. nothing is written in any node's working folder (the CLI's included), nor any segpipe output in a
   node's temporary folder.

The model is in the bucket too (``-m s3://…/models/unet.ckpt``): the driver reads it and records its
ETag, size and sha256, and each worker copies it into its own temporary folder, checks it against
them, and removes the copy once the model is loaded (segpipe/models/fetch.py); no node reads a model
at a local path.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client

from segpipe.execution.worker_plugin import worker_settings
from segpipe.storage.location import Location, parse_location
from segpipe.storage.stacks import SHARD, read_stack_slots
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import Nodes
from tests._s3 import S3Server, bucket, s3_server
from tests.conftest import run_cli
from tests.prelabel.conftest import checkpoint, collection

__all__ = ["bucket", "checkpoint", "collection", "s3_server"]

#: Images of the collection: six shards of a stack, so that each phase ends with shards left to run
#: (receipts land a shard at a time).
N = 6 * SHARD
#: How long one phase may take on 2 busy cores.
PHASE_S = 240


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segpipe", "-q", *args]


def _env() -> dict[str, str]:
    # The environment a node starts with: the S3 endpoint and credentials (set by the s3_server fixture),
    # and nothing that would point it at this checkout's folders (no PYTHONPATH: workers import segpipe
    # as installed).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MALLOC_TRIM_THRESHOLD_")}
    return dict(env, CI="1", COLUMNS="200")


def _receipts(store: str | Path) -> dict[str, bytes]:
    """Every receipt of ``store``'s ledger: key → its bytes (a local store, or one in the bucket)."""
    ledger: Any = ZarrStore.open(store).ledger()
    if hasattr(ledger, "read_all"):
        return {k: b for k, b in ledger.read_all() if b is not None}
    return {k: p.read_bytes() for k, p in ledger.items()}


def _finished(store: str) -> int:
    """Receipts in the store so far (0 before the store exists): one LIST, not a GET per receipt."""
    try:
        return len(ZarrStore.open(store).ledger().keys())
    except Exception:  # the store is not created yet
        return 0


def _digests(receipts: dict[str, bytes]) -> dict[int, dict[str, str]]:
    out = {}
    for raw in receipts.values():
        r = json.loads(raw)
        out[int(r["image_id"])] = r["outputs"]
    return out


def _run_until(args: list[str], cwd: Path, store: str, finished: int) -> subprocess.Popen[bytes]:
    """Starts the CLI; returns once ``store`` holds ``finished`` receipts or the CLI ended."""
    proc = subprocess.Popen(args, cwd=cwd, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + PHASE_S
    while proc.poll() is None and time.time() < deadline and _finished(store) < finished:
        time.sleep(0.1)
    return proc


def _settle(store: str, address: str) -> dict[str, bytes]:
    """The receipts once no worker runs a task (tasks already running when the CLI died still finish)."""
    deadline, idle_since = time.time() + PHASE_S, time.time()
    with Client(address, timeout="30s") as client:
        # idle for a whole second: the scheduler may start a queued task before it sees the CLI gone
        while time.time() < deadline and time.time() - idle_since < 1:
            # a lambda travels by value: the workers cannot import this test module
            if any(client.run(lambda dask_worker: len(dask_worker.active_threads)).values()):
                idle_since = time.time()
            time.sleep(0.1)
    return _receipts(store)


def _coco(folder: Path) -> dict[str, Any]:
    """The COCO json an export wrote, without what names where the store and its images live."""
    data = json.loads((folder / "annotations.json").read_text())
    for im in data["images"]:
        im["file_name"] = Path(im["file_name"]).name
    for key in ("info", "store", "store_token"):
        data.pop(key, None)
    return data


def _upload(src: Path, dst: str) -> list[str]:
    loc = parse_location(dst)
    assert isinstance(loc, Location)
    names = sorted(p.name for p in src.iterdir())
    for name in names:
        loc.write_bytes(name, (src / name).read_bytes())
    return names


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory, collection: Path) -> Path:
    """N street-view images of the collection's size and classes (what its checkpoint predicts)."""
    from segpipe.synth import synth

    out = tmp_path_factory.mktemp("many")
    synth("streetview", out, n=N, seed=3, size=(128, 256))
    assert (out / "labelmap.txt").read_text() == (collection / "labelmap.txt").read_text()
    return out


def test_nodes_share_nothing_but_the_bucket(tmp_path: Path, s3_server: S3Server, bucket: str,
                                            many: Path, checkpoint: Path) -> None:
    # The reference: the local files, in this process's own run of the CLI, exported as COCO.
    ref = tmp_path / "ref.zarr"
    r = run_cli("prelabel", str(many / "images"), "-m", str(checkpoint), "-o", str(ref), "-w", "0",
                "--threads", "1")
    assert r.returncode == 0, r.stderr
    r = run_cli("export", str(ref), str(tmp_path / "ref-coco"), "--to", "coco", "--layout", "single", "-w", "0")
    assert r.returncode == 0, r.stderr
    reference = _digests(_receipts(ref))
    assert len(reference) == N

    assert len(_upload(many / "images", f"s3://{bucket}/collection/images")) == N
    src, out = f"s3://{bucket}/collection/images", f"s3://{bucket}/runs/labels.zarr"
    model = f"s3://{bucket}/models/{checkpoint.name}"
    assert _upload(checkpoint.parent, f"s3://{bucket}/models") == [checkpoint.name]
    driver = tmp_path / "driver"
    driver.mkdir()
    with Nodes(tmp_path / "nodes", _env()) as nodes:
        address = nodes.start_scheduler()
        for name in ("w1", "w2"):
            nodes.start_worker(name)
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            pids = {pid: names[a] for a, pid in client.run(os.getpid).items()}
        args = _cli("prelabel", src, "-m", model, "--out", out, "--scheduler", address,
                    "--threads", "1", "--batch", "1")

        # 1. The CLI is killed once a shard is done (both workers hold one: a shard task holds its 8 images).
        first = _run_until(args, driver, out, SHARD)
        assert first.poll() is None, f"the first run ended before it could be killed: {first.communicate()[1]!r}"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        before = _settle(out, address)
        # whole shards only: a shard's receipts are written once its objects are
        assert SHARD <= len(before) <= N - 2 * SHARD and len(before) % SHARD == 0, len(before)

        # 2. --resume, and a node is lost half-way through it.
        second = _run_until([*args, "--resume"], driver, out, len(before) + (N - len(before)) // 2)
        assert second.poll() is None, f"the resumed run ended before a node could be lost: {second.communicate()[1]!r}"
        nodes.kill("w2")
        _, stderr = second.communicate(timeout=PHASE_S)
        assert second.returncode == 0, stderr.decode(errors="replace")

        # segpipe's worker settings are in effect on the node that is left (a user's `dask worker`).
        with Client(address, timeout="30s") as client:
            settings = list(client.run(worker_settings).values())
        assert [s["profiler"] for s in settings] == [[]]
    assert [s["malloc_restored"] for s in settings] == [platform.libc_ver()[0] == "glibc"]

    after = _receipts(out)
    assert len(after) == N
    assert {k: after[k] for k in before} == before, "the resumed run redid finished images"
    store = ZarrStore.open(out)
    private = store.private_location
    assert private is not None
    reports = [json.loads(private.read_bytes(k)) for k in private.list("runs")]
    assert len(reports) == 1  # the killed run wrote none
    assert reports[0]["images"] == {"total": N, "done": N - len(before), "skipped_already_done": len(before),
                                    "failed": 0, "not_run": 0}
    # Both nodes worked before the CLI was killed; the node left finished the resumed run.
    workers = {k: pids.get(int(json.loads(b)["worker"].rsplit(":", 1)[1])) for k, b in after.items()}
    assert {workers[k] for k in before} == {"w1", "w2"}
    assert "w1" in {workers[k] for k in after if k not in before}

    # 3. Exactly one output per image, equal to the local run's; fsck clean; the export reads back.
    assert _digests(after) == reference
    assert store.image_ids() == sorted(reference)
    # …and in the bucket itself: one slot per image in one stack, one shard object per 8 images, no
    # group per image, nothing left over
    loc_out = parse_location(out)
    assert isinstance(loc_out, Location)
    keys = list(loc_out.list())
    assert [k for k in keys if k.startswith("images/")] == ["images/zarr.json"]
    assert sorted(k for k in keys if k.startswith("stacks/128x256/labels/c.")) == \
        sorted(f"stacks/128x256/labels/c.{s}.0.0" for s in range(N // SHARD))
    ((ids, done),) = read_stack_slots(loc_out).values()
    assert sorted(ids.tolist()) == sorted(reference) and done.tolist() == [1] * N
    assert np.unique(ids).size == N
    assert not [k for k in keys if k.endswith(".partial") or "staging" in k]
    r = run_cli("fsck", out, cwd=driver)
    assert r.returncode == 0, r.stdout + r.stderr
    got = tmp_path / "got-coco"
    r = run_cli("export", out, str(got), "--to", "coco", "--layout", "single", "-w", "0", cwd=driver)
    assert r.returncode == 0, r.stderr
    assert json.loads((got / "annotations.json").read_text())["store"] == out
    assert _coco(got) == _coco(tmp_path / "ref-coco")
    # The same export written into the bucket reads back the same.
    exported = f"s3://{bucket}/exports/coco"
    r = run_cli("export", out, exported, "--to", "coco", "--layout", "single", "-w", "0", cwd=driver)
    assert r.returncode == 0, r.stderr
    loc = parse_location(exported)
    assert isinstance(loc, Location)
    (tmp_path / "read-back").mkdir()
    (tmp_path / "read-back" / "annotations.json").write_bytes(loc.read_bytes("annotations.json"))
    assert _coco(tmp_path / "read-back") == _coco(tmp_path / "ref-coco")

    # 4. No node wrote anything where it runs, nor any segpipe output in its temporary folder.
    assert list(driver.iterdir()) == []
    for name in ("scheduler", "w1", "w2"):
        assert list(nodes.folder(name).iterdir()) == [], name
        stray = [p for p in (tmp_path / "nodes" / name / "tmp").rglob("*")
                 if p.suffix in (".zarr", ".json", ".jsonl", ".png", ".ckpt") or ".segpipe" in p.parts]
        assert stray == [], (name, stray)  # a worker's copy of the model is removed once loaded
