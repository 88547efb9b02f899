"""Heavy state loaded once per worker: the predictor and the isolated image decoder.

A model is never pickled into task closures: the plugin carries only the model *reference* (a path or
``ARCH:WEIGHTS``) and the predictor options, and ``setup`` builds the predictor on each worker — also on
a worker that the nanny restarted after a crash.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PLUGIN_NAME = "segpipe-predictor"


def __getattr__(name: str) -> Any:
    """``PredictorPlugin`` lives in :mod:`segpipe.execution.worker_plugin`: importing it imports
    distributed (0.7 s), which an in-process run never needs.
    """
    if name == "PredictorPlugin":
        from segpipe.execution.worker_plugin import PredictorPlugin

        return PredictorPlugin
    raise AttributeError(name)

#: Predictor state for in-process runs (``--workers 0``), keyed like the plugin.
_LOCAL: dict[str, Any] = {}


_FAST_EXIT = False


def install_fast_exit() -> None:
    """Makes this worker process skip Python's finalisation when it exits (workers of an embedded cluster).

    Unloading torch and torchvision's thousands of modules made every run's cluster shutdown take
    1.1 s on 2 cores; without it, 0.06 s (bench/RESULTS.md, session 5). When the process exits its
    worker has closed: its plugins are torn down (the decoder process is stopped), and every output
    and receipt was written (atomically and durably) before its task reported. Registered after the
    handlers of the libraries it imported, this one runs first: it flushes the standard streams and
    ends the process with status 0 (the nanny uses a worker's status for a log line only). Only the
    embedded cluster's workers, which segpipe owns, get it; the workers of a user's scheduler
    finalise as usual.
    """
    global _FAST_EXIT
    if _FAST_EXIT:
        return
    import atexit
    import sys

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or broken stream: nothing left to save
                pass
        os._exit(0)

    atexit.register(leave)
    _FAST_EXIT = True


#: torch threads of one forward pass on the CPU. A worker runs as many tasks at once as it has
#: threads instead, each forward pass on one thread: torch's choice of convolution kernel depends on
#: its thread count (a 1×1 convolution runs on oneDNN with more than one thread, on its GEMM path with
#: one), and oneDNN's own results on it for some layers, so the probabilities a run stored used to
#: depend on ``--workers`` (workers × threads ≈ cores). See tests/prelabel/test_determinism.py.
INFERENCE_THREADS = 1
#: Tiles per forward pass on the CPU, whatever ``--batch`` says: a small input runs on oneDNN only in
#: a batch of more than one, and oneDNN picks other kernels by batch size, so a tile's result
#: depended on how many tiles shared its pass (a row's last batch is short). ``--batch`` still sets
#: the tiles per pass on a GPU, where batching is what makes it fast.
CPU_TILES_PER_PASS = 1


def build_state(model_ref: Any, options: dict[str, Any], threads: int, zarr_concurrency: int) -> dict[str, Any]:
    """The per-worker state: ``{"predictor", "decoder"}``.

    Args:
        model_ref: The model.
        options: Predictor keyword options.
        threads: Tasks this worker runs at once (its forward passes run on
            :data:`INFERENCE_THREADS` torch threads each, so that outputs do not depend on it).
        zarr_concurrency: zarr's async concurrency.
    """
    import zarr

    from segpipe.storage.isolated import IsolatedDecoder

    # before torch is first imported here: its OpenMP pool starts at this size
    os.environ.setdefault("OMP_NUM_THREADS", str(INFERENCE_THREADS))
    zarr.config.set({"async.concurrency": zarr_concurrency})
    predictor = model_ref.predictor(threads=INFERENCE_THREADS, **options)
    if not getattr(predictor, "cuda", False):
        predictor.batch_size = CPU_TILES_PER_PASS
    return {"predictor": predictor, "decoder": IsolatedDecoder()}


def worker_state(model_ref: Any = None, options: dict[str, Any] | None = None, threads: int = 1) -> dict[str, Any]:
    """The state of the worker this task runs on (or of this process for in-process runs)."""
    # Not on a worker unless distributed is loaded: an in-process run never imports it (0.7 s).
    dist = sys.modules.get("distributed")
    try:
        w = dist.get_worker() if dist is not None else None
    except ValueError:
        w = None
    if w is not None:
        plugin: Any = w.plugins.get(PLUGIN_NAME)
        if plugin is None:
            raise RuntimeError("segpipe predictor plugin is not registered on this worker")
        if not plugin.state:
            plugin.setup(w)
        return plugin.state  # type: ignore[no-any-return]
    key = repr(model_ref) + repr(sorted((options or {}).items()))
    if key not in _LOCAL:
        _LOCAL.clear()
        _LOCAL[key] = build_state(model_ref, options or {}, threads, 4)
    return _LOCAL[key]  # type: ignore[no-any-return]
