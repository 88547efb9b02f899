"""Safe paths: a file name from an annotation file never escapes its root."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from segpipe.errors import UnsafePathError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_WIN_DRIVE = re.compile(r"^[a-zA-Z]:")


def check_relative_name(name: str, *, source: str | Path | None = None, where: str | None = None) -> str:
    """Checks a file name found in an annotation file and returns it normalised to forward slashes.

    Rejected: empty names, NUL bytes, URLs, absolute paths (POSIX, UNC or a Windows drive), and any
    ``..`` component.

    Args:
        name: The name as written in the file.
        source: The annotation file (for the message).
        where: The field (for the message), e.g. ``images[3].file_name``.

    Raises:
        UnsafePathError: naming ``source`` and ``where``.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError("file name is empty or not a string", path=source, where=where)
    if "\x00" in name:
        raise UnsafePathError("file name contains a NUL byte", path=source, where=where)
    if _URL.match(name):
        raise UnsafePathError(f"file name is a URL, not a path: {name!r}", path=source, where=where)
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _WIN_DRIVE.match(norm):
        raise UnsafePathError(f"file name is absolute: {name!r}", path=source, where=where)
    parts = PurePosixPath(norm).parts
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"file name escapes the dataset root: {name!r}", path=source, where=where)
    return "/".join(p for p in parts if p != ".")


def safe_join(
    root: str | Path, name: str, *, source: str | Path | None = None, where: str | None = None
) -> Path:
    """Joins ``root`` and an untrusted relative ``name``, refusing anything that leaves ``root``.

    Symlinks are resolved: a link inside ``root`` that points outside it is refused too.

    Raises:
        UnsafePathError: naming ``source`` and ``where``.
    """
    rel = check_relative_name(name, source=source, where=where)
    root_r = Path(root).resolve()
    target = root_r / rel
    resolved = target.resolve()
    if resolved != root_r and root_r not in resolved.parents:
        raise UnsafePathError(
            f"file name resolves outside the dataset root (symlink?): {name!r}", path=source, where=where
        )
    return target


def ensure_inside(out_root: str | Path, target: str | Path) -> Path:
    """Returns ``target`` if it lies inside ``out_root`` (after resolving), else raises.

    Every writer calls this before creating a file, so that nothing is written outside the output.
    """
    root_r = Path(out_root).resolve()
    t = Path(target)
    parent = t.parent.resolve()
    if parent != root_r and root_r not in parent.parents:
        raise UnsafePathError(f"refusing to write outside the output folder {root_r}", path=target)
    return parent / t.name


def is_within(root: str | Path, path: str | Path) -> bool:
    """True if ``path`` (resolved) is ``root`` or below it."""
    r = Path(root).resolve()
    p = Path(path).resolve()
    return p == r or r in p.parents


def fsync_dir(path: str | Path) -> None:
    """Flushes a directory entry (after a rename) where the OS supports it."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
