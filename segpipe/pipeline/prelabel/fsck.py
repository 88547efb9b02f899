"""``segpipe fsck``: every receipt of a store against its outputs, the stacks against the receipts, orphans.

A receipt proves its outputs were complete when written; fsck reads them back and compares digests,
naming the chunk or shard file that is missing, damaged or differs. Also the run reports of a store.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import InputError, SegpipeError
from segpipe.pipeline.prelabel.report import AttrsFinding, BadReceipt, FsckReport, StoreProblem
from segpipe.storage import outputs
from segpipe.storage.ledger import Ledger, ObjectLedger, orphan_partials
from segpipe.storage.location import Location, as_location, describe_storage_error
from segpipe.storage.manifest import ManifestEntry
from segpipe.storage.packs import LedgerContents, gc_paused, iter_local_ledger
from segpipe.storage.stacks import (
    SHARD,
    StackedImage,
    attrs_json,
    read_stack_slots,
    shard_key,
    slot_attrs_json,
    stack_name,
)
from segpipe.storage.verify import (
    AttrsFault,
    Receipt,
    ShardReader,
    StoreChecks,
    check_metadata,
    checks_with_kind,
    describe_failure,
    parse_receipt,
    plan_object_checks,
    plan_receipt_checks,
    read_stack_attrs,
    repair_stack_attrs,
    shard_file,
    slim_receipt,
)
from segpipe.storage.zarrstore import ZarrStore, digest_matches


def fsck(path: Path | str, repair: bool = False) -> dict[str, Any]:
    """Checks a store: every receipt decodes and its outputs match their checksums; orphans listed.

    The report as a JSON object (:class:`~segpipe.pipeline.prelabel.report.FsckReport`); see
    :func:`check_store`.

    Returns:
        ``{"store", "receipts", "ok", "bad": [...], "problems": [...], "orphans": [...], "repaired"}``;
        each bad receipt is ``{"key", "file", "problem"}``, each problem ``{"file", "problem"}``.
    """
    return check_store(path, repair).model_dump(mode="json")


@dataclass
class _Findings:
    """What the checks found so far."""

    receipts: int = 0
    ok: int = 0
    bad: list[BadReceipt] = field(default_factory=list)
    problems: list[StoreProblem] = field(default_factory=list)
    attrs: list[AttrsFault] = field(default_factory=list)


def check_store(path: Path | str, repair: bool = False) -> FsckReport:
    """Checks a store: every receipt decodes and its outputs match their checksums; orphans listed.

    Beyond the checksums, the stacks must agree with the receipts (:func:`~segpipe.storage.verify.plan_checks`):
    a receipt whose slot holds another image or is not written (``done`` 0) is bad; a slot id found
    twice, or a finished slot that no receipt vouches for, is a problem. Every slot's ``attrs`` must
    name the slot's id and agree with its receipt (``file``, ``sha256``, size), and be readable.

    Args:
        path: The store.
        repair: Remove orphan ``*.partial`` files and bad receipts (so that ``--resume`` redoes those
            images), and the staging folders killed runs left beside the store
            (:func:`~segpipe.storage.outputs.clean_leftovers`; they are listed as orphans); rewrite
            wrong or lost ``attrs`` where they can be rebuilt exactly, else clear their slots
            (:func:`_repair_attrs`). Problems are not repaired.

    Raises:
        InputError: not a segpipe store, or a corrupt ``zarr.json`` of the root or a stack (named).
    """
    loc = as_location(path)
    if isinstance(loc, Location):
        return _check_object_store(loc, repair)
    check_metadata(Path(path))  # a corrupt zarr.json of the root or a stack: one line naming it
    store = ZarrStore.open(path)
    ledger = Ledger(store.private)
    found = _Findings()
    with gc_paused():  # 100k receipts parsed: see segpipe.storage.packs.gc_paused
        parsed = _check_receipts(store, ledger.dir, found)
        _check_places(store, ledger, parsed, found)
    orphans = [str(o) for o in orphan_partials(store.path)]
    left = outputs.leftovers(path)  # staging / set-aside folders of killed runs beside the store
    attrs = [AttrsFinding(file=f.path, problem=f.problem) for f in found.attrs]
    repaired = 0
    if repair:
        attrs = _repair_attrs(store, Path(path), found)
        repaired = _repair(Path(path), ledger, orphans, found.bad) + sum(a.repair != "kept" for a in attrs)
    orphans += [str(p) for p in left]
    return FsckReport(store=str(path), receipts=found.receipts, ok=found.ok, bad=found.bad, problems=found.problems,
                      orphans=orphans, attrs=attrs, repaired=repaired)


def _open_object_ledger(loc: Location) -> tuple[ZarrStore, ObjectLedger, LedgerContents]:
    """The store in object storage, its ledger, and the ledger's contents (loose and packed receipts).

    Raises:
        InputError: the bucket or store cannot be read (no bucket, no access, no network).
    """
    try:
        store = ZarrStore.open(loc.url)
        ledger = store.ledger()
        assert isinstance(ledger, ObjectLedger)  # a store in object storage keeps its receipts there
        return store, ledger, ledger.contents()  # loose and packed (a packed receipt is named by its pack)
    except SegpipeError:
        raise
    except Exception as e:  # obstore's errors: no bucket, no access, no network
        raise InputError(f"cannot be read: {describe_storage_error(e)}", path=str(loc)) from None


def _object_findings(store: ZarrStore, loc: Location, ledger: ObjectLedger, contents: LedgerContents,
                     receipts: list[tuple[str, bytes | None]]) -> _Findings:
    """Every receipt of a store in object storage checked against its arrays (each shard read once)."""
    found = _Findings()
    parsed = [(key, *(parse_receipt(data) if data is not None else (None, "was removed while fsck ran")))
              for key, data in receipts]
    problems: dict[str, str] = {}
    blocks = _ShardBlocks()
    for i in sorted(range(len(parsed)), key=lambda i: _place(parsed[i][1])):  # each shard read once
        key, rec, _ = parsed[i]
        if rec is not None:
            try:
                _check_object_receipt(store, loc, rec, blocks)
            except _Mismatch as e:
                problems[key] = f"{e.path}: {e.what}"
    for key, rec, why in parsed:
        found.receipts += 1
        where = ledger.key_url(key) if key in contents.loose else contents.receipts[key][1]
        if rec is None:
            found.bad.append(BadReceipt(key=key, file=where, problem=f"receipt {why}"))
        elif key in problems:
            found.bad.append(BadReceipt(key=key, file=where, problem=problems[key]))
        else:
            found.ok += 1
    for pack, line, fault in contents.faults:  # as in a local store (_check_receipts)
        found.receipts += line is not None
        found.bad.append(BadReceipt(key="", file=pack, problem=f"line {line}: receipt {fault}" if line is not None
                                    else f"packed ledger {fault}"))
    return found


def _check_object_store(loc: Location, repair: bool) -> FsckReport:
    """:func:`check_store` of a store in object storage: every receipt against its arrays.

    Object storage has no partial files (a PUT is whole or absent) and no staging folders, so there
    are no orphans. The stacks must agree with the receipts, as in a local store. ``repair`` removes
    bad receipts, so that ``--resume`` redoes their images.
    """
    store, ledger, contents = _open_object_ledger(loc)
    receipts: list[tuple[str, bytes | None]] = [(k, d) for k, d, _ in contents.sorted_items()]
    found = _object_findings(store, loc, ledger, contents, receipts)
    _check_object_places(loc, ledger, receipts, found)
    attrs = [AttrsFinding(file=f.path, problem=f.problem) for f in found.attrs]
    repaired = 0
    if repair:
        attrs = _repair_attrs(store, loc, found)
        ledger.remove_many(b.key for b in found.bad if b.key)
        for pack in sorted({b.file for b in found.bad if not b.key}):
            ledger.repair_pack(pack)
        repaired = len(found.bad) + sum(a.repair != "kept" for a in attrs)
    return FsckReport(store=str(loc), receipts=found.receipts, ok=found.ok, bad=found.bad, problems=found.problems,
                      orphans=[], attrs=attrs, repaired=repaired)


def _check_object_receipt(store: ZarrStore, loc: Location, rec: dict[str, Any],
                          blocks: _ShardBlocks | None = None) -> None:
    """:func:`_check_receipt` in object storage: the arrays named by their URLs (a stacked image's by
    its shard object, read from ``blocks`` when given).

    Raises:
        _Mismatch: naming the array or shard object that is missing, cannot be decoded, or differs.
    """
    hint = None
    if "slices" in rec:
        named = [(int(sid), name, digest, f"slice {sid} {name}", None)
                 for sid, outs in rec["slices"].items() for name, digest in outs.items()]
    else:
        win = rec.get("window")
        named = [(int(rec["image_id"]), name, digest, name, win) for name, digest in rec.get("outputs", {}).items()]
        if "stack" in rec:
            hint = (str(rec["stack"]), int(rec["slot"]))
    for image_id, name, digest, what, win in named:
        if not digest:
            continue
        stacked = hint is not None and name in ("labels", "probs")
        key = shard_key(*hint, name) if hint is not None and stacked else f"images/{image_id}/{name}"
        region = (..., slice(win[0], win[1]), slice(win[2], win[3])) if win else ...
        try:
            group = store.group(image_id, hint)
            arr = _slot_from_block(group, name, blocks) if blocks is not None and stacked else None
            if arr is None:
                arr = np.asarray(group[name][region])
        except Exception:  # zarr's own errors quote raw bytes: named in plain words
            if stacked:
                raise _Mismatch(loc.key_url(key), f"{what}: missing shard object" if not loc.exists(key)
                                else f"{what}: damaged shard object (cannot be decoded)") from None
            missing = not loc.exists(f"{key}/zarr.json")
            raise _Mismatch(loc.key_url(key), f"{what}: its array is missing" if missing
                            else f"{what}: damaged chunk (cannot be decoded)") from None
        if digest_matches(arr.astype(str) if arr.dtype.kind in ("U", "T", "O") else arr, digest):
            continue
        if stacked:  # zarr reads a missing shard as fill values
            raise _Mismatch(loc.key_url(key), f"{what}: missing shard object" if not loc.exists(key)
                            else f"{what}: checksum mismatch (the shard object differs from its receipt)")
        raise _Mismatch(loc.key_url(key), f"{what}: checksum mismatch (a chunk differs from its receipt, "
                                          "or one is missing)")


def _place_findings(checks: StoreChecks, found: _Findings, receipt_file: Callable[[str, Any], str]) -> None:
    """Adds what the stacks say against the receipts to ``found``: a receipt whose slot is wrong turns
    bad (it was counted ok for its checksums), other slot faults are store problems.

    Args:
        checks: :func:`plan_checks` or :func:`plan_object_checks` of the store.
        found: The findings so far (receipts already checked against their digests).
        receipt_file: How a bad receipt is named, from its key and its reference.
    """
    flagged = {b.key for b in found.bad}
    for image_id, c in checks_with_kind(checks):  # the others hold: nothing to add
        vouch = checks.receipt_of.get(image_id)
        key = vouch.name[:-5] if vouch is not None else None
        if c.kind == "damaged" and key is not None:
            if key not in flagged:  # counted ok above: its checksums hold, its place does not
                flagged.add(key)
                found.ok -= 1
                found.bad.append(BadReceipt(key=key, file=receipt_file(key, vouch),
                                            problem=f"image {image_id}: {c.path}: {c.problem}"))
        elif c.kind in ("duplicate", "unvouched", "damaged"):
            found.problems.append(StoreProblem(file=str(c.path), problem=f"image {image_id}: {c.problem}"))


def _check_object_places(loc: Location, ledger: ObjectLedger, receipts: list[tuple[str, bytes | None]],
                         found: _Findings) -> None:
    """:func:`_check_places` in object storage: the stacks agree with the receipts."""
    try:
        checks = plan_object_checks(loc, receipts, attrs=True)
    except SegpipeError as e:  # a stack's ids or done array cannot be read: named
        found.problems.append(StoreProblem(file=e.path or str(loc), problem=e.message))
        return
    _place_findings(checks, found, lambda key, vouch: ledger.key_url(key))
    found.attrs = checks.attrs


#: A receipt as fsck reads it: ``(key, where, loose, receipt or None, why not)``.
_Parsed = tuple[str, str, bool, Receipt | None, str | None]


def _check_receipts(store: ZarrStore, ledger_dir: Path, found: _Findings) -> list[_Parsed]:
    """Every receipt decodes, and its outputs match their digests.

    The receipts are checked in stack-slot order, so that each shard of a stack is read once for its
    slots (:class:`_ShardBlocks`) rather than once per receipt; findings are listed in the ledger's order.
    Receipts in packs are checked as loose ones are (a bad one names its pack); a damaged line of a
    pack, or a truncated pack, is a bad receipt without a key (``--repair`` rewrites the pack with
    the receipts it still holds whole). The ledger is streamed and each receipt kept as the checks
    need it (:func:`~segpipe.storage.verify.slim_receipt`): at 100k receipts the ledger read whole
    and decoded into dicts was 400 MB.

    Returns:
        ``(key, where, loose, receipt or None, why not)`` of every receipt, by key.
    """
    faults: list[tuple[str, int | None, str]] = []
    latest: dict[str, tuple[str, bool, Receipt | None, str | None]] = {}
    for key, data, where, loose in iter_local_ledger(ledger_dir, faults):
        decoded, why = parse_receipt(data)
        latest[key] = (where, loose, slim_receipt(key, decoded) if decoded is not None else None, why)
    parsed: list[_Parsed] = [(key, *latest[key]) for key in sorted(latest)]
    del latest
    problems: list[str | None] = [None] * len(parsed)
    blocks = _ShardBlocks()
    for i in sorted(range(len(parsed)), key=lambda i: _place(parsed[i][3])):
        rec = parsed[i][3]
        if rec is None:
            continue
        try:
            _check_receipt(store, rec, blocks)
        except _Mismatch as e:
            problems[i] = f"{e.path}: {e.what}"
    for (key, where, loose, rec, why), problem in zip(parsed, problems, strict=True):
        found.receipts += 1
        packed = not loose
        if rec is None:
            found.bad.append(BadReceipt(key=key, file=where, problem=f"receipt {key} {why}" if packed
                                        else f"receipt {why}"))
        elif problem is None:
            found.ok += 1
        else:
            found.bad.append(BadReceipt(key=key, file=where, problem=f"receipt {key}: {problem}" if packed
                                        else problem))
    for pack, line, why in faults:
        found.receipts += line is not None  # a damaged line held a receipt; a truncated pack's lost ones are unknown
        found.bad.append(BadReceipt(key="", file=pack, problem=f"line {line}: receipt {why}" if line is not None
                                    else f"packed ledger {why}"))
    return parsed


def _place(rec: Mapping[str, Any] | None) -> tuple[str, int]:
    """Where a receipt's outputs lie, for the order of the checks: ``(stack, slot)`` (others first)."""
    if rec is None or "stack" not in rec:
        return "", 0
    try:
        return str(rec["stack"]), int(rec["slot"])
    except (TypeError, ValueError):
        return "", 0


