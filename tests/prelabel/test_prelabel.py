"""Pre-labeling into Zarr on real Dask processes: contents, determinism, resume, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from segpipe.errors import InputError
from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.prelabel import PrelabelRequest, fsck, prelabel
from segpipe.storage.ledger import Ledger
from segpipe.storage.zarrstore import ZarrStore
from tests._dask_cluster import external_cluster
from tests.conftest import run_cli


def _digests(store: Path) -> dict[int, dict[str, str]]:
    out = {}
    for _, p in Ledger(store / ".segpipe").items():
        r = json.loads(p.read_text())
        out[int(r["image_id"])] = r["outputs"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, collection, checkpoint) -> dict[int, dict[str, str]]:
    """An uninterrupted in-process run: the outputs every other run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 24
    return _digests(out)


def test_store_contents_on_two_workers(tmp_path, collection, checkpoint, reference):
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1),
                   ClusterSpec(workers=2))
    assert rep["images"] == {"total": 24, "done": 24, "skipped_already_done": 0, "failed": 0, "not_run": 0}
    assert set(rep["stage_seconds"]) == {"decode", "infer", "write"}
    # identical bytes to the in-process run
    assert _digests(out) == reference
    # the store reads with plain zarr: same-size images are stacked, one slot per image
    root = zarr.open_group(str(out), mode="r")
    cats = root.attrs["segpipe"]["categories"]
    assert root.attrs["segpipe"]["layout"] == 2 and not list(root["images"].group_keys())
    stack = root["stacks/128x256"]
    ids = [int(i) for i in stack["ids"][...] if i >= 0]
    assert len(ids) == 24 and stack["done"][...].sum() == 24
    slot = int(np.flatnonzero(stack["ids"][...] == ids[0])[0])
    attrs = json.loads(str(stack["attrs"][slot]))
    labels = stack["labels"][slot]
    assert labels.shape == (attrs["height"], attrs["width"]) == (128, 256) and attrs["id"] == ids[0]
    assert set(np.unique(labels)) <= {c["id"] for c in cats}
    probs = stack["probs"][slot]
    assert probs.dtype == np.uint8 and probs.shape == (len(cats), 128, 256)
    # shard files hold 8 images each, with flat keys: no folder per image or per shard
    assert sorted(p.name for p in (out / "stacks" / "128x256" / "labels").iterdir()) == \
        ["c.0.0.0", "c.1.0.0", "c.2.0.0", "zarr.json"]
    # the store's own API gives each stacked image as its group
    g = ZarrStore.open(out).group(ids[0])
    assert dict(g.attrs) == attrs and np.array_equal(g["labels"][...], labels) and "probs" in g
    # probabilities are a distribution (within quantisation) and their argmax is the label map
    s = probs.astype(np.int32).sum(0)
    assert np.abs(s - 255).max() <= len(cats)
    manifest = (out / ".segpipe" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 24 and all(len(json.loads(m)["sha256"]) == 64 for m in manifest)
    f = fsck(out)
    assert f["ok"] == f["receipts"] == 24 and not f["bad"] and not f["orphans"]


def test_resume_and_config_guard(tmp_path, collection, checkpoint):
    out = tmp_path / "s.zarr"
    req = PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1, limit=6)
    prelabel(req, ClusterSpec(workers=0))
    with pytest.raises(InputError, match="--resume"):
        prelabel(req, ClusterSpec(workers=0))
    req = req.model_copy(update={"resume": True, "limit": None})  # a request is frozen: a changed copy
    rep = prelabel(req, ClusterSpec(workers=0))
    assert rep["images"]["skipped_already_done"] == 6 and rep["images"]["done"] == 18
    other = PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1,
                            tile=64, resume=True)
    with pytest.raises(InputError, match="another model or config"):
        prelabel(other, ClusterSpec(workers=0))
    other = other.model_copy(update={"resume": False, "overwrite": True})  # one or the other: both is refused
    assert prelabel(other, ClusterSpec(workers=0))["images"]["done"] == 24


