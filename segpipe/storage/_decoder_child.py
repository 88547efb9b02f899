"""The isolated decoder's child process: reads requests on stdin, writes arrays on stdout.

Protocol (one request at a time): the parent writes one JSON line ``{"path", "exif", "max_pixels"}``;
the child answers with one JSON header line — ``{"ok": true, "shape", "dtype", "nbytes"}`` followed by
the raw C-order bytes, or ``{"ok": false, "error"}`` — and waits for the next request.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from segpipe.errors import SegpipeError
from segpipe.storage.images import read_image


def main() -> None:
    """Serves decode requests until stdin closes."""
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    for line in inp:
        req = json.loads(line)
        fault = os.environ.get("SEGPIPE_FAULT_DECODE")
        if fault and fault in os.path.basename(req["path"]):  # fault injection for tests (file name only)
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            arr = read_image(req["path"], exif=req["exif"], max_pixels=req["max_pixels"])
        except SegpipeError as e:
            out.write((json.dumps({"ok": False, "error": e.message}) + "\n").encode())
            out.flush()
            continue
        except Exception as e:  # anything else the decoder raises is this file's problem, not ours
            out.write((json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}) + "\n").encode())
            out.flush()
            continue
        data = arr.tobytes()
        head = {"ok": True, "shape": list(arr.shape), "dtype": arr.dtype.str, "nbytes": len(data)}
        out.write((json.dumps(head) + "\n").encode())
        out.write(data)
        out.flush()


if __name__ == "__main__":
    main()