#: A shard is read whole for its slots only up to this size (a shard of large ``probs`` is read slot by slot).
SHARD_BLOCK_BYTES = 256 << 20


class _ShardBlocks:
    """The shard last read whole, per array: the slots of a shard read from one decoded block.

    A block that cannot be read whole (a damaged inner chunk, a slot past the array) is not kept: its
    slots are then read one by one, so each slot's own fault is found and named as before.
    """

    def __init__(self) -> None:
        self._key: tuple[int, str, int] | None = None
        self._block: np.ndarray | None = None
        self.files = ShardReader()  # the fast path: shards decoded from their files

    def slot(self, arr: Any, name: str, slot: int) -> np.ndarray | None:
        """``arr[slot]`` from its shard's block (None: read the slot alone)."""
        n = int(arr.shape[0])
        if not 0 <= slot < n or SHARD * int(np.prod(arr.shape[1:])) * arr.dtype.itemsize > SHARD_BLOCK_BYTES:
            return None
        lo = slot - slot % SHARD
        key = (id(arr), name, lo)
        if key != self._key:
            self._key, self._block = key, None
            try:
                self._block = np.asarray(arr[lo:min(lo + SHARD, n)])
            except Exception:  # read slot by slot: the fault is named per slot by _read_region
                self._block = None
        return None if self._block is None else self._block[slot - lo]


