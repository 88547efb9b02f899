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
from pathlib import Path
from typing import Any

from segpipe.storage.atomic import write_json_atomic


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
        """Reads one receipt (raises ``ValueError`` if it does not decode)."""
        return json.loads(self.path(key).read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    def keys(self) -> set[str]:
        """Every key with a receipt."""
        if not self.dir.exists():
            return set()
        return {p.name[:-5] for p in self.dir.iterdir() if p.name.endswith(".json")}

    def items(self) -> Iterator[tuple[str, Path]]:
        """``(key, path)`` of every receipt, sorted."""
        if not self.dir.exists():
            return
        for p in sorted(self.dir.iterdir()):
            if p.name.endswith(".json"):
                yield p.name[:-5], p


def orphan_partials(root: str | Path) -> list[Path]:
    """Temporary files left by killed writers (zarr's ``*.partial`` and ours) below ``root``."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if ".partial" in f:
                out.append(Path(dirpath) / f)
    return sorted(out)
