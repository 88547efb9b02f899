"""Label-map writes to object storage (issue 16 point 7): segpipe's store against raw PUTs of the same bytes.

A local S3-compatible server (moto in server mode, from ``.venv-moto``, started as ``tests/_s3.py``
starts it) on 127.0.0.1. Then, with as many writer processes as cores, all released together once
their imports are done:

- **segpipe, stacked**: 1024² blocky uint8 label maps as a pre-label run into a bucket now writes
  same-size images (store layout 2): the driver lays the stack out first (``plan_stacks`` on the
  bucket, metadata only), then each shard task holds 8 images and PUTs its shard object whole, then
  its ``done`` chunk (``ShardWriter(URL)``), as ``bench/prelabel_e2e.py --writes-only`` does locally;
  receipts are left out on every side (the ledger's cost, one small PUT per image);
- **segpipe, a group per image**: the path of the images that do not stack (``image_group`` +
  ``write_array``: 3 objects per image, the group and array ``zarr.json`` and the chunk);
- **raw PUT, encoded**: the same label maps' encoded chunk (zstd, the store's codec), one ``obstore.put``
  per image, nothing else: the bytes the store must send, without its metadata objects;
- **raw PUT, plain**: the same label maps uncompressed (1 MiB), one ``obstore.put`` per image;
- **raw PUT, shard-sized**: the 8 encoded chunks of a shard joined, one ``obstore.put`` per 8 images
  (zstd included): the requests a stacked store must send at the least, without its ``done`` chunk.

Rates are MB/s of label maps (1 MiB each) written; the ratios are segpipe / raw PUT (goal ≥ 0.5×).

    python bench/zarr_write_s3.py [--images 200] [--repeat 3]

``--images`` is rounded down to whole shards of 8 per writer.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

MOTO_PYTHON = REPO / ".venv-moto" / "bin" / "python"
#: moto accepts any credentials: fixed bench values, never real ones (as tests/_s3.py).
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "segpipe-bench-key",
    "AWS_SECRET_ACCESS_KEY": "segpipe-bench-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}

LABELS = "np.kron((np.random.default_rng(first).random((64, 64)) * 6).astype(np.uint8), np.ones((16, 16), np.uint8))"

SEGPIPE_WRITER = r"""
import sys, time, numpy as np
from segpipe.storage.zarrstore import ZarrStore
url, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
labels = """ + LABELS + r"""
store = ZarrStore(url)
g = store.image_group(10**9 + first, {"id": 0}); store.write_array(g, "labels", labels)  # warm: client, imports
wait_gate()
t0 = time.time()
for i in range(first, first + n):
    g = store.image_group(i, {"id": i})
    store.write_array(g, "labels", labels)
print(t0, time.time())
"""

STACK_WRITER = r"""
import sys, time, numpy as np
from segpipe.storage.stacks import SHARD, ShardWriter
url, first, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
labels = """ + LABELS + r"""
class NoReceipts:  # mask writes only, as the raw PUTs: receipts are the ledger's cost
    def write(self, key, receipt): pass
def shard_task(s):  # one shard task: its images' label maps, then the shard object and its done chunk
    w = ShardWriter(url)
    for slot in range(s, s + SHARD):
        pending = w.slot("1024x1024", slot)
        pending.put("labels", labels)
        w.done(pending, str(slot), {})
    w.flush(NoReceipts())
shard_task(warm)  # warm: client, imports, the stack's metadata (read once per process and run)
wait_gate()
t0 = time.time()
for s in range(first, first + n, SHARD):
    shard_task(s)
print(t0, time.time())
"""

RAW_WRITER = r"""
import os, sys, time, numpy as np, obstore, numcodecs
from obstore.store import from_url
url, first, n, encoded = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
labels = """ + LABELS + r"""
data = numcodecs.Zstd(level=0).encode(labels) if encoded else labels.tobytes()
store = from_url(url, client_options={"allow_http": True})
obstore.put(store, f"warm/{first}", data)
wait_gate()
t0 = time.time()
for i in range(first, first + n):
    # encoded: the zstd step is part of the work, as in the store
    obstore.put(store, f"{i}/c/0/0", numcodecs.Zstd(level=0).encode(labels) if encoded else data)
print(t0, time.time())
"""


RAW_SHARD_WRITER = r"""
import sys, time, numpy as np, obstore, numcodecs
from obstore.store import from_url
url, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
labels = """ + LABELS + r"""
store = from_url(url, client_options={"allow_http": True})
obstore.put(store, f"warm/{first}", numcodecs.Zstd(level=0).encode(labels))
wait_gate()
t0 = time.time()
for s in range(first, first + n, 8):
    obstore.put(store, f"c.{s // 8}", b"".join(numcodecs.Zstd(level=0).encode(labels) for _ in range(8)))
