"""The pixel ceilings, read from the environment on each use (a light module: the CLI checks them up front).

``SEGPIPE_MAX_PIXELS`` bounds images decoded whole and the sizes datasets record; ``SEGPIPE_MAX_SCENE_PIXELS``
bounds scenes read window by window. A malformed value is a :class:`~segpipe.errors.ConfigError` naming
the variable, never an import-time crash.
"""

from __future__ import annotations

import os
from pathlib import Path

from segpipe.errors import ConfigError, PixelLimitError

#: Default largest image, in pixels (about 23k × 23k); ``SEGPIPE_MAX_PIXELS`` overrides it. Larger
#: scenes go through tiled GeoTIFF readers.
MAX_PIXELS: int = 2**29
#: Default largest scene read window by window, in pixels (about 92k × 92k: a 40k × 40k scene fits
#: with room to spare); ``SEGPIPE_MAX_SCENE_PIXELS`` overrides it. A header claiming more is refused
#: before planning: a 152-byte TIFF claiming 200000² pixels would otherwise plan ~10k block tasks.
MAX_SCENE_PIXELS: int = 2**33


def _env_limit(name: str, default: int) -> int:
    """The positive integer in environment variable ``name``, or ``default`` when it is unset.

    Raises:
        ConfigError: the variable is set to anything but a positive integer (read on every call, so
            the CLI can check it once up front and a bad value is one line, never an import crash).
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive whole number of pixels",
                          hint=f"unset it for the default of {default}, or set e.g. {name}={default}")
    return value


def max_pixels() -> int:
    """Largest image, in pixels: ``SEGPIPE_MAX_PIXELS`` or :data:`MAX_PIXELS` (raises ConfigError)."""
    return _env_limit("SEGPIPE_MAX_PIXELS", MAX_PIXELS)


def max_scene_pixels() -> int:
    """Largest scene, in pixels: ``SEGPIPE_MAX_SCENE_PIXELS`` or :data:`MAX_SCENE_PIXELS`."""
    return _env_limit("SEGPIPE_MAX_SCENE_PIXELS", MAX_SCENE_PIXELS)


def check_limits() -> None:
    """Reads both pixel ceilings once, so a malformed variable fails up front with one line.

    Raises:
        ConfigError: ``SEGPIPE_MAX_PIXELS`` or ``SEGPIPE_MAX_SCENE_PIXELS`` is not a positive integer.
    """
    max_pixels()
    max_scene_pixels()


def check_pixel_count(
    width: int, height: int, *, path: str | Path | None, where: str | None = None, what: str = "image",
    limit: int | None = None, scene: bool = False,
) -> None:
    """Refuses a claimed size above the ceiling before anything of that size is planned or allocated.

    Args:
        width: Claimed width (from a header or a dataset record).
        height: Claimed height.
        path: The file that claims it (named in the message).
        where: The field that claims it (``images[3]``, ``ImageWidth`` ...).
        what: ``image`` or ``scene`` (for the message).
        limit: The ceiling; default :func:`max_scene_pixels` for ``scene`` else :func:`max_pixels`.
        scene: Use the scene ceiling and its variable.

    Raises:
        PixelLimitError: ``width * height`` exceeds the ceiling.
    """
    var = "SEGPIPE_MAX_SCENE_PIXELS" if scene else "SEGPIPE_MAX_PIXELS"
    if limit is None:
        limit = max_scene_pixels() if scene else max_pixels()
    n = int(width) * int(height)
    if n > limit:
        raise PixelLimitError(
            f"{what} claims {int(width)}x{int(height)} = {n} pixels, larger than the limit of {limit}",
            path=path, where=where, hint=f"raise {var} if the {what} is genuine",
        )
