"""A manifest held column by column: the driver's copy of a 100k-image collection's entries.

As :class:`~segpipe.storage.manifest.ManifestEntry` objects a 100k-image manifest held ≈ 450 bytes an
image on the driver (an object, then three strings: ``file``, ``path`` and the hex ``sha256``, and two
integers), the largest part of its memory while a run was planned and ran. Here the common entry (an
image or a scene, measured without error, whose ``path`` is a listed folder followed by its ``file``)
costs ≈ 90 bytes: fixed-width columns, its name in one UTF-8 buffer, its digest as 32 raw bytes, its
folder as an index. Any other entry (a volume, a refused item, a digest that is not lower-case hex, a
``path`` not ending in its ``file``) is kept whole beside the columns, so that every entry reads back
exactly as it was added.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

import numpy as np

from segpipe.storage.manifest import ManifestEntry

#: ``kind`` codes of the ``kinds`` column; any other kind is kept whole (code :data:`OTHER`).
KINDS = ("image", "scene", "volume", "invalid")
OTHER = len(KINDS)
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
#: Widths and heights above this are kept whole (the column is 32-bit).
_MAX_SIDE = (1 << 31) - 1
#: Distinct folders held; the rows of any further folder are kept whole.
_MAX_FOLDERS = 1 << 16


class ManifestTable:
    """Manifest entries in columns; ``table[i]`` is the :class:`ManifestEntry` added ``i``-th, equal to it.

    Rows are appended (:meth:`append`, :meth:`extend`); reordered into a new table (:meth:`take`). Reading
    a row builds its entry anew: hold rows, not entries, where many are kept.
    """

    __slots__ = ("_bytes", "_folder", "_folder_ix", "_folders", "_height", "_ids", "_kind", "_name_end", "_names",
                 "_odd", "_sha", "_width")

    def __init__(self, entries: Iterable[ManifestEntry] = ()) -> None:
        self._ids = array("q")
        self._width = array("l")
        self._height = array("l")
        self._bytes = array("q")
        self._kind = bytearray()
        self._sha = bytearray()  # 32 bytes a row (zeros for a row kept whole)
        self._names = bytearray()  # every row's ``file`` in UTF-8 (surrogates passed through), one after another
        self._name_end = array("q")
        self._folder = array("l")  # index into _folders: the row's ``path`` is that folder + its ``file``
        self._folders: list[str] = []
        self._folder_ix: dict[str, int] = {}
        self._odd: dict[int, ManifestEntry] = {}  # rows kept whole
        self.extend(entries)

    # ---------------------------------------------------------------------------------- writing

    def append(self, e: ManifestEntry) -> None:
        """Adds ``e`` as the last row."""
        row = len(self._ids)
        self._ids.append(e.id if 0 <= e.id < (1 << 63) else 0)
        self._kind.append(_KIND_CODE.get(e.kind, OTHER))
        name = e.file.encode("utf-8", "surrogatepass")
        folder = self._folder_of(e)
        sha = _digest(e.sha256)
        compact = (folder >= 0 and sha is not None and e.kind in ("image", "scene") and not e.error
                   and not e.depth and 0 <= e.width <= _MAX_SIDE and 0 <= e.height <= _MAX_SIDE
                   and 0 <= e.bytes < (1 << 63) and 0 <= e.id < (1 << 63)
                   and name.decode("utf-8", "surrogatepass") == e.file)
        if not compact:
            self._odd[row] = e
            name, folder, sha = b"", -1, bytes(32)
            self._width.append(0)
            self._height.append(0)
            self._bytes.append(0)
        else:
            self._width.append(e.width)
            self._height.append(e.height)
            self._bytes.append(e.bytes)
        self._sha += sha or bytes(32)
        self._names += name
        self._name_end.append(len(self._names))
        self._folder.append(folder)

    def extend(self, entries: Iterable[ManifestEntry]) -> None:
        """Adds ``entries`` in order."""
        for e in entries:
            self.append(e)

    def _folder_of(self, e: ManifestEntry) -> int:
        """The index of the folder ``e.path`` is ``e.file`` in (added if new); -1 when it is not so."""
        if not e.file or not e.path.endswith(e.file):
            return -1
        folder = e.path[: len(e.path) - len(e.file)]
        ix = self._folder_ix.get(folder)
        if ix is None:
            if len(self._folders) >= _MAX_FOLDERS:  # a manifest of scattered paths: rows kept whole beyond this
                return -1
            ix = self._folder_ix[folder] = len(self._folders)
            self._folders.append(folder)
        return ix

    # ---------------------------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, row: int) -> ManifestEntry:
        """The entry of ``row`` (negative: from the end, as a list's), built anew."""
        if row < 0:
            row += len(self._ids)
        odd = self._odd.get(row)
        if odd is not None:
            return odd
        if not 0 <= row < len(self._ids):
            raise IndexError(row)
        name = self.file(row)
        return ManifestEntry(id=self._ids[row], file=name, path=self._folders[self._folder[row]] + name,
                             width=self._width[row], height=self._height[row],
                             sha256=self.sha256(row), bytes=self._bytes[row],
                             kind=KINDS[self._kind[row]])

    def __iter__(self) -> Iterator[ManifestEntry]:
        for row in range(len(self._ids)):
            yield self[row]

    def file(self, row: int) -> str:
        """The ``file`` of ``row`` (without building its entry)."""
        odd = self._odd.get(row)
        if odd is not None:
            return odd.file
        start = self._name_end[row - 1] if row else 0
        return self._names[start : self._name_end[row]].decode("utf-8", "surrogatepass")

    def id(self, row: int) -> int:
        """The ``id`` of ``row``."""
        odd = self._odd.get(row)
        return odd.id if odd is not None else self._ids[row]

    def sha256(self, row: int) -> str:
        """The ``sha256`` of ``row``."""
        odd = self._odd.get(row)
        return odd.sha256 if odd is not None else self._sha[32 * row : 32 * row + 32].hex()

    def kind(self, row: int) -> str:
        """The ``kind`` of ``row``."""
        odd = self._odd.get(row)
        return odd.kind if odd is not None else KINDS[self._kind[row]]

    def size(self, row: int) -> tuple[int, int]:
        """``(height, width)`` of ``row``."""
        odd = self._odd.get(row)
        return (odd.height, odd.width) if odd is not None else (self._height[row], self._width[row])

    def ids(self) -> np.ndarray:
        """Every row's id, ``(N,)`` int64 (a copy; a row kept whole reads its entry's)."""
        out = np.array(self._ids, dtype=np.int64)
        for row, e in self._odd.items():
            out[row] = e.id if -(1 << 63) <= e.id < (1 << 63) else -1
        return out

    def odd_rows(self) -> dict[int, ManifestEntry]:
        """The rows kept whole (volumes, refused items, …): row → entry (the table's own dict: do not change it)."""
        return self._odd

    def count(self, kind: str) -> int:
        """How many rows are of ``kind``."""
        code = _KIND_CODE.get(kind)
        n = self._kind.count(code) if code is not None else 0
        # a row kept whole with a kind outside KINDS has code OTHER: counted by its entry
        return n + sum(1 for e in self._odd.values() if e.kind == kind and code is None)

    def is_sorted_by_file(self) -> bool:
        """Whether the rows are in the order of their ``file`` names (as Python orders strings)."""
        prev = None
        for row in range(len(self)):
            name = self.file(row)
            if prev is not None and name < prev:
                return False
            prev = name
        return True

    def take(self, rows: Iterable[int]) -> ManifestTable:
        """A new table of ``rows``, in that order."""
        out = ManifestTable()
        for row in rows:
            out.append(self[row])
        return out

    def sorted_by_file(self) -> ManifestTable:
        """This table when it is in file order already, else a new one sorted by ``file`` (stable)."""
        if self.is_sorted_by_file():
            return self
        return self.take(sorted(range(len(self)), key=self.file))

    def merged(self, other: ManifestTable) -> ManifestTable:
        """The rows of this table and ``other``, both sorted by ``file``, in one table sorted by ``file``
        (this table's row first where two names are equal, as a stable sort of both would put them).
        """
        if not len(other):
            return self
        if not len(self):
            return other
        out = ManifestTable()
        i = j = 0
        while i < len(self) and j < len(other):
            if self.file(i) <= other.file(j):
                out.append(self[i])
                i += 1
            else:
                out.append(other[j])
                j += 1
        out.extend(self[k] for k in range(i, len(self)))
        out.extend(other[k] for k in range(j, len(other)))
        return out


def _digest(sha256: str) -> bytes | None:
    """The 32 bytes of a lower-case hex SHA-256 (None: any other text, kept whole)."""
    if len(sha256) != 64:
        return None
    try:
        raw = bytes.fromhex(sha256)
    except ValueError:
        return None
    return raw if raw.hex() == sha256 else None
