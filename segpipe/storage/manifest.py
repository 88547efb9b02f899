"""Ingest: a collection of images → a manifest (JSONL, one line per image).

Each line: ``{"id", "file", "path", "width", "height", "sha256", "bytes"}``. Ids are stable: derived from
the file's path relative to the collection root (53 bits of its sha1, safe in JSON and COCO), so adding
images never renumbers the others. ``sha256`` is the content hash that task keys are made from, so a
changed file is re-processed and an unchanged one is not.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import importlib.util
import json
import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

from segpipe.errors import InputError, PixelLimitError, SegpipeError, UnsafePathError
from segpipe.storage.atomic import atomic_open
from segpipe.storage.paths import check_relative_name, safe_join

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".nii", ".gz", ".dcm"}
#: Read window by window (never whole) when a raster reader is installed.
SCENE_SUFFIXES = {".tif", ".tiff"}
VOLUME_SUFFIXES = {".nii", ".gz"}


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One item of a collection.

    Attributes:
        id: Stable id (the store's image group for images and scenes; slices get their own).
        file: Path relative to the collection root.
        path: Absolute path (a file, or a DICOM series folder), or a URL; a user's manifest may give it
            relative to the manifest's own folder (resolved when it is read as a source).
        width: Width in pixels (upright), 0 if unreadable.
        height: Height in pixels.
        sha256: Content hash (of every file of a DICOM series, in name order).
        bytes: Size on disk.
        kind: ``image`` (decoded whole), ``scene`` (a raster read window by window: GeoTIFF/COG) or
            ``volume`` (NIfTI / DICOM series, processed slice by slice).
        depth: Slices of a volume.
        error: Why the item cannot be processed (e.g. a symlink leaving the root); empty when fine.
    """

    id: int
    file: str
    path: str
    width: int = 0
    height: int = 0
    sha256: str = ""
    bytes: int = 0
    kind: str = "image"
    depth: int = 0
    error: str = ""


def stable_id(rel: str) -> int:
    """A stable positive id from a relative path (53 bits: exact in JSON doubles)."""
    return int.from_bytes(hashlib.sha1(rel.encode("utf-8")).digest()[:8], "big") & ((1 << 53) - 1) or 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def list_images(source: str | Path) -> tuple[Path, list[str]]:
    """Lists the images of a folder (recursively) or a glob; returns ``(root, sorted relative names)``.

    Raises:
        InputError: nothing matches.
    """
    s = str(source)
    if any(c in s for c in "*?["):
        root = Path(s.split("*")[0].split("?")[0].split("[")[0])
        root = root if root.is_dir() else root.parent
        found = [Path(p) for p in globmod.glob(s, recursive=True)]
        pairs = [(str(p.resolve().relative_to(root.resolve())).replace("\\", "/"), str(p))
                 for p in found if p.is_file()]
        files: list[str] = [rel for rel, _ in pairs]
        path_of = dict(pairs).__getitem__
    else:
        root = Path(s)
        if not root.is_dir():
            raise InputError("not a folder of images (or a glob)", path=root)
        top = os.path.join(os.fspath(root), "")
        files = _walk_files(os.fspath(root))

        def path_of(rel: str) -> str:
            return top + rel
    names: list[str] = []
    dicom: list[str] = []
    for rel in files:
        suffix = os.path.splitext(rel)[1].lower()
        # DICOM files often have no extension (IM0001) or a UID for a name (1.2.840...): sniffed.
        if suffix == ".dcm" or (suffix not in IMAGE_SUFFIXES and is_dicom_file(Path(path_of(rel)))):
            dicom.append(rel)
        elif suffix in IMAGE_SUFFIXES:
            names.append(rel)
    # A DICOM series is one item: its folder (the source itself when it is a series folder).
    dicom_dirs = sorted({str(Path(n).parent) for n in dicom})
    if dicom_dirs == ["."] and not names:
        return root.resolve().parent, [root.resolve().name]
    names.extend(d for d in dicom_dirs if d != ".")
    names = [n for n in names if not (n.lower().endswith(".gz") and not n.lower().endswith(".nii.gz"))]
    if not names:
        raise InputError("no images found", path=source, hint=f"looked for {', '.join(sorted(IMAGE_SUFFIXES))}")
    return root, sorted(names)


