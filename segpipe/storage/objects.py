"""Sources in object storage: images, scenes and dataset files named by ``s3://``, ``gs://``, ``az://`` or
``https://`` URLs, listed on the driver and read by the workers themselves.

Every object is reached through a :class:`~segpipe.storage.location.Location` rooted at its bucket (one
obstore client per bucket and process), so an item's URL is all a task carries: nodes share nothing but
the storage. Listing costs one LIST of the prefix (sizes included); nothing is downloaded up front.

What each item is, and how its manifest entry is measured (:func:`describe_object`, on a worker):

* an image: its bytes are read once, hashed (``sha256``, as for a local file, so the same image gives the
  same task key wherever it lives) and its size read from the header;
* a scene (``.tif``/``.tiff`` that rasterio opens): measured from its header through GDAL (read by
  window, never whole), and identified by the object's ETag and size, not by hashing every byte: a
  multi-gigabyte COG would otherwise be downloaded once just to be named;
* a volume (NIfTI, DICOM): refused per item, volumes are read from local files only.

Errors name the URL without any ``user:password@`` (:func:`~segpipe.storage.location.names_object_storage`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from segpipe.errors import InputError, PixelLimitError, SegpipeError
from segpipe.storage.manifest import IMAGE_SUFFIXES, SCENE_SUFFIXES, VOLUME_SUFFIXES, ManifestEntry, stable_id
from segpipe.storage.urls import error_reason, read_url, redact, split_url

__all__ = ["ObjectInfo", "describe_object", "list_object_images", "list_objects", "mirror_dataset", "head_object",
           "unmirror"]

#: Files a dataset reader parses (annotations, split lists, metadata): downloaded by :func:`mirror_dataset`.
DATASET_FILE_SUFFIXES = (".json", ".xml", ".txt", ".yaml", ".yml", ".csv", ".names")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object.

    Attributes:
        key: Its key relative to the listed prefix (``/``-separated).
        size: Bytes.
        etag: The service's entity tag (None where it gives none).
    """

    key: str
    size: int
    etag: str | None = None


def list_objects(url: str) -> list[ObjectInfo]:
    """Every object below the prefix ``url`` (recursively), keys relative to it, sorted.

    Raises:
        InputError: the bucket does not exist, the service refuses the listing, or ``https://`` (an HTTP
            server has no listing: name a manifest, a dataset file or a scene instead).
    """
    import obstore  # lazy: the Rust extension loads only when object storage is used

    loc, prefix = split_url(url)
    if urlsplit(loc.url).scheme == "https":
        # A dataset's images are found by listing too: over https only what is named is read.
        raise InputError("an https:// server cannot be listed (no folders, globs or datasets there); name a "
                         "manifest (.jsonl) of image URLs, one image or one scene instead", path=redact(url))
    out: list[ObjectInfo] = []
    try:
        for batch in obstore.list(loc.store, prefix or None):
            for meta in batch:
                path = str(meta["path"])
                rel = path[len(prefix):].lstrip("/") if prefix else path
                if rel:
                    out.append(ObjectInfo(rel, int(meta["size"]), meta.get("e_tag")))
    except Exception as e:  # obstore's errors: a missing bucket, refused credentials, no connection
        raise InputError(f"cannot list: {error_reason(e)}", path=redact(url)) from None
    out.sort(key=lambda o: o.key)
    return out


def _segment_matches(name: str, pattern: str) -> bool:
    # As glob does: a wildcard never matches a leading dot (hidden files stay hidden).
    return fnmatch.fnmatchcase(name, pattern) and (not name.startswith(".") or pattern.startswith("."))