def _check_places(store: ZarrStore, ledger: Ledger, parsed: list[_Parsed], found: _Findings) -> None:
    """The stacks agree with the receipts: a receipt whose slot is wrong is bad, other slot faults problems.

    The receipts are those :func:`_check_receipts` read and decoded (not read a second time).
    """
    good = [rec for _, _, _, rec, _ in parsed if rec is not None]
    unreadable = [(where, str(why)) for _, where, _, rec, why in parsed if rec is None]
    try:
        checks = plan_receipt_checks(store.path, ledger.dir, good, unreadable, attrs=True)
    except SegpipeError as e:  # a stack's ids or done array cannot be read: named
        found.problems.append(StoreProblem(file=e.path or str(store.path), problem=e.message))
        return
    del good
    keys = [key for key, *_ in parsed]  # sorted: a bad receipt's file found by bisection, not a dict of 100k

    def where(key: str, vouch: Any) -> str:
        i = bisect.bisect_left(keys, key)
        return parsed[i][1] if i < len(keys) and keys[i] == key else str(vouch)

    _place_findings(checks, found, where)
    found.attrs = checks.attrs


def _repair(path: Path, ledger: Ledger, orphans: list[str], bad: list[BadReceipt]) -> int:
    """Removes orphans, bad receipts (loose files, or lines of a pack) and killed runs' staging folders,
    and rewrites damaged packs with the receipts they still hold whole; returns how many.
    """
    repaired = 0
    for o in orphans:
        Path(o).unlink(missing_ok=True)
        repaired += 1
    ledger.remove_many(b.key for b in bad if b.key)
    for pack in sorted({b.file for b in bad if not b.key}):
        ledger.repair_pack(pack)
    repaired += len(bad)
    return repaired + len(outputs.clean_leftovers(outputs.resolved(path)))


