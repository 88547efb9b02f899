"""Ingest on the workers: each task measures and hashes a shard of a source's images."""

from __future__ import annotations

from pathlib import Path

from segpipe.storage.manifest import ManifestEntry, describe
from segpipe.storage.objects import describe_object
from segpipe.storage.urls import is_url


def describe_images(root: str, names: list[str], ids: list[int | None] | None = None) -> list[ManifestEntry]:
    """Worker task: the manifest entries of ``names`` under ``root`` (sizes, content hashes, kinds).

    Args:
        root: The image folder: a local path, or an object-storage URL whose objects this worker reads
            itself (nothing but the URL travels with the task).
        names: Relative names of its images, in order.
        ids: A dataset's own image id of each (None: a stable id from the name).

    Returns:
        One entry per name, in order (an unreadable file gets an entry with its ``error``).
    """
    if is_url(root):
        return [describe_object(root, n, ids[i] if ids else None) for i, n in enumerate(names)]
    return [describe(Path(root), n, ids[i] if ids else None) for i, n in enumerate(names)]
