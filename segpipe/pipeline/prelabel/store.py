"""The store of a pre-label run, driver side: created or checked before any work, what ``--resume`` may
skip, scenes' and stacks' arrays laid out before their tasks run, and a replaced store swapped in.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core.tiles import overlap_pixels
from segpipe.errors import InputError, SegpipeError
from segpipe.kernels.prelabel.scene import create_scene_arrays
from segpipe.kernels.prelabel.tasks import Failure, PrelabelTask, SceneBlock, StackSlot, WholeImage
from segpipe.models.ref import ModelRef
from segpipe.pipeline.prelabel.plan import TableTask
from segpipe.pipeline.prelabel.request import PrelabelRequest
from segpipe.storage import outputs
from segpipe.storage.ledger import Ledger, ObjectLedger
from segpipe.storage.location import Location, as_location
from segpipe.storage.packs import gc_paused
from segpipe.storage.raster import RasterSource, check_bands, open_raster
from segpipe.storage.stacks import plan_stacks, slot_attrs, slots_hold
from segpipe.storage.verify import parse_receipt, plan_checks
from segpipe.storage.zarrstore import ZarrStore

#: Images up to this many pixels may be stacked (a shard task holds its images' outputs in memory).
STACK_PIXELS = 1024 * 1024


def request_inputs(req: PrelabelRequest) -> list[str | os.PathLike[str]]:
    """What a run reads: the source and the checkpoint file (a glob counts as its folder; an annotation
    file as its dataset folder too).
    """
    ref = ModelRef(req.model, req.arch)
    classes = [req.classes] if req.classes and Path(req.classes).is_file() else []  # a --classes file is read too
    return [*outputs.dataset_inputs(req.source), *([req.model] if ref.is_checkpoint() else []), *classes]


def check_out(req: PrelabelRequest) -> None:
    """Refuses an ``--out`` over an input or over something segpipe did not make (before the model is read).

    Raises:
        OutputError: naming ``--out``.
    """
    loc = out_location(req)
    if loc is not None:
        outputs.check_store_location(loc, request_inputs(req), option="--out", command="prelabel")
        return
    outputs.check_output(req.out, request_inputs(req), option="--out", command="prelabel", kind="store")


def out_location(req: PrelabelRequest) -> Location | None:
    """``--out`` in object storage (``s3://``, ``gs://``, ``az://``), or None for a local store.

    Raises:
        InputError: an unknown scheme, or a URL without a bucket.
    """
    target = as_location(req.out)
    return target if isinstance(target, Location) else None


def prepare_store(req: PrelabelRequest, attrs: dict[str, Any], cfg_hash: str, *, dry_run: bool = False) -> ZarrStore:
    """Creates the store, or checks that an existing one may be resumed.

    With ``dry_run`` only the checks run (before any cluster starts: a refusal costs nothing). With
    ``overwrite`` an earlier store is not touched here: the new one is created in a staging folder
    beside it (its path is the returned store's) and swapped in by :func:`finish_replacement` once
    complete.

    Raises:
        OutputError: ``--out`` overlaps an input, or is something other than a segpipe store.
        InputError: an existing store that may not be resumed (another config, or no ``--resume``).
    """
    loc = out_location(req)
    if loc is not None:
        return _prepare_object_store(req, loc, attrs, cfg_hash, dry_run=dry_run)
    out = req.out
    plan = outputs.check_output(out, request_inputs(req), option="--out", command="prelabel", kind="store")
    if not plan.replaces:
        return ZarrStore(out) if dry_run else ZarrStore.create(out, attrs)
    if req.overwrite:
        return ZarrStore(out) if dry_run else ZarrStore.create(outputs.begin_staging(plan), attrs)
    _check_resumable(req, ZarrStore.open(out).attrs(), cfg_hash, out)
    return ZarrStore(out)


def _prepare_object_store(req: PrelabelRequest, loc: Location, attrs: dict[str, Any], cfg_hash: str, *,
                          dry_run: bool) -> ZarrStore:
    """:func:`prepare_store` for a store in object storage.

    Object storage has no rename, so ``--overwrite`` cannot build the new store beside the earlier
    one and swap it in: once the workers hold the model (``dry_run`` False), the earlier store's own
    entries are deleted (:func:`~segpipe.storage.outputs.clear_store_location`: nothing segpipe did not
    write) and the new one is written in its place. A run that then fails leaves a partial store of the
    new config, which ``--resume`` continues.
    """
    exists = outputs.check_store_location(loc, request_inputs(req), option="--out", command="prelabel")
    if not exists:
        return ZarrStore(loc.url) if dry_run else ZarrStore.create(loc.url, attrs)
    if req.overwrite:
        if dry_run:
            return ZarrStore(loc.url)
        outputs.clear_store_location(loc, option="--out", command="prelabel")
        return ZarrStore.create(loc.url, attrs)
    _check_resumable(req, ZarrStore.open(loc.url).attrs(), cfg_hash, str(loc))
    return ZarrStore(loc.url)


def _check_resumable(req: PrelabelRequest, existing: dict[str, Any], cfg_hash: str, out: str | Path) -> None:
    """Refuses to continue a store made with another config, or without ``--resume``.

    Raises:
        InputError: naming the store.
    """
    if existing.get("config_hash") != cfg_hash:
        raise InputError(
            "store was made with another model or config; refusing to mix outputs", path=out,
            hint="pass --overwrite for a new run in this store, or choose another --out",
        )
    if not req.resume:
        raise InputError("store exists", path=out, hint="pass --resume to continue it or --overwrite")


@contextmanager
def discard_on_error(staging: list[Path]) -> Iterator[None]:
    """Removes the staging store a failed or interrupted run leaves; the earlier store stays as it was."""
    try:
        yield
    except BaseException:
        for p in staging:
            outputs.discard(p)
        raise


def finish_replacement(staging: Path, req: PrelabelRequest, stopped: bool) -> bool:
    """Swaps the new store in for the earlier one, or keeps the earlier one if the run stopped on an error.

    A run stopped by ``--on-error fail`` is incomplete: replacing a whole store with it would lose the
    earlier run's outputs for nothing, so the earlier store stays and the new one is dropped.

    Returns:
        True when the earlier store was kept (and the new one dropped).

    Raises:
        OutputError: ``--out`` changed into something else while the run went on (nothing replaced).
    """
    if stopped:
        outputs.discard(staging)
        return True
    try:  # checked again: the path may hold something else after a long run
        plan = outputs.check_output(req.out, request_inputs(req), option="--out", command="prelabel", kind="store")
    except BaseException:
        outputs.discard(staging)
        raise
    outputs.install(staging, plan)
    return False


# ------------------------------------------------------------------------------------------- resume


def tasks_to_run(store: ZarrStore, ledger: Ledger | ObjectLedger, planned: list[PrelabelTask]) -> list[PrelabelTask]:
    """The planned tasks without a receipt ``--resume`` may trust (all of them in a new store)."""
    if isinstance(ledger, Ledger) and ledger.empty():
        return planned  # a new store: no set of 100k keys is built to learn that nothing is done
    with gc_paused():  # 100k receipts parsed: see segpipe.storage.packs.gc_paused
        keys = [t.key for t in planned]  # made once (a table row's key is spelled anew each time it is read)
        names = _planned_names(keys, planned)
        planned_keys = set(keys)
        if isinstance(ledger, ObjectLedger):
            done = _trusted_object_receipts(store, ledger, planned_keys, names)
        else:
            done = _trusted_receipts(store, ledger, planned_keys, names)
        done -= _drop_stale_receipts(ledger, done, planned, planned_keys)
        return [t for k, t in zip(keys, planned, strict=True) if k not in done]


def _planned_names(keys: list[str], planned: list[PrelabelTask]) -> dict[str, str]:
    """Key → ``file`` of the planned 2-D images (whose receipt and attrs record the name).

    A task key hashes the config, the id and the content, not the name (existing stores' receipts must
    keep matching), so an entry renamed in the manifest plans the same key: its receipt's ``file`` is
    what tells that the outputs still carry the old name.
    """
    return {k: (t.file() if isinstance(t, TableTask) else t.entry.file)
            for k, t in zip(keys, planned, strict=True) if isinstance(t.part, (WholeImage, StackSlot))}


def _renamed(key: str, recorded: Any, names: dict[str, str]) -> bool:
    """Whether the receipt of ``key`` records another ``file`` than its planned entry names."""
    return key in names and isinstance(recorded, str) and recorded != names[key]


def _trusted_receipts(store: ZarrStore, ledger: Ledger, planned: set[str],
                      names: dict[str, str]) -> set[str]:
    """The keys ``--resume`` may skip: receipts that decode and whose outputs' places hold (no pixels read).

    A receipt that does not decode is not done. Neither is one that the store contradicts
    (:func:`~segpipe.storage.verify.plan_checks` with ``files``): its slot unwritten (``done`` 0) or
    holding another image, its id in two slots, its shard file missing or damaged (then every image of
    that shard), its group or chunk file missing. Such receipts of this run's ``planned`` keys are
    removed here, as ``fsck --repair`` would: their images are redone, and a shard is rewritten whole
    by the task that redoes it (the receipts of images no longer planned stay, for fsck to report).
    Nor is a receipt whose ``file`` is not the name its planned entry now has (``names``): the entry was
    renamed, and its redo writes the receipt, the group's or slot's attributes and so the exported
    names anew.
    """
    checks = plan_checks(store.path, ledger.dir, files=True, names=names)
    redo = {p.name[:-5] for p in checks.redo if p.name[:-5] in planned}
    ledger.remove_many(redo)  # loose files, or lines of a pack (each pack rewritten once)
    return checks.finished - redo


def _trusted_object_receipts(store: ZarrStore, ledger: ObjectLedger, planned: set[str],
                             names: dict[str, str]) -> set[str]:
    """:func:`_trusted_receipts` in object storage: receipts that decode and whose outputs' places hold.

    One listing of ``images/`` tells which arrays exist (their ``zarr.json``); chunks are not listed
    (an all-void chunk is never written, so a missing one proves nothing): ``fsck`` reads them. A
    stacked image's slot must hold its id and be done, and its shard objects' indexes must hold the
    slot (:func:`~segpipe.storage.stacks.slots_hold`). A receipt of a planned key that does not decode
    or whose outputs' places do not hold is removed (redone; a shard is rewritten whole by its task),
    and so is one whose ``file`` its planned entry no longer names (``names``: renamed, redone).
    """
    loc = store.location
    assert loc is not None  # an ObjectLedger belongs to a store in object storage
    arrays = {k for k in loc.list("images") if k.endswith("/zarr.json")}
    done: set[str] = set()
    stacked: dict[str, tuple[int, str, int, list[str]]] = {}
    for key, data in ledger.read_all():
        rec = parse_receipt(data)[0] if data is not None else None
        if rec is not None and _renamed(key, rec.get("file"), names):
            rec = None  # removed below as a planned key that is not done
        place = _stack_place(rec) if rec is not None and rec.get("key", key) == key else None
        if place is not None:
            stacked[key] = place
        elif rec is not None and rec.get("key", key) == key and _arrays_exist(rec, arrays):
            done.add(key)
        elif key in planned:
            ledger.remove(key)
    held = slots_hold(loc, stacked)
    for key in stacked:
        if key in held:
            done.add(key)
        elif key in planned:
            ledger.remove(key)
    return done


def _stack_place(rec: dict[str, Any]) -> tuple[int, str, int, list[str]] | None:
    """``(image id, stack, slot, arrays with a digest)`` of a stacked image's receipt, else None."""
    if "stack" not in rec or "slices" in rec:
        return None
    try:
        return (int(rec["image_id"]), str(rec["stack"]), int(rec["slot"]),
                [name for name, d in dict(rec.get("outputs") or {}).items() if d])
    except (KeyError, TypeError, ValueError):
        return None


def _arrays_exist(rec: dict[str, Any], arrays: set[str]) -> bool:
    """Whether every array a receipt names has its ``zarr.json`` among ``arrays`` (keys of the store)."""
    if "slices" in rec:
        named = [(int(sid), name) for sid, outs in rec["slices"].items() for name, d in outs.items() if d]
    else:
        named = [(int(rec["image_id"]), name) for name, d in rec.get("outputs", {}).items() if d]
    return all(f"images/{i}/{name}/zarr.json" in arrays for i, name in named)


def _drop_stale_receipts(ledger: Ledger | ObjectLedger, done: set[str], planned: list[PrelabelTask],
                         planned_keys: set[str]) -> set[str]:
    """Removes receipts of images that are planned again under another key (their content changed).

    Such a receipt would vouch for outputs its task no longer owns: the image is re-run and rewritten,
    and ``fsck`` would then find the old checksum mismatching. Receipts of images no longer in the
    collection are kept (their outputs are still there).

    Returns:
        The keys whose receipts were removed.
    """
    others = done - planned_keys
    if not others:
        return set()
    ids = {i for t in planned for i in t.image_ids()}
    stale = set()
    for key in others:
        try:
            rec = ledger.read(key)
        except (OSError, ValueError):
            continue
        owned = {int(rec.get("image_id", -1)), *(int(k) for k in rec.get("slices", {}))}
        if owned & ids:
            stale.add(key)
    ledger.remove_many(stale)
    return stale


# ------------------------------------------------------------------------------------------- layout


def _label_dtype(meta: Any) -> Any:
    """The label maps' dtype for the model's category ids: uint8, or uint16 above 254."""
    ids = [int(c.get("id", i)) for i, c in enumerate(meta.categories)]
    return np.uint16 if max(ids, default=0) > 254 else np.uint8


def place_in_stacks(store: ZarrStore, todo: list[PrelabelTask], meta: Any, dims: int,
                    probs: bool) -> list[PrelabelTask]:
    """Gives the plain 2-D images of a semantic run their slots in the store's stacks (driver).

    Returns:
        ``todo`` itself, each stacked image's task given its
        :class:`~segpipe.kernels.prelabel.tasks.StackSlot` part in place: a table row
        (:class:`~segpipe.pipeline.prelabel.plan.TableTask`) records it in its columns, any other task is
        replaced by one with that part. At 100k images a second list of tasks (and the first one's tasks
        kept alive by it) was a fifth of the driver's memory.
    """
    if meta.task != "semantic" or dims != 2:
        return todo
    # In object storage too: a shard object (and its "done" chunk) belongs to the one task that
    # holds all its slots and PUTs it whole, never appended to (plan.batch_tasks: a batch per shard).
    # A table row is its own item: its attributes are made from its entry a chunk at a time, so no
    # entry of the 100k is held while the stacks are planned.
    items = ((t.image_ids()[0], *_size(t), t) for t in todo if _stackable(t))
    # Written whole now (grown past STACK_PIXELS since an earlier run): an old slot of theirs is cleared,
    # or a reader without a receipt's hint (object storage looks for no group first) would find it.
    elsewhere = [t.image_ids()[0] for t in todo if isinstance(t.part, WholeImage) and not _stackable(t)]
    if not elsewhere and not any(_stackable(t) for t in todo):
        return todo
    root = store.location if store.location is not None else store.path
    placed = plan_stacks(root, items, labels_dtype=_label_dtype(meta), n_classes=len(meta.categories), probs=probs,
                         elsewhere=elsewhere, describe=_task_attrs)
    if not placed:
        return todo
    for i, t in enumerate(todo):
        if not isinstance(t.part, WholeImage) or t.image_ids()[0] not in placed:
            continue
        if isinstance(t, TableTask):
            t.place(*placed[t.image_ids()[0]])
        elif t.entry.kind == "image":
            todo[i] = PrelabelTask(t.key, t.entry, StackSlot(*placed[t.entry.id]))
    return todo


def _task_attrs(t: PrelabelTask) -> dict[str, Any]:
    """A stacked image's slot attributes, from its task's entry (built for the moment)."""
    return slot_attrs(t.entry)


def _size(t: PrelabelTask) -> tuple[int, int]:
    """``(height, width)`` of a task's item (a table row's without building its entry)."""
    return t.size() if isinstance(t, TableTask) else (t.entry.height, t.entry.width)


def _stackable(t: PrelabelTask) -> bool:
    if not isinstance(t.part, WholeImage):
        return False
    if not isinstance(t, TableTask) and t.entry.kind != "image":
        return False  # a table row's task is an image's
    h, w = _size(t)
    return 0 < h * w <= STACK_PIXELS


@dataclass(frozen=True)
class ScenesPrepared:
    """The tasks once the scenes are opened and their arrays made.

    Attributes:
        todo: The tasks, each scene block with its opened source and context margin; the blocks of a
            scene that failed are dropped.
        failed: One failure per scene that cannot be opened or does not fit the model.
        unplanned: The block tasks dropped with them.
    """

    todo: list[PrelabelTask]
    failed: list[Failure]
    unplanned: int


def prepare_scenes(store: ZarrStore, todo: list[PrelabelTask], req: PrelabelRequest, meta: Any) -> ScenesPrepared:
    """Opens each scene of ``todo`` once and creates its arrays, before its block tasks run (driver).

    A scene that cannot be opened or does not fit the model fails alone (one line in the report),
    like an unreadable image: its block tasks are not run, every other item is.
    """
    scenes = {t.entry.id: t.entry for t in todo if isinstance(t.part, SceneBlock)}
    if not scenes:
        return ScenesPrepared(todo, [], 0)
    lut_dtype = _label_dtype(meta)
    channels = len(meta.mean)  # input channels of the model (its normalisation has one per channel)
    sources: dict[int, RasterSource] = {}
    failed: list[Failure] = []
    for e in scenes.values():
        try:
            src = _open_scene(e.path, req, channels)
        except SegpipeError as err:
            failed.append(Failure(key="", image_id=e.id, file=e.file, reason=str(err)))
            continue
        sources[e.id] = src
        create_scene_arrays(store, e, src, len(meta.categories), lut_dtype, req.probs, req.resume)
    kept = [t for t in todo if not isinstance(t.part, SceneBlock) or t.entry.id in sources]
    tile = req.tile or int(meta.tile_size[-1])
    ov = req.overlap if req.overlap is not None else meta.tile_overlap
    margin = overlap_pixels(tile, float(ov))  # a fraction of the tile (checked by check_tiling)
    blocks = [dataclasses.replace(t, part=dataclasses.replace(t.part, source=sources[t.entry.id], margin=margin))
              if isinstance(t.part, SceneBlock) else t for t in kept]
    # the block tasks of failed scenes: each scene counts once
    return ScenesPrepared(blocks, failed, len(todo) - len(kept))


def _open_scene(path: str, req: PrelabelRequest, channels: int) -> RasterSource:
    """The scene, opened with the request's bands, stretch and percentiles, checked against the model.

    Raises:
        SegpipeError: it cannot be opened, or its bands do not fit the model's input channels.
    """
    kw: dict[str, Any] = {"stretch": req.stretch}
    if req.bands:
        kw["bands"] = req.bands
    if req.percentiles:
        kw["percentiles"] = req.percentiles
    src = open_raster(path, **kw)
    check_bands(src, channels)
    return src