print(t0, time.time())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m moto.server`` on 127.0.0.1 from ``.venv-moto`` (``make peers-moto``); its endpoint."""
    if not MOTO_PYTHON.exists():
        raise SystemExit(f"{MOTO_PYTHON} is absent: run `make peers-moto`")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MOTO_PYTHON), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2) as r:
                if r.status == 200:
                    return proc, endpoint
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"moto server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def make_bucket(endpoint: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT"), timeout=10) as r:
        assert r.status == 200
    return name


def rate(code: str, argvs: list[list[str]], images: int) -> float:
    """MB/s (1 MiB label maps) of the gated writer processes, first start to last end."""
    from prelabel_e2e import run_gated

    spans = run_gated(code, argvs)
    return images * 1.0 / (max(b for _, b in spans) - min(a for a, _ in spans))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="label maps per try, over all writers")
    ap.add_argument("--writers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import numpy as np

    from segpipe.storage.stacks import SHARD, plan_stacks
    from segpipe.storage.zarrstore import ZarrStore

    w = args.writers
    per = max(SHARD, args.images // w // SHARD * SHARD)
    n = per * w
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-s3bench-"))
    proc, endpoint = start_moto(tmp / "moto.log")
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    print(f"machine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; moto at {endpoint}; {w} writers x {per} "
          f"label maps 1024^2", flush=True)
    names = ("stacked", "groups", "raw_encoded", "raw_plain", "raw_shard")
    try:
        rows: dict[str, list[float]] = {k: [] for k in names}
        for k in range(args.repeat):  # interleaved, so that a change in load weighs on all of them alike
            bucket = make_bucket(endpoint)
            url = f"s3://{bucket}/s.zarr"
            ZarrStore.create(url, {"task": "semantic", "categories": []})
            # The driver's plan, as prelabel makes it: every slot (and one warm-up shard per writer).
            plan_stacks(ZarrStore(url).location, [(i, 1024, 1024, {"id": i}) for i in range(n + w * SHARD)],
                        labels_dtype=np.uint8, n_classes=1, probs=False)
            rows["stacked"].append(rate(STACK_WRITER, [[url, str(i * per), str(per), str(n + i * SHARD)]
                                                       for i in range(w)], n))
            url2 = f"s3://{bucket}/g.zarr"
            ZarrStore.create(url2, {"task": "semantic", "categories": []})
            rows["groups"].append(rate(SEGPIPE_WRITER, [[url2, str(i * per), str(per)] for i in range(w)], n))
            rows["raw_encoded"].append(rate(RAW_WRITER, [[f"s3://{bucket}/raw-enc", str(i * per), str(per), "1"]
                                                         for i in range(w)], n))
            rows["raw_plain"].append(rate(RAW_WRITER, [[f"s3://{bucket}/raw", str(i * per), str(per), "0"]
                                                       for i in range(w)], n))
            rows["raw_shard"].append(rate(RAW_SHARD_WRITER, [[f"s3://{bucket}/raw-shard", str(i * per), str(per)]
                                                             for i in range(w)], n))
            print(f"try {k + 1}: segpipe stacked {rows['stacked'][-1]:.0f} MB/s, a group per image "
                  f"{rows['groups'][-1]:.0f} MB/s, raw PUT encoded {rows['raw_encoded'][-1]:.0f} MB/s, raw PUT "
                  f"plain {rows['raw_plain'][-1]:.0f} MB/s, raw PUT shard-sized {rows['raw_shard'][-1]:.0f} MB/s "
                  f"(load {' '.join(f'{x:.2f}' for x in os.getloadavg())})",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print()
    print("| writes of 1024^2 label maps to moto S3 | MB/s (median) | per try |")
    print("| --- | --- | --- |")
    for k, label in (("stacked", "segpipe stacked (`ShardWriter(s3://...)`: a shard object per 8 images)"),
                     ("groups", "segpipe a group per image (`image_group` + `write_array`)"),
                     ("raw_encoded", "raw obstore PUT of the zstd chunk (zstd included)"),
                     ("raw_plain", "raw obstore PUT of the plain 1 MiB"),
                     ("raw_shard", "raw obstore PUT of 8 zstd chunks joined (one per shard; zstd included)")):
        print(f"| {label} | {med[k]:.0f} | {', '.join(f'{x:.0f}' for x in rows[k])} |")
    print(f"ratio segpipe stacked / raw PUT of the encoded chunk: x{med['stacked'] / med['raw_encoded']:.2f} "
          "(goal >= 0.5)")
    print(f"ratio segpipe stacked / raw PUT of the plain bytes:   x{med['stacked'] / med['raw_plain']:.2f}")
    print(f"ratio segpipe stacked / raw shard-sized PUT:          x{med['stacked'] / med['raw_shard']:.2f}")
    print(f"ratio a group per image / raw PUT of the encoded chunk: x{med['groups'] / med['raw_encoded']:.2f}")


if __name__ == "__main__":
    main()