def test_poison_and_corrupt_images_fail_alone(tmp_path, collection, checkpoint, monkeypatch):
    src = tmp_path / "imgs"
    src.mkdir()
    names = sorted((collection / "images").iterdir())[:6]
    for p in names:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "poison_000.png").write_bytes(names[0].read_bytes())
    data = names[1].read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 3])
    monkeypatch.setenv("SEGPIPE_FAULT_DECODE", "poison_")  # the decoder process segfaults on this file
    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1), ClusterSpec(workers=2))
    assert rep["images"]["done"] == 6 and rep["images"]["failed"] == 2, (rep["images"], rep["failed"])
    reasons = {f["file"]: f["reason"] for f in rep["failed"]}
    assert "crashed" in reasons["poison_000.png"] and "signal 11" in reasons["poison_000.png"]
    assert "truncated" in reasons["truncated.png"]
    # with --on-error fail the CLI exits 1 and names the file
    r = run_cli("prelabel", str(src), "-m", str(checkpoint), "-o", str(tmp_path / "f.zarr"), "-w", "0",
                "--on-error", "fail", "--threads", "1")
    assert r.returncode == 1
    # failure lines are errors on stderr (issue 13: never on stdout)
    assert "error: " in r.stderr and ("poison_000.png" in r.stderr or "truncated.png" in r.stderr)


def test_worker_killed_halfway(tmp_path, collection, checkpoint, reference):
    out = tmp_path / "s.zarr"
    result: dict = {}

    def run() -> None:
        result["rep"] = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out,
                                                 threads=1, batch=1), ClusterSpec(workers=2))

    th = threading.Thread(target=run)
    th.start()
    ledger = out / ".segpipe" / "ledger"
    killed = None
    deadline = time.time() + 240
    while th.is_alive() and time.time() < deadline and killed is None:
        receipts = list(ledger.glob("*.json")) if ledger.exists() else []
        if len(receipts) >= 6:
            pid = int(json.loads(receipts[0].read_text())["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.01)
    th.join(300)
    assert killed is not None, "the run finished before a worker could be killed"
    rep = result["rep"]
    assert rep["images"]["done"] + rep["images"]["skipped_already_done"] == 24
    assert rep["images"]["failed"] == 0
    assert _digests(out) == reference
    root = zarr.open_group(str(out), mode="r")
    slots = [int(i) for i in root["stacks/128x256/ids"][...] if i >= 0]
    assert sorted(slots) == sorted(reference) and not list(root["images"].group_keys())  # one output per image
    assert ZarrStore.open(out).image_ids() == sorted(reference)
    f = fsck(out, repair=True)
    assert f["ok"] == 24 and not f["bad"]


def test_cli_killed_then_resumed(tmp_path, collection, checkpoint, reference):
    out = tmp_path / "s.zarr"
    # One worker while the CLI is killed: receipts come a shard (8 images) at a time, and two workers
    # can finish their shards within the poll's 10 ms, so a kill meant for the middle came after the end.
    args = [sys.executable, "-m", "segpipe", "-q", "prelabel", str(collection / "images"), "-m", str(checkpoint),
            "-o", str(out), "-w", "1", "--threads", "1", "--batch", "1"]
    env = dict(os.environ, CI="1")
    ledger = out / ".segpipe" / "ledger"
    for cut in (4, 12):  # two kills at different points, each followed by a resume
        proc = subprocess.Popen(args + (["--resume"] if out.exists() else []), env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            if ledger.exists() and len(list(ledger.glob("*.json"))) >= cut:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(30)
        time.sleep(0.5)
    before = {p.name: p.stat().st_mtime_ns for p in ledger.glob("*.json")}
    assert 0 < len(before) < 24
    r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", str(out), "-w", "2",
                "--threads", "1", "--resume")
    assert r.returncode == 0, r.stderr
    after = {p.name: p.stat().st_mtime_ns for p in ledger.glob("*.json")}
    assert len(after) == 24
    assert all(after[k] == v for k, v in before.items()), "done work was redone"
    assert _digests(out) == reference
    fsck(out, repair=True)  # killed writers may leave *.partial orphans: repair removes them
    f = fsck(out)
    assert f["ok"] == 24 and not f["orphans"] and not f["bad"]


def test_external_scheduler_and_workers(tmp_path, collection, checkpoint, reference):
    with external_cluster(tmp_path, [["--nworkers", "1"]] * 2) as address:
        out = tmp_path / "s.zarr"
        r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", str(out),
                    "--scheduler", address, "--threads", "1")
        assert r.returncode == 0, r.stderr
        assert _digests(out) == reference
        workers = {json.loads(p.read_text())["worker"] for p in (out / ".segpipe" / "ledger").glob("*.json")}
        assert len(workers) == 2  # both external workers did work


def test_unreachable_scheduler_is_one_line(tmp_path, collection, checkpoint):
    r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", str(tmp_path / "s.zarr"),
                "--scheduler", "tcp://127.0.0.1:9")
    assert r.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr


