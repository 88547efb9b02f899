"""Spill a shard's small results to a file so the driver holds one shard's worth at a time."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segpipe.storage.atomic import write_bytes_atomic


class LazyFragments:
    """A re-iterable sequence of fragments stored in a file written by segpipe itself.

    Only segpipe's own temporary files inside the output folder are read here (never user input),
    which is why pickle is acceptable.
    """

    def __init__(self, path: str | Path, n: int) -> None:
        self.path = str(path)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        with open(self.path, "rb") as f:
            items = pickle.load(f)  # noqa: S301 - our own spill file, see class docstring
        yield from items


def spill(items: list[Any], path: str | Path) -> LazyFragments:
    """Writes ``items`` to ``path`` and returns a lazy view of them."""
    write_bytes_atomic(path, pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))
    return LazyFragments(path, len(items))
