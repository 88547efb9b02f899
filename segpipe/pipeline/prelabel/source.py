"""The source of a pre-label run: its images listed on the driver (no pixel read), then measured and
hashed on the workers into the manifest (stable ids, sizes, content hashes).

A source is a local path or an ``s3://``, ``gs://``, ``az://`` or ``https://`` URL
(:mod:`segpipe.storage.objects`): a folder prefix or a glob of images or scenes, a COCO, VOC or YOLO
dataset, or a manifest. A URL is listed on the driver (one LIST; nothing is downloaded but a dataset's
annotation files), every item carries its own URL, and the workers read the bytes themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import stat
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from segpipe.errors import ImageDecodeError, InputError, SegpipeError
from segpipe.execution.runner import run_tasks
from segpipe.kernels.prelabel.ingest import CHECKED_FIELDS, describe_entries, describe_images
from segpipe.pipeline.prelabel.plan import IdOwner, image_id_clash
from segpipe.storage.jsonio import read_json
from segpipe.storage.manifest import (
    ManifestEntry,
    check_entry,
    list_images,
    parse_manifest_line,
    read_manifest,
    read_manifest_lines,
    read_stamp,
    stable_id,
)
from segpipe.storage.manifest_table import ManifestTable
from segpipe.storage.objects import (
    DATASET_FILE_SUFFIXES,
    ObjectInfo,
    head_object,
    is_image_name,
    list_object_images,
    list_objects,
    mirror_dataset,
    unmirror,
)
from segpipe.storage.urls import is_url, read_url, redact


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
        manifest: The entries of a manifest (``.jsonl``) source, as written (measured by :func:`ingest`);
            else None.
        groups: Image folder (a path, or a URL) → ``(relative name, image id or None)`` of its images.
        listed_bytes: The items' total size as an object-storage listing gave it (None: local files).
    """

    manifest: list[ManifestEntry] | None = None
    groups: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)
    listed_bytes: int | None = None

    def __len__(self) -> int:
        return len(self.manifest) if self.manifest is not None else sum(len(v) for v in self.groups.values())

    def total_bytes(self) -> int:
        """The listed files' total size (a manifest's entries: 0, they are not opened here)."""
        if self.listed_bytes is not None:  # object storage: the sizes its listing gave
            return self.listed_bytes
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
    if is_url(source):
        return _list_url_source(source, limit)
    src = Path(source)
    if src.suffix == ".jsonl" and src.is_file():
        listed = unique_entries(_local_manifest(src), source)
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


def _local_manifest(src: Path) -> list[tuple[int, ManifestEntry]]:
    """The entries of a local manifest with their line numbers; a relative ``path`` is resolved against the
    manifest's own folder (as a manifest in a bucket resolves against its folder URL).

    Left relative, a ``path`` was opened from the current folder of each process that read it: the
    driver's and every worker's (another folder on another node), and a ``--resume`` from elsewhere.
    """
    folder = os.path.abspath(src.parent)
    out: list[tuple[int, ManifestEntry]] = []
    for line, e in read_manifest_lines(src, check=True):
        if not is_url(e.path) and not os.path.isabs(e.path):
            e = dataclasses.replace(e, path=os.path.join(folder, e.path))
        out.append((line, e))
    return out


def unique_entries(numbered: list[tuple[int, ManifestEntry]], source: str) -> list[ManifestEntry]:
    """The entries of a user's manifest (with their line numbers), refused when two share an ``id`` or a
    ``file``, or when it has none.

    Two entries with one id would write one image's outputs over the other's (one receipt, one group:
    an image silently lost while the run reports both done); two with one ``file`` name would overwrite
    each other's exported masks, and so would two names that differ only in case on a case-insensitive
    file system (macOS, Windows). ``file`` names are in normal form already (:func:`check_entry`).

    Raises:
        InputError: naming the manifest, the entry (its line and its position among the entries) and the
            field; or no entries ("no images in the manifest", as an empty folder is refused).
    """
    if not numbered:
        raise InputError("no images in the manifest", path=source, hint="one JSON object a line, one per image")
    ids: dict[int, tuple[int, int]] = {}
    files: dict[str, tuple[int, int, str]] = {}
    for k, (line, e) in enumerate(numbered, 1):
        if e.id in ids:
            j, at = ids[e.id]
            raise InputError(f"id {e.id} is already used by entry {j} (line {at}): every image needs its own id",
                             path=source, where=f"line {line}, entry {k}, field id")
        key = e.file.casefold()
        if key in files:
            j, at, name = files[key]
            same = f"file {e.file!r} is already used by entry {j} (line {at})" if name == e.file else \
                f"file {e.file!r} differs only in case from file {name!r} of entry {j} (line {at})"
            raise InputError(f"{same}: every image needs its own file name (exports are named by it)",
                             path=source, where=f"line {line}, entry {k}, field file")
        ids[e.id] = (k, line)
        files[key] = (k, line, e.file)
    return [e for _, e in numbered]


