"""A durable ledger of per-task receipts: what resume and fsck trust.

Zarr attributes lose keys under concurrent updates, and an all-background chunk is never written, so
neither can record progress. Each finished task writes one small JSON receipt atomically (write to a
temporary name, fsync, rename) *after* its outputs are complete; a receipt therefore proves its outputs
exist and lets ``fsck`` check them against their checksums.

At the end of a large run the driver packs the loose receipts into one checksummed file per run
(:meth:`Ledger.compact`, :mod:`segpipe.storage.packs`) and only then deletes them: one file to read
instead of 100k for ``--resume`` and ``fsck``. Readers see loose and packed receipts alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from segpipe.storage.atomic import write_bytes_atomic, write_json_atomic
from segpipe.storage.location import Location
from segpipe.storage.packs import (
    HEADER_BYTES,
    PACK_SUFFIX,
    PACKS,
    LedgerContents,
    PackedReceipts,
    decode_pack,
    encode_pack,
    line_digest,
    loose_names,
    pack_header,
    pack_line,
    pack_paths,
    read_local_ledger,
    read_local_packs,
)
from segpipe.storage.paths import fsync_dir
from segpipe.storage.stacks import _read_files
from segpipe.storage.verify import parse_receipt

#: A run packs its ledger's loose receipts at its end once there are this many (fewer stay loose files:
#: reading them costs little, and one file per task is the easiest ledger to look into).
PACK_MIN = 2000


def _packable(key: str, data: bytes | None) -> bool:
    """Whether a loose receipt may be packed: it decodes as a finished task's, under its own key
    (anything else stays a loose file, for fsck to name and ``--resume`` to redo).
    """
    rec = parse_receipt(data)[0] if data is not None else None
    return rec is not None and rec.get("key", key) == key


class Ledger:
    """Receipts under ``root/ledger/<key>.json``, and packs of them under ``root/ledger/packs/``.

    Args:
        root: The store's private folder (``STORE/.segpipe``).
    """

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "ledger"
        self._packed: PackedReceipts | None = None  # read on the first call that needs the packs

    def ensure(self) -> None:
        """Creates the folder."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The loose receipt file of ``key``."""
        return self.dir / f"{key}.json"

    def done(self, key: str) -> bool:
        """True if a loose receipt for ``key`` exists.

        What a worker asks before it runs a task (a task Dask ran twice): the receipts of runs in
        progress are loose; packed ones are of tasks the driver did not plan (see :meth:`finished`).
        """
        return self.path(key).exists()

    def write(self, key: str, receipt: dict[str, Any]) -> None:
        """Records ``receipt`` for ``key`` durably (idempotent: the same key may be written twice)."""
        write_json_atomic(self.path(key), {"key": key, **receipt}, indent=None, durable=True)

    def read(self, key: str) -> dict[str, Any]:
        """Reads one receipt, loose or packed.

        Raises:
            FileNotFoundError: No receipt for ``key``.
            ValueError: It does not decode as a finished task's receipt (truncated, not JSON, no
                image id or outputs).
        """
        try:
            data, where = self.path(key).read_bytes(), str(self.path(key))
        except FileNotFoundError:
            data, pack = self._packs().receipts.get(key, (b"", ""))
            if not pack:
                raise FileNotFoundError(str(self.path(key))) from None
            where = f"{pack}: {key}"
        rec, why = parse_receipt(data)
        if rec is None:
            raise ValueError(f"{where}: receipt {why}")
        return rec

    def remove(self, key: str) -> None:
        """Deletes the receipt of ``key``, loose or packed (no error if there is none): its task is redone."""
        self.remove_many([key])

    def remove_many(self, keys: Iterable[str]) -> None:
        """Deletes the receipts of ``keys``: their loose files, and their lines of any pack (each pack
        holding one is rewritten without it, atomically; a pack left empty is deleted).
        """
        keys = set(keys)
        if not keys:
            return
        for key in keys:
            self.path(key).unlink(missing_ok=True)
        packed = read_local_packs(self.dir)
        for where, held in packed.packs.items():
            if held & keys:
                self._rewrite_pack(Path(where), [(k, packed.receipts[k][0]) for k in sorted(held - keys)
                                                 if packed.receipts[k][1] == where])
        self._packed = None

    def _rewrite_pack(self, pack: Path, receipts: list[tuple[str, bytes]]) -> None:
        if receipts:
            write_bytes_atomic(pack, encode_pack(receipts), durable=True)
        else:
            pack.unlink(missing_ok=True)
            fsync_dir(pack.parent)

    def repair_pack(self, pack: str | Path) -> None:
        """Rewrites a damaged or truncated pack with the receipts it still holds whole (fsck --repair).

        The receipts of its damaged lines are lost: their images have no receipt, and ``--resume``
        redoes them.
        """
        try:
            data = Path(pack).read_bytes()
        except FileNotFoundError:
            return
        self._rewrite_pack(Path(pack), decode_pack(data).receipts)
        self._packed = None

    def keys(self) -> set[str]:
        """Every key with a receipt, loose or packed."""
        return {n[:-5] for n in loose_names(self.dir)} | set(self._packs(fresh=True).receipts)

    def contents(self) -> LedgerContents:
        """Every receipt, loose then packed (:func:`~segpipe.storage.packs.read_local_ledger`)."""
        return read_local_ledger(self.dir)

    def finished(self) -> set[str]:
        """Every key whose receipt decodes as a finished task's (what ``--resume`` may skip).

        A receipt that is truncated, not JSON or not a finished task's vouches for nothing: its image
        is redone (which rewrites the receipt) rather than trusted or crashed on.
        """
        return {key for key, data, _ in self.contents().sorted_items() if _packable(key, data)}

    def items(self) -> Iterator[tuple[str, Path]]:
        """``(key, path)`` of every loose receipt file, sorted (packed receipts: :meth:`contents`)."""
        for name in loose_names(self.dir):
            yield name[:-5], self.dir / name

    def pack_count(self) -> int:
        """How many packs the ledger holds."""
        return len(read_local_packs(self.dir).packs)

    def empty(self) -> bool:
        """Whether the ledger holds no receipt file and no pack (two listings, nothing read)."""
        return not loose_names(self.dir) and not pack_paths(self.dir)

    def loose_count(self) -> int:
        """How many loose receipt files the ledger holds (one directory listing)."""
        return len(loose_names(self.dir))

    def compact(self, run_id: str) -> int:
        """Packs the loose receipts into ``packs/<run_id>.pack``, then deletes them; returns how many.

        Only receipts that decode as a finished task's are packed (others stay loose files, for fsck
        to name). Safe to interrupt at any point and to run again, and beside readers and writers:

        - the pack is written to a temporary file, fsynced, and hard-linked to its name only if no
          pack has that name (put-if-absent: a pack is never replaced by a compaction);
        - a loose receipt is deleted only once a pack that holds the same bytes is durable: killed
          before, the receipt is loose and packed at once, which readers take as one;
        - run again under a name that exists (a killed compaction's), the receipts that pack holds
          are deleted and any others stay loose (for the next run's compaction).

        Args:
            run_id: The run's id (a pack per run: names sort as runs started).
        """
        names = loose_names(self.dir)
        if not names:
            return 0
        folder = self.dir / PACKS
        folder.mkdir(exist_ok=True)
        final = folder / f"{run_id}{PACK_SUFFIX}"
        tmp = folder / f"{run_id}{PACK_SUFFIX}.partial.{os.getpid()}"
        try:
            packed = self._write_pack(tmp, names)
            if not packed:
                return 0
            try:
                os.link(tmp, final)
                held = packed
            except FileExistsError:
                held = _held(final.read_bytes())
            except OSError:  # no hard links on this file system: a rename, still only if absent
                if final.exists():
                    held = _held(final.read_bytes())
                else:
                    os.replace(tmp, final)
                    held = packed
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(folder)
        gone = list(packed) if held is packed else [n for n, d in packed.items() if held.get(n[:-5]) == d]
        _unlink_all(self.dir, gone)
        fsync_dir(self.dir)
        self._packed = None
        return len(gone)

    def _packs(self, fresh: bool = False) -> PackedReceipts:
        if self._packed is None or fresh:
            self._packed = read_local_packs(self.dir)
        return self._packed

    def _write_pack(self, tmp: Path, names: list[str]) -> dict[str, bytes]:
        """Writes the loose receipts ``names`` that decode into the pack file ``tmp``, durably.

        Streamed, a batch of files at a time: a run's driver packs 100k receipts (45 MB of JSON)
        without holding them. The header is written last, over a padded placeholder.

        Returns:
            File name (``<key>.json``: the listing's own strings, not copies) → line checksum of every
            receipt packed (none: ``tmp`` holds no receipt).
        """
        packed: dict[str, bytes] = {}
        with open(tmp, "wb") as f:
            f.write(pack_header(0, HEADER_BYTES))
            for i in range(0, len(names), 1024):
                batch = names[i:i + 1024]
                datas = _read_files([os.path.join(self.dir, n) for n in batch])
                for name, data in zip(batch, datas, strict=True):
                    key = name[:-5]
                    if data is not None and _packable(key, data):
                        line, packed[name] = pack_line(key, data)
                        f.write(line)
            f.seek(0)
            f.write(pack_header(len(packed), HEADER_BYTES))
            f.flush()
            os.fsync(f.fileno())
        return packed