def _walk_files(root: str) -> list[str]:
    """The path relative to ``root`` (with "/") of every file below it, hidden names skipped.

    As ``Path.rglob("*")`` with ``is_file`` did (a symlink to a file counts, a symlinked folder is not
    entered), through ``os.scandir``: at 100k files pathlib's per-path parsing cost seconds. Only the
    relative names are kept (``root`` + name is the file): at 100k files the full paths beside them were
    ≈ 10 MB of the driver's memory, for nothing.
    """
    out: list[str] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable or vanished since listed: as rglob, skipped
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, f"{prefix}{e.name}/"))
                elif e.is_file():
                    out.append(prefix + e.name)
            except OSError:
                continue
    return out


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (128-byte preamble, then ``DICM``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _is_volume(p: Path) -> bool:
    return p.name.lower().endswith((".nii", ".nii.gz"))


def describe(root: Path, rel: str, image_id: int | None = None) -> ManifestEntry:
    """Hashes and measures one item (worker side). Size reading failures leave width = height = 0.

    Args:
        root: Collection root.
        rel: Path relative to it.
        image_id: The id the source dataset gives the image (kept, so exports match its annotations);
            a stable id from the path otherwise.

    An item that cannot be opened safely (a symlink leaving the root, a missing file) is returned with
    ``kind="invalid"`` and ``error`` set: it fails alone instead of stopping the run.
    """
    iid = stable_id(rel) if image_id is None else int(image_id)
    try:
        p = safe_join(root, rel)
        p.stat()
    except (SegpipeError, OSError) as e:
        reason = str(e) if isinstance(e, SegpipeError) else f"cannot read: {e.strerror}"
        return ManifestEntry(iid, rel, str(Path(root) / rel), kind="invalid", error=reason)
    return describe_path(p, rel, iid)


def describe_path(p: Path, rel: str, iid: int) -> ManifestEntry:
    """Hashes and measures the item at ``p`` (worker side), a path already checked to be safe to read.

    Args:
        p: A file, or a DICOM series folder.
        rel: Its name in the collection (the entry's ``file``).
        iid: Its id.

    Returns:
        Its entry: ``kind`` inferred from the item (``volume`` for NIfTI files and folders, ``scene`` for
        a raster a raster reader opens, ``image`` otherwise); width = height = 0 when its size cannot be
        read (the task that decodes it reports why).

    Raises:
        OSError: it cannot be read.
    """
    w = h = depth = 0
    kind = "image"
    if _is_volume(p) or (p.is_dir()):
        kind = "volume"
        try:
            from segpipe.storage.volume import open_volume  # lazy: imports numpy; reading a manifest does not

            vol = open_volume(p)
            depth, h, w = vol.shape
        except SegpipeError:
            pass  # reported per slice task
        files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
        hh = hashlib.sha256()
        size = 0
        for f in files:
            hh.update(f.name.encode())
            hh.update(file_sha256(f).encode())
            size += f.stat().st_size
        return ManifestEntry(iid, rel, str(p), w, h, hh.hexdigest(), size, kind, depth)
    if p.suffix.lower() in SCENE_SUFFIXES and _raster_reader():
        try:
            from segpipe.storage.raster import GeoreferenceWarning, open_raster  # lazy: imports numpy

            with warnings.catch_warnings():
                # Measuring runs on a worker, whose warnings print raw; the driver warns once when it
                # opens the scene to plan its blocks.
                warnings.simplefilter("ignore", GeoreferenceWarning)
                src = open_raster(p, stretch="none")
            h, w = src.shape
            kind = "scene"
        except PixelLimitError as e:
            # A header claiming too many pixels fails alone, with its claim in the reason; Pillow would
            # only say "larger than the limit" of the image ceiling.
            return ManifestEntry(iid, rel, str(p), kind="invalid", error=str(e))
        except SegpipeError:
            kind = "image"
    if kind == "image":
        from segpipe.storage.images import image_size  # lazy: imports numpy and Pillow

        try:
            w, h = image_size(p)
        except SegpipeError:
            pass  # an unreadable image is reported per image by the task that decodes it
    return ManifestEntry(iid, rel, str(p), w, h, file_sha256(p), p.stat().st_size, kind)


def _raster_reader() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("rasterio", "tifffile"))


