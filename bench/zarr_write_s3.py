"""Label-map writes to object storage (issue 16 point 7): segpipe's store against raw PUTs of the same bytes.

A local S3-compatible server (moto in server mode, from ``.venv-moto``, started as ``tests/_s3.py``
starts it) on 127.0.0.1. Then, with as many writer processes as cores, all released together once
their imports are done:

- **segpipe**: 1024² blocky uint8 label maps through the store as the workers write them
  (``ZarrStore(URL)``: ``image_group`` + ``write_array``; zarr's ``ObjectStore`` over obstore);
- **raw PUT, encoded**: the same label maps' encoded chunk (zstd, the store's codec), one ``obstore.put``
  per image, nothing else: the bytes the store must send, without its metadata objects;
- **raw PUT, plain**: the same label maps uncompressed (1 MiB), one ``obstore.put`` per image.

Rates are MB/s of label maps (1 MiB each) written; the ratios are segpipe / raw PUT (goal ≥ 0.5×).

    python bench/zarr_write_s3.py [--images 200] [--repeat 3]

Stores in object storage keep one group per image (the stacked layout is local-only so far), so the
store writes 3 objects per image (group ``zarr.json``, array ``zarr.json``, the chunk) against 1 PUT.
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
    w = args.writers
    per = args.images // w
    n = per * w
    tmp = Path(tempfile.mkdtemp(prefix="segpipe-s3bench-"))
    proc, endpoint = start_moto(tmp / "moto.log")
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    print(f"machine: {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; moto at {endpoint}; {w} writers x {per} "
          f"label maps 1024^2", flush=True)
    try:
        rows: dict[str, list[float]] = {"segpipe": [], "raw_encoded": [], "raw_plain": []}
        for k in range(args.repeat):  # interleaved, so that a change in load weighs on all three alike
            bucket = make_bucket(endpoint)
            from segpipe.storage.zarrstore import ZarrStore

            url = f"s3://{bucket}/s.zarr"
            ZarrStore.create(url, {"task": "semantic", "categories": []})
            rows["segpipe"].append(rate(SEGPIPE_WRITER, [[url, str(i * per), str(per)] for i in range(w)], n))
            rows["raw_encoded"].append(rate(RAW_WRITER, [[f"s3://{bucket}/raw-enc", str(i * per), str(per), "1"]
                                                         for i in range(w)], n))
            rows["raw_plain"].append(rate(RAW_WRITER, [[f"s3://{bucket}/raw", str(i * per), str(per), "0"]
                                                       for i in range(w)], n))
            print(f"try {k + 1}: segpipe {rows['segpipe'][-1]:.0f} MB/s, raw PUT encoded "
                  f"{rows['raw_encoded'][-1]:.0f} MB/s, raw PUT plain {rows['raw_plain'][-1]:.0f} MB/s "
                  f"(load {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print()
    print("| writes of 1024^2 label maps to moto S3 | MB/s (median) | per try |")
    print("| --- | --- | --- |")
    for k, label in (("segpipe", "segpipe `ZarrStore(s3://...)` image_group + write_array"),
                     ("raw_encoded", "raw obstore PUT of the zstd chunk (zstd included)"),
                     ("raw_plain", "raw obstore PUT of the plain 1 MiB")):
        print(f"| {label} | {med[k]:.0f} | {', '.join(f'{x:.0f}' for x in rows[k])} |")
    print(f"ratio segpipe / raw PUT of the encoded chunk: x{med['segpipe'] / med['raw_encoded']:.2f} (goal >= 0.5)")
    print(f"ratio segpipe / raw PUT of the plain bytes:   x{med['segpipe'] / med['raw_plain']:.2f}")


if __name__ == "__main__":
    main()
