"""One error hierarchy for segpipe.

Every error says what went wrong, where (file, JSON path or image id) and, when useful, what to do.
The CLI maps :class:`SegpipeError` to one line on stderr and to ``exit_code``:
0 ok, 1 problems found / partial failure, 2 cannot run.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class SegpipeError(Exception):
    """Base class of every error segpipe raises on purpose.

    Args:
        message: What went wrong, in one sentence.
        path: The file or folder concerned, if any.
        where: A location inside it: a JSON path (``annotations[17].segmentation[0]``), an image id,
            an XML element.
        hint: What the user can do about it.
    """

    exit_code: int = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.where) if p]
        text = ": ".join([*parts, self.message])
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __reduce__(self):  # keep keyword fields when errors cross Dask process boundaries
        return (_rebuild_error, (type(self), self.message, self.path, self.where, self.hint))


def _rebuild_error(cls, message, path, where, hint):  # type: ignore[no-untyped-def]
    return cls(message, path=path, where=where, hint=hint)


class InputError(SegpipeError):
    """An input cannot be read or does not have the expected structure."""


class FormatError(InputError):
    """A file was read but its content is malformed for the format it claims."""


class UnsafePathError(InputError):
    """A file name escapes its root, is absolute, is a URL or contains NUL."""


class ImageDecodeError(InputError):
    """An image or mask is truncated, corrupt, too large or of an unsupported mode."""


class PixelLimitError(ImageDecodeError):
    """An image, scene or recorded size claims more pixels than the ceiling (``SEGPIPE_MAX_PIXELS``)."""


class UnknownNameError(SegpipeError):
    """A registry lookup failed: an unknown format, model or task name."""


class UnsupportedError(SegpipeError):
    """The requested operation is not possible (e.g. a conversion pair that makes no sense)."""


class ConfigError(SegpipeError):
    """A specification, category map or pipeline file is invalid."""


class LossError(SegpipeError):
    """A conversion would lose information and ``--strict`` was given."""

    exit_code = 1


class ProblemsFound(SegpipeError):
    """Validation found problems (already reported one per line)."""

    exit_code = 1


class CheckpointError(SegpipeError):
    """A checkpoint is malformed or unsafe to load; nothing from it was executed."""


class WeightsUnavailableError(SegpipeError):
    """Pretrained weights are not in the local cache and cannot be downloaded here."""


class ExecutionError(SegpipeError):
    """The distributed run failed as a whole (not a per-item failure)."""


class OutputError(InputError):
    """An output path would overlap an input or replace something segpipe did not make (nothing was written)."""


class ResourceError(SegpipeError):
    """The machine ran out of something an input or output needs: disk space, write access, memory."""


#: errno names of the failures to write an output that are the machine's, not segpipe's.
_WRITE_ERRNOS = {"ENOSPC": "disk full", "EDQUOT": "disk quota exceeded", "EROFS": "read-only file system"}
#: errno names of access refusals, which may hit an input as well as an output.
_ACCESS_ERRNOS = {"EACCES": "permission denied", "EPERM": "operation not permitted"}


def describe_failure(exc: BaseException, *, path: str | Path | None = None, output: str | Path | None = None,
                     kept: str | None = None) -> SegpipeError | None:
    """Maps an exception that is no bug of segpipe's to an error of this hierarchy, or None for a bug.

    Readers and writers call this at their boundary, where they know the file; the CLI calls it last,
    for what no boundary caught, so that ``internal error`` stays for real bugs.

    Args:
        exc: The exception.
        path: The file being read, when the caller knows it.
        output: The output the command was asked to write (``--out``, ``DST``, ``--json`` ...): a write
            failure names it, not the staging or ``*.partial`` file the error came from.
        kept: For a write that failed, what was kept (e.g. "the earlier store is unchanged").

    Returns:
        The mapped error, or None when ``exc`` is not one of: disk full, quota, read-only or
        permission errors; memory exhaustion; nesting too deep to read; text that is not UTF-8;
        an image over Pillow's decompression-bomb limit.
    """
    if isinstance(exc, SegpipeError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, "")
        # shutil's copies report the source as filename and the destination as filename2
        target = exc.filename2 if exc.filename2 is not None else exc.filename
        writing = name in _WRITE_ERRNOS or (output is not None and target is not None
                                            and _beside_or_inside(target, output))
        if name in _WRITE_ERRNOS or (name in _ACCESS_ERRNOS and writing):
            what = _WRITE_ERRNOS.get(name) or _ACCESS_ERRNOS[name]
            return ResourceError(f"{what} ({name}) while writing" + (f"; {kept}" if kept else ""),
                                 path=output if output is not None else (target if target is not None else path))
        if name in _ACCESS_ERRNOS:
            return InputError(f"{_ACCESS_ERRNOS[name]} ({name})",
                              path=exc.filename if exc.filename is not None else path)
        return None
    if isinstance(exc, MemoryError):
        return ResourceError("out of memory" + (f"; {kept}" if kept else ""), path=path,
                             hint="an image or a recorded size may be far larger than its file; "
                                  "`segpipe validate` names the entry")
    if isinstance(exc, RecursionError):
        return FormatError("nested too deeply to read (refused)", path=path)
    if isinstance(exc, UnicodeDecodeError):
        return FormatError(f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start})",
                           path=path)
    if type(exc).__name__ == "DecompressionBombError":  # Pillow's; PIL is not imported for the check
        return ImageDecodeError(f"image too large: {exc}", path=path)
    return None


def _beside_or_inside(file: str | bytes | Path, output: str | Path) -> bool:
    """Whether ``file`` is ``output``, inside it, or one of its staging / ``*.partial`` siblings."""
    f = os.path.abspath(os.fsdecode(file))
    o = os.path.abspath(os.fspath(output))
    parent, name = os.path.split(o)
    return (f == o or f.startswith(o + os.sep) or f.startswith(o + ".partial")
            or f.startswith(os.path.join(parent, "." + name + ".")))
