"""A model in object storage (``-m s3://bucket/models/x.ckpt``, ``gs://``, ``az://``, ``https://``): pinned on
the driver, copied into a private temporary folder by every process that reads it.

Nodes that share nothing but the bucket cannot read a model at one local path. The driver *pins* the
URL (:func:`pin`): one HEAD for a file, one LIST for a folder prefix (a Hugging Face, smp or SAM folder,
an ONNX pair), and copies the objects into a folder of its own process, recording each object's ETag,
size and the sha256 of the bytes it read. The :class:`ModelPin` travels in the picklable
:class:`~segpipe.models.ref.ModelRef`; each worker copies the same objects (``If-Match`` its ETag) and
checks size and sha256, so it loads exactly the bytes the driver read the metadata of and hashed into
every task key, or refuses in one line (:data:`CHANGED`).

Copies live in one temporary folder per process (``$TMPDIR/segpipe-model-*``, mode 0700), removed when
the process exits; a worker removes its copy as soon as the model is loaded (:func:`release`), since
the loaders hold what they read. Nothing is written anywhere else, and no cache is kept between runs.
The model's forms are then read from the copy by the same sources and checks as a local file (never
code from a checkpoint). Credentials come from the environment (:mod:`segpipe.storage.location`); a
URL that carries ``user:password@`` is refused.
"""

from __future__ import annotations

import hashlib
import multiprocessing.util
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from segpipe.errors import InputError, SegpipeError
from segpipe.storage.location import Location, describe_storage_error
from segpipe.storage.urls import redact, split_url

#: The one-line refusal of a worker whose copy differs from what the driver read.
CHANGED = "the model object changed since the run started"
#: Objects a folder prefix may hold (a model folder has a handful; more is not a model folder).
MAX_FOLDER_OBJECTS = 1000
#: Bytes read per request while copying.
CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class PinnedObject:
    """One object of a pinned model, as the driver read it.

    Attributes:
        name: Its name in the copy: the file name of a single object, or the ``/``-separated path below
            the folder prefix.
        key: Its key in the bucket.
        size: Its size in bytes.
        etag: Its ETag (None where the service gives none).
        sha256: The sha256 of the bytes the driver read.
    """

    name: str
    key: str
    size: int
    etag: str | None
    sha256: str


@dataclass(frozen=True)
class ModelPin:
    """What a model URL named when the driver read it: small and picklable (no bytes, no credentials).

    Attributes:
        url: The model's URL (redacted: it carries no credentials, which are refused anyway).
        folder: True for a folder prefix, False for a single object.
        objects: Its objects, sorted by name.
    """

    url: str
    folder: bool
    objects: tuple[PinnedObject, ...]


def pin(url: str) -> ModelPin:
    """Pins the model at ``url``: its objects listed, copied into this process's folder and hashed.

    A URL that names an object is a model file; one that names no object is a folder prefix (listed:
    a Hugging Face / smp / SAM folder or an ONNX pair, which has a ``config.json`` or ``.onnx`` files
    at its top). ``https://`` names single files only (HTTP cannot list a folder).

    Raises:
        InputError: credentials in the URL; no such bucket or object; a prefix with no model in it; an
            ``https://`` folder (one line naming the URL).
    """
    loc, key = split_url(url)
    shown = redact(url).rstrip("/")
    https = loc.url.startswith("https://")
    if https and (url.endswith("/") or not key):
        raise InputError("an https:// URL names one model file: a folder cannot be listed over HTTP",
                         path=shown, hint="put the folder in s3://, gs:// or az://, or copy it to a local folder")
    meta = None if url.endswith("/") or not key else _head(loc, key, shown)
    if meta is not None:
        objects = [(PurePosixPath(key).name, key, meta)]
        folder = False
    elif https:
        raise InputError("no such object (an https:// URL names one model file: a folder cannot be listed "
                         "over HTTP)", path=shown)
    else:
        objects = _list_folder(loc, key, shown)
        folder = True
    pinned = [_pinned(name, k, m) for name, k, m in objects]
    first = ModelPin(shown, folder, tuple(sorted(pinned, key=lambda o: o.name)))
    # the bytes are read once here, on the driver: their digests complete the pin
    _, digests = _copy(first, check=False)
    done = ModelPin(shown, folder, tuple(
        PinnedObject(o.name, o.key, o.size, o.etag, digests[o.name]) for o in first.objects))
    with _LOCK:
        _COPIES[done] = _COPIES.pop(first)
    return done