#: Slots whose ``attrs`` (not at fault) are rebuilt from the manifest to prove the recipe first.
_RECIPE_SAMPLE = 64

#: The keys of a slot's ``attrs`` as the driver writes them (:func:`~segpipe.storage.stacks.slot_attrs`).
_ATTRS_KEYS = frozenset({"id", "file", "path", "width", "height", "sha256"})


@dataclass
class _StoreManifest:
    """The store's ``manifest.jsonl`` as far as it reads: the entries wanted, and why it rebuilds nothing.

    Attributes:
        entries: Image id → its entry (the ids asked for that a line decodes for).
        state: ``""`` when the file was read, else what is wrong with it (for the findings).
    """

    entries: dict[int, ManifestEntry]
    state: str = ""

    def why_not(self, image_id: int) -> str:
        """Why the manifest rebuilds nothing for ``image_id``, in words."""
        return self.state or f"the store's manifest.jsonl has no usable entry for image {image_id}"


@dataclass
class _SlotsSeen:
    """What the stacks at fault hold: sound slots (to prove a recipe) and the current attrs of faulty ones."""

    sound: list[tuple[int, str]] = field(default_factory=list)
    current: dict[tuple[str, int], str | None] = field(default_factory=dict)


def _read_slots(root: Path | Location, faults: list[AttrsFault]) -> _SlotsSeen:
    """The sound slots (up to :data:`_RECIPE_SAMPLE` a stack) and the attrs strings of the faulty ones."""
    at_fault = {(f.stack, f.slot) for f in faults}
    slots = read_stack_slots(root)  # read by the checks already: no error left to meet here
    seen = _SlotsSeen()
    for name in sorted({f.stack for f in faults}):
        ids = [int(i) for i in slots[name][0].tolist()] if name in slots else []
        values, _, _ = read_stack_attrs(root, name, len(ids))
        seen.sound += [(image_id, text) for j, (image_id, text) in enumerate(zip(ids, values, strict=True))
                       if image_id >= 0 and text and (name, j) not in at_fault][:_RECIPE_SAMPLE]
        seen.current.update({(name, j): values[j] for n, j in at_fault if n == name and j < len(values)})
    return seen


