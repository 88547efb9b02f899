"""Ingest on the workers: each task measures and hashes a shard of a source's images."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from segpipe.errors import SegpipeError
from segpipe.storage.manifest import ManifestEntry, describe, describe_path, file_sha256, is_dicom_file
from segpipe.storage.objects import describe_object
from segpipe.storage.urls import is_url, redact


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


#: The fields of a manifest entry that its file decides, in the order they are compared: a manifest may
#: state them (0 or "": not stated), and a stated one that the file contradicts fails the entry.
CHECKED_FIELDS = ("sha256", "bytes", "width", "height")


def describe_entries(manifest: str, entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """Worker task: the entries of a user's manifest, measured from their files as a folder's are.

    A manifest names each item by its own ``path`` (an absolute local path, resolved against the
    manifest's folder when written relative, or a URL: not a name under one root), so each is measured
    there; its ``id`` and ``file`` are kept. Size, content hash, width, height, depth and kind come from
    the file, never from the manifest: a stated ``sha256`` (or ``bytes``, ``width``, ``height``) the file
    contradicts fails the entry, as an unreadable file does,
    rather than labelling the file under a hash it does not have (``--resume`` would then keep stale
    labels of a changed file).

    Args:
        manifest: The manifest (its path or URL, for the messages).
        entries: Its entries, as read.

    Returns:
        One entry per given entry, in order; one that cannot be read or contradicts its file gets
        ``kind="invalid"`` and its ``error`` (naming the file, and the manifest and field it contradicts).
    """
    return [_measured(manifest, e) for e in entries]


def _measured(manifest: str, given: ManifestEntry) -> ManifestEntry:
    """One entry of :func:`describe_entries`."""
    path = given.path
    if is_url(path):
        folder, _, name = path.rpartition("/")
        found = describe_object(folder, name, given.id)
        shown = redact(path)
    else:
        found, shown = _measured_file(path, given.id), path
    found = dataclasses.replace(found, id=given.id, file=given.file, path=path)
    if found.error:
        error = found.error if shown in found.error else f"{shown}: {found.error}"
        return dataclasses.replace(found, error=error)
    for name in CHECKED_FIELDS:
        stated, measured = getattr(given, name), getattr(found, name)
        if not stated or _equal(name, stated, measured) or _same_content(name, stated, found):
            continue
        if name in ("width", "height") and not measured:
            continue  # the size could not be read: the task that decodes it says why
        return dataclasses.replace(
            found, kind="invalid",
            error=f"{name} in the manifest {manifest} does not match the file {shown}: "
                  f"the manifest says {_short(stated)}, the file has {_short(measured)}")
    return found


def _measured_file(path: str, iid: int) -> ManifestEntry:
    """The entry of the local item at ``path``: a file, a DICOM series folder, or one file of a series."""
    p = Path(path)
    try:
        if p.is_file() and (p.suffix.lower() == ".dcm" or is_dicom_file(p)):
            p = p.parent  # one file of a DICOM series names its series (as open_volume reads it)
        p.stat()
        return describe_path(p, p.name, iid)
    except OSError as e:
        return ManifestEntry(iid, p.name, path, kind="invalid", error=f"cannot read: {e.strerror or e}")
    except SegpipeError as e:
        return ManifestEntry(iid, p.name, path, kind="invalid", error=str(e))
    except ValueError as e:  # a path the OS cannot take (an embedded NUL): the entry fails, not the run
        return ManifestEntry(iid, p.name, path, kind="invalid", error=f"cannot read: {e}")


def _equal(name: str, stated: object, measured: object) -> bool:
    """Whether a stated field equals the measured one (a hex ``sha256`` in either case: the same digest)."""
    if name == "sha256" and isinstance(stated, str) and isinstance(measured, str):
        return stated.lower() == measured.lower()
    return stated == measured


def _same_content(name: str, stated: object, found: ManifestEntry) -> bool:
    """Whether a stated ``sha256`` that differs from the entry's is still the file's own hash.

    A NIfTI file's entry hashes its name with its content (a series' entry hashes every file so), and
    a scene in object storage is identified by its ETag, not read whole; a manifest may state the
    file's plain ``sha256sum`` instead. A local NIfTI file is hashed again to compare; a scene
    in object storage cannot be without reading it whole, so its stated hash is left unchecked.
    """
    if name != "sha256":
        return False
    if found.kind == "scene" and is_url(found.path):
        return True
    if found.kind == "volume" and found.path.lower().endswith((".nii", ".nii.gz")) and os.path.isfile(found.path):
        try:
            return file_sha256(found.path) == str(stated).lower()
        except OSError:
            return False
    return False


def _short(v: object) -> str:
    """A stated or measured value for a message (a hash cut to 12 digits, enough to tell two apart)."""
    return f"{v[:12]}…" if isinstance(v, str) and len(v) > 12 else str(v)