#: The entry's fields in JSON key order (sort_keys), read once: ``dataclasses.asdict`` deep-copies every
#: value and cost more than the JSON encoding itself at 100k entries.
_FIELDS = tuple(sorted(f.name for f in fields(ManifestEntry)))


def manifest_line(e: ManifestEntry) -> str:
    """One JSONL line of the manifest (keys sorted), newline included."""
    return json.dumps({k: getattr(e, k) for k in _FIELDS}) + "\n"


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> int:
    """Writes JSONL atomically; returns the number of lines."""
    n = 0
    with atomic_open(path, "w") as f:
        for e in entries:
            f.write(manifest_line(e))
            n += 1
    return n


def manifest_bytes(entries: Iterable[ManifestEntry]) -> bytes:
    """The JSONL of :func:`write_manifest`, as bytes (for a store in object storage: one PUT)."""
    return "".join(manifest_line(e) for e in entries).encode()


def stamp_path(manifest: str | Path) -> Path:
    """The file beside a store's manifest that holds when its items were last checked (see below)."""
    return Path(manifest).with_name("manifest.checked.json")


def write_stamp(manifest: str | Path, checked_ns: int) -> None:
    """Records that every entry of ``manifest`` matched its file's content at ``checked_ns`` (wall clock).

    A file whose modification time is older than that (and whose size is the same) still holds the
    hashed content: ``--resume`` reuses its entry instead of hashing it again.
    """
    with atomic_open(stamp_path(manifest), "w") as f:
        f.write(json.dumps({"checked_ns": int(checked_ns)}) + "\n")


def read_stamp(manifest: str | Path) -> int | None:
    """The ``checked_ns`` of :func:`write_stamp` (None: none, or unreadable: nothing is reused then)."""
    try:
        with open(stamp_path(manifest), encoding="utf-8") as f:
            v = json.load(f).get("checked_ns")
    except (OSError, ValueError, AttributeError):
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_manifest(path: str | Path, *, check: bool = False) -> Iterator[ManifestEntry]:
    """Streams a manifest (raises InputError naming the line on a bad one).

    Args:
        path: The JSONL file.
        check: It is a user's manifest (a prelabel source): every entry is checked by :func:`check_entry`.
            A store's own manifest, written by segpipe, is not (its 100k lines are read on every resume).
    """
    for _, e in read_manifest_lines(path, check=check):
        yield e


def read_manifest_lines(path: str | Path, *, check: bool = False) -> Iterator[tuple[int, ManifestEntry]]:
    """:func:`read_manifest` with each entry's line number (blank lines are skipped but counted).

    Read as bytes and decoded line by line: a byte that is not UTF-8 is then named with its line and
    file (text-mode reading raised it from the read buffer, naming neither).

    Raises:
        OSError: the file cannot be opened.
        InputError: a line is not UTF-8 or not an entry, or (``check``) an entry is refused (naming the
            file and the line).
    """
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            e = parse_manifest_line(raw, path, i)
            if e is not None:
                yield i, (check_entry(e, path, i) if check else e)