_Entries = TypeVar("_Entries", list[ManifestEntry], ManifestTable)


def check_image_ids(entries: _Entries, source: str) -> _Entries:
    """``entries``, measured, refused when two items would write one image id (:func:`image_id_clash`).

    A volume's slices get ids of their own, known once it is measured: an entry's ``id`` equal to one
    of them would overwrite that slice while the run reports both done.

    Raises:
        InputError: naming the source, the entry (its line, for a local manifest) and the field ``id``.
    """
    clash = image_id_clash(entries)
    if clash is None:
        return entries
    iid, first, later = clash
    # The entry to blame is the one whose own id it is (a slice's id is derived, not written by the user).
    blamed, other = (first, later) if later[1] is not None and first[1] is None else (later, first)
    line = _line_of(source, blamed[0].id) if blamed[1] is None else None
    where = f"line {line}, field id" if line else f"the entry of file {blamed[0].file!r}, field id"
    raise InputError(f"id {iid} of {_owner(blamed)} is also the id of {_owner(other)}: every image needs its own id",
                     path=source, where=where,
                     hint="a volume's slices have ids of their own, derived from its file name" if
                     other[1] is not None or blamed[1] is not None else None)


def _owner(owner: IdOwner) -> str:
    """An item writing an image id, for a message: ``'a.png'`` or ``slice 3 of volume 'v.nii.gz'``."""
    e, z = owner
    return f"{e.file!r}" if z is None else f"slice {z} of volume {e.file!r}"


def _line_of(source: str, iid: int) -> int | None:
    """The line of a local manifest source whose entry has id ``iid`` (None: not a local manifest, or not found).

    Read again, only to name the line in a refusal: the measured entries do not keep their lines.
    """
    if is_url(source) or not source.endswith(".jsonl"):
        return None
    try:
        return next((i for i, e in read_manifest_lines(source) if e.id == iid), None)
    except (OSError, SegpipeError):
        return None


#: Dataset formats read from object storage through a local mirror of their annotation files
#: (:func:`segpipe.storage.objects.mirror_dataset`); their readers open no image to list it.
URL_DATASET_FORMATS = ("coco", "voc", "yolo")


def _list_url_source(source: str, limit: int | None) -> SourceListing:
    """:func:`list_source` of an object-storage URL: one LIST of the prefix (sizes included), no download.

    Raises:
        InputError: nothing to pre-label there, a listing or a read refused (naming the URL).
    """
    text = source.rstrip("/")
    if text.endswith(".jsonl"):
        listed = unique_entries(_url_manifest(text), redact(text))
        return SourceListing(manifest=listed[:limit] if limit else listed)
    single = None if any(c in text for c in "*?[") else head_object(text)
    if single is not None:
        folder, _, name = text.rpartition("/")
        if name.lower().endswith(DATASET_FILE_SUFFIXES):
            return _url_dataset_file(text, limit)
        if not is_image_name(name):
            raise InputError("not an image, a scene, a manifest (.jsonl) or a dataset file", path=redact(text))
        return SourceListing(groups={folder: [(name, None)]}, listed_bytes=single.size)
    objects: list[ObjectInfo] = []
    if not any(c in text for c in "*?["):
        objects = list_objects(text)
        if any(o.key.lower().endswith(DATASET_FILE_SUFFIXES) for o in objects):
            groups = _url_dataset_images(text, objects)
            if groups is not None:
                return _limited(groups, limit, text, objects)
    root, images = list_object_images(text)
    return _limited({root: [(o.key, None) for o in images]}, limit, root, images)


def _limited(groups: dict[str, list[tuple[str, int | None]]], limit: int | None, root: str,
             objects: list[ObjectInfo]) -> SourceListing:
    """The listing of ``groups`` (the first ``limit`` items of the first group), sized from ``objects``
    (listed below ``root``).
    """
    if limit:
        groups = {k: v[:limit] for k, v in list(groups.items())[:1]}
    sizes = {f"{root}/{o.key}": o.size for o in objects}
    total = sum(sizes.get(f"{folder}/{name}", 0) for folder, items in groups.items() for name, _ in items)
    return SourceListing(groups=groups, listed_bytes=total)


