"""Packed ledgers: many receipts in one checksummed file (``STORE/.segpipe/ledger/packs/<run id>.pack``).

A worker still writes one receipt file per task, durably, before its task counts as done (the loose
receipts of :mod:`segpipe.storage.ledger`). At the end of a large run the driver packs them into one
file and only then deletes them: reading 100k small files was what made ``--resume`` and ``fsck``
slow, not the receipts' contents. The format (docs/design/packed-ledger.md):

    {"format": "segpipe-ledger-pack", "version": 1, "receipts": N}          the header line
    <key> TAB <xxh3-64 hex of key, TAB, JSON> TAB <the receipt's JSON>     N lines, sorted by key

Every line ends with a line feed. Each line carries its own checksum, so a damaged pack loses only its
damaged lines (named by number), and the header's count tells a truncated pack from a whole one. The
JSON is the loose receipt's bytes, unchanged: a packed receipt reads back exactly as the file it replaced.

Readers take the loose receipts first and the packs after them: a packer writes its pack before it
deletes a single loose receipt, so a receipt deleted between a reader's listing and its read is in a
pack the reader then lists. A key in both is read from its loose file (a redo rewrites the loose
receipt); a key in two packs from the pack whose name sorts last (run ids sort by start).
"""

from __future__ import annotations

import gc
import io
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from segpipe.storage.stacks import _read_files

#: The packs' folder below the ledger's, and a pack's suffix.
PACKS = "packs"
PACK_SUFFIX = ".pack"
_FORMAT = "segpipe-ledger-pack"
_VERSION = 1


def _digest(key: bytes, body: bytes) -> bytes:
    """The line's checksum: of its key and its receipt (a changed key must fail it too)."""
    return xxhash.xxh3_64_hexdigest(key + b"\t" + body).encode()


#: A header's width when it is written before its count is known (spaces pad it: JSON allows them).
HEADER_BYTES = 96


def pack_header(count: int, width: int = 0) -> bytes:
    """The header line of a pack of ``count`` receipts (padded with spaces to ``width`` bytes if given)."""
    head = json.dumps({"format": _FORMAT, "version": _VERSION, "receipts": count}).encode()
    return head.ljust(width - 1) + b"\n" if width else head + b"\n"


def pack_line(key: str, data: bytes) -> tuple[bytes, bytes]:
    """``(the pack line of a receipt, its checksum)``.

    Raises:
        ValueError: the key holds a tab or a line break, or the receipt's JSON a line break (neither
            can be framed; receipts are written on one line).
    """
    body = bytes(data).strip()
    if any(c in key for c in "\t\r\n") or b"\n" in body or b"\r" in body:
        raise ValueError(f"receipt {key!r} cannot be packed (a tab or line break in its key or JSON)")
    k = key.encode()
    digest = _digest(k, body)
    return b"%s\t%s\t%s\n" % (k, digest, body), digest


def line_digest(key: str, body: bytes) -> bytes:
    """The checksum a pack line of ``(key, body)`` carries (to compare a receipt with a packed one)."""
    return _digest(key.encode(), bytes(body).strip())


def encode_pack(receipts: Iterable[tuple[str, bytes]]) -> bytes:
    """The bytes of a pack of ``(key, receipt JSON)`` pairs (written in key order).

    Raises:
        ValueError: see :func:`pack_line`.
    """
    items = sorted(receipts)
    return b"".join([pack_header(len(items)), *(pack_line(k, d)[0] for k, d in items)])


@dataclass
class Pack:
    """A pack as read.

    Attributes:
        receipts: ``(key, receipt JSON)`` of every line whose checksum holds, in the pack's order.
        damaged: ``(line number, why)`` of the lines that do not hold (their receipts are lost).
        problem: What is wrong with the pack as a whole (a damaged header, truncated), or None.
    """

    receipts: list[tuple[str, bytes]] = field(default_factory=list)
    damaged: list[tuple[int, str]] = field(default_factory=list)
    problem: str | None = None


def decode_pack(data: bytes) -> Pack:
    """Reads a pack's bytes; never raises (whatever is wrong is in the returned :class:`Pack`)."""
    out = Pack()
    out.receipts = list(_pack_receipts(io.BytesIO(data), out))  # BytesIO shares the bytes, no copy
    return out