def test_store_attrs_match_layout_schema(tmp_path, collection, checkpoint):
    import jsonschema

    out = tmp_path / "s.zarr"
    prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1, limit=2),
             ClusterSpec(workers=0))
    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "zarr_layout.schema.json").read_text())
    root = zarr.open_group(str(out), mode="r")
    jsonschema.validate(dict(root.attrs["segpipe"]), schema)
    img_schema = {**schema["$defs"]["StoreImageAttrs"], "$defs": schema["$defs"]}
    store = ZarrStore.open(out)
    assert len(store.image_ids()) == 2
    for _, g in store.iter_groups():
        jsonschema.validate(dict(g.attrs), img_schema)


def test_changed_image_is_redone_and_fsck_stays_clean(tmp_path, collection, checkpoint):
    src = tmp_path / "imgs"
    src.mkdir()
    files = sorted((collection / "images").iterdir())[:4]
    for p in files[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "s.zarr"
    prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1), ClusterSpec(workers=0))
    (src / files[1].name).write_bytes(files[3].read_bytes())  # same name, other content
    rep = prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=out, threads=1, resume=True),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 1 and rep["images"]["skipped_already_done"] == 2
    f = fsck(out)
    assert f["receipts"] == 3 and f["ok"] == 3 and not f["bad"]


def test_dataset_source_keeps_its_image_ids(tmp_path, collection, checkpoint):
    out = tmp_path / "s.zarr"
    prelabel(PrelabelRequest(source=str(collection), model=str(checkpoint), out=out, threads=1, limit=3),
             ClusterSpec(workers=0))
    gt_ids = {im["id"] for im in json.loads((collection / "annotations.json").read_text())["images"]}
    root = zarr.open_group(str(out), mode="r")
    assert {int(k) for k in root["images"].group_keys()} <= gt_ids


def test_symlink_leaving_the_root_fails_alone(tmp_path, collection, checkpoint):
    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted((collection / "images").iterdir())[:2]:
        (src / p.name).write_bytes(p.read_bytes())
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    os.symlink(secret, src / "link.png")
    rep = prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=tmp_path / "s.zarr", threads=1),
                   ClusterSpec(workers=0))
    assert rep["images"]["done"] == 2
    (failed,) = rep["failed"]
    assert failed["file"] == "link.png" and "outside the dataset root" in failed["reason"]