def _url_manifest(url: str) -> list[tuple[int, ManifestEntry]]:
    """The entries of a manifest object with their line numbers; a relative ``path`` is resolved against
    the manifest's folder URL.

    Raises:
        InputError: it cannot be read, or a line is not UTF-8 or not a manifest entry (naming the URL and
            the line).
    """
    folder = url.rpartition("/")[0]
    out: list[tuple[int, ManifestEntry]] = []
    for i, raw in enumerate(read_url(url).split(b"\n"), 1):
        parsed = parse_manifest_line(raw, redact(url), i)
        if parsed is None:
            continue
        e = check_entry(parsed, redact(url), i)
        if not is_url(e.path) and not os.path.isabs(e.path):
            e = dataclasses.replace(e, path=f"{folder}/{e.path}")
        out.append((i, e))
    return out


def _url_dataset_file(url: str, limit: int | None) -> SourceListing:
    """A dataset named by its annotation file (``s3://b/ds/annotations.json``, ``…/data.yaml``).

    The file's folder is listed and mirrored, or the folder above it when the file lies in
    ``annotations/`` (``ds/annotations/instances_val.json`` with ``ds/images/``), as
    :func:`segpipe.storage.outputs.dataset_inputs` takes a local dataset file.
    """
    folder = url.rpartition("/")[0]
    top = folder.rpartition("/")[0] if folder.rpartition("/")[2] == "annotations" else folder
    objects = list_objects(top)
    groups = _url_dataset_images(top, objects, file=url[len(top) + 1:])
    if groups is None:
        raise InputError("not a dataset segpipe reads (COCO, VOC, YOLO)", path=redact(url))
    return _limited(groups, limit, top, objects)


def _url_dataset_images(url: str, objects: list[ObjectInfo], file: str | None = None,
                        ) -> dict[str, list[tuple[str, int | None]]] | None:
    """A dataset's images and their ids, read by its own reader from a mirror of its annotation files.

    Args:
        url: The dataset's folder URL.
        objects: Its objects, listed.
        file: The annotation file named as the source, relative to ``url`` (None: the folder itself).

    Returns:
        Folder URL → ``(name, image id)``, as for a local dataset; None when the folder is no dataset
        (then it is a folder of images, as locally).

    Raises:
        InputError: a format read from local datasets only (naming it), no image named by the dataset, or
            the reader's own error (naming the URL, not the mirror).
    """
    # lazy: the format registry (~0.3 s) is read for dataset sources only, not for a glob or a manifest
    from segpipe.formats import detect_format

    with tempfile.TemporaryDirectory(prefix="segpipe-source-") as tmp:
        mirror = Path(tmp) / "dataset"
        mirror.mkdir()
        mirror_dataset(url, mirror, objects)
        target = mirror.joinpath(*file.split("/")) if file else mirror
        try:
            try:
                fmt = detect_format(target)
            except SegpipeError:
                if file:
                    raise
                return None
            if fmt not in URL_DATASET_FORMATS:
                raise InputError(f"the {fmt} reader reads local datasets only (from object storage: "
                                 f"{', '.join(URL_DATASET_FORMATS)})", path=redact(url),
                                 hint="copy the dataset to a local folder, or pre-label its images folder")
            found = _dataset_found(fmt, target)
        except ImageDecodeError as e:
            # a placeholder opened: this reader needs an image's header (VOC without <size>, say)
            raise InputError("this dataset's annotations leave an image's size to its file, which is not read "
                             "from object storage at listing time", path=_unmirrored(e.path or url, mirror, url),
                             hint="copy the dataset to a local folder, or pre-label its images folder") from None
        except SegpipeError as e:
            if str(mirror) not in str(e) and str(mirror.resolve()) not in str(e):
                raise
            raise InputError(_unmirrored(e.message, mirror, url), path=_unmirrored(e.path or url, mirror, url),
                             where=e.where, hint=e.hint) from None
        groups: dict[str, list[tuple[str, int | None]]] = {}
        present = {o.key for o in objects}
        for p, iid in found:
            image = unmirror(p, mirror, url)
            if image[len(url) + 1:] not in present:
                continue  # named by the dataset, not in the bucket (as a missing local file is skipped)
            folder, _, name = image.rpartition("/")
            groups.setdefault(folder, []).append((name, iid))
    if not groups:
        raise InputError(f"the {fmt} dataset names no image file that exists", path=redact(url))
    return groups