def _glob_matches(parts: list[str], pattern: list[str]) -> bool:
    """``glob(recursive=True)`` semantics on ``/``-separated keys: ``*`` stays in one segment, ``**`` spans any."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    return bool(parts) and _segment_matches(parts[0], pattern[0]) and _glob_matches(parts[1:], pattern[1:])


def is_image_name(rel: str) -> bool:
    """Whether a listed key is an item :func:`~segpipe.storage.manifest.list_images` would list."""
    low = rel.lower()
    if posixpath.splitext(low)[1] not in IMAGE_SUFFIXES:
        return False
    return not (low.endswith(".gz") and not low.endswith(".nii.gz"))


def list_object_images(source: str) -> tuple[str, list[ObjectInfo]]:
    """The images of a folder prefix (recursively) or a glob in object storage, as a local one is listed.

    ``s3://b/imgs`` lists every image below ``imgs/`` (hidden names skipped); ``s3://b/imgs/*.jpg`` and
    ``s3://b/imgs/**/*.png`` match as :func:`glob.glob` (recursive) does, relative to the folder before
    the first wildcard.

    Returns:
        ``(root URL, its images sorted by relative key)``.

    Raises:
        InputError: nothing matches, or the listing fails (naming the URL).
    """
    text = source.rstrip("/")
    if any(c in text for c in _GLOB_CHARS):
        head = min(text.index(c) for c in _GLOB_CHARS if c in text)
        bucket_end = text.find("/", text.index("://") + 3)
        if bucket_end < 0 or head < bucket_end:
            raise InputError("a wildcard in the bucket name: only keys can be matched", path=redact(source))
        root = text[: text.rindex("/", 0, head)]
        pattern = text[len(root) + 1:].split("/")
        listed = [o for o in list_objects(root) if _glob_matches(o.key.split("/"), pattern)]
    else:
        root = text
        listed = [o for o in list_objects(root) if not any(p.startswith(".") for p in o.key.split("/"))]
    images = [o for o in listed if is_image_name(o.key)]
    if not images:
        raise InputError("no images found", path=redact(source),
                         hint=f"looked for {', '.join(sorted(IMAGE_SUFFIXES))} below it")
    return root, images


def describe_object(root: str, rel: str, image_id: int | None = None) -> ManifestEntry:
    """Measures and identifies one item of an object-storage source (worker side; see the module doc).

    Args:
        root: The source's root URL.
        rel: The item's key relative to it.
        image_id: The id the source dataset gives it; a stable id from ``rel`` otherwise (as locally).

    Returns:
        Its entry; an item that cannot be read gets ``kind="invalid"`` and the one-line ``error``.
    """
    iid = stable_id(rel) if image_id is None else int(image_id)
    url = f"{root}/{rel}"
    low = rel.lower()
    if posixpath.splitext(low)[1] in VOLUME_SUFFIXES or low.endswith(".dcm"):
        return ManifestEntry(iid, rel, url, kind="invalid",
                             error="volumes (NIfTI, DICOM) are read from local files only; copy them to a folder")
    if posixpath.splitext(low)[1] in SCENE_SUFFIXES:
        entry = _describe_scene(url, rel, iid)
        if entry is not None:
            return entry
    try:
        data = read_url(url)
    except SegpipeError as e:
        return ManifestEntry(iid, rel, url, kind="invalid", error=e.message)
    from segpipe.storage.images import image_size  # lazy: imports numpy and Pillow

    w = h = 0
    try:
        w, h = image_size(url, data=data)
    except SegpipeError:
        pass  # an unreadable image is reported per image by the task that decodes it (as locally)
    return ManifestEntry(iid, rel, url, w, h, hashlib.sha256(data).hexdigest(), len(data), "image")


def _describe_scene(url: str, rel: str, iid: int) -> ManifestEntry | None:
    """A scene's entry from its header and the object's ETag, or None when it is no scene GDAL reads."""
    from segpipe.storage.raster import GeoreferenceWarning, have_rasterio, open_raster  # lazy: imports numpy

    if not have_rasterio():
        return None  # tifffile reads local files only: decoded whole, as an image
    import obstore  # lazy: the Rust extension loads only when object storage is used

    loc, key = split_url(url)
    try:
        meta = obstore.head(loc.store, key)
    except Exception as e:  # a missing object or a refused request: this item fails alone
        reason = "not found" if isinstance(e, FileNotFoundError) else f"cannot read: {error_reason(e)}"
        return ManifestEntry(iid, rel, url, kind="invalid", error=reason)
    try:
        with warnings.catch_warnings():
            # The driver warns once when it opens the scene to plan its blocks.
            warnings.simplefilter("ignore", GeoreferenceWarning)
            src = open_raster(url, stretch="none")
    except PixelLimitError as e:
        return ManifestEntry(iid, rel, url, kind="invalid", error=str(e))
    except SegpipeError:
        return None
    h, w = src.shape
    src.close()
    ident = f"object|{meta.get('e_tag') or meta.get('last_modified')}|{meta['size']}"
    return ManifestEntry(iid, rel, url, w, h, hashlib.sha256(ident.encode()).hexdigest(), int(meta["size"]),
                         "scene")


def mirror_dataset(url: str, dest: Path, listed: list[ObjectInfo] | None = None) -> None:
    """Lays out a dataset of object storage under ``dest`` for a file-based reader (driver side).

    The files a reader parses (:data:`DATASET_FILE_SUFFIXES`: annotations, split lists, metadata) are
    downloaded; every other object (images, masks) becomes an empty placeholder, so that a reader finds
    and names them exactly as in a local copy without a pixel being read. Paths a reader returns under
    ``dest`` map back to ``url`` (:func:`unmirror`).

    Args:
        url: The dataset's folder URL.
        dest: An empty local folder.
        listed: Its objects when already listed.

    Raises:
        InputError: the listing or a download fails (naming the URL).
    """
    objects = listed if listed is not None else list_objects(url)
    wanted = [o.key for o in objects if o.key.lower().endswith(DATASET_FILE_SUFFIXES)]

    def fetch(key: str) -> tuple[str, bytes]:
        return key, read_url(f"{url}/{key}")

    laid: set[str] = set()
    for o in objects:
        parts = o.key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            continue  # a key that would leave the folder (or name none): no reader may see it
        target = dest.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        except OSError:  # "a" and "a/b" both objects: a file system holds one of them
            continue
        laid.add(o.key)
    wanted = [k for k in wanted if k in laid]
    # Annotation files are small and many (one XML per VOC image): fetched concurrently.
    with ThreadPoolExecutor(max_workers=16) as pool:
        for key, data in pool.map(fetch, wanted):
            dest.joinpath(*key.split("/")).write_bytes(data)


def unmirror(path: str | Path, dest: Path, url: str) -> str:
    """The URL of a path under a :func:`mirror_dataset` folder (anything else is returned as it is)."""
    p = Path(path)
    try:
        rel = p.resolve().relative_to(dest.resolve())
    except ValueError:
        return str(path)
    return f"{url}/{rel.as_posix()}" if rel.parts else url


def head_object(url: str) -> ObjectInfo | None:
    """The object of exactly the key of ``url`` (its key is its name), or None (a folder prefix, or nothing).

    Raises:
        InputError: a URL segpipe does not read (see :func:`~segpipe.storage.urls.split_url`); over
            ``https://`` (which has no listing to say why): a file's URL the server answers 404 for, or a
            refused request (an untrusted certificate, say).
    """
    import obstore  # lazy: the Rust extension loads only when object storage is used
    from obstore.exceptions import NotFoundError

    loc, key = split_url(url)
    if not key:
        return None
    https = urlsplit(loc.url).scheme == "https"
    if https and not posixpath.splitext(key)[1]:
        return None  # a folder's URL: refused as one (HTTP has no listing), without asking the server
    try:
        meta = obstore.head(loc.store, key)
    except (NotFoundError, FileNotFoundError):
        if https:
            # no listing to fall back on: a file's URL that answers 404 is simply not there
            raise InputError("not found (the server answered 404)", path=redact(url)) from None
        return None  # a prefix, whose listing says what is (not) there
    except Exception as e:  # a refused request: the listing says why, where there is one
        if https:
            raise InputError(f"cannot read: {error_reason(e)}", path=redact(url)) from None
        return None
    return ObjectInfo(key.rpartition("/")[2], int(meta["size"]), meta.get("e_tag"))