def test_batches_group_small_images_and_keep_large_work_alone():
    from segpipe.kernels.prelabel.tasks import PrelabelTask, SceneBlock
    from segpipe.pipeline.prelabel.plan import BATCH_IMAGES, BATCH_PIXELS, batch_tasks
    from segpipe.storage.manifest import ManifestEntry

    def img(i: int, side: int = 512) -> PrelabelTask:
        return PrelabelTask(f"k{i}", ManifestEntry(id=i, file=f"{i}.jpg", path=f"/x/{i}.jpg", width=side, height=side))

    todo = [img(i) for i in range(200)]
    batches = batch_tasks(todo, workers=2)
    assert [t for b in batches for t in b] == todo  # every task once, in order
    sizes = [len(b) for b in batches]
    assert sizes[0] == BATCH_IMAGES and max(sizes) == BATCH_IMAGES
    # Guided: batches shrink towards the end (at most a quarter of a worker's share of what is left).
    assert sizes == sorted(sizes, reverse=True) and sizes[-8:] == [1] * 8
    # A small run still spreads over the workers: 12 images on 2 workers are 12 tasks, not 2.
    small = batch_tasks(todo[:12], workers=2)
    assert len(small) == 12 and all(len(b) == 1 for b in small)
    assert max(len(b) for b in batch_tasks(todo[:40], workers=2)) == 5
    # Large images close a batch by pixels; scene blocks and slabs are never batched.
    big = [img(i, 2048) for i in range(10)]
    assert all(len(b) * 2048 * 2048 >= BATCH_PIXELS and len(b) == 1 for b in batch_tasks(big * 8, workers=1))
    scene = PrelabelTask("s", ManifestEntry(id=99, file="s.tif", path="/x/s.tif", width=9000, height=9000,
                                            kind="scene"), SceneBlock((0, 2048, 0, 2048)))
    mixed = batch_tasks([*todo[:40], scene, *todo[40:80]], workers=1)
    assert [scene] in mixed
    assert [t for b in mixed for t in b] == [*todo[:40], scene, *todo[40:80]]


def test_rerun_batch_returns_receipts_without_redoing(tmp_path, collection, checkpoint):
    """Dask reruns a whole batch after its worker died part-way: the images already done stay done."""
    from segpipe.kernels.prelabel.batch import prelabel_batch
    from segpipe.kernels.prelabel.resources import PredictorOptions, PredictorSetup
    from segpipe.kernels.prelabel.tasks import OutputSettings, PrelabelSettings
    from segpipe.models.ref import ModelRef
    from segpipe.pipeline.prelabel.plan import plan_tasks
    from segpipe.storage.manifest import read_manifest
    from segpipe.storage.zarrstore import ZarrStore

    out = tmp_path / "s.zarr"
    rep = prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1,
                                   limit=4), ClusterSpec(workers=0))
    assert rep["images"]["done"] == 4
    entries = read_manifest(out / ".segpipe" / "manifest.jsonl")
    cfg = ZarrStore.open(out).attrs()["config_hash"]
    planned = plan_tasks(entries, cfg)
    ledger = Ledger(out / ".segpipe")
    assert {t.key for t in planned} == ledger.keys()
    before = {k: ledger.path(k).stat().st_mtime_ns for k in ledger.keys()}
    first_key = planned[0].key
    ledger.path(first_key).unlink()  # as if the worker died after the first image's outputs only
    setup = PredictorSetup(ModelRef(str(checkpoint), None), PredictorOptions(device="cpu", batch_size=1))
    settings = PrelabelSettings(ZarrStore(out), OutputSettings(probs=True, heatmaps=True, min_score=0.0))
    resources = setup.build()
    try:
        rs = prelabel_batch(resources, settings, planned)
    finally:
        resources.close()
    assert [r.key for r in rs] == [t.key for t in planned]
    assert all(r.status == "done" for r in rs)
    after = {k: ledger.path(k).stat().st_mtime_ns for k in ledger.keys()}
    assert set(after) == set(before)
    assert all(after[k] == before[k] for k in before if k != first_key), "done images were redone"
    assert fsck(out)["ok"] == 4


