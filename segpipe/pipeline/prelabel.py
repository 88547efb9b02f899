"""``segpipe prelabel``: model-assisted pre-labeling of an image collection into a Zarr store, on Dask.

Flow: ingest (stable ids, sizes, content hashes → ``STORE/.segpipe/manifest.jsonl``) → plan (one task per
image; its key hashes the image content, the model and the config) → run (the model is loaded once per
worker by a plugin; images are decoded on the workers in an isolated process; each task writes only its
own image's arrays, then a durable receipt into the ledger, and returns the small receipt) → report.

Resume: tasks whose receipt exists are skipped; a re-executed task rewrites its image from scratch, so
outputs are idempotent (same key → same bytes) whether Dask ran a task once or twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe import __version__
from segpipe.errors import ConfigError, InputError, SegpipeError
from segpipe.execution.cluster import ClusterSpec, use_client
from segpipe.execution.gpus import GPU_RESOURCE, advertises_gpu
from segpipe.execution.runner import run_tasks
from segpipe.models.ref import ModelRef
from segpipe.storage import zarrfast
from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.ledger import Ledger
from segpipe.storage.manifest import ManifestEntry, describe, list_images, read_manifest, write_manifest
from segpipe.storage.zarrstore import ZarrStore, dimension_names, local_folder, quantise_probs

#: Images above this many pixels stream their outputs into the store band by band.
STREAM_PIXELS = 4096 * 4096


# ------------------------------------------------------------------------------------------- request


@dataclass
class PrelabelRequest:
    """Everything ``segpipe prelabel`` was asked to do.

    Attributes:
        source: A folder or glob of images, a COCO/VOC/mask-directory dataset, or a manifest (.jsonl).
        model: A checkpoint path or ``ARCH:WEIGHTS``.
        out: The store (``STORE.zarr``).
        arch: Architecture for a plain state-dict checkpoint.
        task: Expected task (checked against the model's), or None.
        tile: Tile side in pixels (default: the checkpoint's).
        overlap: Tile overlap, fraction of the tile (default: the checkpoint's).
        batch: Tiles per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` ...
        resume: Continue an existing store made with the same model and config.
        overwrite: Replace an existing store (a new run).
        on_error: ``skip`` (report failed images and go on) or ``fail`` (stop at the first).
        probs: Store per-class probabilities (semantic).
        heatmaps: Store landmark heatmaps.
        min_score: Instances below this score are not stored.
        threads: Images each worker runs at once (default: cores / workers; capped at 4 per core). Each
            forward pass runs on one torch thread, so the outputs do not depend on it.
        gpus: GPUs of this machine for the embedded cluster (``"0,2"``; default: every visible one),
            one worker each (:meth:`~segpipe.execution.cluster.ClusterSpec.for_model`).
    """

    source: str
    model: str
    out: Path
    arch: str | None = None
    task: str | None = None
    tile: int | None = None
    overlap: float | None = None
    batch: int = 4
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    on_error: str = "skip"
    probs: bool = True
    heatmaps: bool = True
    min_score: float = 0.05
    threads: int | None = None
    limit: int | None = None
    bands: list[int] | None = None
    window: str | None = None
    stretch: str = "auto"
    percentiles: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    gpus: str | None = None


def _config(req: PrelabelRequest, model_fp: str, meta: Any) -> dict[str, Any]:
    """The part of the request that determines the outputs (hashed into every task key)."""
    return {
        "layout": 2,
        "model": model_fp,
        "task": meta.task,
        "tile": req.tile or list(meta.tile_size),
        "overlap": req.overlap if req.overlap is not None else meta.tile_overlap,
        "probs": req.probs,
        "heatmaps": req.heatmaps,
        "min_score": req.min_score,
        "bands": req.bands,
        "window": req.window,
        # Only when asked for: stores made before these options existed keep their config hash.
        **({"stretch": req.stretch} if req.stretch != "auto" else {}),
        **({"percentiles": list(req.percentiles)} if req.percentiles else {}),
        # How a forward pass runs on the CPU (segpipe.execution.plugins.INFERENCE_THREADS and
        # CPU_TILES_PER_PASS): outputs do not depend on --workers, --threads or --batch. Stores of
        # segpipe before it used the worker's thread count and the batch, and are not resumed.
        "cpu_inference": "1 thread, 1 tile per pass",
    }


def check_tiling(tile: int | None, overlap: float | None, meta: Any) -> None:
    """Checks that the tile overlap leaves a useful stride on every tile side, before any work.

    ``--overlap`` is a fraction in [0, 1) (checked when parsed), but close to 1 the stride shrinks to a
    few pixels and the tiles per image explode (0.99 of a 128-pixel tile is a stride of 1 pixel: ~50k
    tiles for a 256 × 512 image). The stride must be at least 1/16 of the tile
    (:func:`segpipe.core.tiles.min_stride`), which bounds the tiles at 256 times those of a grid without
    overlap.

    Args:
        tile: ``--tile``, or None for the checkpoint's tile size.
        overlap: ``--overlap``, or None for the checkpoint's ``tile_overlap``.
        meta: The model's :class:`~segpipe.models.checkpoint.CheckpointMeta`.

    Raises:
        ConfigError: naming ``--overlap`` (or the checkpoint's ``tile_overlap``) and ``--tile`` (or the
            checkpoint's tile size), and the largest overlap that fits.
    """
    from segpipe.core.tiles import max_overlap_fraction, min_stride, overlap_pixels

    sides = [tile] if tile else [int(t) for t in meta.tile_size]
    value = float(overlap) if overlap is not None else float(meta.tile_overlap)
    name = "--overlap" if overlap is not None else "the checkpoint's tile_overlap"
    tile_name = "--tile" if tile else "the checkpoint's tile_size"
    for side in sides:
        if side < 2:
            raise ConfigError(f"tile side {side} leaves no room for a sliding window",
                              where="tile_size" if tile is None else "--tile")
        try:
            stride = side - overlap_pixels(side, value)
        except ValueError:
            stride = 0
        if stride < min_stride(side):
            raise ConfigError(
                f"{name} {value} on a {side}-pixel tile ({tile_name}) leaves a stride of {max(stride, 0)} px; "
                f"it must be at least {min_stride(side)} px (1/16 of the tile)",
                hint=f"use --overlap {max_overlap_fraction(side)} or less, e.g. 0.25, or a larger --tile")


def config_hash(config: dict[str, Any]) -> str:
    """Stable hash of a config dict."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def task_key(cfg_hash: str, entry: ManifestEntry, part: str = "") -> str:
    """Deterministic key of the task that pre-labels ``entry`` (or a ``part`` of it) under ``cfg_hash``."""
    return "pl-" + hashlib.sha256(f"{cfg_hash}|{entry.id}|{entry.sha256}|{part}".encode()).hexdigest()[:32]


#: Core size of a scene's block tasks: a multiple of the scene's chunks, so that every block owns
#: whole chunks and no two tasks ever write the same chunk (zarr 3 has no locks).
BLOCK = 2048
#: A scene's label map has one chunk per block task. 4 MiB (uint8) chunks also write at 0.6–0.8×
#: min(disk, zstd × cores), where per-file costs held 1 MiB chunks to 0.4–0.6× (bench/RESULTS.md).
SCENE_LABEL_CHUNK = BLOCK
#: A scene's probabilities, ``(C, 1024, 1024)`` chunks: 22 MB uncompressed for 21 classes.
SCENE_PROB_CHUNK = 1024
#: Slices per task when a 3-D model pre-labels a volume (each task reads a context margin around them).
SLAB = 32


def slice_id(entry: ManifestEntry, z: int) -> int:
    """Stable image id of slice ``z`` of a volume."""
    from segpipe.storage.manifest import stable_id

    return stable_id(f"{entry.file}#z{z:05d}")


def volume_name(entry: ManifestEntry) -> str:
    """The volume id slices record: the path relative to the source without .nii/.nii.gz.

    A DICOM series gives its folder's relative path. ``p1/ct.nii.gz`` → ``p1/ct``: same-named volumes in
    different folders never collide.
    """
    from segpipe.formats.medical.reader import volume_id

    return volume_id(entry.file)


def plan_tasks(entries: list[ManifestEntry], cfg_hash: str,
               slab: int = 0) -> list[tuple[str, ManifestEntry, dict[str, Any]]]:
    """One task per image, per chunk-aligned block of a scene, per slice of a volume (pure).

    Args:
        entries: The manifest.
        cfg_hash: The run's config hash (part of every task key).
        slab: With a 3-D model, volumes are cut into slabs of this many slices (one task each, which
            predicts with a context margin and writes its own slices) instead of one task per slice.
    """
    tasks: list[tuple[str, ManifestEntry, dict[str, Any]]] = []
    for e in entries:
        if e.kind == "invalid":
            continue
        if e.kind == "scene":
            for y0 in range(0, e.height, BLOCK):
                for x0 in range(0, e.width, BLOCK):
                    w = [y0, min(y0 + BLOCK, e.height), x0, min(x0 + BLOCK, e.width)]
                    tasks.append((task_key(cfg_hash, e, f"block{w}"), e, {"window": w}))
        elif e.kind == "volume" and slab > 0:
            depth = max(1, e.depth)
            for z0 in range(0, depth, slab):
                zs = [z0, min(z0 + slab, depth)]
                tasks.append((task_key(cfg_hash, e, f"slab{zs}"), e, {"slab": zs}))
        elif e.kind == "volume":
            for z in range(max(1, e.depth)):
                tasks.append((task_key(cfg_hash, e, f"z{z}"), e, {"z": z}))
        else:
            tasks.append((task_key(cfg_hash, e), e, {}))
    return tasks


#: A batch task holds at most this many images and stops growing past this many pixels: Dask's
#: per-task cost (scheduler round trip, receipt transfer) is then paid once per batch, while a batch
#: stays short enough (about a second of CPU inference at 512²) to balance the workers.
BATCH_IMAGES = 8
BATCH_PIXELS = 8 * 512 * 512


def batch_tasks(todo: list[tuple[str, ManifestEntry, dict[str, Any]]], workers: int,
                ) -> list[list[tuple[str, ManifestEntry, dict[str, Any]]]]:
    """Groups consecutive image (and slice) tasks into batches run as one Dask task each (pure).

    Scene blocks and 3-D slabs stay alone: each is already large. A batch never exceeds
    :data:`BATCH_IMAGES` images, nor a quarter of an even share of the work still to plan
    (``remaining / (4 · workers)``): a small run still spreads over every worker, and batches shrink
    towards the end of a run so that no worker is left alone with a long last batch (guided
    scheduling). A batch closes once it reaches :data:`BATCH_PIXELS`. Each image keeps its own task
    key and receipt: resume and fsck see no difference. Stacked images (a ``stack`` and ``slot`` in
    their part) run as one batch per shard: the task that writes a shard file holds all its images.
    """
    from segpipe.storage.stacks import SHARD

    share = 4 * max(1, workers)
    out: list[list[tuple[str, ManifestEntry, dict[str, Any]]]] = []
    shards: dict[tuple[str, int], list[tuple[str, ManifestEntry, dict[str, Any]]]] = {}
    for t in todo:  # a stacked image runs with the other images of its shard: one task writes the file
        if "stack" in t[2]:
            shards.setdefault((t[2]["stack"], int(t[2]["slot"]) // SHARD), []).append(t)
    out.extend(shards.values())
    todo = [t for t in todo if "stack" not in t[2]]
    cur: list[tuple[str, ManifestEntry, dict[str, Any]]] = []
    px = 0
    cap = 1
    for i, t in enumerate(todo):
        part = t[2]
        if "window" in part or "slab" in part:
            out.append([t])
            continue
        if not cur:
            cap = max(1, min(BATCH_IMAGES, (len(todo) - i) // share))
        cur.append(t)
        px += max(1, t[1].height) * max(1, t[1].width)
        if len(cur) >= cap or px >= BATCH_PIXELS:
            out.append(cur)
            cur, px = [], 0
    if cur:
        out.append(cur)
    return out


def prelabel_batch(
    items: list[tuple[ManifestEntry, str, dict[str, Any]]],
    store_path: str,
    model_ref: ModelRef,
    options: dict[str, Any],
    threads: int,
    flags: dict[str, Any],
    stop_on_failure: bool = False,
) -> list[dict[str, Any]]:
    """Worker task: :func:`prelabel_task` for each ``(entry, key, part)`` of a batch, in order.

    An image whose receipt already exists is not redone (Dask reruns a whole batch when its worker
    died part-way through): its receipt is returned as written.

    Args:
        items: ``(entry, task key, part)`` of each image, in order.
        store_path: The store.
        model_ref: The model (the worker's plugin holds it loaded).
        options: Predictor options.
        threads: Images each worker runs at once.
        flags: Output flags (probs, heatmaps, min_score, window).
        stop_on_failure: Return at the first failed image (``--on-error fail``): the rest of the
            batch is not run.

    Returns:
        One receipt per item run (all of them unless it stopped at a failure).
    """
    from segpipe.storage.stacks import ShardWriter

    ledger = Ledger(ZarrStore(store_path).private)
    shard = ShardWriter(store_path) if any("stack" in part for _, _, part in items) else None
    out = []
    for entry, key, part in items:
        if ledger.done(key):
            try:
                out.append(ledger.read(key))
                continue
            except (OSError, ValueError):  # an unreadable receipt: redo the image, which rewrites it
                pass
        r = prelabel_task(entry, store_path, key, model_ref, options, threads, flags, part, shard=shard)
        out.append(r)
        if stop_on_failure and r["status"] != "done":
            break
    if shard is not None:
        shard.flush(ledger)  # the shard files, then their images' receipts
    return out


def batch_key(keys: list[str]) -> str:
    """The Dask key of a batch: a hash of all its images' task keys (which hash content and config).

    Two batches share a key only when they hold the same images for the same work, so two drivers on
    one shared scheduler never receive each other's results.
    """
    if len(keys) == 1:
        return keys[0]
    return "batch-" + hashlib.sha256("|".join(keys).encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------------------- ingest


def _describe_shard(root: str, names: list[str], ids: list[int | None] | None = None) -> list[ManifestEntry]:
    return [describe(Path(root), n, ids[i] if ids else None) for i, n in enumerate(names)]


def _dataset_images(source: Path) -> list[tuple[Path, str, int | None]]:
    """The existing image files of a dataset, with the dataset's own image ids."""
    from segpipe.formats import detect_format, get_format

    fmt = detect_format(source)
    if fmt == "nifti":
        return _dataset_volumes(source)
    reader = get_format(fmt).reader(source)
    out: list[tuple[Path, str, int | None]] = []
    for s in reader.samples():
        if s.image_path is None:
            continue
        p = Path(s.image_path)
        out.append((p.parent, p.name, s.image.id))
    if not out:
        raise InputError(f"the {fmt} dataset names no image file that exists", path=source)
    return out


def _dataset_volumes(source: Path) -> list[tuple[Path, str, int | None]]:
    """The image volumes a NIfTI ground-truth folder names in ``volumes.json`` (what synth writes).

    ``volumes/00000.nii.gz`` is item ``00000.nii.gz`` of root ``volumes/``, as when pre-labeling that
    folder directly: slice ids and names then match the ground truth's.
    """
    from segpipe.storage.jsonio import read_json

    index = source / "volumes.json"
    vols = read_json(index).get("volumes", []) if index.is_file() else []
    out: list[tuple[Path, str, int | None]] = []
    for v in vols if isinstance(vols, list) else []:
        image = str(v.get("image", "")) if isinstance(v, dict) else ""
        parts = Path(image).parts
        if len(parts) >= 2 and (source / image).exists():
            out.append((source / parts[0], "/".join(parts[1:]), None))
    if not out:
        raise InputError("the NIfTI dataset names no image volume that exists (volumes.json: volumes[].image)",
                         path=source, hint="pre-label the folder of image volumes itself")
    return out


@dataclass
class SourceListing:
    """What a source holds, listed on the driver before any cluster starts (no pixel read).

    Attributes:
        manifest: The entries of a manifest (``.jsonl``) source, already measured; else None.
        groups: Image folder → ``(relative name, image id or None)`` of its images.
    """

    manifest: list[ManifestEntry] | None = None
    groups: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.manifest) if self.manifest is not None else sum(len(v) for v in self.groups.values())

    def total_bytes(self) -> int:
        """The listed files' total size (a manifest's entries: 0, they are not opened here)."""
        n = 0
        for base, items in self.groups.items():
            for name, _ in items:
                with contextlib.suppress(OSError):
                    n += os.stat(os.path.join(base, name)).st_size
        return n


#: A prelabel job's estimated seconds per image in one process (a small model on a 512^2 image on one
#: CPU thread), and the file size above which an input counts as a scene (tiled: much more per file).
#: Rough by design: it only picks in-process or the embedded cluster (ClusterSpec.sized).
PRELABEL_IMAGE_S = 0.25
SCENE_BYTES = 16 << 20


def estimate_prelabel_s(listing: SourceListing) -> float:
    """Rough in-process seconds of pre-labeling ``listing`` (see :data:`PRELABEL_IMAGE_S`)."""
    if listing.manifest is not None:
        return len(listing) * PRELABEL_IMAGE_S
    big = listing.total_bytes() > SCENE_BYTES * max(1, len(listing) // 64)
    return float("inf") if big else len(listing) * PRELABEL_IMAGE_S


def list_source(source: str, *, limit: int | None = None) -> SourceListing:
    """Lists a source's images on the driver: cheap, and an empty or unreadable source fails here.

    Raises:
        InputError: no images, an unreadable folder or dataset file (names it).
    """
    src = Path(source)
    if src.suffix == ".jsonl" and src.is_file():
        listed = list(read_manifest(src))
        return SourceListing(manifest=listed[:limit] if limit else listed)
    groups: dict[str, list[tuple[str, int | None]]] = {}
    if (src.is_dir() and not any(c in source for c in "*?[") and not _looks_like_images_folder(src)) or src.is_file():
        for root, name, iid in _dataset_images(src):
            groups.setdefault(str(root), []).append((name, iid))
    else:
        folder, names = list_images(source)
        groups[str(folder)] = [(n, None) for n in names]
    if limit:
        groups = {k: v[:limit] for k, v in list(groups.items())[:1]}
    return SourceListing(groups=groups)


def ingest(source: str, client: Any, *, limit: int | None = None,
           progress: Callable[[int, int, int], None] | None = None,
           listing: SourceListing | None = None) -> list[ManifestEntry]:
    """Lists the source's images (unless ``listing`` is given) and measures and hashes them on the workers.

    Returns:
        Manifest entries sorted by file name.
    """
    listing = listing if listing is not None else list_source(source, limit=limit)
    if listing.manifest is not None:
        return listing.manifest
    groups = listing.groups
    tasks = []
    for base, items in groups.items():
        for i in range(0, len(items), 64):
            chunk = items[i : i + 64]
            key = "ingest-" + hashlib.sha1(f"{base}|{chunk[0][0]}|{len(chunk)}".encode()).hexdigest()[:16]
            tasks.append((key, (base, [n for n, _ in chunk], [iid for _, iid in chunk])))
    entries: list[ManifestEntry] = []
    total = sum(len(v) for v in groups.values())
    for _, res in run_tasks(client, _describe_shard, iter(tasks), total=len(tasks), max_in_flight=8):
        entries.extend(res)
        if progress:
            progress(len(entries), total, 0)
    entries.sort(key=lambda e: e.file)
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise InputError("two images map to the same id (duplicate relative paths?)", path=source)
    return entries


def _looks_like_images_folder(p: Path) -> bool:
    """A folder of images rather than a dataset layout (COCO/VOC/mask directory)."""
    from segpipe.formats import detect_format

    try:
        detect_format(p)
    except SegpipeError:
        return True
    return False


# ------------------------------------------------------------------------------------------- task


class _QuantSink:
    """Band sink writing float16 probabilities into a uint8 zarr array."""

    def __init__(self, arr: Any) -> None:
        self.arr = arr

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.arr[key] = quantise_probs(value.astype(np.float32))


class _LabelSink:
    """Band sink mapping model label indices to category ids."""

    def __init__(self, arr: Any, lut: np.ndarray) -> None:
        self.arr = arr
        self.lut = lut

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.arr[key] = self.lut[value]


def prelabel_task(
    entry: ManifestEntry,
    store_path: str,
    key: str,
    model_ref: ModelRef,
    options: dict[str, Any],
    threads: int,
    flags: dict[str, Any],
    part: dict[str, Any] | None = None,
    shard: Any = None,
) -> dict[str, Any]:
    """Worker task: decode, predict, write its own arrays (or chunk-aligned region), then its receipt.

    A stacked image (``stack`` and ``slot`` in ``part``) hands its arrays and receipt to ``shard``
    (a :class:`~segpipe.storage.stacks.ShardWriter`), which writes them with the rest of its shard.

    Returns:
        The receipt (small): status, outputs' digests, timings per stage.
    """
    from segpipe.execution.plugins import worker_state
    from segpipe.storage.ledger import Ledger
    from segpipe.storage.zarrstore import ZarrStore

    part = part or {}
    t0 = time.perf_counter()
    state = worker_state(model_ref, options, threads)
    base: dict[str, Any] = {"key": key, "image_id": entry.id, "file": entry.file, "sha256": entry.sha256}
    store = ZarrStore(store_path)
    predictor = state["predictor"]
    extra: dict[str, Any] = {}
    pending: Any = None
    try:
        if getattr(predictor, "dims", 2) == 3 and "slab" not in part:
            raise ConfigError(f"{predictor.meta.arch} is a 3-D model: it pre-labels volumes only")
        if "window" in part:
            t1 = t0
            outputs, infer_s = _predict_block(predictor, entry, part, store, flags)
            extra["window"] = part["window"]
            h, w = entry.height, entry.width
        elif "slab" in part:
            t1 = t0
            extra["slices"], infer_s = _predict_slab(predictor, entry, part, store, flags)
            extra["slab"] = part["slab"]
            outputs = {}
            h, w = entry.height, entry.width
            base["image_id"] = slice_id(entry, int(part["slab"][0]))
        else:
            attrs: dict[str, Any] = {}
            if "z" in part:
                vol = _worker_volume(entry, flags.get("window"))
                image = vol.slice(int(part["z"]))
                attrs = vol.slice_attrs(volume_name(entry), int(part["z"]))
                image_id = slice_id(entry, int(part["z"]))
                base["image_id"] = image_id
                extra["z"] = part["z"]
            else:
                image = state["decoder"].read_image(entry.path)
                image_id = entry.id
            t1 = time.perf_counter()
            h, w = image.shape[:2]
            info = {"id": image_id, "file": entry.file if "z" not in part else f"{entry.file}#z{part['z']:05d}",
                    "path": entry.path, "width": w, "height": h, "sha256": entry.sha256, **attrs}
            if shard is not None and "stack" in part and (h, w) == shard.image_shape(part["stack"]):
                group = pending = shard.slot(part["stack"], int(part["slot"]))
                extra["stack"], extra["slot"] = part["stack"], int(part["slot"])
            else:  # not stacked, or decoded to another size than its header said: a group of its own
                group = store.image_group(image_id, info)
            outputs, infer_s = _predict_and_write(predictor, image, group, store, flags)
    except SegpipeError as e:
        return {**base, "status": "failed", "reason": str(e)}
    t2 = time.perf_counter()
    receipt = {
        **base,
        **extra,
        "status": "done",
        "outputs": outputs,
        "width": w,
        "height": h,
        "timings": {"decode": t1 - t0, "infer": infer_s, "write": max(0.0, (t2 - t1) - infer_s)},
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "time": time.time(),
    }
    if pending is not None:
        shard.done(pending, key, receipt)
    else:
        Ledger(store.private).write(key, receipt)
    return receipt


class _WindowView:
    """A window ``[ya:yb, xa:xb]`` of a raster source, addressed from its own origin (2-D slicing only)."""

    def __init__(self, src: Any, ya: int, yb: int, xa: int, xb: int) -> None:
        self.src, self.ya, self.xa = src, ya, xa
        self.shape = (yb - ya, xb - xa, 3)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        sy, sx = key
        y0, y1, _ = sy.indices(self.shape[0])
        x0, x1, _ = sx.indices(self.shape[1])
        return np.asarray(self.src[self.ya + y0 : self.ya + y1, self.xa + x0 : self.xa + x1])


class _CoreSink:
    """Collects the rows of a block's prediction that fall in its core region.

    The predictor hands over finished row bands of the whole window (core + context margin); the core
    ``[y0:y1, x0:x1]`` is buffered (bounded by the block size) and written once with :meth:`flush`,
    so each chunk is compressed once rather than read-modified-written once per band.
    """

    def __init__(self, ya: int, xa: int, core: list[int], transform: Any, channels: int | None, dtype: Any) -> None:
        self.ya, self.xa, self.core, self.transform, self.channels = ya, xa, core, transform, channels
        y0, y1, x0, x1 = core
        shape = (y1 - y0, x1 - x0) if channels is None else (channels, y1 - y0, x1 - x0)
        self.buf = np.zeros(shape, dtype=dtype)

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        rows = key[1] if self.channels is not None else key
        r0, r1 = rows.start + self.ya, rows.stop + self.ya
        y0, y1, x0, x1 = self.core
        a, b = max(r0, y0), min(r1, y1)
        if a >= b:
            return
        band = self.transform(value[..., a - r0 : b - r0, x0 - self.xa : x1 - self.xa])
        self.buf[..., a - y0 : b - y0, :] = band

    def flush(self, arr: Any) -> np.ndarray:
        """Writes the core into ``arr`` (whole chunks owned by this task); returns what was written."""
        y0, y1, x0, x1 = self.core
        folder = local_folder(arr)
        origin = ([0] if self.channels is not None else []) + [y0, x0]
        if folder is None or not zarrfast.write_region(folder, self.buf, origin):
            arr[..., y0:y1, x0:x1] = self.buf
        return self.buf


def _predict_block(predictor: Any, entry: ManifestEntry, part: dict[str, Any], store: ZarrStore,
                   flags: dict[str, Any]) -> tuple[dict[str, str], float]:
    """Predicts one chunk-aligned block of a scene with a context margin; writes only its core."""
    import zarr

    from segpipe.storage.zarrstore import array_digest

    if predictor.task != "semantic":
        raise ConfigError(f"scenes are tiled for semantic models only, not {predictor.task}")
    src = part["source"]
    y0, y1, x0, x1 = part["window"]
    margin = int(part.get("margin", 0))
    ya, yb = max(0, y0 - margin), min(entry.height, y1 + margin)
    xa, xb = max(0, x0 - margin), min(entry.width, x1 + margin)
    lut = category_lut(predictor)
    g: Any = zarr.open_group(str(store.path), mode="r+")[f"images/{entry.id}"]
    labels = g["labels"]
    probs = g["probs"] if flags["probs"] and "probs" in g else None
    t = time.perf_counter()
    # One windowed read per block (≈ 14 MB for 2048² + margins): tiles then slice memory instead of
    # decompressing the same TIFF strips once per tile. Memory stays bounded by the block, not the scene.
    window = np.ascontiguousarray(_WindowView(src, ya, yb, xa, xb)[0 : yb - ya, 0 : xb - xa])
    core = [y0, y1, x0, x1]
    lsink = _CoreSink(ya, xa, core, lambda v: lut[v], None, lut.dtype)
    psink = _CoreSink(ya, xa, core, lambda v: quantise_probs(v.astype(np.float32)), len(lut), np.uint8) \
        if probs is not None else None
    predictor.predict_semantic(window, label_sink=lsink, prob_sink=psink, keep_probs=psink is not None)
    infer = time.perf_counter() - t
    if src.has_nodata():  # the scene's nodata pixels (the model saw zeros there) are void, not a class
        nd = src.nodata_mask((slice(y0, y1), slice(x0, x1)))
        if nd.any():
            lsink.buf[nd] = label_void(lut.dtype)
            if psink is not None:
                psink.buf[:, nd] = 0
    out = {"labels": array_digest(lsink.flush(labels))}
    if psink is not None:
        out["probs"] = array_digest(psink.flush(probs))
    return out, infer


@functools.lru_cache(maxsize=4)
def _open_volume_cached(path: str, sha256: str, window: Any) -> Any:
    from segpipe.storage.volume import open_volume

    return open_volume(path, window=window)


def _worker_volume(entry: ManifestEntry, window: Any) -> Any:
    """The volume of ``entry``, opened once per worker process (its tasks are its slices or slabs).

    Opening a DICOM series reads every header, and a NIfTI without ``--window`` samples slices for a
    percentile window: once per volume, not once per slice. The content hash is in the key, so a
    changed file is opened afresh.
    """
    return _open_volume_cached(str(entry.path), entry.sha256, tuple(window) if isinstance(window, list) else window)


def _predict_slab(predictor: Any, entry: ManifestEntry, part: dict[str, Any], store: ZarrStore,
                  flags: dict[str, Any]) -> tuple[dict[str, dict[str, str]], float]:
    """Predicts slices ``[z0, z1)`` of a volume with a 3-D model and writes each slice's group.

    The model sees the slab with a context margin of the tile overlap above and below, so slab
    borders blend like tile borders; only the slab's own slices are written (each slice group is
    owned by exactly one task).

    Returns:
        ``({slice image id: {array name: digest}}, inference seconds)``.
    """
    from segpipe.core.tiles import overlap_pixels

    z0, z1 = (int(v) for v in part["slab"])
    vol = _worker_volume(entry, flags.get("window"))
    depth = len(vol)
    tz = predictor.tile3[0]
    margin = overlap_pixels(tz, predictor.overlap) if tz <= depth else 0
    za, zb = max(0, z0 - margin), min(depth, z1 + margin)
    t = time.perf_counter()
    slab = np.stack([vol.slice(z)[..., 0] for z in range(za, zb)])
    pred = predictor.predict_volume(slab, keep_probs=flags["probs"])
    infer = time.perf_counter() - t
    lut = category_lut(predictor)
    name = volume_name(entry)
    out: dict[str, dict[str, str]] = {}
    for z in range(z0, z1):
        image_id = slice_id(entry, z)
        h, w = slab.shape[1:]
        info = {"id": image_id, "file": f"{entry.file}#z{z:05d}", "path": entry.path, "width": w, "height": h,
                "sha256": entry.sha256, **vol.slice_attrs(name, z)}
        group = store.image_group(image_id, info)
        digests = {"labels": store.write_array(group, "labels", lut[pred.labels[z - za]],
                                               attributes=store.label_attributes())}
        if pred.probs is not None:
            digests["probs"] = store.write_array(group, "probs",
                                                 quantise_probs(pred.probs[:, z - za].astype(np.float32)))
        out[str(image_id)] = digests
    return out, infer


def category_lut(predictor: Any) -> np.ndarray:
    """Model class index → category id, in the smallest label-map dtype (uint8, or uint16 above 254)."""
    ids = np.asarray(predictor.category_ids, dtype=np.int64)
    return ids.astype(np.uint16 if int(ids.max(initial=0)) > 254 else np.uint8)


def label_void(dtype: Any) -> int:
    """The void (nodata) value of a label map of ``dtype``: 255 for uint8 (as VOC), 65535 for uint16."""
    return int(np.iinfo(np.dtype(dtype)).max)


def _create_scene(store: ZarrStore, entry: ManifestEntry, src: Any, n_classes: int, lut_dtype: Any,
                  probs: bool, resume: bool) -> None:
    """Creates a scene's group and chunked arrays (driver, before its block tasks run).

    ``attrs["geo"]["nodata"]`` records the label value written where the scene has no data (the
    exports declare it as the nodata value).
    """
    import zarr

    root: Any = zarr.open_group(str(store.path), mode="a")
    key = f"images/{entry.id}"
    if resume and key in root and "labels" in root[key]:
        return
    info = {"id": entry.id, "file": entry.file, "path": entry.path, "width": entry.width, "height": entry.height,
            "sha256": entry.sha256, "geo": {**src.geo_attrs(), "nodata": label_void(lut_dtype)}}
    g = store.image_group(entry.id, info)
    # Fill value = void: a block no task wrote reads as void (nodata) in any tool, never as background.
    void = label_void(lut_dtype)
    g.create_array("labels", shape=(entry.height, entry.width), dtype=lut_dtype,
                   chunks=(SCENE_LABEL_CHUNK, SCENE_LABEL_CHUNK), fill_value=void,
                   dimension_names=dimension_names("labels", 2),
                   attributes={**store.label_attributes(), "void_value": void})
    if probs:
        g.create_array("probs", shape=(n_classes, entry.height, entry.width), dtype="uint8",
                       chunks=(n_classes, SCENE_PROB_CHUNK, SCENE_PROB_CHUNK), fill_value=0,
                       dimension_names=dimension_names("probs", 3))


def _predict_and_write(predictor: Any, image: np.ndarray, group: Any, store: ZarrStore,
                       flags: dict[str, Any]) -> tuple[dict[str, str], float]:
    task = predictor.task
    h, w = image.shape[:2]
    lut = category_lut(predictor)
    outputs: dict[str, str] = {}
    t = time.perf_counter()
    if task == "semantic":
        if h * w > STREAM_PIXELS:  # stream bands into chunked arrays: memory independent of image size
            void = label_void(lut.dtype)
            labels = group.create_array("labels", shape=(h, w), dtype=lut.dtype, chunks=(1024, 1024), fill_value=void,
                                        dimension_names=dimension_names("labels", 2),
                                        attributes={**store.label_attributes(), "void_value": void})
            probs = None
            if flags["probs"]:
                probs = group.create_array("probs", shape=(len(lut), h, w), dtype="uint8",
                                           chunks=(len(lut), 512, 512), fill_value=0,
                                           dimension_names=dimension_names("probs", 3))
            predictor.predict_semantic(image, label_sink=_LabelSink(labels, lut),
                                       prob_sink=_QuantSink(probs) if probs is not None else None,
                                       keep_probs=flags["probs"])
            infer = time.perf_counter() - t
            outputs["labels"] = _digest_stream(labels)
            return outputs, infer
        if h <= predictor.tile[0] and w <= predictor.tile[1]:
            labels, q = _single_tile(predictor, image, flags["probs"])
        else:
            pred = predictor.predict_semantic(image, keep_probs=flags["probs"])
            labels = pred.labels
            q = quantise_probs(pred.probs.astype(np.float32)) if flags["probs"] and pred.probs is not None else None
        infer = time.perf_counter() - t
        outputs["labels"] = store.write_array(group, "labels", lut[labels], attributes=store.label_attributes())
        if q is not None:
            outputs["probs"] = store.write_array(group, "probs", q)
        return outputs, infer
    if task == "instance":
        pred = predictor.predict_instances(image)
        infer = time.perf_counter() - t
        keep = pred.scores >= flags["min_score"]
        idx = np.flatnonzero(keep)
        boxes = pred.boxes[idx].astype(np.float32)
        xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) \
            if len(idx) else np.zeros((0, 4), np.float32)
        rles = np.array([pred.rles[i]["counts"] for i in idx], dtype=str)
        ig = group.require_group("instances")
        outputs["instances/rle"] = store.write_array(ig, "rle", rles) if len(idx) else ""
        outputs["instances/boxes"] = store.write_array(ig, "boxes", xywh.astype(np.float32))
        outputs["instances/scores"] = store.write_array(ig, "scores", pred.scores[idx].astype(np.float32))
        outputs["instances/labels"] = store.write_array(ig, "labels", pred.category_ids[idx].astype(np.int32))
        return outputs, infer
    if task == "panoptic":
        pred = predictor.predict_panoptic(image)
        infer = time.perf_counter() - t
        outputs["panoptic"] = store.write_array(group, "panoptic", pred.ids.astype(np.int32))
        group.attrs["segments"] = [dict(s) for s in pred.segments]
        return outputs, infer
    if task == "landmarks":
        pred = predictor.predict_landmarks(image)
        infer = time.perf_counter() - t
        if flags["heatmaps"] and pred.heatmaps is not None:
            outputs["heatmaps"] = store.write_array(group, "heatmaps", pred.heatmaps.astype(np.float16))
        kp = np.asarray(pred.keypoints, dtype=np.float32)
        kps = np.stack([kp, *pred.instances]) if pred.instances else kp[None]
        outputs["keypoints"] = store.write_array(group, "keypoints", kps.astype(np.float32))
        return outputs, infer
    raise ConfigError(f"unsupported task {task!r}")


def _single_tile(predictor: Any, image: np.ndarray, probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One forward pass for an image that fits in one tile.

    No blending buffers; the outputs come straight from the logits (see
    :func:`~segpipe.models.predict.labels_and_quantised_probs`), never through float16 and float32
    copies of the probabilities.

    Returns:
        ``(labels (H, W) uint8/uint16, probs (C, H, W) uint8 | None)``.
    """
    from segpipe.models.predict import labels_and_quantised_probs

    logits = predictor._run(predictor._to_tensor([image]))
    if isinstance(logits, dict):  # torchvision-style outputs
        logits = logits["out"]
    return labels_and_quantised_probs(logits[0].float(), probs)


def _digest_stream(arr: Any) -> str:
    """Digest of a large 2-D array read back band by band (same value as array_digest of the whole)."""
    from segpipe.storage.zarrstore import ArrayDigest

    h = ArrayDigest(arr.dtype, tuple(arr.shape))
    step = 1024
    for y in range(0, arr.shape[0], step):
        h.update(np.asarray(arr[y : y + step]))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- driver


def _drop_stale_receipts(ledger: Ledger, done: set[str], planned: list[tuple[str, ManifestEntry, Any]]) -> None:
    """Removes receipts of images that are planned again under another key (their content changed).

    Such a receipt would vouch for outputs its task no longer owns: the image is re-run and rewritten,
    and ``fsck`` would then find the old checksum mismatching. Receipts of images no longer in the
    collection are kept (their outputs are still there).
    """
    planned_keys = {k for k, _, _ in planned}
    ids: set[int] = set()
    for _, e, part in planned:
        if "slab" in part:
            ids.update(slice_id(e, z) for z in range(int(part["slab"][0]), int(part["slab"][1])))
        else:
            ids.add(slice_id(e, int(part["z"])) if "z" in part else e.id)
    for key in done - planned_keys:
        try:
            rec = ledger.read(key)
        except (OSError, ValueError):
            continue
        owned = {int(rec.get("image_id", -1)), *(int(k) for k in rec.get("slices", {}))}
        if owned & ids:
            ledger.path(key).unlink(missing_ok=True)


def _trusted_receipts(store: ZarrStore, ledger: Ledger, planned: set[str]) -> set[str]:
    """The keys ``--resume`` may skip: receipts that decode and whose outputs' places hold (no pixels read).

    A receipt that does not decode is not done. Neither is one that the store contradicts
    (:func:`~segpipe.storage.verify.plan_checks` with ``files``): its slot unwritten (``done`` 0) or
    holding another image, its id in two slots, its shard file missing or damaged (then every image of
    that shard), its group or chunk file missing. Such receipts of this run's ``planned`` keys are
    removed here, as ``fsck --repair`` would: their images are redone, and a shard is rewritten whole
    by the task that redoes it (the receipts of images no longer planned stay, for fsck to report).
    """
    from segpipe.storage.verify import plan_checks

    checks = plan_checks(store.path, ledger.dir, files=True)
    redo = {p for p in checks.redo if p.name[:-5] in planned}
    for p in redo:
        p.unlink(missing_ok=True)
    return checks.finished - {p.name[:-5] for p in redo}


#: Images up to this many pixels may be stacked (a shard task holds its images' outputs in memory).
STACK_PIXELS = 1024 * 1024


def _place_in_stacks(store: ZarrStore, todo: list[tuple[str, ManifestEntry, dict[str, Any]]], meta: Any,
                     dims: int, probs: bool) -> list[tuple[str, ManifestEntry, dict[str, Any]]]:
    """Gives the plain 2-D images of a semantic run their slots in the store's stacks (driver).

    Returns:
        ``todo`` with ``stack`` and ``slot`` added to the part of every stacked image.
    """
    from segpipe.storage.stacks import plan_stacks

    if meta.task != "semantic" or dims != 2:
        return todo
    items = [(e.id, e.height, e.width, {"id": e.id, "file": e.file, "path": e.path, "width": e.width,
                                         "height": e.height, "sha256": e.sha256})
             for _, e, part in todo if not part and e.kind == "image" and 0 < e.height * e.width <= STACK_PIXELS]
    if not items:
        return todo
    ids = [int(c.get("id", i)) for i, c in enumerate(meta.categories)]
    placed = plan_stacks(store.path, items, labels_dtype=np.uint16 if max(ids, default=0) > 254 else np.uint8,
                         n_classes=len(ids), probs=probs)
    return [(k, e, {"stack": placed[e.id][0], "slot": placed[e.id][1]})
            if not part and e.kind == "image" and e.id in placed else (k, e, part) for k, e, part in todo]


def _store_attrs(meta: Any, model_ref: ModelRef, config: dict[str, Any], cfg_hash: str) -> dict[str, Any]:
    cats = []
    for i, c in enumerate(meta.categories):
        cats.append({"id": int(c.get("id", i)), "name": str(c.get("name", f"class_{i}")),
                     "color": c.get("color"), "isthing": bool(c.get("isthing", True)),
                     "index": int(c.get("index", i))})
    return {
        "task": meta.task,
        "categories": cats,
        "keypoints": list(getattr(meta, "keypoints", [])),
        "probabilities": {"dtype": "uint8", "scale": "p = value / 255", "channels": [c["id"] for c in cats]},
        "labels": "category id per pixel",
        "model": {"spec": model_ref.spec, "arch": meta.arch, "fingerprint": config["model"],
                  "provenance": getattr(meta, "provenance", {})},
        "config": config,
        "config_hash": cfg_hash,
        "segpipe_version": __version__,
    }


def _inputs(req: PrelabelRequest) -> list[str | os.PathLike[str]]:
    """What a run reads: the source and the checkpoint file (a glob counts as its folder; an annotation
    file as its dataset folder too).
    """
    from segpipe.storage.outputs import dataset_inputs

    ref = ModelRef(req.model, req.arch)
    return [*dataset_inputs(req.source), *([req.model] if ref.is_checkpoint() else [])]


def prepare_store(req: PrelabelRequest, attrs: dict[str, Any], cfg_hash: str, *, dry_run: bool = False) -> ZarrStore:
    """Creates the store, or checks that an existing one may be resumed.

    With ``dry_run`` only the checks run (before any cluster starts: a refusal costs nothing). With
    ``overwrite`` an earlier store is not touched here: the new one is created in a staging folder
    beside it (its path is the returned store's) and swapped in by :func:`prelabel` once complete.

    Raises:
        OutputError: ``--out`` overlaps an input, or is something other than a segpipe store.
        InputError: an existing store that may not be resumed (another config, or no ``--resume``).
    """
    from segpipe.storage import outputs

    out = req.out
    plan = outputs.check_output(out, _inputs(req), option="--out", command="prelabel", kind="store")
    if not plan.replaces:
        return ZarrStore(out) if dry_run else ZarrStore.create(out, attrs)
    if req.overwrite:
        return ZarrStore(out) if dry_run else ZarrStore.create(outputs.begin_staging(plan), attrs)
    existing = ZarrStore.open(out).attrs()
    if existing.get("config_hash") != cfg_hash:
        raise InputError(
            "store was made with another model or config; refusing to mix outputs", path=out,
            hint="pass --overwrite for a new run in this store, or choose another --out",
        )
    if not req.resume:
        raise InputError("store exists", path=out, hint="pass --resume to continue it or --overwrite")
    return ZarrStore(out)


def prelabel(
    req: PrelabelRequest,
    cluster: ClusterSpec | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Pre-labels a collection into a store; returns the run report (also ``STORE/.segpipe/runs/<id>.json``).

    Raises:
        SegpipeError: unreadable source, bad model, store conflicts (nothing is written then).
    """
    t_start = time.perf_counter()
    # On a machine with GPUs, one worker per GPU, pinned to it (a CPU device keeps the CPU workers).
    cluster = (cluster or ClusterSpec()).for_model(req.device, req.gpus)
    if req.on_error not in ("skip", "fail"):
        raise ConfigError(f"--on-error must be skip or fail, got {req.on_error!r}")
    if req.resume and req.overwrite:  # which one was meant cannot be guessed: continue, or replace
        raise ConfigError("--resume continues the store and --overwrite replaces it; pass one of them, not both")
    if not (math.isfinite(req.min_score) and 0.0 <= req.min_score <= 1.0):
        raise ConfigError(f"--min-score {req.min_score} is not a score in [0, 1]")
    if req.stretch not in ("auto", "percentile", "minmax", "none"):
        raise ConfigError(f"--stretch must be auto, percentile, minmax or none, got {req.stretch!r}")
    if req.window:
        from segpipe.storage.volume import parse_window

        parse_window(req.window)  # a malformed window is one line before anything runs
    from segpipe.storage.outputs import check_output

    # Where the run will write, first: an --out over an input or over something segpipe did not make is
    # refused before the model is even read (prepare_store checks the rest once the config is known).
    check_output(req.out, _inputs(req), option="--out", command="prelabel", kind="store")
    model_ref = ModelRef(req.model, req.arch)
    meta = model_ref.meta()
    from segpipe.storage.zarrfast import forget_metadata

    forget_metadata()  # in-process runs write from this process: nothing cached by an earlier run counts
    if req.task and req.task != meta.task:
        raise ConfigError(f"--task {req.task} but the model {meta.arch} is a {meta.task} model")
    check_tiling(req.tile, req.overlap, meta)  # before any cluster starts: a tiling with no stride is one line
    fp = model_ref.fingerprint()
    from segpipe.models.registry import arch_dims

    dims = arch_dims(meta.arch)  # the architecture's, as the workers' predictor sees it (no torch here)
    config = _config(req, fp, meta)
    cfg_hash = config_hash(config)
    n_workers = cluster.n_workers() if not cluster.scheduler else 0
    # Threads per worker run images at once, each forward pass on one torch thread (not one image on
    # ``threads`` torch threads): the stored bytes then do not depend on workers or threads.
    threads = cluster.worker_threads(req.threads)
    if not cluster.scheduler:
        cluster = dataclasses.replace(cluster, threads_per_worker=threads)
    options: dict[str, Any] = {"device": req.device, "batch_size": req.batch, "tile": req.tile,
                               "overlap": req.overlap}
    if meta.task == "instance":
        options["score_thresh"] = req.min_score
    flags = {"probs": req.probs, "heatmaps": req.heatmaps, "min_score": req.min_score, "window": req.window}
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    attrs = _store_attrs(meta, model_ref, config, cfg_hash)
    prepare_store(req, attrs, cfg_hash, dry_run=True)  # refuse a conflicting store before starting a cluster
    # The model is loaded on the workers before the store is touched: a checkpoint the workers cannot
    # load fails the run with its one line and leaves an existing store as it was (even with --overwrite).
    staging: list[Path] = []  # the new store's staging folder when it replaces an earlier one (--overwrite)
    # The source is listed before any cluster starts: an empty folder is one line at once, and a small
    # job runs in this process instead of waiting for workers (ClusterSpec.sized).
    listing = list_source(req.source, limit=req.limit)
    if client is None:
        sized = cluster.sized(estimate_prelabel_s(listing))
        if sized.in_process() and not cluster.in_process():
            cluster = sized
            threads = sized.threads_per_worker
            n_workers = 0
            if log:
                log(f"{len(listing)} images: running in this process (a cluster would take longer to start; "
                    "pass --workers N for one)")
    with _discard_on_error(staging), use_client(cluster, client) as client, \
            _predictor_on_workers(client, model_ref, options, threads):
        dashboard = getattr(client, "dashboard_link", None)
        if log and dashboard:
            log(f"dask dashboard: {dashboard}")
        entries = ingest(req.source, client, limit=req.limit, listing=listing)
        store = prepare_store(req, attrs, cfg_hash)
        if store.path != req.out:
            staging.append(store.path)
        write_manifest(store.private / "manifest.jsonl", entries)
        ledger = Ledger(store.private)
        ledger.ensure()
        planned = plan_tasks(entries, cfg_hash, slab=SLAB if dims == 3 else 0)
        done_keys = _trusted_receipts(store, ledger, {k for k, _, _ in planned})
        _drop_stale_receipts(ledger, done_keys, planned)
        done_keys &= ledger.keys()
        todo = [t for t in planned if t[0] not in done_keys]
        skipped = len(planned) - len(todo)
        scenes = {e.id: e for _, e, part in todo if "window" in part}
        # A scene that cannot be opened or does not fit the model fails alone (one line in the report),
        # like an unreadable image: its block tasks are not run, every other item is.
        scene_failed: list[dict[str, Any]] = []
        unplanned = 0
        if scenes:
            from segpipe.core.tiles import overlap_pixels
            from segpipe.storage.raster import check_bands, open_raster

            ids = [int(c.get("id", i)) for i, c in enumerate(meta.categories)]
            lut_dtype = np.uint16 if max(ids, default=0) > 254 else np.uint8
            channels = len(meta.mean)  # input channels of the model (its normalisation has one per channel)
            sources = {}
            for e in scenes.values():
                try:
                    kw: dict[str, Any] = {"stretch": req.stretch}
                    if req.bands:
                        kw["bands"] = req.bands
                    if req.percentiles:
                        kw["percentiles"] = req.percentiles
                    src = open_raster(e.path, **kw)
                    check_bands(src, channels)
                except SegpipeError as err:
                    scene_failed.append({"key": "", "image_id": e.id, "file": e.file, "status": "failed",
                                         "reason": str(err)})
                    continue
                sources[e.id] = src
                _create_scene(store, e, src, len(ids), lut_dtype, req.probs, req.resume)
            kept = [t for t in todo if "window" not in t[2] or t[1].id in sources]
            unplanned = len(todo) - len(kept)  # the block tasks of failed scenes: each scene counts once
            todo = kept
            tile = req.tile or int(meta.tile_size[-1])
            ov = req.overlap if req.overlap is not None else meta.tile_overlap
            margin = overlap_pixels(tile, float(ov))  # a fraction of the tile (checked by check_tiling)
            todo = [(k, e, {**part, "source": sources[e.id], "margin": margin}) if "window" in part else (k, e, part)
                    for k, e, part in todo]
        todo = _place_in_stacks(store, todo, meta, dims, req.probs)
        receipts: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = [
            {"key": "", "image_id": e.id, "file": e.file, "status": "failed", "reason": e.error}
            for e in entries if e.kind == "invalid"
        ] + scene_failed
        t_run = time.perf_counter()
        n_work = n_workers or (len(client.scheduler_info().get("workers", ())) if hasattr(client, "scheduler_info")
                               else 1)
        if cluster.scheduler:
            # An external cluster may still be scaling up: plan for at least a few workers.
            n_work = max(n_work, 4)
        # each worker of ours runs `threads` tasks at once (an external cluster's own threads are unknown)
        slots = n_work * (threads if not cluster.scheduler else 1)
        batches = batch_tasks(todo, slots)
        tasks = ((batch_key([k for k, _, _ in b]),
                  ([(e, k, part) for k, e, part in b], str(store.path), model_ref, options, threads, flags,
                   req.on_error == "fail"))
                 for b in batches)
        stopped = False
        finished = 0
        # On a cluster with GPU workers (ours, or a user's `dask worker --resources GPU=1`), model tasks
        # run only there; on the CPU they run anywhere.
        gpu_only = {GPU_RESOURCE: 1.0} if req.device != "cpu" and advertises_gpu(client) else None
        for _, rs in run_tasks(client, prelabel_batch, tasks, total=len(batches),
                               max_in_flight=max(2, 2 * max(1, slots)), resources=gpu_only):
            for r in rs:
                finished += 1
                if r["status"] == "done":
                    receipts.append(r)
                else:
                    failed.append(r)
                    if req.on_error == "fail":
                        stopped = True
            if progress:
                progress(skipped + finished, len(planned), len(failed))
            if stopped:
                break
        run_s = time.perf_counter() - t_run
    stage = {k: round(sum(r["timings"][k] for r in receipts), 3) for k in ("decode", "infer", "write")}
    report = {
        "run_id": run_id,
        "segpipe_version": __version__,
        "store": str(req.out),
        "source": req.source,
        "model": {"spec": req.model, "arch": meta.arch, "task": meta.task},
        # Items that failed before any task was planned for them (refused at ingest, scenes that cannot
        # be opened) count once each, so done + failed + not run + already done add up to the total.
        "images": {"total": len(planned) - unplanned + sum(1 for f in failed if not f.get("key")),
                   "done": len(receipts), "skipped_already_done": skipped,
                   "failed": len(failed),
                   "not_run": len(todo) - len(receipts) - sum(1 for f in failed if f.get("key"))},
        "items": {"images": sum(e.kind == "image" for e in entries), "scenes": sum(e.kind == "scene" for e in entries),
                  "volumes": sum(e.kind == "volume" for e in entries), "tasks": len(planned)},
        "failed": [{"file": f["file"], "image_id": f["image_id"], "reason": f["reason"]} for f in failed],
        "throughput_img_s": round(len(receipts) / run_s, 3) if run_s > 0 and receipts else 0.0,
        "stage_seconds": stage,
        "workers": cluster.scheduler or ("in-process" if cluster.workers == 0 else n_workers),
        "threads_per_worker": threads,
        "dashboard": dashboard,
        "stopped_on_error": stopped,
        "elapsed_s": round(time.perf_counter() - t_start, 3),
    }
    (store.private / "runs").mkdir(exist_ok=True)
    write_json_atomic(store.private / "runs" / f"{run_id}.json", report)
    if staging:  # under --on-error fail any failure makes the new run incomplete
        _finish_replacement(staging[0], req, stopped or (req.on_error == "fail" and bool(failed)), report)
    return report


@contextmanager
def _discard_on_error(staging: list[Path]) -> Iterator[None]:
    """Removes the staging store a failed or interrupted run leaves; the earlier store stays as it was."""
    from segpipe.storage.outputs import discard

    try:
        yield
    except BaseException:
        for p in staging:
            discard(p)
        raise


def _finish_replacement(staging: Path, req: PrelabelRequest, stopped: bool, report: dict[str, Any]) -> None:
    """Swaps the new store in for the earlier one, or keeps the earlier one if the run stopped on an error.

    Raises:
        OutputError: ``--out`` changed into something else while the run went on (nothing replaced).

    A run stopped by ``--on-error fail`` is incomplete: replacing a whole store with it would lose the
    earlier run's outputs for nothing, so the earlier store stays and the new one is dropped.
    """
    from segpipe.storage import outputs

    if stopped:
        outputs.discard(staging)
        report["earlier_store_kept"] = True
        return
    try:  # checked again: the path may hold something else after a long run
        plan = outputs.check_output(req.out, _inputs(req), option="--out", command="prelabel", kind="store")
    except BaseException:
        outputs.discard(staging)
        raise
    outputs.install(staging, plan)


@contextmanager
def _predictor_on_workers(client: Any, model_ref: ModelRef, options: dict[str, Any], threads: int) -> Iterator[None]:
    """Loads the model on every worker of ``client`` (a plugin) for the duration of the block.

    Raises:
        SegpipeError: a worker could not load the model (the worker's own one-line error).
    """
    if not hasattr(client, "register_plugin"):  # in-process: built here, before the store is touched
        from segpipe.execution.plugins import worker_state

        worker_state(model_ref, options, threads)
        yield
        return
    from segpipe.execution.cluster import owns_workers
    from segpipe.execution.plugins import PLUGIN_NAME
    from segpipe.execution.worker_plugin import PredictorPlugin

    # the embedded cluster's workers (not a user's) skip finalisation at exit: see install_fast_exit
    client.register_plugin(PredictorPlugin(model_ref, options, threads, fast_exit=owns_workers(client)))
    try:
        yield
    finally:
        try:
            client.unregister_worker_plugin(PLUGIN_NAME)
        except Exception:  # the cluster may be going away; nothing to undo then
            pass


def fsck(path: Path, repair: bool = False) -> dict[str, Any]:
    """Checks a store: every receipt decodes and its outputs match their checksums; orphans listed.

    Beyond the checksums, the stacks must agree with the receipts (:func:`~segpipe.storage.verify.plan_checks`):
    a receipt whose slot holds another image or is not written (``done`` 0) is bad; a slot id found
    twice, or a finished slot that no receipt vouches for, is a problem.

    Args:
        path: The store.
        repair: Remove orphan ``*.partial`` files and bad receipts (so that ``--resume`` redoes those
            images), and the staging folders killed runs left beside the store
            (:func:`~segpipe.storage.outputs.clean_leftovers`; they are listed as orphans). Problems are
            not repaired.

    Returns:
        ``{"receipts", "ok", "bad": [...], "problems": [...], "orphans": [...], "repaired": n}``; each bad
        receipt and problem is ``{"file", "problem"}``.
    """
    from segpipe.storage.ledger import orphan_partials
    from segpipe.storage.verify import check_metadata, parse_receipt, plan_checks

    check_metadata(Path(path))  # a corrupt zarr.json of the root or a stack: one line naming it
    store = ZarrStore.open(path)
    ledger = Ledger(store.private)
    bad: list[dict[str, str]] = []
    ok = 0
    n = 0
    for key, p in ledger.items():
        n += 1
        try:
            rec, why = parse_receipt(p.read_bytes())
        except OSError as e:
            rec, why = None, f"cannot be read ({e.strerror or e})"
        if rec is None:
            bad.append({"key": key, "file": str(p), "problem": f"receipt {why}"})
            continue
        try:
            _fsck_receipt(store, rec)
            ok += 1
        except _Mismatch as e:
            bad.append({"key": key, "file": str(p), "problem": f"{e.path}: {e.what}"})
    problems: list[dict[str, str]] = []
    try:
        checks = plan_checks(store.path, ledger.dir)
    except SegpipeError as e:  # a stack's ids or done array cannot be read: named
        problems.append({"file": e.path or str(store.path), "problem": e.message})
    else:
        flagged = {b["file"] for b in bad}
        for image_id, c in checks.images.items():
            vouch = checks.receipt_of.get(image_id)
            receipt = str(vouch) if vouch is not None else None
            if c.kind == "damaged" and receipt is not None:
                if receipt not in flagged:  # counted ok above: its checksums hold, its place does not
                    flagged.add(receipt)
                    ok -= 1
                    bad.append({"key": Path(receipt).name[:-5], "file": receipt,
                                "problem": f"image {image_id}: {c.path}: {c.problem}"})
            elif c.kind in ("duplicate", "unvouched", "damaged"):
                problems.append({"file": str(c.path), "problem": f"image {image_id}: {c.problem}"})
    orphans = [str(o) for o in orphan_partials(store.path)]
    from segpipe.storage import outputs

    left = outputs.leftovers(path)  # staging / set-aside folders of killed runs beside the store
    repaired = 0
    if repair:
        for o in orphans:
            Path(o).unlink(missing_ok=True)
            repaired += 1
        for b in bad:
            Path(b["file"]).unlink(missing_ok=True)
            repaired += 1
        repaired += len(outputs.clean_leftovers(outputs.resolved(path)))
    orphans += [str(p) for p in left]
    return {"store": str(path), "receipts": n, "ok": ok, "bad": bad, "problems": problems, "orphans": orphans,
            "repaired": repaired}


class _Mismatch(Exception):
    """An output of a receipt that does not hold: the file concerned and what is wrong, in plain words."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(what)
        self.path, self.what = path, what


def _fsck_receipt(store: ZarrStore, rec: dict[str, Any]) -> None:
    """Reads a receipt's outputs and compares their digests (fsck).

    Raises:
        _Mismatch: naming the chunk or shard file (or array folder) that is missing, damaged or differs.
    """
    from segpipe.storage.verify import describe_failure, shard_file
    from segpipe.storage.zarrstore import digest_matches

    def check(where: Path, group: Any, name: str, region: Any, digest: str, what: str, shard: bool = False) -> None:
        try:
            arr = np.asarray(group[name][region])
        except Exception as e:  # zarr's and numcodecs' own errors quote raw bytes: named in plain words
            if shard:
                raise _Mismatch(where, f"{what}: missing shard file" if not where.exists()
                                else f"{what}: damaged shard file (cannot be decoded)") from None
            if not where.is_dir():
                raise _Mismatch(where, f"{what}: its array is missing") from None
            bad_file, _ = describe_failure(where, e)
            raise _Mismatch(bad_file, f"{what}: damaged chunk file (cannot be decoded)") from None
        if digest_matches(arr.astype(str) if arr.dtype.kind in ("U", "T", "O") else arr, digest):
            return
        if shard or not where.is_dir():
            why = ("missing shard file" if shard and not where.exists()
                   else "checksum mismatch (the file differs from its receipt)")
            raise _Mismatch(where, f"{what}: {why}")
        has_chunk = any(f != "zarr.json" and ".partial" not in f for _, _, fs in os.walk(where) for f in fs)
        raise _Mismatch(where, f"{what}: " + ("checksum mismatch (a chunk file differs from its receipt, or one "
                                              "is missing)" if has_chunk else "missing chunk file"))

    def opened(image_id: int, hint: tuple[str, int] | None, where: Path) -> Any:
        try:
            return store.group(image_id, hint)
        except Exception as e:
            bad_file, why = describe_failure(where, e)
            why = why.split(" (")[0] if "Error" in why else why  # no exception type or raw bytes in the line
            raise _Mismatch(bad_file, "its group is missing" if not where.exists() else why) from None

    for sid, outs in rec.get("slices", {}).items():  # a slab of a volume: its own slices
        folder = store.path / "images" / str(int(sid))
        sg = opened(int(sid), None, folder)
        for name, digest in outs.items():
            check(folder / name, sg, name, ..., digest, f"slice {sid} {name}")
    if "slices" in rec:
        return
    image_id = int(rec["image_id"])
    hint = (str(rec["stack"]), int(rec["slot"])) if "stack" in rec else None
    g = opened(image_id, hint, store.path / "stacks" / hint[0] if hint else store.path / "images" / str(image_id))
    win = rec.get("window")
    for name, digest in rec.get("outputs", {}).items():
        if not digest:
            continue
        shard = hint is not None and name in ("labels", "probs")
        where = (shard_file(store.path, *hint, name) if hint is not None and shard
                 else store.path / "images" / str(image_id) / name)
        if win:  # a block of a scene: its digest covers its core region only
            y0, y1, x0, x1 = win
            check(where, g, name, (..., slice(y0, y1), slice(x0, x1)), digest, name, shard)
        else:
            check(where, g, name, ..., digest, name, shard)


def read_runs(path: Path) -> Iterator[dict[str, Any]]:
    """The run reports of a store, oldest first."""
    runs = Path(path) / ".segpipe" / "runs"
    if runs.exists():
        for p in sorted(runs.glob("*.json")):
            yield json.loads(p.read_text(encoding="utf-8"))