def parse_manifest_line(raw: bytes, source: str | Path, line: int) -> ManifestEntry | None:
    """The entry of one manifest line (None for a blank line), not yet checked (:func:`check_entry`).

    Args:
        raw: The line as read, its newline included or not.
        source: The manifest (its path or redacted URL, for the message).
        line: Its line number.

    Raises:
        InputError: the line is not UTF-8 text, not JSON, or not an entry (naming the manifest and line).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at offset {err.start} "
                         "of the line)", path=source, where=f"line {line}") from None
    if not text.strip():
        return None
    try:
        return ManifestEntry(**json.loads(text))
    except (json.JSONDecodeError, TypeError) as err:
        raise InputError(f"bad manifest line: {err}", path=source, where=f"line {line}") from None


#: The largest id an entry may have: ids go into COCO JSON, whose readers hold numbers as doubles (exact
#: to 2^53), and into the stacks' int64 id arrays; :func:`stable_id` makes ids below it too.
MAX_ID = (1 << 53) - 1

_HEX = re.compile(r"[0-9A-Fa-f]+")
#: Unicode's control characters (category Cc: C0, DEL and C1), as one class: 10x faster than asking
#: ``unicodedata`` per character at 100k names.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_entry(e: ManifestEntry, manifest: str | Path, line: int) -> ManifestEntry:
    """``e``, an entry of a user's manifest, checked before anything reads or writes for it.

    Its ``file`` names the image inside the collection (exports write its masks under that name), so it
    must be a normalised relative POSIX path that stays inside (see :func:`check_file_name`). Its
    ``path`` is where the image is read from: a string without NUL. Its ``id`` lies in 0..:data:`MAX_ID`.

    Returns:
        ``e``, its stated ``sha256`` in lower case (a hex digest is the same hash in either case).

    Raises:
        InputError: naming the manifest, the line and the field.
    """
    check_file_name(e.file, manifest, line)
    if not isinstance(e.path, str) or not e.path:
        raise InputError("path is empty or not a string", path=manifest, where=f"line {line}, field path")
    if "\x00" in e.path:  # open() would raise ValueError on the worker
        raise InputError("path contains a NUL byte", path=manifest, where=f"line {line}, field path")
    for name in ("id", "width", "height", "bytes", "depth"):
        v = getattr(e, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InputError(f"{name} must be a whole number, 0 or more: {v!r}", path=manifest,
                             where=f"line {line}, field {name}")
    if e.id > MAX_ID:
        raise InputError(f"id {e.id} is too large: at most 2^53-1 = {MAX_ID} (ids must stay exact in COCO JSON)",
                         path=manifest, where=f"line {line}, field id")
    for name in ("sha256", "kind", "error"):
        if not isinstance(getattr(e, name), str):
            raise InputError(f"{name} must be a string: {getattr(e, name)!r}", path=manifest,
                             where=f"line {line}, field {name}")
    if e.sha256 != e.sha256.lower() and _HEX.fullmatch(e.sha256):
        return replace(e, sha256=e.sha256.lower())
    return e


def check_file_name(file: object, manifest: str | Path, line: int) -> None:
    """Refuses an entry's ``file`` that is not a normalised relative POSIX path inside the collection.

    Exports write the entry's masks under this name: ``.`` or ``a/`` names no file, a control character
    or a backslash makes a name other systems read otherwise (a newline in a file name, a folder
    separator on Windows), and a name not in normal form (``x//a.png``, ``./x/a.png``) is another
    spelling of one file, so two entries' masks would silently be written to one.

    Raises:
        InputError: naming the manifest, the line and the field.
    """
    where = f"line {line}, field file"
    try:
        check_relative_name(file, source=manifest, where=where)  # type: ignore[arg-type]
    except UnsafePathError as err:
        raise InputError(err.message, path=manifest, where=err.where,
                         hint="an entry's file is its name inside the collection, a relative path; "
                              "where it is read from goes in its path") from None
    assert isinstance(file, str)  # checked above
    bad = _CONTROL.search(file)
    if bad is not None:
        raise InputError(f"file name contains a control character ({bad.group()!r}): {file!r}", path=manifest,
                         where=where)
    if "\\" in file:
        raise InputError(f"file name contains a backslash: {file!r}", path=manifest, where=where,
                         hint="separate folders with /")
    if file == "." or file.endswith("/"):
        raise InputError(f"file name names no file: {file!r}", path=manifest, where=where)
    norm = posixpath.normpath(file)
    if norm != file:
        raise InputError(f"file name is not in normal form: {file!r} (write it {norm!r})", path=manifest,
                         where=where)