def local_copy(pinned: ModelPin) -> Path:
    """This process's copy of ``pinned``: the file, or the folder (copied on first use, checked).

    Raises:
        InputError: :data:`CHANGED` (an object's ETag, size or bytes differ from the pin), or an object
            cannot be read any more.
    """
    root, _ = _copy(pinned, check=True)
    return root if pinned.folder else root / pinned.objects[0].name


def release(pinned: ModelPin) -> None:
    """Removes this process's copy of ``pinned`` (a loaded model holds what it read)."""
    with _LOCK:
        root = _COPIES.pop(pinned, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def named(pinned: ModelPin) -> Iterator[None]:
    """Errors raised while reading the copy name the model's URL, not the temporary folder."""
    try:
        yield
    except SegpipeError as e:
        with _LOCK:
            root = _COPIES.get(pinned)
        if root is None:
            raise
        local = str(root) if pinned.folder else str(root / pinned.objects[0].name)

        def swap(text: str | None) -> str | None:
            if text is None:
                return None
            return text.replace(local, pinned.url).replace(str(root), pinned.url)

        raise type(e)(swap(e.message) or e.message, path=swap(e.path), where=e.where,
                      hint=swap(e.hint)) from None


# ------------------------------------------------------------------------------------------ listing


def _head(loc: Location, key: str, shown: str) -> Any:
    """The object's metadata, or None when no object has that key (it may be a folder prefix)."""
    import obstore  # lazy: the Rust extension loads only when object storage is used
    from obstore.exceptions import NotFoundError

    try:
        return obstore.head(loc.store, key)
    except (NotFoundError, FileNotFoundError):
        return None
    except Exception as e:  # obstore's errors (a missing bucket, permission, network) name this URL
        raise InputError(f"cannot read the model: {describe_storage_error(e)}", path=shown) from None


def _list_folder(loc: Location, key: str, shown: str) -> list[tuple[str, str, Any]]:
    """``(name, key, meta)`` of every object below the prefix ``key``.

    Raises:
        InputError: no bucket, nothing below the prefix, no model at its top, too many objects, or a
            key that is no safe relative path.
    """
    import obstore  # lazy: the Rust extension loads only when object storage is used

    prefix = f"{key.strip('/')}/" if key.strip("/") else ""
    found: list[tuple[str, str, Any]] = []
    try:
        for batch in obstore.list(loc.store, prefix or None):
            for meta in batch:
                k = str(meta["path"])
                if not k.startswith(prefix) or k.endswith("/"):  # a "folder" marker object holds nothing
                    continue
                found.append((k[len(prefix):], k, meta))
                if len(found) > MAX_FOLDER_OBJECTS:
                    raise InputError(f"more than {MAX_FOLDER_OBJECTS} objects below this prefix: not a model "
                                     "folder", path=shown, hint="name the model file, or the folder that "
                                     "holds config.json and the weights")
    except SegpipeError:
        raise
    except Exception as e:  # obstore's errors (a missing bucket, permission, network) name this URL
        raise InputError(f"cannot read the model: {describe_storage_error(e)}", path=shown) from None
    if not found:
        raise InputError("no such object, nor a folder prefix with objects below it", path=shown,
                         hint="name a model file, or the folder that holds config.json and the weights")
    for name, _, _ in found:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):  # a key like a/../b would land outside the copy
            raise InputError(f"the object {name!r} below this prefix is not a plain relative path", path=shown)
    top = {name.split("/", 1)[0] for name, _, _ in found}
    if not any(n == "config.json" or n.lower().endswith(".onnx") for n in top):
        raise InputError(f"no model below this prefix ({len(found)} object{'s' if len(found) > 1 else ''}, "
                         "no config.json or .onnx at its top)", path=shown,
                         hint="a model folder (Hugging Face, smp, SAM, an ONNX pair) holds config.json or "
                              ".onnx files; a model file is named by its own URL")
    return found


