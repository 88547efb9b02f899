"""The pre-label worker task: a batch of images, each decoded, predicted, written, then receipted.

Each image writes only its own arrays (or the chunk-aligned core of a scene block, or its slots in a
stack's shard), then a durable receipt into the ledger, and returns the small receipt. A re-executed
task rewrites its images from scratch: same key, same bytes, whether Dask ran it once or twice.

Consecutive images of one size that each fit in one tile (a semantic model) share forward passes:
up to the predictor's ``batch_size`` of them are decoded (on the GPU where ``--gpu-decode`` allows),
stacked into one batch, and then written one by one, in order (:func:`_run_stack`). On the CPU the
predictor's batch is one (``resources.CPU_TILES_PER_PASS``), so each pass holds one image there.
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
from segpipe.kernels.prelabel.doubt import record_doubt
from segpipe.kernels.prelabel.image import Predicted, decode_on_device, predict_and_write, predict_stacked, stackable
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
    WholeImage,
    slice_id,
)
from segpipe.kernels.prelabel.volume import predict_slab, volume_name, worker_volume
from segpipe.storage.ledger import Ledger, ObjectLedger
from segpipe.storage.stacks import PendingSlot, ShardWriter
from segpipe.storage.zarrstore import ObjectGroup


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
    ledger = settings.store.ledger()
    shard = ShardWriter(settings.store.target) if any(isinstance(t.part, StackSlot) for t in tasks) else None
    run = _BatchRun(resources, settings, ledger, shard)
    if all(run.add(task) for task in tasks):  # all() stops at the first False: the batch stops there
        run.run_stack()
    if shard is not None:
        shard.flush(ledger)  # the shard files, then their images' receipts
    return run.out


class _BatchRun:
    """The tasks of one batch, in order, images of one size waiting to share a forward pass."""

    def __init__(self, resources: PrelabelResources, settings: PrelabelSettings, ledger: Ledger | ObjectLedger,
                 shard: ShardWriter | None) -> None:
        self.resources, self.settings, self.ledger, self.shard = resources, settings, ledger, shard
        self.out: list[TaskResult] = []
        self.stack: list[PrelabelTask] = []  # images waiting to share a forward pass, all of one size

    def run_stack(self) -> bool:
        """Runs the waiting images; False when the batch must stop at a failure."""
        results = _run_stack(self.resources, self.settings, self.stack, self.shard) if self.stack else []
        self.stack.clear()
        self.out.extend(results)
        return not (self.settings.stop_on_failure and any(isinstance(r, Failure) for r in results))

    def add(self, task: PrelabelTask) -> bool:
        """Runs (or queues) one task; False when the batch must stop at a failure."""
        earlier = _earlier_receipt(self.ledger, task.key)
        if earlier is not None:
            if not self.run_stack():
                return False
            self.out.append(earlier)
            return True
        size = _stack_size(self.resources, task)
        if size is not None:
            if self.stack and (_stack_size(self.resources, self.stack[0]) != size
                               or len(self.stack) >= _per_pass(self.resources)):
                if not self.run_stack():
                    return False
            self.stack.append(task)
            return True
        if not self.run_stack():
            return False
        result = prelabel_task(self.resources, self.settings, task, shard=self.shard)
        self.out.append(result)
        return not (self.settings.stop_on_failure and isinstance(result, Failure))


def _per_pass(resources: PrelabelResources) -> int:
    """Images per forward pass: the predictor's batch (one on the CPU: resources.CPU_TILES_PER_PASS)."""
    return max(1, int(getattr(resources.predictor, "batch_size", 1)))


def _stack_size(resources: PrelabelResources, task: PrelabelTask) -> tuple[int, int] | None:
    """The ``(H, W)`` of an image that may share a forward pass (its manifest size), or None.

    A whole 2-D image or a stacked one, of a semantic 2-D model, within one tile: see
    :func:`~segpipe.kernels.prelabel.image.stackable`. Volume slices, scene blocks and slabs run alone.
    """
    if not isinstance(task.part, WholeImage | StackSlot):
        return None
    h, w = task.entry.height, task.entry.width
    if not h or not w or not stackable(resources.predictor, h, w):
        return None
    return h, w


@dataclass(frozen=True)
class _Decoded:
    """An image decoded for a shared pass: its pixels, when decoding began and how long it took."""

    image: Any
    t0: float
    decode_s: float


def _run_stack(resources: PrelabelResources, settings: PrelabelSettings, tasks: Sequence[PrelabelTask],
               shard: ShardWriter | None) -> list[TaskResult]:
    """Images of one size: decoded, predicted in one forward pass, then written and receipted in order.

    An image that fails to decode is a :class:`Failure` (the others go on); with ``stop_on_failure``
    the images after it are not written. An image whose pixels turn out to have another size than
    its manifest's is predicted on its own.
    """
    decoded = _decode_stack(resources, settings, tasks)
    size = (tasks[0].entry.height, tasks[0].entry.width)
    same = [i for i, d in enumerate(decoded) if isinstance(d, _Decoded) and tuple(d.image.shape[:2]) == size]
    predicted: dict[int, Predicted] = {}
    failed: dict[int, Failure] = {}
    try:
        preds = predict_stacked(resources.predictor, [cast(_Decoded, decoded[i]).image for i in same],
                                settings.outputs.probs) if same else []
        predicted = dict(zip(same, preds, strict=True))
    except SegpipeError as e:  # the shared pass failed: each of its images reports it
        failed = {i: _failure(tasks[i], str(e)) for i in same}
    out: list[TaskResult] = []
    for i, task in enumerate(tasks):
        d = decoded[i]
        if isinstance(d, Failure):
            result: TaskResult = d
        elif i in failed:
            result = failed[i]
        else:
            result = _write_decoded(resources, settings, task, shard, d, predicted.get(i))
        out.append(result)
        if settings.stop_on_failure and isinstance(result, Failure):
            break
    return out


