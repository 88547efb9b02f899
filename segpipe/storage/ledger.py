"""A durable ledger of per-task receipts: what resume and fsck trust.

Zarr attributes lose keys under concurrent updates, and an all-background chunk is never written, so
neither can record progress. Each finished task writes one small JSON receipt atomically (write to a
temporary name, fsync, rename) *after* its outputs are complete; a receipt therefore proves its outputs
exist and lets ``fsck`` check them against their checksums.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.location import Location
from segpipe.storage.stacks import _read_files
from segpipe.storage.verify import parse_receipt


class Ledger:
    """Receipts under ``root/ledger/<key>.json``.

    Args:
        root: The store's private folder (``STORE/.segpipe``).
    """

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "ledger"

    def ensure(self) -> None:
        """Creates the folder."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The receipt file of ``key``."""
        return self.dir / f"{key}.json"

    def done(self, key: str) -> bool:
        """True if a receipt for ``key`` exists."""
        return self.path(key).exists()

    def write(self, key: str, receipt: dict[str, Any]) -> None:
        """Records ``receipt`` for ``key`` durably (idempotent: the same key may be written twice)."""
        write_json_atomic(self.path(key), {"key": key, **receipt}, indent=None, durable=True)

    def read(self, key: str) -> dict[str, Any]:
        """Reads one receipt.

        Raises:
            ValueError: It does not decode as a finished task's receipt (truncated, not JSON, no
                image id or outputs).
        """
        rec, why = parse_receipt(self.path(key).read_bytes())
        if rec is None:
            raise ValueError(f"{self.path(key)}: receipt {why}")
        return rec

    def remove(self, key: str) -> None:
        """Deletes the receipt of ``key`` (no error if there is none): its task is redone."""
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> set[str]:
        """Every key with a receipt."""
        if not self.dir.exists():
            return set()
        return {p.name[:-5] for p in self.dir.iterdir() if p.name.endswith(".json")}

    def finished(self) -> set[str]:
        """Every key whose receipt decodes as a finished task's (what ``--resume`` may skip).

        A receipt that is truncated, not JSON or not a finished task's vouches for nothing: its image
        is redone (which rewrites the receipt) rather than trusted or crashed on. Reads every receipt
        (a few tens of µs each, in threads for large ledgers).
        """
        if not self.dir.exists():
            return set()
        keys = sorted(self.keys())
        paths = [str(self.path(k)) for k in keys]
        out = set()
        for key, data in zip(keys, _read_files(paths), strict=True):
            rec = parse_receipt(data)[0] if data is not None else None
            if rec is not None and rec.get("key", key) == key:  # a receipt copied under another key: no
                out.add(key)
        return out

    def items(self) -> Iterator[tuple[str, Path]]:
        """``(key, path)`` of every receipt, sorted."""
        if not self.dir.exists():
            return
        for p in sorted(self.dir.iterdir()):
            if p.name.endswith(".json"):
                yield p.name[:-5], p


class ObjectLedger:
    """Receipts under ``<location>/ledger/<key>.json`` in object storage (the API of :class:`Ledger`).

    An object store has no rename, but a PUT is atomic (a reader sees the whole receipt or none), and
    a receipt is written with put-if-absent (S3 ``If-None-Match: *``): the first finished run of a task
    records it, a re-executed task (same key: same outputs) leaves it as it was.

    Args:
        root: The store's private location (``STORE/.segpipe``).
    """

    def __init__(self, root: Location) -> None:
        self.location = root.child("ledger")

    def ensure(self) -> None:
        """Nothing to create: object storage has no folders."""

    def done(self, key: str) -> bool:
        """True if a receipt for ``key`` exists."""
        return self.location.exists(f"{key}.json")

    def write(self, key: str, receipt: dict[str, Any]) -> bool:
        """Records ``receipt`` for ``key`` unless one is there; True if this call wrote it."""
        data = json.dumps({"key": key, **receipt}, separators=(",", ":")).encode()
        return self.location.put_if_absent(f"{key}.json", data)

    def read(self, key: str) -> dict[str, Any]:
        """Reads one receipt.

        Raises:
            FileNotFoundError: No receipt for ``key``.
            ValueError: It does not decode as a finished task's receipt.
        """
        rec, why = parse_receipt(self.location.read_bytes(f"{key}.json"))
        if rec is None:
            raise ValueError(f"{self.location.key_url(key + '.json')}: receipt {why}")
        return rec

    def remove(self, key: str) -> None:
        """Deletes the receipt of ``key`` (no error if there is none): its task is redone."""
        self.location.delete(f"{key}.json")

    def keys(self) -> set[str]:
        """Every key with a receipt."""
        return {k[:-5] for k in self.location.list() if k.endswith(".json") and "/" not in k}

    def key_url(self, key: str) -> str:
        """The (redacted) URL of the receipt of ``key``, for messages and reports."""
        return self.location.key_url(f"{key}.json")

    def read_all(self) -> Iterator[tuple[str, bytes | None]]:
        """``(key, bytes)`` of every receipt, sorted by key (None: gone since listed).

        GETs run in threads: each is a round trip, and a ledger holds one receipt per task.
        """
        keys = sorted(self.keys())

        def get(key: str) -> bytes | None:
            try:
                return self.location.read_bytes(f"{key}.json")
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=16) as pool:
            yield from zip(keys, pool.map(get, keys), strict=True)

    def finished(self) -> set[str]:
        """Every key whose receipt decodes as a finished task's (what ``--resume`` may skip)."""
        out = set()
        for key, data in self.read_all():
            rec = parse_receipt(data)[0] if data is not None else None
            if rec is not None and rec.get("key", key) == key:
                out.add(key)
        return out


def orphan_partials(root: str | Path) -> list[Path]:
    """Temporary files left by killed writers (zarr's ``*.partial`` and ours) below ``root``."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if ".partial" in f:
                out.append(Path(dirpath) / f)
    return sorted(out)
