"""The source of a pre-label run: its images listed on the driver (no pixel read), then measured and
hashed on the workers into the manifest (stable ids, sizes, content hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segpipe.errors import InputError, SegpipeError
from segpipe.execution.runner import run_tasks
from segpipe.kernels.prelabel.ingest import describe_images
from segpipe.storage.jsonio import read_json
from segpipe.storage.manifest import ManifestEntry, list_images, read_manifest


def _dataset_images(source: Path) -> list[tuple[Path, str, int | None]]:
    """The existing image files of a dataset, with the dataset's own image ids."""
    # lazy: the format registry (~0.3 s) is read for dataset sources only, not for a glob or a manifest
    from segpipe.formats import detect_format, get_format

    fmt = detect_format(source)
    if fmt == "nifti":
        return _dataset_volumes(source)
    reader = get_format(fmt).reader(source)
    out: list[tuple[Path, str, int | None]] = []
    for s in reader.samples():
        if s.image_path is None:
            continue
        p = Path(s.image_path)
        out.append((p.parent, p.name, s.image.id))
    if not out:
        raise InputError(f"the {fmt} dataset names no image file that exists", path=source)
    return out


def _dataset_volumes(source: Path) -> list[tuple[Path, str, int | None]]:
    """The image volumes a NIfTI ground-truth folder names in ``volumes.json`` (what synth writes).

    ``volumes/00000.nii.gz`` is item ``00000.nii.gz`` of root ``volumes/``, as when pre-labeling that
    folder directly: slice ids and names then match the ground truth's.
    """
    index = source / "volumes.json"
    vols = read_json(index).get("volumes", []) if index.is_file() else []
    out: list[tuple[Path, str, int | None]] = []
    for v in vols if isinstance(vols, list) else []:
        image = str(v.get("image", "")) if isinstance(v, dict) else ""
        parts = Path(image).parts
        if len(parts) >= 2 and (source / image).exists():
            out.append((source / parts[0], "/".join(parts[1:]), None))
    if not out:
        raise InputError("the NIfTI dataset names no image volume that exists (volumes.json: volumes[].image)",
                         path=source, hint="pre-label the folder of image volumes itself")
    return out


@dataclass
class SourceListing:
    """What a source holds, listed on the driver before any cluster starts (no pixel read).

    Attributes:
        manifest: The entries of a manifest (``.jsonl``) source, already measured; else None.
        groups: Image folder → ``(relative name, image id or None)`` of its images.
    """

    manifest: list[ManifestEntry] | None = None
    groups: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.manifest) if self.manifest is not None else sum(len(v) for v in self.groups.values())

    def total_bytes(self) -> int:
        """The listed files' total size (a manifest's entries: 0, they are not opened here)."""
        n = 0
        for base, items in self.groups.items():
            for name, _ in items:
                with contextlib.suppress(OSError):
                    n += os.stat(os.path.join(base, name)).st_size
        return n


#: A prelabel job's estimated seconds per image in one process (a small model on a 512^2 image on one
#: CPU thread), and the file size above which an input counts as a scene (tiled: much more per file).
#: Rough by design: it only picks in-process or the embedded cluster (ClusterSpec.sized).
PRELABEL_IMAGE_S = 0.25
SCENE_BYTES = 16 << 20


def estimate_prelabel_s(listing: SourceListing) -> float:
    """Rough in-process seconds of pre-labeling ``listing`` (see :data:`PRELABEL_IMAGE_S`)."""
    if listing.manifest is not None:
        return len(listing) * PRELABEL_IMAGE_S
    big = listing.total_bytes() > SCENE_BYTES * max(1, len(listing) // 64)
    return float("inf") if big else len(listing) * PRELABEL_IMAGE_S


def list_source(source: str, *, limit: int | None = None) -> SourceListing:
    """Lists a source's images on the driver: cheap, and an empty or unreadable source fails here.

    Raises:
        InputError: no images, an unreadable folder or dataset file (names it).
    """
    src = Path(source)
    if src.suffix == ".jsonl" and src.is_file():
        listed = list(read_manifest(src))
        return SourceListing(manifest=listed[:limit] if limit else listed)
    groups: dict[str, list[tuple[str, int | None]]] = {}
    if (src.is_dir() and not any(c in source for c in "*?[") and not _looks_like_images_folder(src)) or src.is_file():
        for root, name, iid in _dataset_images(src):
            groups.setdefault(str(root), []).append((name, iid))
    else:
        folder, names = list_images(source)
        groups[str(folder)] = [(n, None) for n in names]
    if limit:
        groups = {k: v[:limit] for k, v in list(groups.items())[:1]}
    return SourceListing(groups=groups)


def ingest(source: str, client: Any, *, limit: int | None = None,
           progress: Callable[[int, int, int], None] | None = None,
           listing: SourceListing | None = None) -> list[ManifestEntry]:
    """Lists the source's images (unless ``listing`` is given) and measures and hashes them on the workers.

    Returns:
        Manifest entries sorted by file name.
    """
    listing = listing if listing is not None else list_source(source, limit=limit)
    if listing.manifest is not None:
        return listing.manifest
    groups = listing.groups
    tasks = []
    for base, items in groups.items():
        for i in range(0, len(items), 64):
            chunk = items[i : i + 64]
            key = "ingest-" + hashlib.sha1(f"{base}|{chunk[0][0]}|{len(chunk)}".encode()).hexdigest()[:16]
            tasks.append((key, (base, [n for n, _ in chunk], [iid for _, iid in chunk])))
    entries: list[ManifestEntry] = []
    total = sum(len(v) for v in groups.values())
    for _, res in run_tasks(client, describe_images, iter(tasks), total=len(tasks), max_in_flight=8):
        entries.extend(res)
        if progress:
            progress(len(entries), total, 0)
    entries.sort(key=lambda e: e.file)
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise InputError("two images map to the same id (duplicate relative paths?)", path=source)
    return entries


def _looks_like_images_folder(p: Path) -> bool:
    """A folder of images rather than a dataset layout (COCO/VOC/mask directory)."""
    # lazy: the format registry (~0.3 s) is read for dataset sources only, not for a glob or a manifest
    from segpipe.formats import detect_format

    try:
        detect_format(p)
    except SegpipeError:
        return True
    return False


# ------------------------------------------------------------------------------------------- task
