"""The pre-label worker task: a batch of images, each decoded, predicted, written, then receipted.

Each image writes only its own arrays (or the chunk-aligned core of a scene block, or its slots in a
stack's shard), then a durable receipt into the ledger, and returns the small receipt. A re-executed
task rewrites its images from scratch: same key, same bytes, whether Dask ran it once or twice.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from segpipe.errors import ConfigError, SegpipeError
from segpipe.kernels.prelabel.image import predict_and_write
from segpipe.kernels.prelabel.resources import PrelabelResources
from segpipe.kernels.prelabel.scene import predict_block
from segpipe.kernels.prelabel.tasks import (
    Failure,
    PrelabelSettings,
    PrelabelTask,
    Receipt,
    SceneBlock,
    StackSlot,
    TaskResult,
    Timings,
    VolumeSlab,
    VolumeSlice,
    slice_id,
)
from segpipe.kernels.prelabel.volume import predict_slab, volume_name, worker_volume
from segpipe.storage.ledger import Ledger
from segpipe.storage.stacks import PendingSlot, ShardWriter


def prelabel_batch(resources: PrelabelResources, settings: PrelabelSettings,
                   tasks: Sequence[PrelabelTask]) -> list[TaskResult]:
    """Worker task: :func:`prelabel_task` for each task of a batch, in order.

    An image whose receipt already exists is not redone (Dask reruns a whole batch when its worker
    died part-way through): its receipt is returned as written.

    Args:
        resources: The worker's predictor and decoder.
        settings: The store and what to store; ``stop_on_failure`` returns at the first failed image
            (``--on-error fail``): the rest of the batch is not run.
        tasks: The images, in order.

    Returns:
        One result per task run (all of them unless it stopped at a failure).
    """
    ledger = Ledger(settings.store.private)
    shard = ShardWriter(str(settings.store.path)) if any(isinstance(t.part, StackSlot) for t in tasks) else None
    out: list[TaskResult] = []
    for task in tasks:
        earlier = _earlier_receipt(ledger, task.key)
        if earlier is not None:
            out.append(earlier)
            continue
        result = prelabel_task(resources, settings, task, shard=shard)
        out.append(result)
        if settings.stop_on_failure and isinstance(result, Failure):
            break
    if shard is not None:
        shard.flush(ledger)  # the shard files, then their images' receipts
    return out


def _earlier_receipt(ledger: Ledger, key: str) -> Receipt | None:
    """The receipt an earlier run of this task wrote, or None (none, or unreadable: then it is redone)."""
    if not ledger.done(key):
        return None
    try:
        return Receipt.from_json(ledger.read(key))
    except (OSError, ValueError, TypeError, KeyError):  # an unreadable receipt: redo the image, which rewrites it
        return None


@dataclass
class _Reached:
    """How far a task got: the image a failure names (a volume slice's own id once it is decoded)."""

    image_id: int


@dataclass(frozen=True)
class _Written:
    """What a part's handler wrote: the receipt's fields that depend on the kind of part."""

    outputs: dict[str, str]
    infer_s: float
    decoded_at: float
    width: int
    height: int
    image_id: int
    window: tuple[int, ...] | None = None
    slices: dict[str, dict[str, str]] | None = None
    slab: tuple[int, int] | None = None
    z: int | None = None
    stack: str | None = None
    slot: int | None = None
    pending: PendingSlot | None = None


def prelabel_task(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
                  shard: ShardWriter | None = None) -> TaskResult:
    """Worker task: decode, predict, write its own arrays (or chunk-aligned region), then its receipt.

    A stacked image (a :class:`~segpipe.kernels.prelabel.tasks.StackSlot` part) hands its arrays and
    receipt to ``shard``, which writes them with the rest of its shard.

    Returns:
        The receipt (small): outputs' digests, timings per stage; or the failure (one line).
    """
    t0 = time.perf_counter()
    entry = task.entry
    reached = _Reached(entry.id)
    try:
        if getattr(resources.predictor, "dims", 2) == 3 and not isinstance(task.part, VolumeSlab):
            raise ConfigError(f"{resources.predictor.meta.arch} is a 3-D model: it pre-labels volumes only")
        written = _handler(task)(resources, settings, task, shard, reached, t0)
    except SegpipeError as e:
        return Failure(key=task.key, image_id=reached.image_id, file=entry.file, reason=str(e), sha256=entry.sha256)
    t2 = time.perf_counter()
    t1 = written.decoded_at
    receipt = Receipt(
        key=task.key, image_id=written.image_id, file=entry.file, sha256=entry.sha256,
        outputs=written.outputs, width=written.width, height=written.height,
        timings=Timings(decode=t1 - t0, infer=written.infer_s, write=max(0.0, (t2 - t1) - written.infer_s)),
        worker=f"{socket.gethostname()}:{os.getpid()}", time=time.time(),
        window=written.window, slices=written.slices, slab=written.slab, z=written.z,
        stack=written.stack, slot=written.slot,
    )
    if written.pending is not None and shard is not None:
        shard.done(written.pending, task.key, receipt.to_json())
    else:
        Ledger(settings.store.private).write(task.key, receipt.to_json())
    return receipt


_Handler = Callable[[PrelabelResources, PrelabelSettings, PrelabelTask, ShardWriter | None, _Reached, float],
                    _Written]


def _handler(task: PrelabelTask) -> _Handler:
    if isinstance(task.part, SceneBlock):
        return _block
    if isinstance(task.part, VolumeSlab):
        return _slab
    return _image


def _block(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
           shard: ShardWriter | None, reached: _Reached, t0: float) -> _Written:
    """A scene block: its core region's digests."""
    part = cast(SceneBlock, task.part)  # _handler's choice
    outputs, infer_s = predict_block(resources.predictor, task.entry, part, settings.store, settings.outputs)
    return _Written(outputs, infer_s, t0, task.entry.width, task.entry.height, task.entry.id, window=part.window)


def _slab(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
          shard: ShardWriter | None, reached: _Reached, t0: float) -> _Written:
    """A slab of a volume (3-D model): one group per slice, the receipt named by its first slice."""
    part = cast(VolumeSlab, task.part)  # _handler's choice
    slices, infer_s = predict_slab(resources.predictor, task.entry, part, settings.store, settings.outputs)
    return _Written({}, infer_s, t0, task.entry.width, task.entry.height, slice_id(task.entry, part.z0),
                    slices=slices, slab=(part.z0, part.z1))


def _image(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
           shard: ShardWriter | None, reached: _Reached, t0: float) -> _Written:
    """A 2-D image, a volume's slice, or a stacked image: decoded here, written to its group or slot."""
    entry, part, store = task.entry, task.part, settings.store
    image, name, attrs = _decode(resources, settings, task, reached)
    t1 = time.perf_counter()
    h, w = image.shape[:2]
    info = {"id": reached.image_id, "file": name, "path": entry.path, "width": w, "height": h,
            "sha256": entry.sha256, **attrs}
    slot = part if isinstance(part, StackSlot) and shard is not None and (h, w) == shard.image_shape(part.stack) \
        else None
    pending = shard.slot(slot.stack, slot.slot) if slot is not None and shard is not None else None
    # not stacked, or decoded to another size than its header said: a group of its own
    group: Any = pending if pending is not None else store.image_group(reached.image_id, info)
    outputs, infer_s = predict_and_write(resources.predictor, image, group, store, settings.outputs)
    return _Written(outputs, infer_s, t1, w, h, reached.image_id,
                    z=part.z if isinstance(part, VolumeSlice) else None,
                    stack=slot.stack if slot is not None else None, slot=slot.slot if slot is not None else None,
                    pending=pending)


def _decode(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
            reached: _Reached) -> tuple[np.ndarray, str, dict[str, Any]]:
    """The image ``(H, W, 3)`` uint8, the name its group records, and a volume slice's own attributes.

    A volume's slice is cut from the worker's opened volume and takes its own image id (``reached``).
    """
    entry, part = task.entry, task.part
    if isinstance(part, VolumeSlice):
        vol = worker_volume(entry, settings.outputs.window)
        image = vol.slice(part.z)
        attrs = vol.slice_attrs(volume_name(entry), part.z)
        reached.image_id = slice_id(entry, part.z)
        return image, f"{entry.file}#z{part.z:05d}", attrs
    return resources.decoder.read_image(entry.path), entry.file, {}
