"""Finding a YOLO dataset's files: the three layouts, their splits, and what pairs with what.

Layouts (``kind``):

* ``ultralytics``: ``data.yaml`` (or one other root ``*.yaml`` with ``names``) whose ``train`` / ``val`` /
  ``test`` name image folders or ``.txt`` image lists (a string or a list of them), ``names`` as a list
  or ``{index: name}``, optional ``nc`` and ``path``. Labels follow Ultralytics' rule: the last
  ``/images/`` of an image path becomes ``/labels/`` and the extension ``.txt`` (beside the image when
  there is no ``images`` folder). Datumaro's ``yolo_ultralytics`` and CVAT's exports are this layout with
  ``train.txt`` lists.
* ``darknet``: ``obj.data`` (``classes``, ``names``, one ``<split> = list.txt`` per split; Datumaro's
  strict ``yolo``), labels beside the images (``obj_train_data/1.jpg`` + ``1.txt``). The ``data/`` prefix
  of darknet paths is the dataset root.
* ``loose``: ``obj.names`` + ``labels/<split>/*.txt`` (or ``Annotations/*.txt``) paired by relative stem
  with ``images/<split>/*`` (or ``Images/*``), as Datumaro's loose YOLO importer accepts.

Nothing outside the dataset root is ever opened: list entries and split folders go through
:func:`~segpipe.storage.paths.safe_join`; ``path:`` in ``data.yaml`` is honoured only when it is the root
itself (it usually names the author's machine), otherwise ignored with a warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.errors import FormatError, InputError, SegpipeError, UnsupportedError
from segpipe.storage.paths import check_relative_name, is_within, safe_join

#: Image extensions Ultralytics and Datumaro both read (lower case).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DATA_YAML = "data.yaml"
OBJ_DATA = "obj.data"
OBJ_NAMES = "obj.names"
#: ``data.yaml`` keys read; every other key is reported as not read.
YAML_KEYS = ("path", "train", "val", "test", "names", "nc")
#: Split order (ids are assigned split by split in this order, then by file name).
SPLIT_ORDER = ("train", "val", "valid", "validation", "test")
#: darknet ``obj.data`` keys that are no split.
DARKNET_KEYS = ("classes", "names", "backup", "eval")
#: Files that are never dataset content: segpipe's own conversion report and output marker.
OWN_FILES = ("conversion_report.json", ".segpipe-output")
MAX_META_BYTES = 16 << 20
#: Unconsumed files named one by one before the rest are summarised.
MAX_LISTED = 20
LOSS_NOTES = {
    "files_not_read": "files in the dataset folder that no YOLO rule reads (not an image of a split, a label "
    "of such an image, or a metadata file)",
    "keys_not_read": "data.yaml keys segpipe does not read",
    "labels_without_image": "objects in label files whose image is missing (their size is unknown, so their "
    "normalised coordinates cannot be placed)",
}


@dataclass
class Entry:
    """One image of the dataset.

    Attributes:
        image: Absolute path of the image file.
        rel: Its path relative to the root (forward slashes).
        file_name: The segpipe file name: relative to ``images/<split>/`` (or the image's own folder).
        split: Its split, or None.
        label: Absolute path of its label file if there is one.
        label_rel: That file relative to the root.
    """

    image: Path
    rel: str
    file_name: str
    split: str | None
    label: Path | None = None
    label_rel: str | None = None


@dataclass
class Layout:
    """A YOLO dataset's files.

    Attributes:
        kind: ``ultralytics``, ``darknet`` or ``loose``.
        root: The dataset folder.
        meta_file: The file that names the classes (``data.yaml``, ``obj.data``, ``obj.names``).
        names: Class names by index.
        entries: Images, sorted by split then file name.
        orphans: Label files (relative) with no image.
        problems: Warnings: keys and files not read, an ignored ``path``.
        losses: ``files_not_read``, ``keys_not_read`` (``labels_without_image`` is added by the reader).
    """

    kind: str
    root: Path
    meta_file: str
    names: list[str]
    entries: list[Entry] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    losses: LossCounter = field(default_factory=LossCounter)
    consumed: set[str] = field(default_factory=set)


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise FormatError(f"file is {size} bytes, more than the {MAX_META_BYTES} accepted", path=path)
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text at byte {e.start}", path=path) from None
    except IsADirectoryError:
        raise InputError("expected a file, got a folder", path=path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Reads a YAML mapping with ``yaml.safe_load`` (no tags, no code).

    Raises:
        FormatError: not YAML, or not a mapping (naming the file).
    """
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        msg = str(getattr(e, "problem", None) or str(e).splitlines()[0])
        raise FormatError(f"not valid YAML: {msg}", path=path, where=where) from None
    except RecursionError:
        raise FormatError("YAML nested too deeply", path=path) from None
    if not isinstance(data, dict):
        raise FormatError("expected a YAML mapping (keys train, val, names ...)", path=path)
    return data


def _yaml_candidates(root: Path) -> list[Path]:
    if (root / DATA_YAML).is_file():
        return [root / DATA_YAML]
    out = []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() in (".yaml", ".yml") and p.is_file():
            try:
                data = load_yaml(p)
            except SegpipeError:
                continue
            if "names" in data and ("train" in data or "val" in data):
                out.append(p)
    return out


def find_meta(path: str | Path) -> tuple[str, Path] | None:
    """``(kind, metadata file)`` of the YOLO dataset at ``path`` (a folder or its ``data.yaml``), or None."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in (".yaml", ".yml"):
            return "ultralytics", p
        if p.name == OBJ_DATA:
            return "darknet", p
        return None
    if not p.is_dir():
        return None
    cands = _yaml_candidates(p)
    if len(cands) > 1:
        names = ", ".join(c.name for c in cands)
        raise InputError(f"several YOLO dataset files ({names})", path=p, hint="pass one of them as the source")
    if cands:
        return "ultralytics", cands[0]
    if (p / OBJ_DATA).is_file():
        return "darknet", p / OBJ_DATA
    if (p / OBJ_NAMES).is_file():
        return "loose", p / OBJ_NAMES
    return None


def detect_yolo(path: str | Path) -> bool:
    """True for a YOLO dataset: Ultralytics ``data.yaml`` with ``names``, darknet ``obj.data``, or
    ``obj.names`` beside a ``labels/`` or ``Annotations/`` folder of ``.txt`` files.

    A folder of ``.txt`` files alone is never claimed: without class names it is not a dataset.
    """
    try:
        found = find_meta(path)
    except InputError:
        return True  # several data files: it is YOLO, and reading says which to pass
    if found is None:
        return False
    kind, meta = found
    if kind == "ultralytics":
        if meta.name == DATA_YAML and any((meta.parent / d).is_dir() for d in ("images", "labels")):
            return True  # Ultralytics' own layout, even with a broken data.yaml: reading names what is wrong
        try:
            data = load_yaml(meta)
        except SegpipeError:
            return False
        return "names" in data and ("train" in data or "val" in data)
    if kind == "darknet":
        return "names" in parse_obj_data(_read_text(meta))
    root = meta.parent
    return any(any(d.rglob("*.txt")) for d in _loose_label_dirs(root))


def parse_names(data: dict[str, Any], source: Path) -> list[str]:
    """Class names from ``names`` (list or ``{index: name}``) checked against ``nc``.

    Raises:
        FormatError: naming ``source`` and the key.
    """
    names = data.get("names")
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 0):
        raise FormatError(f"nc must be a non-negative integer, got {nc!r}", path=source, where="nc")
    out: list[str]
    if names is None:
        if nc is None:
            raise FormatError("missing 'names' (the class names)", path=source, where="names")
        out = [f"class_{i}" for i in range(nc)]
    elif isinstance(names, list):
        out = []
        for i, n in enumerate(names):
            if not isinstance(n, (str, int, float)) or isinstance(n, bool):
                raise FormatError(f"class name must be text, got {type(n).__name__}", path=source,
                                  where=f"names[{i}]")
            out.append(str(n))
    elif isinstance(names, dict):
        idx: dict[int, str] = {}
        for k, n in names.items():
            try:
                i = int(k)
            except (TypeError, ValueError):
                raise FormatError(f"class index must be an integer, got {k!r}", path=source,
                                  where="names") from None
            if i < 0 or isinstance(k, bool):
                raise FormatError(f"class index must be >= 0, got {k!r}", path=source, where="names")
            if not isinstance(n, (str, int, float)) or isinstance(n, bool):
                raise FormatError(f"class name must be text, got {type(n).__name__}", path=source,
                                  where=f"names[{k}]")
            idx[i] = str(n)
        missing = [i for i in range(len(idx)) if i not in idx]
        if missing:
            raise FormatError(f"class indices must be 0..{len(idx) - 1}; {missing[0]} is missing", path=source,
                              where="names")
        out = [idx[i] for i in range(len(idx))]
    else:
        raise FormatError(f"names must be a list or a mapping, got {type(names).__name__}", path=source,
                          where="names")
    if nc is not None and nc != len(out):
        raise FormatError(f"nc is {nc} but names has {len(out)} classes", path=source, where="nc")
    _check_unique(out, source, lambda i: f"names[{i}]")
    return out


def parse_obj_data(text: str) -> dict[str, str]:
    """Darknet ``key = value`` lines (others ignored, as darknet does)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+)\s*=\s*(.+?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def parse_names_file(path: Path) -> list[str]:
    """One class name per non-blank line (``obj.names``)."""
    names = [ln.strip() for ln in _read_text(path).splitlines() if ln.strip()]
    _check_unique(names, path, lambda i: f"line {i + 1}")
    return names


def _check_unique(names: list[str], source: Path, where: Callable[[int], str]) -> None:
    """Raises on the first class name that repeats an earlier one (``where(i)``: the field of name ``i``)."""
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise FormatError(f"duplicate class name {n!r}", path=source, where=where(i))
        seen.add(n)


def label_rel_for(image_rel: str) -> str:
    """Ultralytics' rule: the last ``images`` folder becomes ``labels``, the extension ``.txt``."""
    parts = image_rel.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return str(PurePosixPath("/".join(parts)).with_suffix(".txt"))


def segpipe_file_name(image_rel: str, split: str | None) -> str:
    """The file name segpipe gives an image: relative to ``images/<split>/`` (or to its own top folder)."""
    parts = image_rel.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "images":
            rest = parts[i + 1 :]
            if len(rest) > 1 and split is not None and rest[0] == split:
                rest = rest[1:]
            return "/".join(rest)
    return "/".join(parts[1:]) if len(parts) > 1 else image_rel


def _walk_images(d: Path, root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames.sort()
        for f in sorted(filenames):
            if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                out.append(Path(dirpath, f).relative_to(root).as_posix())
    return out


def _relative_entry(root: Path, value: str, source: Path, where: str, *, roboflow: bool = False) -> Path:
    """A split entry or list line, resolved inside ``root``.

    With ``roboflow`` (``data.yaml`` split entries only, as in Ultralytics) a leading ``../`` that leaves the
    root is dropped once: Roboflow writes ``train: ../train/images`` beside the folder ``train/``.
    """
    v = value.strip()
    if os.path.isabs(v):
        p = Path(v)
        if is_within(root, p):
            return p.resolve()
        raise FormatError(f"path is outside the dataset folder: {v!r}", path=source, where=where)
    try:
        return safe_join(root, v, source=source, where=where)
    except SegpipeError:
        # Roboflow writes "../train/images" next to a data.yaml in the same folder; Ultralytics strips one "../".
        if roboflow and v.startswith("../"):
            return safe_join(root, v[3:], source=source, where=where)
        raise


def _list_file_images(root: Path, list_file: Path, key: str, darknet: bool) -> list[str]:
    out = []
    text = _read_text(list_file)
    rel_list = str(list_file)
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        norm = s.replace("\\", "/")
        if darknet and norm.startswith("data/") and not (root / norm).exists():
            norm = norm[5:]  # darknet runs from its parent folder: "data/" is the dataset root
        p = _relative_entry(root, norm, Path(rel_list), f"line {i}")
        if not p.is_file():
            raise FormatError(f"image {s!r} listed for {key} does not exist", path=rel_list, where=f"line {i}")
        out.append(p.resolve().relative_to(root.resolve()).as_posix())
    return out


def _split_images(root: Path, key: str, value: Any, source: Path, darknet: bool, lay: Layout) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for j, item in enumerate(items):
        where = key if not isinstance(value, list) else f"{key}[{j}]"
        if not isinstance(item, str) or not item.strip():
            raise FormatError(f"expected a folder or a .txt list of images, got {item!r}", path=source, where=where)
        p = _relative_entry(root, item, source, where, roboflow=True)
        if p.is_dir():
            out.extend(_walk_images(p, root))
        elif p.is_file() and p.suffix.lower() == ".txt":
            lay.consumed.add(p.resolve().relative_to(root.resolve()).as_posix())
            out.extend(_list_file_images(root, p, key, darknet))
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            out.append(p.resolve().relative_to(root.resolve()).as_posix())
        else:
            raise FormatError(f"{item!r} is neither a folder nor a .txt list of images", path=source, where=where)
    return out


def _loose_label_dirs(root: Path) -> list[Path]:
    return [root / d for d in ("labels", "Labels", "annotations", "Annotations") if (root / d).is_dir()]


def _index_loose(lay: Layout) -> None:
    root = lay.root
    ldirs = _loose_label_dirs(root)
    idirs = [root / d for d in ("images", "Images") if (root / d).is_dir()]
    images: dict[str, str] = {}  # relative stem under the images folder -> root-relative path
    for idir in idirs:
        for rel in _walk_images(idir, root):
            key = str(PurePosixPath(rel).relative_to(idir.name).with_suffix(""))
            images.setdefault(key, rel)
    labels: dict[str, str] = {}
    for ldir in ldirs[:1]:  # Datumaro reads the first of them: Annotations before labels
        for dirpath, dirnames, filenames in os.walk(ldir):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(".txt"):
                    rel = Path(dirpath, f).relative_to(root).as_posix()
                    key = str(PurePosixPath(rel).relative_to(ldir.name).with_suffix(""))
                    labels[key] = rel
    for key in sorted(set(images) | set(labels)):
        irel, lrel = images.get(key), labels.get(key)
        if irel is None:
            assert lrel is not None
            lay.orphans.append(lrel)
            continue
        split = key.split("/")[0] if "/" in key else None
        e = Entry(root / irel, irel, segpipe_file_name(irel, split), split)
        if lrel is not None:
            e.label, e.label_rel = root / lrel, lrel
        lay.entries.append(e)


def _pair(lay: Layout, by_split: list[tuple[str, list[str]]]) -> None:
    """Entries from ``(split, image paths)``, labels by Ultralytics' rule; orphan labels of the label folders."""
    root = lay.root
    seen: set[str] = set()
    label_dirs: set[str] = set()
    for split, rels in by_split:
        for rel in rels:
            if rel in seen:  # listed by several splits (val: images/train): the first split keeps it
                continue
            seen.add(rel)
            lrel = label_rel_for(rel)
            label_dirs.add(str(PurePosixPath(lrel).parent))
            e = Entry(root / rel, rel, segpipe_file_name(rel, split), split)
            lp = root / lrel
            if lp.is_file():
                e.label, e.label_rel = lp, lrel
            lay.entries.append(e)
    used = {e.label_rel for e in lay.entries if e.label_rel}
    for d in sorted(label_dirs):
        if not d.startswith("labels") and "/labels" not in f"/{d}":
            continue  # labels beside images: other .txt files there are not labels by rule
        ld = root / d
        if not ld.is_dir():
            continue
        for f in sorted(os.listdir(ld)):
            rel = f"{d}/{f}" if d != "." else f
            if f.lower().endswith(".txt") and rel not in used and (root / rel).is_file():
                lay.orphans.append(rel)


def index(path: str | Path) -> Layout:
    """Indexes the YOLO dataset at ``path`` (a folder, its ``data.yaml`` or its ``obj.data``).

    Raises:
        InputError: not a YOLO dataset.
        FormatError: a malformed metadata file or list (naming the file and the key or line).
        UnsafePathError: an entry escapes the dataset folder.
    """
    found = find_meta(path)
    if found is None:
        raise InputError("not a YOLO dataset (no data.yaml, obj.data or obj.names)", path=path)
    kind, meta = found
    root = meta.parent.resolve()  # every path below is compared with resolved paths (safe_join resolves)
    meta = root / meta.name
    lay = Layout(kind, root, meta.name, [])
    lay.consumed.add(meta.name)
    if kind == "ultralytics":
        data = load_yaml(meta)
        if "kpt_shape" in data:
            raise UnsupportedError("YOLO pose datasets (kpt_shape) are not supported", path=meta, where="kpt_shape")
        lay.names = parse_names(data, meta)
        p = data.get("path")
        if p is not None and (
            not isinstance(p, str) or not (Path(p) if os.path.isabs(p) else root / p).resolve() == root.resolve()
        ):
            lay.problems.append(Problem("warning", meta.name, "path", f"{p!r} is not this folder; ignored: the "
                                        "dataset is read from the folder holding the YAML file", "yolo.path_ignored"))
        for k in data:
            if str(k) not in YAML_KEYS:
                lay.problems.append(Problem("warning", meta.name, str(k), "key not read by segpipe",
                                            "yolo.key_not_read"))
                lay.losses.lose("keys_not_read", 1, note=LOSS_NOTES["keys_not_read"])
        splits = [k for k in ("train", "val", "test") if data.get(k) is not None]
        if not splits:
            raise FormatError("no split: expected train, val or test", path=meta, where="train")
        _pair(lay, [(k, _split_images(root, k, data[k], meta, False, lay)) for k in splits])
    elif kind == "darknet":
        cfg = parse_obj_data(_read_text(meta))
        if "names" not in cfg:
            raise FormatError("missing 'names' (the class names file)", path=meta, where="names")
        npath = cfg["names"].replace("\\", "/")
        if npath.startswith("data/") and not (root / npath).exists():
            npath = npath[5:]
        names_file = safe_join(root, npath, source=meta, where="names")
        lay.names = parse_names_file(names_file)
        lay.consumed.add(check_relative_name(npath))
        if "classes" in cfg and cfg["classes"].strip() != str(len(lay.names)):
            raise FormatError(f"classes is {cfg['classes']} but {npath} has {len(lay.names)} names", path=meta,
                              where="classes")
        subsets = sorted((k for k in cfg if k not in DARKNET_KEYS),
                         key=lambda k: (SPLIT_ORDER.index(k) if k in SPLIT_ORDER else len(SPLIT_ORDER), k))
        pairs = []
        for k in subsets:
            lp = cfg[k].replace("\\", "/")
            if lp.startswith("data/") and not (root / lp).exists():
                lp = lp[5:]
            pairs.append((k, _split_images(root, k, lp, meta, True, lay)))
        _pair(lay, pairs)
    else:
        lay.names = parse_names_file(meta)
        _index_loose(lay)
    lay.entries.sort(key=lambda e: (_split_rank(e.split), e.split or "", e.file_name, e.rel))
    lay.consumed.update(e.rel for e in lay.entries)
    lay.consumed.update(e.label_rel for e in lay.entries if e.label_rel)
    lay.consumed.update(lay.orphans)  # reported on their own
    _unconsumed(lay)
    return lay


def _split_rank(split: str | None) -> int:
    if split is None:
        return -1
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


def _unconsumed(lay: Layout) -> None:
    """Every file under the root that no rule read: one warning each (the first few), and counted."""
    root = lay.root
    left: list[str] = []
    caches: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".segpipe")]
        for f in sorted(filenames):
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if rel in lay.consumed or rel in OWN_FILES:
                continue
            (caches if f.endswith(".cache") else left).append(rel)
    for rel in caches:
        lay.problems.append(Problem("warning", rel, "", "Ultralytics label cache: not read (it is rebuilt from the "
                                    "label files that were read)", "yolo.cache_not_read"))
    for rel in left[:MAX_LISTED]:
        lay.problems.append(Problem("warning", rel, "", "file not read: no image of a split, label of such an image "
                                    "or metadata file", "yolo.file_not_read"))
    if len(left) > MAX_LISTED:
        lay.problems.append(Problem("warning", str(root), "", f"{len(left) - MAX_LISTED} more files not read",
                                    "yolo.file_not_read"))
    lay.losses.lose("files_not_read", len(left), note=LOSS_NOTES["files_not_read"])