def read_pack_file(path: str | os.PathLike[str]) -> Pack | None:
    """Reads a pack file a line at a time (None: removed since listed; see :func:`decode_pack`).

    The file is not read whole first: its bytes and their lines at once were twice the pack's size
    (54 MB at 100k receipts) on top of the receipts kept.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the lines are read
    except FileNotFoundError:
        return None  # rewritten without its last receipts and removed since listed
    out = Pack()
    with f:
        out.receipts = list(_pack_receipts(f, out))
    return out


def _pack_receipts(lines: Iterable[bytes], out: Pack) -> Iterator[tuple[str, bytes]]:
    """``(key, receipt JSON)`` of every whole line of a pack read as ``lines`` (each with its line feed,
    as a binary file or :class:`io.BytesIO` yields them), streamed.

    The damaged lines go to ``out.damaged`` as they are met, and what is wrong with the pack as a
    whole to ``out.problem`` once ``lines`` is exhausted (a consumer reads every receipt first).
    """
    it = iter(lines)
    first = next(it, b"")
    if not first.endswith(b"\n"):  # no whole header line: an empty or cut pack (its tail is no line)
        out.problem = "damaged header (not a segpipe ledger pack of a known version)"
        return
    try:
        head = json.loads(first[:-1])
    except ValueError:
        head = None
    expected: int | None = None
    if isinstance(head, dict) and head.get("format") == _FORMAT and head.get("version") == _VERSION \
            and isinstance(head.get("receipts"), int):
        expected = int(head["receipts"])
    else:
        out.problem = "damaged header (not a segpipe ledger pack of a known version)"
    n = 1  # the line number of the last line read
    read = 0
    tail = False
    for raw in it:
        if not raw.endswith(b"\n"):  # the pack's last bytes, with no line break: a cut line, no receipt
            tail = True
            break
        n += 1
        parts = raw[:-1].split(b"\t", 2)
        if len(parts) != 3 or _digest(parts[0], parts[2]) != parts[1]:
            out.damaged.append((n, "fails its checksum (damaged)"))
            continue
        try:
            key = parts[0].decode()
        except UnicodeDecodeError:
            out.damaged.append((n, "fails its checksum (damaged)"))
            continue
        read += 1
        yield key, parts[2]
    body = n - 1
    if out.problem is None and expected is not None:
        if tail or body < expected:  # a pack ends with a line break: a cut line is a truncated pack
            out.problem = f"truncated: {read} of its {expected} receipts read"
        elif body > expected:
            out.problem = f"holds {body} receipt lines, its header {expected}"


def pack_paths(ledger_dir: str | os.PathLike[str]) -> list[Path]:
    """The packs of a local ledger, sorted by name (oldest run first); none if it has no packs."""
    folder = Path(ledger_dir) / PACKS
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(PACK_SUFFIX) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / n for n in names]


@dataclass
class PackedReceipts:
    """Every receipt the packs of a ledger hold, the newest pack's copy of a key winning.

    Attributes:
        receipts: Key → ``(receipt JSON, the pack that holds it)``.
        faults: ``(pack, line number or None, why)`` of damaged lines and damaged or truncated packs.
        packs: Every pack read, by name, with the keys it holds (for removal).
    """

    receipts: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    faults: list[tuple[str, int | None, str]] = field(default_factory=list)
    packs: dict[str, set[str]] = field(default_factory=dict)

    def add(self, where: str, data: bytes | None) -> None:
        """Adds the pack ``where`` (its bytes; None: deleted since listed)."""
        if data is not None:
            self.add_pack(where, decode_pack(data))

    def add_pack(self, where: str, pack: Pack) -> None:
        """Adds the pack ``where`` as read (:func:`decode_pack`, :func:`read_pack_file`)."""
        if pack.problem is not None:
            self.faults.append((where, None, pack.problem))
        self.faults.extend((where, n, why) for n, why in pack.damaged)
        self.packs[where] = {k for k, _ in pack.receipts}
        for key, body in pack.receipts:
            self.receipts[key] = (body, where)


def read_local_packs(ledger_dir: str | os.PathLike[str]) -> PackedReceipts:
    """The receipts of every pack of a local ledger (read after its loose receipts: see the module)."""
    out = PackedReceipts()
    for p in pack_paths(ledger_dir):
        pack = read_pack_file(p)
        if pack is not None:  # else rewritten without its last receipts and removed since listed
            out.add_pack(str(p), pack)
    return out


def iter_local_ledger(ledger_dir: str | os.PathLike[str],
                      faults: list[tuple[str, int | None, str]]) -> Iterator[tuple[str, bytes, str, bool]]:
    """``(key, receipt bytes, where, loose)`` of every receipt of a local ledger, streamed.

    What :func:`read_local_ledger` reads, without holding it: the loose receipts (read a batch at a time,
    in threads), then the packs (listed after: see the module), a line at a time, oldest first. A
    packed key that is also loose is left out (the loose file wins); of a key met twice in the packs,
    the later one wins: a consumer keeps the last item of each key. ``--resume`` and ``fsck`` keep only
    what they need of each receipt, not its bytes (at 100k receipts the whole ledger read at once, then
    decoded, was 350 MB of the driver's memory).

    Args:
        ledger_dir: The ledger's folder.
        faults: Receives ``(pack, line number or None, why)`` of damaged lines and damaged or
            truncated packs, once the iterator is exhausted, in the order of :class:`LedgerContents`.
    """
    names = loose_names(ledger_dir)
    loose: set[str] = set()
    for i in range(0, len(names), 1024):
        batch = names[i:i + 1024]
        paths = [os.path.join(ledger_dir, n) for n in batch]
        for n, data, path in zip(batch, _read_files(paths), paths, strict=True):
            if data is not None:  # else deleted since listed: packed by then (see the module)
                loose.add(n[:-5])
                yield n[:-5], data, path, True
    for p in pack_paths(ledger_dir):  # listed after the loose files were read: see the module
        try:
            f = open(p, "rb")  # noqa: SIM115 - closed below, once its lines are read
        except FileNotFoundError:
            continue  # rewritten without its last receipts and removed since listed
        where, pack = str(p), Pack()
        with f:
            for key, body in _pack_receipts(f, pack):
                if key not in loose:
                    yield key, body, where, False
        if pack.problem is not None:
            faults.append((where, None, pack.problem))
        faults.extend((where, n, why) for n, why in pack.damaged)


@dataclass
class LedgerContents:
    """Every receipt of a ledger, loose and packed (see the module for which copy of a key wins).

    Attributes:
        receipts: Key → ``(receipt bytes, where: the loose file or the pack that holds it)``; the
            bytes are not parsed here (a loose file may hold anything: its readers judge it).
        faults: ``(pack, line number or None, why)`` of damaged lines and damaged or truncated packs.
        packs: Every pack read, by name, with the keys it holds.
        loose: The keys read from loose receipt files.
    """

    receipts: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    faults: list[tuple[str, int | None, str]] = field(default_factory=list)
    packs: dict[str, set[str]] = field(default_factory=dict)
    loose: set[str] = field(default_factory=set)

    def merge(self, loose: Iterable[tuple[str, bytes | None, str]], packed: PackedReceipts) -> None:
        """Takes the loose receipts ``(key, bytes or None when gone, file)``, then ``packed`` under them."""
        for key, data, where in loose:
            if data is not None:
                self.receipts[key] = (data, where)
                self.loose.add(key)
        for key, item in packed.receipts.items():
            self.receipts.setdefault(key, item)
        self.faults.extend(packed.faults)
        self.packs.update(packed.packs)

    def sorted_items(self) -> list[tuple[str, bytes, str]]:
        """``(key, bytes, where)`` of every receipt, sorted by key."""
        return [(k, *self.receipts[k]) for k in sorted(self.receipts)]


def loose_names(ledger_dir: str | os.PathLike[str]) -> list[str]:
    """The loose receipt files of a local ledger (``<key>.json``), sorted."""
    try:
        return sorted(e.name for e in os.scandir(ledger_dir) if e.name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_local_ledger(ledger_dir: str | os.PathLike[str]) -> LedgerContents:
    """Every receipt of a local ledger: its loose files (read in threads), then its packs."""
    names = loose_names(ledger_dir)
    paths = [os.path.join(ledger_dir, n) for n in names]
    out = LedgerContents()
    out.merge(((n[:-5], d, p) for n, d, p in zip(names, _read_files(paths), paths, strict=True)),
              read_local_packs(ledger_dir))  # listed after the loose files were read: see the module
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector while a ledger is read and checked (nestable).

    Receipts are JSON, without reference cycles: the collector frees nothing among them, yet its full
    passes over a heap growing by 100k receipts cost a fifth of ``--resume``'s planning at 100k images.
    Reference counting still frees everything as usual.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