def test_on_error_fail_stops_inside_a_batch(tmp_path, collection, checkpoint):
    """--on-error fail stops at the first failed image, not at the end of its batch."""
    src = tmp_path / "imgs"
    src.mkdir()
    names = sorted((collection / "images").iterdir())
    for p in names:
        (src / p.name).write_bytes(p.read_bytes())
    data = names[1].read_bytes()
    (src / "00000_truncated.png").write_bytes(data[: len(data) // 3])  # sorts among the first
    rep = prelabel(PrelabelRequest(source=str(src), model=str(checkpoint), out=tmp_path / "s.zarr", threads=1,
                                   on_error="fail"), ClusterSpec(workers=0))
    from segpipe.storage.manifest import read_manifest

    order = [e.file for e in read_manifest(tmp_path / "s.zarr" / ".segpipe" / "manifest.jsonl")]
    at = order.index("00000_truncated.png")
    assert at == 1  # inside the first batch (in-process: 6 images for 25), not its last
    assert rep["stopped_on_error"]
    assert rep["images"]["done"] == at and rep["images"]["failed"] == 1
    assert rep["images"]["not_run"] == len(order) - at - 1


def test_batch_keys_name_their_contents():
    from segpipe.pipeline.prelabel.plan import batch_key

    assert batch_key(["a"]) == "a"
    assert batch_key(["a", "b"]) == batch_key(["a", "b"])
    assert len({batch_key(["a", "b"]), batch_key(["a", "c"]), batch_key(["b", "a"]), batch_key(["a", "b", "c"])}) == 4


def test_fsck_verifies_receipts_of_both_digest_schemes(tmp_path, collection, checkpoint):
    """Receipts written before the xxh3 digests (bare sha256) still verify; a wrong one is reported."""
    from segpipe.storage.zarrstore import array_digest

    out = tmp_path / "s.zarr"
    prelabel(PrelabelRequest(source=str(collection / "images"), model=str(checkpoint), out=out, threads=1, limit=2),
             ClusterSpec(workers=0))
    receipts = sorted((out / ".segpipe" / "ledger").rglob("*.json"))
    assert len(receipts) == 2
    store = ZarrStore.open(out)
    for p in receipts:
        rec = json.loads(p.read_text())
        assert all(d.startswith("xxh3-128:") for d in rec["outputs"].values())
        rec["outputs"] = {k: array_digest(store.read(rec["image_id"], k), legacy=True) for k in rec["outputs"]}
        p.write_text(json.dumps(rec))
    assert fsck(out)["ok"] == 2
    rec = json.loads(receipts[0].read_text())
    rec["outputs"]["labels"] = "0" * 64
    receipts[0].write_text(json.dumps(rec))
    f = fsck(out)
    assert f["ok"] == 1 and len(f["bad"]) == 1 and "checksum mismatch" in f["bad"][0]["problem"]


@pytest.mark.parametrize("workers", ["1", "0"])
def test_a_model_the_workers_cannot_load_leaves_the_store(tmp_path, collection, checkpoint, workers):
    """The workers load the model before the store is touched: --overwrite with bad weights keeps the old run."""
    import torch

    from segpipe.models.checkpoint import load_checkpoint, save_checkpoint
    from segpipe.models.registry import build_model

    out = tmp_path / "s.zarr"
    r = run_cli("prelabel", str(collection / "images"), "-m", str(checkpoint), "-o", str(out), "-w", "1",
                "--threads", "1", "--limit", "8")
    assert r.returncode == 0, r.stderr
    before = sorted(p.name for p in (out / ".segpipe" / "ledger").glob("*.json"))
    assert len(before) == 8
    meta = load_checkpoint(checkpoint).meta
    bad = tmp_path / "bad.ckpt"  # the meta says U-Net base 8, the weights are of base 16: they do not fit
    torch.manual_seed(0)
    save_checkpoint(bad, build_model("unet", meta.num_classes, base=16, depth=2), meta)
    r = run_cli("prelabel", str(collection / "images"), "-m", str(bad), "-o", str(out), "-w", workers, "--threads",
                "1", "--overwrite")
    assert r.returncode != 0
    assert "do not fit" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert sorted(p.name for p in (out / ".segpipe" / "ledger").glob("*.json")) == before
    assert len(ZarrStore.open(out).image_ids()) == 8
