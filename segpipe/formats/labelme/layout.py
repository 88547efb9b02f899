"""Finding a LabelMe dataset's files: detection, the files of a folder, ``imagePath`` resolution, ``labels.txt``.

A LabelMe dataset is a folder (any depth) of per-image JSON files, each naming its image by ``imagePath``
relative to the JSON's own folder (LabelMe's rule), or embedding it as base64 ``imageData``. A first
folder named ``train``, ``val``, ``valid``, ``validation`` or ``test`` is the image's split. An optional
``labels.txt`` (one class per line, as LabelMe's ``--labels`` and its ``labelme2voc`` example take it;
``__ignore__`` and ``_background_`` are no classes) fixes the class order.

Nothing outside the dataset folder is ever opened: ``imagePath`` may climb (``../images/a.jpg`` is how
LabelMe writes a JSON saved to another folder) but never out of the folder given, symlinks included.

A LabelMe *XML* folder (the LabelMe web tool's ``Annotations/**/*.xml`` with ``<imagesize>`` or
``<polygon><pt>``, Datumaro's ``label_me``) is refused with one line: segpipe does not read it, and it is
not Pascal VOC either, although it also has ``Annotations/``.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import re
from pathlib import Path

from segpipe.errors import FormatError, InputError, UnsafePathError
from segpipe.storage.paths import is_within

#: Image extensions LabelMe opens (lower case).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
LABELS_TXT = "labels.txt"
#: Entries of ``labels.txt`` that are no class (LabelMe's semantic-segmentation convention).
NOT_CLASSES = ("__ignore__", "_background_")
#: Folder names read as splits (first folder of an image's path).
SPLIT_DIRS = ("train", "val", "valid", "validation", "test")
#: Files that are never dataset content: segpipe's own conversion report and output marker.
OWN_FILES = ("conversion_report.json", ".segpipe-output")
#: Largest LabelMe JSON read (embedded images make them large; 256 MiB holds a ~180 MiB image).
MAX_JSON_BYTES = 256 << 20
#: Detection looks at this many files at most, this deep at most: a folder of 100k photos stays cheap.
DETECT_MAX_FILES = 2000
DETECT_MAX_DEPTH = 3
_PEEK = 1 << 16
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_WIN_DRIVE = re.compile(r"^[a-zA-Z]:")


def _skip_dir(name: str) -> bool:
    return name.startswith(".")  # hidden folders, segpipe's staging and .segpipe* folders


def walk(root: Path, max_depth: int | None = None) -> list[str]:
    """Every file under ``root`` (relative, forward slashes, sorted), hidden folders left out."""
    out = []
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(d))
        if max_depth is not None and depth >= max_depth:
            dirnames[:] = []
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for f in sorted(filenames):
            out.append(f if rel_dir == "." else f"{rel_dir}/{f}")
    return out


def peek_labelme(path: Path) -> bool:
    """Whether a file looks like a LabelMe JSON (an object with ``shapes`` and ``imagePath``), cheaply.

    Searches the bytes through a memory map, so a JSON with a large embedded image costs one scan at most.
    """
    try:
        if path.suffix.lower() != ".json" or not path.is_file() or path.stat().st_size == 0:
            return False
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if not bytes(mm[:_PEEK]).lstrip().startswith(b"{"):
                return False
            return mm.find(b'"shapes"') >= 0 and (mm.find(b'"imagePath"') >= 0 or mm.find(b'"imageData"') >= 0)
    except (OSError, ValueError):
        return False


def _first_xml(d: Path) -> Path | None:
    n = 0
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames.sort()
        for f in sorted(filenames):
            n += 1
            if f.lower().endswith(".xml"):
                return Path(dirpath, f)
            if n > DETECT_MAX_FILES:
                return None
    return None


def is_labelme_xml(path: str | Path) -> bool:
    """True for a LabelMe XML folder: ``Annotations/`` whose first XML has ``<imagesize>`` (VOC has ``<size>``)
    or ``<polygon><pt>`` without ``<size>``.
    """
    p = Path(path)
    ann = p / "Annotations"
    if not ann.is_dir():
        return False
    xml = _first_xml(ann)
    if xml is None:
        return False
    try:
        with open(xml, "rb") as f:
            head = f.read(_PEEK)
    except OSError:
        return False
    return b"<imagesize>" in head or (b"<pt>" in head and b"<polygon>" in head and b"<size>" not in head)


def refuse_labelme_xml(path: str | Path) -> None:
    """Raises the one-line refusal for a LabelMe XML folder.

    Raises:
        InputError: always.
    """
    raise InputError(
        "a LabelMe XML folder (Annotations/**/*.xml of the LabelMe web tool): segpipe reads LabelMe JSON, "
        "not LabelMe XML, and this is not Pascal VOC either",
        path=path,
        hint="convert it first, e.g. `datum convert -if label_me -i PATH -f coco_instances -o OUT`, then read OUT",
    )


def detect_labelme(path: str | Path) -> bool:
    """True for a LabelMe JSON file, or a folder holding one (within the first files and levels).

    Raises:
        InputError: ``path`` is a LabelMe XML folder (refused: it must not be read as VOC or anything else).
    """
    p = Path(path)
    if p.is_file():
        return peek_labelme(p)
    if not p.is_dir():
        return False
    if is_labelme_xml(p):
        refuse_labelme_xml(p)
    files = walk(p, DETECT_MAX_DEPTH)[:DETECT_MAX_FILES]
    return any(f.lower().endswith(".json") and f not in OWN_FILES and peek_labelme(p / f) for f in files)


def read_json_bytes(path: Path) -> bytes:
    """The bytes of a JSON file under :data:`MAX_JSON_BYTES`.

    Raises:
        FormatError: too large. InputError: unreadable.
    """
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise FormatError(f"file is {size} bytes, more than the {MAX_JSON_BYTES} accepted", path=path)
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None


def resolve_image_path(root: Path, json_rel: str, value: object, source: Path) -> str:
    """The image an ``imagePath`` names, relative to the dataset root (forward slashes).

    LabelMe's rule: relative to the JSON's folder; backslashes (Windows) are separators.

    Raises:
        FormatError: not a non-empty string. UnsafePathError: a URL, NUL, or a path leaving the root
            (``..`` too far, an absolute path elsewhere, a symlink pointing out).
    """
    if not isinstance(value, str) or not value.strip():
        raise FormatError("imagePath must be a non-empty path", path=source, where="imagePath")
    v = value.strip().replace("\\", "/")
    if "\x00" in v:
        raise UnsafePathError("imagePath contains a NUL byte", path=source, where="imagePath")
    if _URL.match(v):
        raise UnsafePathError(f"imagePath is a URL, not a path: {value[:80]!r}", path=source, where="imagePath")
    if v.startswith("/") or _WIN_DRIVE.match(v):
        if not is_within(root, v):
            raise UnsafePathError(f"imagePath {value[:80]!r} is outside the dataset folder {root}", path=source,
                                  where="imagePath")
        rel = Path(v).resolve().relative_to(root).as_posix()
    else:
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(json_rel), v))
        if rel == ".." or rel.startswith("../") or rel == ".":
            raise UnsafePathError(f"imagePath {value[:80]!r} leaves the dataset folder {root}", path=source,
                                  where="imagePath", hint="pass the folder that holds both the JSON files and "
                                  "the images")
    target = root / rel
    if (target.exists() or target.is_symlink()) and not is_within(root, target):
        raise UnsafePathError(f"imagePath {value[:80]!r} resolves outside the dataset folder (symlink?)",
                              path=source, where="imagePath")
    return rel


def split_of(rel: str) -> tuple[str | None, str]:
    """``(split, file name)`` of a root-relative image path: a first folder in :data:`SPLIT_DIRS` is the split."""
    parts = rel.split("/")
    if len(parts) > 1 and parts[0] in SPLIT_DIRS:
        return parts[0], "/".join(parts[1:])
    return None, rel


def read_labels_txt(path: Path) -> list[str]:
    """Class names of ``labels.txt`` in order, ``__ignore__`` and ``_background_`` left out.

    Raises:
        FormatError: not UTF-8, or a name twice (naming the line).
    """
    try:
        text = read_json_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text at byte {e.start}", path=path) from None
    names: list[str] = []
    for i, line in enumerate(text.splitlines(), start=1):
        n = line.strip()
        if not n or n in NOT_CLASSES:
            continue
        if n in names:
            raise FormatError(f"duplicate class name {n!r}", path=path, where=f"line {i}")
        names.append(n)
    return names