def _repair_attrs(store: ZarrStore, root: Path | Location, found: _Findings) -> list[AttrsFinding]:
    """Mends the ``attrs`` of the slots at fault where they can be rebuilt exactly; never drops vouched labels.

    The driver wrote each slot's attributes from the image's manifest entry
    (:func:`~segpipe.storage.stacks.slot_attrs_json`). A slot's are rebuilt from the store's
    ``manifest.jsonl`` when its entry is an image of the stack's size and, for a finished slot, names
    the file and content (``sha256``) its receipt does; and only if the same recipe gives back, byte
    for byte, the attributes of up to :data:`_RECIPE_SAMPLE` sound slots of the same stacks (a store
    whose attributes were written otherwise is not rewritten on a guess). A slot its receipt vouches
    for is otherwise rebuilt from the receipt (``file``, ``sha256``, size; ``path`` from the slot's
    attributes when they still describe that image, else from the manifest), and left as it is,
    reported ``not repairable``, when that cannot be done exactly: a missing, truncated or garbled
    manifest (``--resume --limit N`` writes N entries) must never cost labels a receipt vouches for.
    A slot no receipt vouches for holds no labels anyone relies on: it is cleared (``ids`` -1,
    ``done`` 0) and the next ``--resume`` gives its image a fresh slot.

    Args:
        store: The store.
        root: Its folder, or its place in object storage.
        found: The findings (:attr:`_Findings.attrs` are mended).

    Returns:
        One finding per slot, with what was done (``rewrote``, ``cleared`` or ``kept``).
    """
    faults = found.attrs
    if not faults:
        return []
    seen = _read_slots(root, faults)
    manifest = _manifest_entries(store, {f.image_id for f in faults} | {i for i, _ in seen.sound})
    # a sound slot whose image left the manifest (no longer in the source) proves nothing either way
    recipe_holds = all(slot_attrs_json(manifest.entries[i]) == text for i, text in seen.sound
                       if i in manifest.entries)
    rewrite: dict[tuple[str, int], str] = {}
    clear: list[tuple[str, int]] = []
    out: list[AttrsFinding] = []
    for f in faults:
        text = _from_manifest(f, manifest) if recipe_holds else None
        if text is None and f.receipt is not None:
            text = _from_receipt(f, seen, manifest)
        if text is not None:
            rewrite[(f.stack, f.slot)] = text
            out.append(AttrsFinding(file=f.path, problem=f.problem, repair="rewrote"))
        elif f.receipt is not None:
            why = f"{f.problem}; not repairable: {_why_kept(f, seen, manifest, recipe_holds)} (left as it is)"
            out.append(AttrsFinding(file=f.path, problem=why, repair="kept"))
        else:
            clear.append((f.stack, f.slot))
            why = f"{f.problem} (no receipt vouches for it; {manifest.why_not(f.image_id)})"
            out.append(AttrsFinding(file=f.path, problem=why, repair="cleared"))
    repair_stack_attrs(root, rewrite, clear)
    return out


