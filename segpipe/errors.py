"""One error hierarchy for segpipe.

Every error says what went wrong, where (file, JSON path or image id) and, when useful, what to do.
The CLI maps :class:`SegpipeError` to one line on stderr and to ``exit_code``:
0 ok, 1 problems found / partial failure, 2 cannot run.
"""

from __future__ import annotations

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