def _decode_stack(resources: PrelabelResources, settings: PrelabelSettings,
                  tasks: Sequence[PrelabelTask]) -> list[_Decoded | Failure]:
    """Each image's pixels (on the GPU where ``--gpu-decode`` allows, else the isolated decoder), or its failure."""
    on_device: dict[int, Any] = {}
    share = 0.0
    if resources.gpu_decode:
        t = time.perf_counter()
        on_device = decode_on_device(resources.predictor,
                                     [(task.entry.path, task.entry.width, task.entry.height) for task in tasks])
        share = (time.perf_counter() - t) / len(tasks)
    out: list[_Decoded | Failure] = []
    for i, task in enumerate(tasks):
        t0 = time.perf_counter()
        if i in on_device:
            out.append(_Decoded(on_device[i], t0, share))
            continue
        try:
            image = _decode(resources, settings, task, _Reached(task.entry.id))[0]  # as a task run alone
        except SegpipeError as e:
            out.append(_failure(task, str(e)))
            continue
        out.append(_Decoded(image, t0, time.perf_counter() - t0))
    return out


def _write_decoded(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
                   shard: ShardWriter | None, decoded: _Decoded, predicted: Predicted | None) -> TaskResult:
    """Writes one image of a shared pass (or predicts it alone first) and records its receipt."""
    t1 = time.perf_counter()
    image = decoded.image
    if predicted is None and not isinstance(image, np.ndarray):  # decoded on the GPU, not of the pass's size
        image = np.asarray(image.cpu())
    try:
        written = _write_image(resources, settings, task, shard, image, task.entry.file, {}, task.entry.id,
                               t1, predicted)
    except SegpipeError as e:
        return _failure(task, str(e))
    spent = time.perf_counter() - t1
    # a shared pass's share is not part of this image's writing; a pass of its own is
    write = spent if predicted is not None else max(0.0, spent - written.infer_s)
    return _record(settings, task, written, Timings(decode=decoded.decode_s, infer=written.infer_s, write=write),
                   shard)


def _failure(task: PrelabelTask, reason: str) -> Failure:
    """The failure of an image of a shared pass (never a volume slice: those run alone)."""
    return Failure(key=task.key, image_id=task.entry.id, file=task.entry.file, reason=reason,
                   sha256=task.entry.sha256)


def _earlier_receipt(ledger: Ledger | ObjectLedger, key: str) -> Receipt | None:
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
    doubt: dict[str, Any] | None = None


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
    timings = Timings(decode=t1 - t0, infer=written.infer_s, write=max(0.0, (t2 - t1) - written.infer_s))
    return _record(settings, task, written, timings, shard)


def _record(settings: PrelabelSettings, task: PrelabelTask, written: _Written, timings: Timings,
            shard: ShardWriter | None) -> Receipt:
    """The receipt of what a task wrote, into the ledger (or, for a stacked image, to its shard)."""
    entry = task.entry
    receipt = Receipt(
        key=task.key, image_id=written.image_id, file=entry.file, sha256=entry.sha256,
        outputs=written.outputs, width=written.width, height=written.height, timings=timings,
        worker=f"{socket.gethostname()}:{os.getpid()}", time=time.time(),
        window=written.window, slices=written.slices, slab=written.slab, z=written.z,
        stack=written.stack, slot=written.slot, doubt=written.doubt,
    )
    if written.pending is not None and shard is not None:
        shard.done(written.pending, task.key, receipt.to_json())
    else:
        settings.store.ledger().write(task.key, receipt.to_json())
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
    image, name, attrs = _decode(resources, settings, task, reached)
    t1 = time.perf_counter()
    return _write_image(resources, settings, task, shard, image, name, attrs, reached.image_id, t1)


def _write_image(resources: PrelabelResources, settings: PrelabelSettings, task: PrelabelTask,
                 shard: ShardWriter | None, image: Any, name: str, attrs: dict[str, Any], image_id: int,
                 t1: float, predicted: Predicted | None = None) -> _Written:
    """A decoded ``(H, W, 3)`` image predicted (unless ``predicted``) and written to its group or slot."""
    entry, part, store = task.entry, task.part, settings.store
    h, w = (int(v) for v in image.shape[:2])
    info = {"id": image_id, "file": name, "path": entry.path, "width": w, "height": h,
            "sha256": entry.sha256, **attrs}
    slot = part if isinstance(part, StackSlot) and shard is not None and (h, w) == shard.image_shape(part.stack) \
        else None
    pending = shard.slot(slot.stack, slot.slot) if slot is not None and shard is not None else None
    # not stacked, or decoded to another size than its header said: a group of its own
    group: Any = pending if pending is not None else store.image_group(image_id, info)
    outputs, infer_s = predict_and_write(resources.predictor, image, group, store, settings.outputs, predicted)
    doubt = record_doubt(resources.predictor.task, group)  # from what was stored: the receipt keeps it
    if isinstance(group, ObjectGroup):  # object storage: every PUT of the image landed before its receipt
        group.flush()
    return _Written(outputs, infer_s, t1, w, h, image_id,
                    z=part.z if isinstance(part, VolumeSlice) else None,
                    stack=slot.stack if slot is not None else None, slot=slot.slot if slot is not None else None,
                    pending=pending, doubt=doubt)


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
