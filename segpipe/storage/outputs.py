"""What a command may write, and how it replaces what segpipe wrote before.

Every command that writes goes through this module, so the rules hold everywhere:

1. **Outputs never overlap inputs.** An output path may not equal, contain or lie inside an input
   (symlinks resolved): writing there could change what is being read, or destroy it.
2. **Only segpipe's own outputs are replaced.** An existing, non-empty output is replaced only if it is
   a segpipe store (``.segpipe/`` and ``zarr.json`` attributes ``segpipe``, and nothing else at its top)
   or a folder holding :data:`MARKER` written by the same command, and holding nothing the command did
   not write (the marker lists every path of an output written whole). A single-file output replaces
   only a regular file segpipe writes (:func:`is_segpipe_file`). Anything else is refused with one
   line, and no flag overrides that.
3. **Replacing is atomic.** The new output is built in a staging folder beside the old one (same parent,
   so the same file system) and swapped in only when complete; a failed or killed run leaves the old
   output as it was. Leftovers of killed runs are recognised by their names (which carry the host and
   the process id) and cleaned up by the next check of the same output (and ``fsck --repair``); a
   complete output set aside by a killed in-place run is put back, never dropped for the half-built one.
"""

from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe import __version__
from segpipe.errors import OutputError
from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.location import Location, describe_storage_error, names_object_storage
from segpipe.storage.paths import fsync_dir

#: The file that marks a folder as the output of a segpipe command (JSON: made_by, command, entries).
MARKER = ".segpipe-output"
#: Markers of earlier segpipe versions, and the command that wrote them.
LEGACY_MARKERS = {".segpipe-demo": "demo"}
STAGING_TAG = "segpipe-staging"
#: An earlier output whose replacement is complete: removed (or put back if the final path is gone).
OLD_TAG = "segpipe-old"
#: An earlier output set aside while its replacement is built in place (:func:`set_aside`): it is the
#: complete one, so a killed run's leftover is put back in place of the half-built new output.
ASIDE_TAG = "segpipe-aside"
#: What a segpipe store holds at its top level (its temp files and leftovers aside).
STORE_ENTRIES = frozenset({"zarr.json", ".segpipe", "images", "stacks"})
#: Suffixes of annotation files whose dataset is the folder around them (see :func:`dataset_inputs`).
DATASET_FILE_SUFFIXES = frozenset({".json", ".yaml", ".yml", ".xml"})
#: segpipe's temp files: NAME.partial.<pid> (storage.atomic), .NAME.<pid>.partial (the GeoTIFF writer).
_TEMP_NAME = re.compile(r".+\.partial\.\d+|\..+\.\d+\.partial")
_GLOB_CHARS = frozenset("*?[")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


@dataclass(frozen=True)
class OutputPlan:
    """An output that passed :func:`check_output`.

    Attributes:
        given: The path as the user gave it (for messages and results).
        final: The same path, absolute with symlinks resolved (where things are written).
        option: The option or argument that names it (``--out``, ``DST`` ...), for messages.
        command: The command writing it (recorded in the marker).
        replaces: An earlier output of the command is there and will be replaced.
        kind: ``folder``, ``store`` or ``file``.
        accept: The commands whose earlier outputs may be replaced.
    """

    given: Path
    final: Path
    option: str
    command: str
    replaces: bool
    kind: str = "folder"
    accept: frozenset[str] = frozenset()


# ------------------------------------------------------------------------------------------ checks