def _pinned(name: str, key: str, meta: Any) -> PinnedObject:
    return PinnedObject(name, key, int(meta["size"]), meta.get("e_tag"), "")


# ------------------------------------------------------------------------------------------- copies

_LOCK = threading.Lock()
#: This process's copies: pin → its folder under :func:`_root`.
_COPIES: dict[ModelPin, Path] = {}
_ROOT: tuple[int, Path] | None = None


def _root() -> Path:
    """This process's private folder of model copies (made on first use, removed when it exits)."""
    global _ROOT
    if _ROOT is None or _ROOT[0] != os.getpid():  # a forked child makes its own
        path = Path(tempfile.mkdtemp(prefix="segpipe-model-"))  # mode 0700: this user's only
        # multiprocessing's finalizers run at a normal exit of the main process (atexit) and of a
        # multiprocessing child such as a Dask worker (which skips atexit)
        multiprocessing.util.Finalize(None, shutil.rmtree, args=(str(path),), kwargs={"ignore_errors": True},
                                      exitpriority=10)
        _ROOT = (os.getpid(), path)
    return _ROOT[1]


def _copy(pinned: ModelPin, *, check: bool) -> tuple[Path, dict[str, str]]:
    """The folder holding this process's copy of ``pinned``'s objects, copied now if absent, and the
    sha256 of each object copied now (by name; empty for a copy made before).
    """
    with _LOCK:
        have = _COPIES.get(pinned)
        if have is not None and have.exists():
            return have, {}
        folder = Path(tempfile.mkdtemp(dir=_root()))
        try:
            digests = {obj.name: _fetch(pinned, obj, folder / obj.name, check=check) for obj in pinned.objects}
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        _COPIES[pinned] = folder
        return folder, digests


def _fetch(pinned: ModelPin, obj: PinnedObject, dest: Path, *, check: bool) -> str:
    """Copies one object into ``dest`` (``If-Match`` its ETag); checks size and, when ``check``, sha256.

    Returns:
        The sha256 of the bytes copied.
    """
    import obstore  # lazy: the Rust extension loads only when object storage is used
    from obstore.exceptions import NotFoundError, PreconditionError

    loc, _ = split_url(pinned.url)
    shown = pinned.url if not pinned.folder else f"{pinned.url}/{obj.name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        # If-Match: the service itself refuses an object that is no longer the one pinned
        result = obstore.get(loc.store, obj.key, options={"if_match": obj.etag} if obj.etag else None)
        with open(dest, "wb") as f:
            for chunk in result.stream(min_chunk_size=CHUNK):
                view = memoryview(chunk)
                f.write(view)
                digest.update(view)
                size += len(view)
    except PreconditionError:  # If-Match failed: another object now has this key
        raise InputError(CHANGED, path=shown) from None
    except (NotFoundError, FileNotFoundError):
        raise InputError(CHANGED if check else "no such object", path=shown) from None
    except OSError as e:
        raise InputError(f"cannot copy the model into the temporary folder: {e.strerror or e}",
                         path=shown) from None
    except Exception as e:  # obstore's errors (permission, network) name this URL
        raise InputError(f"cannot read the model: {describe_storage_error(e)}", path=shown) from None
    if size != obj.size or (check and digest.hexdigest() != obj.sha256):
        raise InputError(CHANGED, path=shown)
    return digest.hexdigest()