def _dataset_found(fmt: str, target: Path) -> list[tuple[Path, int | None]]:
    """``(image path, image id)`` of a mirrored dataset, as its own reader names them."""
    if fmt == "yolo":
        # lazy: the YOLO layout (image ids are the reader's: its order of the listed images)
        from segpipe.formats.yolo.layout import index

        return [(Path(e.image), i) for i, e in enumerate(index(target).entries, start=1)]
    # lazy: the format registry (~0.3 s) is read for dataset sources only
    from segpipe.formats import get_format

    reader = get_format(fmt).reader(target)
    return [(Path(smp.image_path), smp.image.id) for smp in reader.samples() if smp.image_path]


def _unmirrored(text: str, mirror: Path, url: str) -> str:
    """A reader's message or path about the mirror, naming the dataset's URL instead."""
    return text.replace(str(mirror.resolve()), redact(url)).replace(str(mirror), redact(url))


def ingest(source: str, client: Any, *, limit: int | None = None,
           progress: Callable[[int, int, int], None] | None = None,
           listing: SourceListing | None = None) -> ManifestTable:
    """Lists the source's images (unless ``listing`` is given) and measures and hashes them on the workers.

    Returns:
        The manifest, sorted by file name; a manifest source's in its own order. Held in columns
        (:class:`~segpipe.storage.manifest_table.ManifestTable`): each batch of measured entries the
        workers send back is added to it as it arrives, so 100k entries are never held as objects.
    """
    listing = listing if listing is not None else list_source(source, limit=limit)
    if listing.manifest is not None:
        return _measure_manifest(source, client, listing.manifest, progress)
    groups = listing.groups
    tasks = []
    for base, items in groups.items():
        for i in range(0, len(items), 64):
            chunk = items[i : i + 64]
            key = "ingest-" + hashlib.sha1(f"{base}|{chunk[0][0]}|{len(chunk)}".encode()).hexdigest()[:16]
            tasks.append((key, (base, [n for n, _ in chunk], [iid for _, iid in chunk])))
    order = {key: k for k, (key, _) in enumerate(tasks)}
    table = _InOrder()
    total = sum(len(v) for v in groups.values())
    for key, res in run_tasks(client, describe_images, iter(tasks), total=len(tasks), max_in_flight=8):
        table.add(order[key], res)
        if progress:
            progress(table.added, total, 0)
    return check_image_ids(table.done().sorted_by_file(), source)


class _InOrder:
    """A table filled by numbered batches that arrive in any order: each is appended once every batch
    before it is (only the batches that came early are held as entries: a few, as tasks in flight are).
    """

    def __init__(self) -> None:
        self.table = ManifestTable()
        self.early: dict[int, list[ManifestEntry]] = {}
        self.next = 0
        self.added = 0

    def add(self, k: int, entries: list[ManifestEntry]) -> None:
        """Batch ``k`` (0, 1, …) has arrived."""
        self.early[k] = entries
        self.added += len(entries)
        while self.next in self.early:
            self.table.extend(self.early.pop(self.next))
            self.next += 1

    def done(self) -> ManifestTable:
        """The table, once every batch has arrived."""
        for k in sorted(self.early):  # none, unless a batch never came (a failure raised before this)
            self.table.extend(self.early.pop(k))
        return self.table


def _measure_manifest(source: str, client: Any, given: list[ManifestEntry],
                      progress: Callable[[int, int, int], None] | None) -> ManifestTable:
    """A manifest source's entries measured on the workers (:func:`describe_entries`), in its order."""
    shown = redact(source) if is_url(source) else source
    tasks: list[tuple[str, tuple[str, list[ManifestEntry]]]] = []
    for i in range(0, len(given), 64):
        chunk = given[i : i + 64]
        key = "ingest-" + hashlib.sha1(f"{source}|{i}|{chunk[0].file}|{len(chunk)}".encode()).hexdigest()[:16]
        tasks.append((key, (shown, chunk)))
    order = {key: k for k, (key, _) in enumerate(tasks)}
    table = _InOrder()
    for key, res in run_tasks(client, describe_entries, iter(tasks), total=len(tasks), max_in_flight=8):
        table.add(order[key], res)
        if progress:
            progress(table.added, len(given), 0)
    return check_image_ids(table.done(), shown)


#: A file modified this close before a manifest's check time is hashed again: some file systems keep
#: modification times to 2 s only, so a write just after the check could still look older than it.
MTIME_MARGIN_NS = 2_000_000_000