def _from_manifest(f: AttrsFault, manifest: _StoreManifest) -> str | None:
    """The slot's attrs rebuilt from its manifest entry when it is that image exactly, else None."""
    e = manifest.entries.get(f.image_id)
    if e is None or e.kind != "image" or f.stack != stack_name(e.height, e.width):
        return None
    if not all(getattr(e, k) == v for k, v in f.vouched if k in ("file", "sha256", "width", "height")):
        return None
    return slot_attrs_json(e)


def _from_receipt(f: AttrsFault, seen: _SlotsSeen, manifest: _StoreManifest) -> str | None:
    """The slot's attrs rebuilt from its receipt (``path`` from elsewhere) when exact, else None.

    Exact means: the receipt records every field but ``path``, the image is of the stack's size, the
    sound slots of these stacks hold the driver's keys (a store written otherwise is not rewritten on
    a guess), and a ``path`` is known for this very image: from the slot's current attrs when they
    still name its id and content, else from its manifest entry.
    """
    v = dict(f.vouched)
    if not all(k in v for k in ("file", "sha256", "width", "height")):
        return None
    if f.stack != stack_name(v["height"], v["width"]) or not _keys_hold(seen):
        return None
    path = _current_path(f, seen.current.get((f.stack, f.slot)), v["sha256"])
    if path is None and f.image_id in manifest.entries:
        path = manifest.entries[f.image_id].path
    if not path:
        return None
    return attrs_json({"id": f.image_id, "file": v["file"], "path": path, "width": v["width"],
                       "height": v["height"], "sha256": v["sha256"]})