def _held(pack: bytes) -> dict[str, bytes]:
    """Key → line checksum of every receipt a pack holds whole."""
    return {k: line_digest(k, body) for k, body in decode_pack(pack).receipts}


class ObjectLedger:
    """Receipts under ``<location>/ledger/<key>.json`` in object storage (the API of :class:`Ledger`),
    and packs of them under ``<location>/ledger/packs/``.

    An object store has no rename, but a PUT is atomic (a reader sees the whole receipt or none), and
    a receipt is written with put-if-absent (S3 ``If-None-Match: *``): the first finished run of a task
    records it, a re-executed task (same key: same outputs) leaves it as it was. A pack is written the
    same way (put-if-absent per run), and the loose receipts it holds are deleted only after.

    Args:
        root: The store's private location (``STORE/.segpipe``).
    """

    def __init__(self, root: Location) -> None:
        self.location = root.child("ledger")
        self._packed: PackedReceipts | None = None

    def ensure(self) -> None:
        """Nothing to create: object storage has no folders."""

    def done(self, key: str) -> bool:
        """True if a loose receipt for ``key`` exists (see :meth:`Ledger.done`)."""
        return self.location.exists(f"{key}.json")

    def write(self, key: str, receipt: dict[str, Any]) -> bool:
        """Records ``receipt`` for ``key`` unless one is there; True if this call wrote it."""
        data = json.dumps({"key": key, **receipt}, separators=(",", ":")).encode()
        return self.location.put_if_absent(f"{key}.json", data)

    def read(self, key: str) -> dict[str, Any]:
        """Reads one receipt, loose or packed.

        Raises:
            FileNotFoundError: No receipt for ``key``.
            ValueError: It does not decode as a finished task's receipt.
        """
        try:
            data, where = self.location.read_bytes(f"{key}.json"), self.key_url(key)
        except FileNotFoundError:
            data, pack = self._packs().receipts.get(key, (b"", ""))
            if not pack:
                raise
            where = f"{pack}: {key}"
        rec, why = parse_receipt(data)
        if rec is None:
            raise ValueError(f"{where}: receipt {why}")
        return rec

    def remove(self, key: str) -> None:
        """Deletes the receipt of ``key``, loose or packed (no error if there is none): its task is redone."""
        self.remove_many([key])

    def remove_many(self, keys: Iterable[str]) -> None:
        """Deletes the receipts of ``keys``: loose objects, and their lines of any pack (rewritten whole
        without them in one PUT; a pack left empty is deleted).
        """
        keys = set(keys)
        if not keys:
            return
        self.location.delete_many([f"{k}.json" for k in sorted(keys)])
        packed = self._read_packs()
        for where, held in packed.packs.items():
            if held & keys:
                rest = [(k, packed.receipts[k][0]) for k in sorted(held - keys) if packed.receipts[k][1] == where]
                self._rewrite_pack(self._pack_key(where), rest)
        self._packed = None

    def _rewrite_pack(self, name: str, receipts: list[tuple[str, bytes]]) -> None:
        if receipts:
            self.location.write_bytes(name, encode_pack(receipts))
        else:
            self.location.delete(name)

    def repair_pack(self, name: str) -> None:
        """Rewrites a damaged or truncated pack with the receipts it still holds whole (see :meth:`Ledger.repair_pack`).

        Args:
            name: The pack's key below the ledger (``packs/<run id>.pack``) or its URL.
        """
        name = self._pack_key(name)
        try:
            data = self.location.read_bytes(name)
        except FileNotFoundError:
            return
        self._rewrite_pack(name, decode_pack(data).receipts)
        self._packed = None

    def _pack_key(self, name: str) -> str:
        """A pack's key below the ledger from its key or its (redacted) URL."""
        return f"{PACKS}/{name.rsplit('/', 1)[-1]}"

    def keys(self) -> set[str]:
        """Every key with a receipt, loose or packed."""
        return set(self._loose_keys()) | set(self._packs(fresh=True).receipts)

    def _loose_keys(self) -> list[str]:
        return [k[:-5] for k in self.location.list() if k.endswith(".json") and "/" not in k]

    def key_url(self, key: str) -> str:
        """The (redacted) URL of the loose receipt of ``key``, for messages and reports."""
        return self.location.key_url(f"{key}.json")

    def _read_loose(self, keys: list[str]) -> list[bytes | None]:
        """The loose receipts of ``keys`` (None where one is gone), GETs in threads: each is a round trip."""

        def get(key: str) -> bytes | None:
            try:
                return self.location.read_bytes(f"{key}.json")
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(get, keys))

    def contents(self) -> LedgerContents:
        """Every receipt: the loose ones (GETs in threads: each is a round trip), then the packs,
        listed after the loose receipts were read (see :mod:`segpipe.storage.packs`).
        """
        keys = self._loose_keys()
        loose = self._read_loose(keys)
        out = LedgerContents()
        out.merge(((k, d, self.key_url(k)) for k, d in zip(keys, loose, strict=True)), self._read_packs())
        return out

    def _read_packs(self) -> PackedReceipts:
        out = PackedReceipts()
        for name in self.location.list(PACKS):
            if name.endswith(PACK_SUFFIX) and name.count("/") == 1:
                try:
                    data: bytes | None = self.location.read_bytes(name)
                except FileNotFoundError:
                    data = None
                out.add(self.location.key_url(name), data)  # named by URL in reports (see _pack_key)
        return out

    def read_all(self) -> Iterator[tuple[str, bytes | None]]:
        """``(key, bytes)`` of every receipt, loose or packed, sorted by key."""
        for key, data, _ in self.contents().sorted_items():
            yield key, data

    def finished(self) -> set[str]:
        """Every key whose receipt decodes as a finished task's (what ``--resume`` may skip)."""
        return {key for key, data, _ in self.contents().sorted_items() if _packable(key, data)}

    def pack_count(self) -> int:
        """How many packs the ledger holds."""
        return len(self._read_packs().packs)

    def loose_count(self) -> int:
        """How many loose receipts the ledger holds (one listing)."""
        return len(self._loose_keys())

    def compact(self, run_id: str) -> int:
        """Packs the loose receipts into ``packs/<run_id>.pack`` (put-if-absent), then deletes them.

        As :meth:`Ledger.compact`: only receipts that decode are packed; a loose receipt is deleted
        only once a pack holding its bytes exists; under an existing name only the receipts that pack
        holds are deleted.

        Returns:
            How many loose receipts were packed and deleted.
        """
        keys = self._loose_keys()
        good = [(k, d) for k, d in zip(keys, self._read_loose(keys), strict=True) if d is not None and _packable(k, d)]
        if not good:
            return 0
        name = f"{PACKS}/{run_id}{PACK_SUFFIX}"
        packed = {k: line_digest(k, d) for k, d in good}
        held = packed if self.location.put_if_absent(name, encode_pack(good)) else \
            _held(self.location.read_bytes(name))
        gone = [k for k in packed if held.get(k) == packed[k]]
        self.location.delete_many([f"{k}.json" for k in gone])
        self._packed = None
        return len(gone)

    def _packs(self, fresh: bool = False) -> PackedReceipts:
        if self._packed is None or fresh:
            self._packed = self._read_packs()
        return self._packed


def _unlink_all(folder: Path, names: list[str]) -> None:
    """Deletes files ``names`` of ``folder`` (no error for absent ones), from a few threads: an unlink in
    a folder of 100k receipts waits 0.2-1 ms on the file system's journal, and the waits overlap (3x
    faster here). Paths are joined a batch at a time (100k of them at once were 12 MB of the driver's).
    """
    base = os.path.join(folder, "")

    def unlink(batch: list[str]) -> None:
        for name in batch:
            try:
                os.unlink(base + name)
            except FileNotFoundError:
                pass

    batches = [names[i:i + 512] for i in range(0, len(names), 512)]
    if len(batches) <= 1:
        for b in batches:
            unlink(b)
        return
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(unlink, batches))


def orphan_partials(root: str | Path) -> list[Path]:
    """Temporary files left by killed writers (zarr's ``*.partial`` and ours) below ``root``."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if ".partial" in f:
                out.append(Path(dirpath) / f)
    return sorted(out)