def reuse_manifest(listing: SourceListing, manifest: str | Path) -> tuple[ManifestTable, SourceListing]:
    """Splits a local listing into the entries a store's manifest still vouches for and the rest to hash.

    An entry is reused when its item is a plain file (no symlink, no folder) at the same place, under the
    same id, of the same size, last modified and last changed (``st_ctime``, which no copy tool can set
    back, unlike a preserved modification time) before the manifest's check time (:func:`read_stamp`,
    less :data:`MTIME_MARGIN_NS`), in a folder that does not resolve outside the listed root: its content is
    then the one hashed, so its task key (and receipt) stay the same. A manifest source's entry is reused
    on the same terms (its file at the same local ``path``, under the same ``id``, and every field it
    states equal to the one measured before). Everything else (new, changed, refused or unreadable items,
    volumes, object-storage sources and URLs) is left for :func:`ingest`.

    Args:
        listing: The source as :func:`list_source` listed it.
        manifest: The store's ``manifest.jsonl``.

    Returns:
        ``(reused entries, listing of the items still to measure and hash)``: the entries in columns
        (a 100k-image store's manifest is read into a table, not into 100k objects), in listing order.
    """
    checked = read_stamp(manifest)
    if checked is None or listing.listed_bytes is not None or any(is_url(g) for g in listing.groups):
        return ManifestTable(), listing
    try:
        table = ManifestTable(read_manifest(manifest))
    except (OSError, SegpipeError) as err:
        # Unreadable (not UTF-8, a torn line): every item is hashed again, as when it is missing, and the
        # run writes it anew; said once, so that a damaged store is not passed over in silence.
        why = err if isinstance(err, SegpipeError) else f"{manifest}: cannot read: {err.strerror or err}"
        warnings.warn(f"{why}; "
                      "the store's manifest is not used: every item is measured and hashed again", stacklevel=2)
        return ManifestTable(), listing
    known = {table.file(row): row for row in range(len(table))}  # a later line of one file wins, as before
    limit_ns = checked - MTIME_MARGIN_NS
    if listing.manifest is not None:
        reused_rows: list[int] = []
        left: list[ManifestEntry] = []
        for given in listing.manifest:
            k = known.get(given.file)
            if k is not None and _entry_unchanged(given, table[k], limit_ns):
                reused_rows.append(k)
            else:
                left.append(given)
        return table.take(reused_rows), SourceListing(manifest=left)
    reused = ManifestTable()
    rest: dict[str, list[tuple[str, int | None]]] = {}
    for base, items in listing.groups.items():
        root = Path(base).resolve()
        inside: dict[str, bool] = {}  # folder -> resolves inside root (a folder swapped for a link leaves it)
        prefix = os.path.join(root, "")
        for name, iid in items:
            k = known.get(name)
            e = table[k] if k is not None else None
            if e is not None and _unchanged(e, root, prefix, name, iid, limit_ns, inside):
                reused.append(e)
            else:
                rest.setdefault(base, []).append((name, iid))
    return reused, SourceListing(groups=rest)


def _unchanged(e: ManifestEntry, root: Path, prefix: str, name: str, iid: int | None, limit_ns: int,
               inside: dict[str, bool]) -> bool:
    """Whether manifest entry ``e`` still describes file ``name`` under ``root`` (see :func:`reuse_manifest`).

    ``prefix`` is ``root`` and a separator, joined once per listing.
    """
    if e.kind not in ("image", "scene") or e.error or e.id != (stable_id(name) if iid is None else int(iid)):
        return False
    # string joins: pathlib's parsing of 100k paths cost seconds; a name that does not join plainly
    # (``./``, ``..``, doubled separators) is compared as pathlib spells it
    path = prefix + name
    if e.path != path and e.path != str(root / name):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != e.bytes or max(st.st_mtime_ns, st.st_ctime_ns) >= limit_ns:
        return False
    folder = os.path.dirname(name)
    if folder not in inside:
        real = (root / folder).resolve()
        inside[folder] = real == root or root in real.parents
    return inside[folder]


def _entry_unchanged(given: ManifestEntry, e: ManifestEntry, limit_ns: int) -> bool:
    """Whether ``e``, measured by an earlier run, still describes the manifest source's entry ``given``."""
    if e.kind not in ("image", "scene") or e.error or e.id != given.id or e.path != given.path \
            or is_url(given.path):
        return False
    if any(getattr(given, f) and getattr(given, f) != getattr(e, f) for f in CHECKED_FIELDS):
        return False  # measured again, so that the entry fails naming the field the file contradicts
    try:
        st = os.lstat(given.path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == e.bytes and max(st.st_mtime_ns, st.st_ctime_ns) < limit_ns


def merge_entries(source: str, reused: ManifestTable, measured: ManifestTable) -> ManifestTable:
    """The manifest of ``reused`` and freshly ``measured`` entries, sorted by file name (ids checked unique).

    Raises:
        InputError: two items would write one image id (:func:`check_image_ids`).
    """
    return check_image_ids(reused.sorted_by_file().merged(measured.sorted_by_file()), source)


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