def _keys_hold(seen: _SlotsSeen) -> bool:
    """Whether the sound slots' attrs have exactly the driver's keys (vacuously, when none is sound)."""
    for _, text in seen.sound:
        try:
            d = json.loads(text)
        except ValueError:
            return False
        if not isinstance(d, dict) or set(d) != _ATTRS_KEYS:
            return False
    return True


def _current_path(f: AttrsFault, text: str | None, sha256: str) -> str | None:
    """The ``path`` in a slot's current attrs, if they decode and still name its image and content."""
    try:
        d = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(d, dict) or d.get("id") != f.image_id or d.get("sha256") != sha256:
        return None
    path = d.get("path")
    return path if isinstance(path, str) and path else None


def _why_kept(f: AttrsFault, seen: _SlotsSeen, manifest: _StoreManifest, recipe_holds: bool) -> str:
    """Why a vouched slot's attrs could not be rebuilt exactly, in words."""
    v = dict(f.vouched)
    if not all(k in v for k in ("file", "sha256", "width", "height")):
        return "its receipt does not record file, sha256, width and height"
    if not _keys_hold(seen) or not recipe_holds:
        return "the other slots' attrs were written otherwise than this version writes them"
    return f"no path is known for image {f.image_id} ({manifest.why_not(f.image_id)})"


def _manifest_entries(store: ZarrStore, wanted: set[int]) -> _StoreManifest:
    """The store's manifest entries of the ``wanted`` image ids, and what is wrong with the file if anything."""
    try:
        data = store.read_private("manifest.jsonl")
    except FileNotFoundError:
        return _StoreManifest({}, "the store's manifest.jsonl is missing")
    except OSError as e:
        return _StoreManifest({}, f"the store's manifest.jsonl cannot be read ({e.strerror or e})")
    out: dict[int, ManifestEntry] = {}
    damaged = read = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            read += 1
            if isinstance(d, dict) and d.get("id") in wanted:
                out[int(d["id"])] = ManifestEntry(**d)
        except (ValueError, TypeError):  # a damaged line rebuilds nothing
            damaged += 1
    if damaged and not read:
        return _StoreManifest(out, "the store's manifest.jsonl is unreadable (no line of it decodes)")
    return _StoreManifest(out)


class _Mismatch(Exception):
    """An output of a receipt that does not hold: the file concerned and what is wrong, in plain words."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(what)
        self.path, self.what = path, what


def _check_receipt(store: ZarrStore, rec: Mapping[str, Any], blocks: _ShardBlocks | None = None) -> None:
    """Reads a receipt's outputs and compares their digests (a stacked slot from ``blocks`` if given).

    Raises:
        _Mismatch: naming the chunk or shard file (or array folder) that is missing, damaged or differs.
    """
    if "slices" in rec:  # a slab of a volume: its own slices
        _check_slices(store, rec["slices"])
        return
    image_id = int(rec["image_id"])
    hint = (str(rec["stack"]), int(rec["slot"])) if "stack" in rec else None
    if hint is not None and blocks is not None and _stacked_outputs_hold(store, image_id, hint, rec, blocks.files):
        return
    g = _open_group(store, image_id, hint,
                    store.path / "stacks" / hint[0] if hint else store.path / "images" / str(image_id))
    win = rec.get("window")
    for name, digest in rec.get("outputs", {}).items():
        if not digest:
            continue
        shard = hint is not None and name in ("labels", "probs")
        where = (shard_file(store.path, *hint, name) if hint is not None and shard
                 else store.path / "images" / str(image_id) / name)
        # a block of a scene: its digest covers its core region only
        region = (..., slice(win[0], win[1]), slice(win[2], win[3])) if win else ...
        _check_array(where, g, name, region, digest, name, shard,
                     blocks if shard and region is ... and hint is not None else None)


def _stacked_outputs_hold(store: ZarrStore, image_id: int, hint: tuple[str, int], rec: Mapping[str, Any],
                          files: ShardReader) -> bool:
    """Whether a stacked image's outputs match their digests, read straight from their shard files.

    The common case, and the fast path: True ends the check. False (an output that is not stacked,
    a shard file zarr-python must read, a digest that differs) sends the receipt through the checks
    that name the fault.
    """
    outputs = {name: d for name, d in dict(rec.get("outputs") or {}).items() if d}
    if not outputs or any(name not in ("labels", "probs") for name in outputs) or rec.get("window"):
        return False
    if os.path.isfile(os.path.join(store.path, "images", str(image_id), "zarr.json")):
        return False  # a group of its own is read first (ZarrStore.group): checked there
    base = os.path.join(store.path, "stacks", hint[0])
    for name, digest in outputs.items():
        arr = files.slot(os.path.join(base, name), hint[1])
        if arr is None or not digest_matches(arr, digest):
            return False
    return True


def _check_slices(store: ZarrStore, slices: dict[str, dict[str, str]]) -> None:
    for sid, outs in slices.items():
        folder = store.path / "images" / str(int(sid))
        sg = _open_group(store, int(sid), None, folder)
        for name, digest in outs.items():
            _check_array(folder / name, sg, name, ..., digest, f"slice {sid} {name}")


def _open_group(store: ZarrStore, image_id: int, hint: tuple[str, int] | None, where: Path) -> Any:
    """The image's group (read-only), or a mismatch naming ``where``."""
    try:
        return store.group(image_id, hint)
    except Exception as e:
        bad_file, why = describe_failure(where, e)
        why = why.split(" (")[0] if "Error" in why else why  # no exception type or raw bytes in the line
        raise _Mismatch(bad_file, "its group is missing" if not where.exists() else why) from None


