"""Ingest: a collection of images → a manifest (JSONL, one line per image).

Each line: ``{"id", "file", "path", "width", "height", "sha256", "bytes"}``. Ids are stable: derived from
the file's path relative to the collection root (53 bits of its sha1, safe in JSON and COCO), so adding
images never renumbers the others. ``sha256`` is the content hash that task keys are made from, so a
changed file is re-processed and an unchanged one is not.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from segpipe.errors import InputError
from segpipe.storage.paths import safe_join

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"}


@dataclass(frozen=True)
class ManifestEntry:
    """One image of a collection."""

    id: int
    file: str
    path: str
    width: int = 0
    height: int = 0
    sha256: str = ""
    bytes: int = 0


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
        names = [
            str(Path(p).resolve().relative_to(root.resolve())).replace("\\", "/")
            for p in globmod.glob(s, recursive=True)
            if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file()
        ]
    else:
        root = Path(s)
        if not root.is_dir():
            raise InputError("not a folder of images (or a glob)", path=root)
        names = [
            str(p.relative_to(root)).replace("\\", "/")
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not any(x.startswith(".") for x in p.parts)
        ]
    if not names:
        raise InputError("no images found", path=source, hint=f"looked for {', '.join(sorted(IMAGE_SUFFIXES))}")
    return root, sorted(names)


def describe(root: Path, rel: str) -> ManifestEntry:
    """Hashes and measures one image (worker side). Size reading failures leave width = height = 0."""
    from segpipe.errors import SegpipeError
    from segpipe.storage.images import image_size

    p = safe_join(root, rel)
    w = h = 0
    try:
        w, h = image_size(p)
    except SegpipeError:
        pass  # an unreadable image is reported per image by the task that decodes it
    return ManifestEntry(stable_id(rel), rel, str(p), w, h, file_sha256(p), p.stat().st_size)


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> int:
    """Writes JSONL atomically; returns the number of lines."""
    from segpipe.storage.atomic import atomic_open

    n = 0
    with atomic_open(path, "w") as f:
        for e in entries:
            f.write(json.dumps(asdict(e), sort_keys=True) + "\n")
            n += 1
    return n


def read_manifest(path: str | Path) -> Iterator[ManifestEntry]:
    """Streams a manifest (raises InputError naming the line on a bad one)."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                yield ManifestEntry(**d)
            except (json.JSONDecodeError, TypeError) as e:
                raise InputError(f"bad manifest line: {e}", path=path, where=f"line {i}") from None