def resolved(path: str | Path) -> Path:
    """``path`` absolute, ``~`` expanded and symlinks resolved (as far as it exists)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def input_root(source: str | os.PathLike[str]) -> Path:
    """The path an input occupies: itself, or for a glob (``photos/*.jpg``) the folder it searches."""
    text = os.fspath(source)
    if not any(c in text for c in _GLOB_CHARS):
        return Path(text)
    parts: list[str] = []
    for part in Path(text).parts:
        if any(c in part for c in _GLOB_CHARS):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


class DatasetFolder(os.PathLike[str]):
    """A folder an input occupies because a dataset file reads its images there (named so in messages).

    The folder occupies itself, everything above it, and what already exists in it: an output may not
    be it, contain it, or lie in one of its existing folders (``images/``, ``masks/`` ...; earlier
    segpipe outputs aside), but a new folder or file beside the dataset file is fine (existing files
    are protected by the ownership rules of :func:`check_output`).
    """

    def __init__(self, folder: Path, of: str | Path) -> None:
        self.folder = folder
        self.of = of

    def holds(self, out: Path) -> bool:
        """Whether ``out`` (resolved, inside the folder) lies in one of the folder's existing folders."""
        folder = resolved(self.folder)
        first = folder / out.relative_to(folder).parts[0]
        if not first.is_dir() or not any(first.iterdir()):  # new, or empty: nothing there to read
            return False
        return not (is_store(first) or read_marker(first) is not None)

    def __fspath__(self) -> str:
        return os.fspath(self.folder)

    def __str__(self) -> str:
        return f"{self.folder} (the dataset folder of {self.of})"


def dataset_inputs(path: str | Path | None, image_root: str | Path | None = None) -> list[str | os.PathLike[str]]:
    """What a dataset input occupies: the path itself and, for an annotation file, its dataset folder.

    Readers resolve the images and masks of an annotation file (COCO ``ds/annotations.json``,
    ``ds/annotations/instances_train.json``, a YOLO ``data.yaml`` ...) from the folders around it:
    the file's own folder (``images/`` in it, or the folder itself) and ``../images``. So an output may
    not be, contain, or lie in an existing folder of the dataset: the file's folder (its parent, when
    that folder is ``annotations/``) and the sibling ``images/`` folder (see :class:`DatasetFolder`).
    A new output beside the file (``segpipe convert instances.json voc/`` run where the file is) is
    fine. With an explicit ``image_root`` (an input of its own) the file is itself. A folder, a glob or
    another file (an image, a volume) is itself.
    """
    if path is None or os.fspath(path) == "":
        return []
    p = Path(path)
    text = os.fspath(p)
    if (image_root is not None or any(c in text for c in _GLOB_CHARS)
            or p.suffix.lower() not in DATASET_FILE_SUFFIXES or not p.is_file()):
        return [p]
    folder = resolved(p).parent
    root = folder.parent if folder.name == "annotations" else folder
    return [p, DatasetFolder(root, path), DatasetFolder(folder.parent / "images", path)]


def check_not_input(out: str | Path, inputs: Iterable[str | os.PathLike[str] | None], *, option: str,
                    what: str = "the input") -> None:
    """Refuses an output that equals, contains or lies inside one of ``inputs``.

    Args:
        out: The output path.
        inputs: The paths it may not overlap (None entries are skipped; a glob counts as its folder).
        option: The option naming ``out``, for the message.
        what: What ``inputs`` are, for the message.

    Raises:
        OutputError: naming the output, the option and the input.
    """
    o = resolved(out)
    for given in inputs:
        if given is None or os.fspath(given) == "":
            continue
        i = resolved(input_root(given))
        if o == i:
            why = "is"
        elif i in o.parents:
            if isinstance(given, DatasetFolder) and not given.holds(o):
                continue
            why = "lies inside"
        elif o in i.parents:
            why = "contains"
        else:
            continue
        raise OutputError(f"{option} {why} {what} {given}; outputs never overlap what a command reads", path=out,
                          hint=f"choose another {option}")


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a segpipe Zarr store (``.segpipe/`` and ``zarr.json`` attributes ``segpipe``)."""
    p = Path(path)
    if not (p / ".segpipe").is_dir():
        return False
    try:
        doc = json.loads((p / "zarr.json").read_bytes())
    except (OSError, ValueError):
        return False
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return isinstance(attrs, dict) and isinstance(attrs.get("segpipe"), dict)


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a segpipe output folder (``{"made_by": "segpipe", "command": ...}``), or None."""
    p = Path(folder)
    f = p / MARKER
    if f.is_file() and not f.is_symlink():
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("made_by") == "segpipe" else None
    for name, command in LEGACY_MARKERS.items():
        if (p / name).is_file() and not (p / name).is_symlink():
            return {"made_by": "segpipe", "command": command}
    return None


def write_marker(folder: str | Path, command: str, entries: Sequence[str] | None = None,
                 files: Sequence[str] | None = None) -> None:
    """Marks ``folder`` as the output of ``command``.

    Args:
        folder: The output folder.
        command: The command that wrote it.
        entries: Names (or glob patterns) of the top-level entries it may hold; a later replacement is
            refused if it holds anything else (something a user put there). None: not checked.
        files: Every path (relative, folders too) the command wrote, for outputs written whole; a later
            replacement is refused if anything else is found at any depth.
    """
    doc: dict[str, Any] = {"made_by": "segpipe", "segpipe_version": __version__, "command": command}
    if entries is not None:
        doc["entries"] = sorted(set(entries))
    if files is not None:
        doc["files"] = sorted(set(files))
    write_json_atomic(Path(folder) / MARKER, doc)


def _ours(name: str) -> bool:
    """Whether ``name`` is one of segpipe's own transient files (a temp file, a nested leftover)."""
    return name == MARKER or _TEMP_NAME.fullmatch(name) is not None or _is_leftover_name(name)


def list_files(folder: Path) -> list[str]:
    """Every path below ``folder`` (relative, ``/``-separated; folders too), segpipe's transient names aside."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        dirnames[:] = [d for d in dirnames if not _ours(d)]
        out += [(rel / n).as_posix() for n in (*dirnames, *filenames) if not _ours(n)]
    return out


def _foreign_entries(folder: Path, marker: dict[str, Any]) -> list[str]:
    """Paths in ``folder`` that its marker does not list (segpipe's own temp files aside).

    A marker with ``files`` (every path the command wrote) is checked at every depth; one with only
    ``entries`` (top-level names or patterns: outputs written in place, such as ``train``) at the top.
    """
    files = marker.get("files")
    if isinstance(files, list):
        known = set(map(str, files))
        return sorted(n for n in list_files(folder) if n not in known)
    patterns = marker.get("entries")
    if not isinstance(patterns, list):
        return []
    names = sorted(p.name for p in folder.iterdir())
    return [n for n in names if not _ours(n) and not any(fnmatch.fnmatchcase(n, str(pat)) for pat in patterns)]


def _is_leftover_name(name: str) -> bool:
    """Whether ``name`` is a staging or set-aside folder of a nested output (``.<name>.<tag>.<host>...``)."""
    return name.startswith(".") and any(f".{tag}." in name for tag in (STAGING_TAG, OLD_TAG, ASIDE_TAG))


#: Keys that mark a JSON file as written by segpipe (reports carry ``segpipe_version``; the ``--json``
#: of ``validate`` before it did: ``path``, ``format``, ``problems``; an ingest manifest line: ``id``,
#: ``file``, ``path``, ``sha256``).
_REPORT_KEY = "segpipe_version"
_VALIDATE_KEYS = frozenset({"path", "format", "problems"})
_MANIFEST_KEYS = frozenset({"id", "file", "path", "sha256"})
_MAX_RECOGNISED = 256 << 20


def _json_dict(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def is_segpipe_file(path: str | Path) -> bool:
    """Whether an existing file is one segpipe writes as a single-file output (so it may be replaced).

    Empty files, JSON reports (a top-level ``segpipe_version``; or the keys of ``validate --json``) and
    ingest manifests (JSONL whose first line has ``id``, ``file``, ``path``, ``sha256``) are; anything
    else (an image, a mask, a document) is not. Only the first line is read, unless the file is a
    pretty-printed report (then the whole, up to 256 MiB).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size == 0:
            return True
        with p.open("rb") as f:
            first = f.readline(1 << 20)
            line = _json_dict(first)
            if line is not None:
                return _MANIFEST_KEYS <= set(line) or _REPORT_KEY in line or set(line) == _VALIDATE_KEYS
            if size > _MAX_RECOGNISED or first.strip() != b"{":
                return False
            doc = _json_dict(first + f.read())
    except OSError:
        return False
    return doc is not None and (_REPORT_KEY in doc or set(doc) == _VALIDATE_KEYS)


def _check_existing(given: Path, final: Path, *, option: str, command: str, kind: str,
                    accept: frozenset[str]) -> None:
    """Refuses an existing non-empty ``final`` that is not an output of ``command`` (or ``accept``)."""
    if kind == "store":
        if not is_store(final):
            raise OutputError("exists and is not a segpipe store; segpipe replaces only what it made", path=given,
                              hint=f"choose another {option}")
        foreign = sorted(p.name for p in final.iterdir() if p.name not in STORE_ENTRIES and not _ours(p.name))
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise OutputError(f"holds {foreign[0]!r}{more}, which segpipe did not write; the store is not replaced",
                              path=given, hint=f"move it away or choose another {option}")
        return
    marker = read_marker(final)
    if marker is None:
        raise OutputError("exists, is not empty and was not made by segpipe; segpipe replaces only what it made",
                          path=given, hint=f"choose another {option}")
    made_by = str(marker.get("command"))
    if made_by not in accept:
        raise OutputError(f"holds the output of `segpipe {made_by}`, not of `segpipe {command}`", path=given,
                          hint=f"choose another {option}")
    foreign = _foreign_entries(final, marker)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"holds {foreign[0]!r}{more}, which `segpipe {command}` did not write; it is not replaced",
                          path=given, hint=f"move it away or choose another {option}")


def check_output(
    path: str | Path,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    *,
    option: str,
    command: str,
    kind: str = "folder",
    replace: bool = True,
    flag: str | None = None,
    accept: Iterable[str] = (),
) -> OutputPlan:
    """Checks where a command will write, before it writes anything.

    Args:
        path: The output: a folder, a store or a file.
        inputs: Everything the command reads (None entries are skipped; globs count as their folder).
        option: The option or argument naming ``path``, for messages.
        command: The command writing it.
        kind: ``folder`` (marked with :data:`MARKER`), ``store`` (a segpipe Zarr store) or ``file``
            (one file, replaced atomically by its writer).
        replace: Whether an earlier output of the command may be replaced (folders and stores).
        flag: The flag that allows replacing (``--overwrite``), named in the refusal when not given.
        accept: Other commands whose outputs this command may replace (``export`` and ``convert``).

    Returns:
        An :class:`OutputPlan`.

    Raises:
        OutputError: the output overlaps an input, is something segpipe did not make, or is an earlier
            output that may not be replaced; one line naming the path and the option.
    """
    url = names_object_storage(path)
    if url is not None:  # a Path would make of s3://b/x a local folder "s3:": refused, not written
        raise OutputError(f"{option}: `segpipe {command}` cannot write to object storage yet", path=url,
                          hint=f"give a local path as {option}")
    given = Path(path)
    final = resolved(given)
    accepted = frozenset({command, *accept})
    check_not_input(given, inputs, option=option)
    if kind == "file":
        if final.is_dir():
            raise OutputError(f"{option} is a folder, not a file", path=given, hint=f"choose another {option}")
        if not final.parent.is_dir():
            raise OutputError(f"{option}: the folder {final.parent} does not exist", path=given)
        if given.is_symlink() and not final.exists():
            raise OutputError("is a symbolic link to nothing", path=given, hint=f"choose another {option}")
        if final.exists():
            if not stat.S_ISREG(final.stat().st_mode):
                raise OutputError(f"{option} exists and is not a regular file (a device, pipe or socket); "
                                  "segpipe replaces only what it made", path=given, hint=f"choose another {option}")
            if not is_segpipe_file(final):
                raise OutputError(f"{option} exists and is not a file segpipe wrote; segpipe replaces only what "
                                  "it made", path=given, hint=f"choose another {option}")
        return OutputPlan(given, final, option, command, final.exists(), kind, accepted)
    clean_leftovers(final)  # staging and set-aside folders of killed runs on this output
    if not final.exists():
        if given.is_symlink():  # a dangling link: writing would create its target somewhere else
            raise OutputError("is a symbolic link to nothing", path=given, hint=f"choose another {option}")
        return OutputPlan(given, final, option, command, False, kind, accepted)
    if not final.is_dir():
        raise OutputError("exists and is not a folder", path=given, hint=f"choose another {option}")
    if not any(final.iterdir()):
        return OutputPlan(given, final, option, command, False, kind, accepted)
    _check_existing(given, final, option=option, command=command, kind=kind, accept=accepted)
    if not replace:
        raise OutputError(f"exists (an earlier `segpipe {command}` output)", path=given,
                          hint=f"pass {flag} to replace it" if flag else f"choose another {option}")
    return OutputPlan(given, final, option, command, True, kind, accepted)


# ------------------------------------------------------------------------------- object storage


def _check_url_target(loc: Location, inputs: Iterable[str | os.PathLike[str] | None], option: str,
                      command: str) -> None:
    """Refuses a read-only scheme and an output URL overlapping an input (before any request)."""
    if not loc.writable:
        raise OutputError(f"{option}: {loc.url.split(':', 1)[0]}:// is read-only; `segpipe {command}` writes to "
                          "s3://, gs:// or az://", path=str(loc), hint=f"choose another {option}")
    why = _url_overlaps(loc, inputs)
    if why is not None:
        raise OutputError(f"{option} {why}; outputs never overlap what a command reads", path=str(loc),
                          hint=f"choose another {option}")


def _url_overlaps(loc: Location, inputs: Iterable[str | os.PathLike[str] | None]) -> str | None:
    """How ``loc`` overlaps an input URL (``is``, ``lies inside``, ``contains``), or None."""
    out = loc.url.rstrip("/") + "/"
    for given in inputs:
        if given is None:
            continue
        url = names_object_storage(input_root(given))
        if url is None:
            continue
        i = url.rstrip("/") + "/"
        if i == out:
            return f"is the input {url}"
        if out.startswith(i):
            return f"lies inside the input {url}"
        if i.startswith(out):
            return f"contains the input {url}"
    return None


def _storage_failure(loc: Location, option: str, e: BaseException) -> OutputError:
    return OutputError(f"{option}: cannot be listed: {describe_storage_error(e)}", path=str(loc),
                       hint="check the bucket's name, that it exists, and that the credentials may list and write it")


def check_store_location(loc: Location, inputs: Iterable[str | os.PathLike[str] | None] = (), *, option: str,
                         command: str) -> bool:
    """Checks a store's URL before anything is written there (the object-storage side of :func:`check_output`).

    An empty prefix is new; a non-empty one must be a segpipe store (a root ``zarr.json`` whose
    attributes hold ``segpipe``) holding nothing but a store's entries (:data:`STORE_ENTRIES`), exactly as
    a local folder must.

    Args:
        loc: The store's location.
        inputs: What the command reads (input URLs are compared with it; local paths never overlap it).
        option: The option naming it, for messages.
        command: The command writing it.

    Returns:
        True if a segpipe store is there (to resume or replace), False if nothing is.

    Raises:
        OutputError: a read-only scheme (``https://``), a prefix that cannot be listed (no such bucket,
            no access), an overlap with an input, or something segpipe did not make.
    """
    _check_url_target(loc, inputs, option, command)
    try:
        names = loc.top_level()  # one LIST of the top level: a store may hold millions of objects
        doc = _json_dict(loc.read_bytes("zarr.json")) if "zarr.json" in names else None
    except Exception as e:  # obstore's errors: no bucket, no access, no network
        raise _storage_failure(loc, option, e) from None
    if not names:
        return False
    attrs = doc.get("attributes") if doc is not None else None
    if not (isinstance(attrs, dict) and isinstance(attrs.get("segpipe"), dict)):
        raise OutputError("exists and is not a segpipe store; segpipe replaces only what it made", path=str(loc),
                          hint=f"choose another {option}")
    foreign = sorted(set(names) - STORE_ENTRIES)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"holds {foreign[0]!r}{more}, which segpipe did not write; the store is not replaced",
                          path=str(loc), hint=f"move it away or choose another {option}")
    return True


def clear_store_location(loc: Location, *, option: str, command: str) -> int:
    """Deletes a segpipe store in object storage, to write a new one in its place (``--overwrite``).

    Object storage has no rename, so the store cannot be built beside and swapped in: it is checked
    again (:func:`check_store_location`), then only its own entries are deleted, the root
    ``zarr.json`` last (a killed deletion leaves a prefix that is still recognisably segpipe's).

    Returns:
        The number of objects deleted.

    Raises:
        OutputError: the prefix now holds something segpipe did not make (nothing is deleted).
    """
    check_store_location(loc, option=option, command=command)
    keys = [k for k in loc.list() if k.split("/", 1)[0] in STORE_ENTRIES]
    loc.delete_many([k for k in keys if k != "zarr.json"])
    if "zarr.json" in keys:
        loc.delete("zarr.json")
    return len(keys)


def check_folder_location(loc: Location, inputs: Iterable[str | os.PathLike[str] | None] = (), *, option: str,
                          command: str, replace: bool, flag: str | None = None,
                          accept: Iterable[str] = ()) -> list[str]:
    """Checks a folder output's URL (an export to object storage) before anything is written.

    An empty prefix is new. A non-empty one is replaced only if it holds the :data:`MARKER` of an
    earlier output of ``command`` (or ``accept``) that lists every object it holds (``files``), and
    only with ``replace``: exactly as a local folder.

    Returns:
        The keys of the earlier output (to delete once the new one is uploaded); empty if none.

    Raises:
        OutputError: a read-only scheme, a prefix that cannot be listed, or something that may not be replaced.
    """
    _check_url_target(loc, inputs, option, command)
    try:
        keys = list(loc.list())
        marker = _json_dict(loc.read_bytes(MARKER)) if MARKER in keys else None
    except Exception as e:  # obstore's errors: no bucket, no access, no network
        raise _storage_failure(loc, option, e) from None
    if not keys:
        return []
    if marker is None or marker.get("made_by") != "segpipe":
        raise OutputError("exists, is not empty and was not made by segpipe; segpipe replaces only what it made",
                          path=str(loc), hint=f"choose another {option}")
    made_by = str(marker.get("command"))
    if made_by not in {command, *accept}:
        raise OutputError(f"holds the output of `segpipe {made_by}`, not of `segpipe {command}`", path=str(loc),
                          hint=f"choose another {option}")
    files = marker.get("files")
    known = set(map(str, files)) if isinstance(files, list) else set()
    foreign = sorted(k for k in keys if k != MARKER and k not in known)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"holds {foreign[0]!r}{more}, which `segpipe {command}` did not write; it is not replaced",
                          path=str(loc), hint=f"move it away or choose another {option}")
    if not replace:
        raise OutputError(f"exists (an earlier `segpipe {command}` output)", path=str(loc),
                          hint=f"pass {flag} to replace it" if flag else f"choose another {option}")
    return keys


def upload_folder(folder: Path, loc: Location, earlier: Sequence[str] = ()) -> int:
    """Uploads a complete local output folder to ``loc``, replacing an earlier output there.

    Object storage has no rename: each object is one atomic PUT. While it goes on, the marker lists
    the objects of both outputs (a killed upload leaves a prefix that a later ``--overwrite`` may
    replace, never one it refuses for objects segpipe wrote); then the earlier output's objects that
    the new one does not have are deleted, and the new marker is written last.

    Args:
        folder: The finished output (its marker lists every file: :func:`install` wrote it).
        loc: Where it goes.
        earlier: The keys of the earlier output (:func:`check_folder_location`).

    Returns:
        The number of objects uploaded.
    """
    keys = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    final_marker = (folder / MARKER).read_bytes() if MARKER in keys else None
    if final_marker is not None:
        doc = json.loads(final_marker)
        doc["files"] = sorted({*map(str, doc.get("files") or []), *earlier, *keys} - {MARKER})
        loc.write_bytes(MARKER, json.dumps(doc, indent=2).encode())
    for key in keys:
        if key != MARKER:
            loc.write_bytes(key, (folder / key).read_bytes())
    stale = sorted(set(earlier) - set(keys))
    loc.delete_many(stale)
    if final_marker is not None:
        loc.write_bytes(MARKER, final_marker)
    return len(keys)


# --------------------------------------------------------------------------------------- replacing


def _sibling(final: Path, tag: str) -> Path:
    """A fresh name beside ``final`` for a staging or set-aside folder of this process."""
    return final.parent / f".{final.name}.{tag}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _dead_leftovers(final: Path) -> list[tuple[Path, str]]:
    """Staging and set-aside folders of ``final`` left by dead segpipe processes of this host, with their tags."""
    prefix = f".{final.name}."
    try:
        siblings = sorted(final.parent.iterdir())
    except OSError:
        return []
    found: list[tuple[Path, str]] = []
    for p in siblings:
        if not p.name.startswith(prefix) or not p.is_dir() or p.is_symlink():
            continue
        rest = p.name[len(prefix):].split(".")
        if (len(rest) != 4 or rest[0] not in (STAGING_TAG, OLD_TAG, ASIDE_TAG) or rest[1] != _HOST
                or not rest[2].isdigit() or _alive(int(rest[2]))):
            continue
        found.append((p, rest[0]))
    return found


def leftovers(final: str | Path) -> list[Path]:
    """The folders :func:`clean_leftovers` would remove or put back (nothing is touched)."""
    return [p for p, _ in _dead_leftovers(resolved(final))]


def clean_leftovers(final: Path) -> list[Path]:
    """Removes staging and set-aside folders of ``final`` left by killed segpipe runs on this host.

    A set-aside old output whose replacement never arrived (killed between the two renames of a swap)
    is put back. An output set aside by :func:`set_aside` is the complete one (the run that replaced it
    was killed while building in place): it is put back, and the half-built output at ``final`` (marked
    by the same command) is removed; if ``final`` holds anything else, both are left alone. Folders of
    live processes are left alone (they may be another writer's).

    Returns:
        The folders removed or put back.
    """
    done: list[Path] = []
    for p, tag in _dead_leftovers(final):
        present = final.exists() or final.is_symlink()
        if tag == ASIDE_TAG:
            if present:
                old, new = read_marker(p), read_marker(final)
                if (old is None or new is None or old.get("command") != new.get("command")
                        or final.is_symlink() or not final.is_dir()):
                    continue  # not the half-built output of the run that set this one aside: keep both
                half = _sibling(final, OLD_TAG)  # renamed first: a kill during its removal leaves a clear leftover
                os.rename(final, half)
                os.rename(p, final)
                shutil.rmtree(half, ignore_errors=True)
            else:
                os.rename(p, final)
        elif tag == OLD_TAG and not present:
            os.rename(p, final)
        else:
            shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


def begin_staging(plan: OutputPlan) -> Path:
    """Creates the staging folder where the new output of ``plan`` is built (beside the final path)."""
    plan.final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(plan.final)
    staging = _sibling(plan.final, STAGING_TAG)
    staging.mkdir()
    return staging


def discard(staging: Path) -> None:
    """Removes a staging folder (the run failed; the old output was never touched)."""
    shutil.rmtree(staging, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where not supported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return int(fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)) == 0


def install(staging: Path, plan: OutputPlan, *, entries: Sequence[str] | None | bool = True) -> None:
    """Puts a complete new output in place of ``plan.final``, replacing an earlier one atomically.

    Args:
        staging: The folder from :func:`begin_staging`, holding the new output.
        plan: Where it goes.
        entries: The marker's entries: True lists what ``staging`` holds; a sequence gives names or
            patterns; None records none. A store gets no marker (its attributes mark it).

    Raises:
        OutputError: the earlier output changed into something segpipe did not make while the run
            was going, or the file system refused the rename (the earlier output is kept either way).
    """
    final = plan.final
    if not is_store(staging):
        if entries is True:  # written whole: every path is recorded, so a file added later anywhere is seen
            write_marker(staging, plan.command, [p.name for p in staging.iterdir()], files=list_files(staging))
        else:
            write_marker(staging, plan.command, None if entries is None or entries is False else list(entries))
    try:
        if final.is_dir() and not final.is_symlink() and not any(final.iterdir()):
            final.rmdir()
        if not final.exists():
            os.rename(staging, final)
        else:
            # Checked again: the run may have taken hours, and the path may hold something else now.
            _check_existing(plan.given, final, option=plan.option, command=plan.command, kind=plan.kind,
                            accept=plan.accept)
            if _exchange(staging, final):
                old = staging  # now holds the earlier output
            else:
                old = _sibling(final, OLD_TAG)
                os.rename(final, old)
                os.rename(staging, final)  # a kill between the two renames: clean_leftovers puts `old` back
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(final.parent)
    except OSError as e:
        discard(staging)
        raise OutputError(f"cannot put the new output in place: {e.strerror or e}; the earlier one was kept",
                          path=plan.given) from None
    except BaseException:
        discard(staging)
        raise


@contextmanager
def staged(plan: OutputPlan, *, entries: Sequence[str] | None | bool = True) -> Iterator[Path]:
    """Builds a new output in a staging folder and installs it when the block completes.

    An exception (or interrupt) in the block removes the staging folder; the earlier output stays.

    Yields:
        The staging folder to write into.
    """
    staging = begin_staging(plan)
    try:
        yield staging
    except BaseException:
        discard(staging)
        raise
    install(staging, plan, entries=entries)


def start_in_place(plan: OutputPlan, *, entries: Sequence[str] | None = None) -> Path:
    """Creates a new output at its own path and marks it first (for resumable outputs: a killed run
    leaves something segpipe recognises and can continue). ``plan`` must not replace anything.
    """
    if plan.replaces:
        raise AssertionError("start_in_place on an existing output")
    plan.final.mkdir(parents=True, exist_ok=True)
    clean_leftovers(plan.final)
    write_marker(plan.final, plan.command, entries)
    return plan.final


@contextmanager
def set_aside(plan: OutputPlan, *, entries: Sequence[str] | None = None) -> Iterator[Path]:
    """Builds a new output at its own path, the earlier one set aside until the new one is complete.

    For outputs that record their own absolute paths (the demo's store names the demo's images), which
    a staging folder would leave pointing at a folder that no longer exists. A failure restores the
    earlier output; a killed run leaves it beside the path, put back or removed by the next run.

    Yields:
        The final folder to write into.
    """
    clean_leftovers(plan.final)
    old = None
    if plan.replaces:
        old = _sibling(plan.final, ASIDE_TAG)  # the complete one: a killed run's next run puts it back
        os.rename(plan.final, old)
    existed = plan.final.is_dir()
    plan.final.mkdir(parents=True, exist_ok=True)
    write_marker(plan.final, plan.command, entries)
    try:
        yield plan.final
    except BaseException:
        shutil.rmtree(plan.final, ignore_errors=True)
        if old is not None:
            os.rename(old, plan.final)
        elif existed:
            plan.final.mkdir(exist_ok=True)  # it was an empty folder of the user's: leave it as it was
        raise
    if old is not None:
        done = _sibling(plan.final, OLD_TAG)  # the new output is complete: the earlier one may go now
        os.rename(old, done)
        shutil.rmtree(done, ignore_errors=True)