def _check_array(where: Path, group: Any, name: str, region: Any, digest: str, what: str,
                 shard: bool = False, blocks: _ShardBlocks | None = None) -> None:
    """``group[name][region]`` matches ``digest``, or a mismatch naming the file at fault."""
    arr = _slot_from_block(group, name, blocks) if blocks is not None else None
    if arr is None:
        arr = _read_region(where, group, name, region, what, shard)
    # via object: numpy casts its variable-width StringDType (zarr 3's strings, kind "T") to no unsized str
    if digest_matches(arr.astype(object).astype(str) if arr.dtype.kind in ("U", "T", "O") else arr, digest):
        return
    if shard or not where.is_dir():
        why = ("missing shard file" if shard and not where.exists()
               else "checksum mismatch (the file differs from its receipt)")
        raise _Mismatch(where, f"{what}: {why}")
    has_chunk = any(f != "zarr.json" and ".partial" not in f for _, _, fs in os.walk(where) for f in fs)
    raise _Mismatch(where, f"{what}: " + ("checksum mismatch (a chunk file differs from its receipt, or one "
                                          "is missing)" if has_chunk else "missing chunk file"))


def _slot_from_block(group: Any, name: str, blocks: _ShardBlocks) -> np.ndarray | None:
    """A stacked image's whole array ``name`` from its shard's block (None: not stacked, or not readable whole)."""
    if not isinstance(group, StackedImage) or name not in group:
        return None
    try:
        view = group[name]
    except Exception:  # the stack's array cannot be opened: _read_region names why
        return None
    return blocks.slot(view._arr, name, group.slot)


def _read_region(where: Path, group: Any, name: str, region: Any, what: str, shard: bool) -> np.ndarray:
    """Reads ``group[name][region]``; an array that cannot be decoded is a mismatch in plain words."""
    try:
        return np.asarray(group[name][region])
    except Exception as e:  # zarr's and numcodecs' own errors quote raw bytes: named in plain words
        if shard:
            raise _Mismatch(where, f"{what}: missing shard file" if not where.exists()
                            else f"{what}: damaged shard file (cannot be decoded)") from None
        if not where.is_dir():
            raise _Mismatch(where, f"{what}: its array is missing") from None
        bad_file, _ = describe_failure(where, e)
        raise _Mismatch(bad_file, f"{what}: damaged chunk file (cannot be decoded)") from None


def read_runs(path: Path | str) -> Iterator[dict[str, Any]]:
    """The run reports of a store, oldest first (as written: see :class:`~.report.PrelabelReport`)."""
    loc = as_location(path)
    if isinstance(loc, Location):
        store = ZarrStore(loc.url)
        for key in store.private_keys("runs"):
            if key.endswith(".json"):
                yield json.loads(store.read_private(key))
        return
    runs = Path(path) / ".segpipe" / "runs"
    if runs.exists():
        for p in sorted(runs.glob("*.json")):
            yield json.loads(p.read_text(encoding="utf-8"))
