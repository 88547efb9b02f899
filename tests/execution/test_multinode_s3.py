"""Nodes that share nothing but the store (issue 16, point 3): a real scheduler, two real workers, S3.

A moto S3 server on 127.0.0.1 (tests/_s3.py), a ``dask scheduler`` and two ``dask worker`` processes,
each started in its own empty working folder with its own temporary folder (tests/_dask_cluster.py:
``Nodes``), and the CLI in a folder of its own. The collection is read from the bucket and pre-labeled
into a store in the bucket with ``segpipe prelabel s3://… --out s3://… --scheduler tcp://…``:

1. the CLI is killed a third of the way (``SIGKILL`` to its process group);
2. ``--resume`` finishes, and a worker node (nanny and worker) is killed half-way through it: the run
   completes on the other one, without redoing what the first run finished (its receipts are kept
   byte for byte, and the report counts them as skipped);
3. exactly one output per image, with the same digests as an in-process run of the local files;
   ``segpipe fsck`` is clean; ``segpipe export`` from the bucket, to a local folder and into the bucket,
   reads back the same COCO json as the export of the local run;
4. nothing is written in any node's working folder (the CLI's included), nor any segpipe output in a
   node's temporary folder.

The model is a file at one path that every node reads (as a model baked into the nodes' image or
installed on each; a model in the bucket is not read by workers yet).
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

from distributed import Client

from segpipe.execution.worker_plugin import worker_settings
from segpipe.storage.location import Location, parse_location
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import Nodes
from tests._s3 import S3Server, bucket, s3_server
from tests.conftest import run_cli
from tests.prelabel.conftest import checkpoint, collection

__all__ = ["bucket", "checkpoint", "collection", "s3_server"]

#: Images of the collection (tests/prelabel/conftest.py).
N = 24
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


def test_nodes_share_nothing_but_the_bucket(tmp_path: Path, s3_server: S3Server, bucket: str,
                                            collection: Path, checkpoint: Path) -> None:
    # The reference: the local files, in this process's own run of the CLI, exported as COCO.
    ref = tmp_path / "ref.zarr"
    r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", str(ref), "-w", "0",
                "--threads", "1")
    assert r.returncode == 0, r.stderr
    r = run_cli("export", str(ref), str(tmp_path / "ref-coco"), "--to", "coco", "--layout", "single", "-w", "0")
    assert r.returncode == 0, r.stderr
    reference = _digests(_receipts(ref))
    assert len(reference) == N

    assert len(_upload(collection / "images", f"s3://{bucket}/collection/images")) == N
    src, out = f"s3://{bucket}/collection/images", f"s3://{bucket}/runs/labels.zarr"
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
        args = _cli("prelabel", src, "-m", str(checkpoint), "--out", out, "--scheduler", address,
                    "--threads", "1", "--batch", "1")

        # 1. The CLI is killed a third of the way.
        first = _run_until(args, driver, out, N // 3)
        assert first.poll() is None, f"the first run ended before it could be killed: {first.communicate()[1]!r}"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        before = _settle(out, address)
        assert N // 3 <= len(before) < N

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
    # …and in the bucket itself: one group per image, each with one label array, nothing left over
    keys = list(parse_location(out).list())  # type: ignore[union-attr]
    groups = [k for k in keys if k.startswith("images/") and k.count("/") == 2 and k.endswith("/zarr.json")]
    assert sorted(int(k.split("/")[1]) for k in groups) == sorted(reference)
    assert sum(k.endswith("/labels/zarr.json") for k in keys) == N
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
                 if p.suffix in (".zarr", ".json", ".jsonl", ".png") or ".segpipe" in p.parts]
        assert stray == [], (name, stray)
