"""Reading NIfTI label volumes (``nifti``): one sample per slice, paired with the pre-labeling's slices.

Layout (what ``segpipe synth medical --format nifti`` and the ``nifti`` writer produce)::

    root/
      labels/<name>.nii.gz   label volumes: integer class ids, void 255 (sub-folders allowed)
      volumes.json           optional (synth): {"volumes": [{"labels": "labels/00000.nii.gz",
                             "image": "volumes/00000.nii.gz", "shape": [Z, H, W], "affine": 4×4}, ...]}
      index.json             optional (the writer): {"categories": [{"id", "name"}], "void": 255,
                             "volumes": [{"labels": ..., "file": ..., "shape": ..., "affine": ...}]}
      labelmap.txt           optional: class id = line position (else index.json's categories, else
                             the values found, scanned slice by slice)

**Samples.** A label volume of shape ``(Z, H, W)`` (the file is ``(i, j, k) = (W, H, Z)``, see
:mod:`segpipe.storage.volume`) gives ``Z`` samples, in volume then slice order. Slice ``z`` of the
volume named ``<name>`` has the file name ``<name>#z<zzzzz>`` and the image id ``stable_id`` of it:
exactly what the pre-labeling gives slice ``z`` of the image volume whose path relative to the
pre-labeling source is ``<name>`` (:func:`slice_file_name`), so ground truth and a store pair up by
id. ``<name>`` is, in order: the image that ``volumes.json`` names for the label volume, relative to
its top folder (``volumes/00000.nii.gz`` → ``00000.nii.gz``, ``dicom/00000`` → ``00000``: what
``segpipe prelabel ROOT/volumes`` gives); the ``file`` that the writer's ``index.json`` records; else
the label file relative to ``labels/``. The samples carry the slice attributes of
:meth:`segpipe.storage.volume.Volume.slice_attrs` (``volume``, ``z``, ``affine``, ``shape`` ...), so
that converting to ``nifti`` rebuilds the same volumes. Samples name no image file.

**Materialising** (worker side) reads slice ``z`` only, ``data[:, :, z].T``: never the whole volume.

**Checks.** A label file that cannot be read, is not 3-D, or whose shape or affine differs from the
``volumes.json`` entry or from the image volume it names is a :class:`~segpipe.errors.FormatError`
naming the label file and the field.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from segpipe.core.labelmap import LabelEntry
from segpipe.core.problems import Problem
from segpipe.core.records import Category, DatasetMeta, ImageInfo, Materialized, Sample
from segpipe.errors import FormatError, ImageDecodeError, InputError, SegpipeError
from segpipe.formats.voc.reader import read_labelmap_file
from segpipe.storage.jsonio import read_json
from segpipe.storage.manifest import stable_id
from segpipe.storage.paths import check_relative_name, safe_join
from segpipe.storage.volume import nifti_zhw, open_volume, slice_image_name, slice_ref

LABELS = "labels"
VOLUMES_JSON = "volumes.json"
INDEX_JSON = "index.json"
LABELMAP = "labelmap.txt"
_SUFFIXES = (".nii.gz", ".nii")
#: Affine entries (mm) that differ by less than this are the same affine (NIfTI stores float32).
AFFINE_ATOL = 1e-3


def is_nifti_name(name: str) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` (any case)."""
    return name.lower().endswith(_SUFFIXES)


def volume_id(file: str) -> str:
    """The volume id of a volume whose path relative to its collection root is ``file``.

    The relative path without ``.nii``/``.nii.gz`` (a DICOM series folder as is), forward slashes:
    ``p1/ct.nii.gz`` → ``p1/ct``. Unique within a collection, so same-named volumes in different
    folders never collide.
    """
    rel = "/".join(p for p in PurePosixPath(file.replace("\\", "/")).parts if p not in ("", "."))
    low = rel.lower()
    for suf in _SUFFIXES:
        if low.endswith(suf):
            return rel[: -len(suf)]
    return rel


def slice_file_name(file: str, z: int) -> str:
    """The file name of slice ``z`` of the volume ``file`` (relative to the collection root)."""
    return f"{file}#z{z:05d}"


def _rel_niftis(d: Path) -> list[str]:
    """Sorted relative paths of the NIfTI files below ``d`` (hidden entries skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        for f in filenames:
            if is_nifti_name(f) and not f.startswith("."):
                out.append(os.path.relpath(os.path.join(dirpath, f), d).replace(os.sep, "/"))
    return sorted(out)


def detect_nifti(path: str | Path) -> bool:
    """True for a folder with ``labels/*.nii(.gz)`` whose ``volumes.json``, if any, is a volume index."""
    p = Path(path)
    labels = p / LABELS
    if not p.is_dir() or not labels.is_dir():
        return False
    found = any(f.is_file() and is_nifti_name(f.name) for f in labels.rglob("*.nii*"))
    if not found:
        return False
    vj = p / VOLUMES_JSON
    if vj.is_file():
        try:
            data = read_json(vj)
        except SegpipeError:
            return False
        return isinstance(data, dict) and isinstance(data.get("volumes"), list)
    return True


def _nib() -> Any:
    try:
        import nibabel as nib  # lazy: optional (medical extra), ~0.7 s to import
    except ImportError:
        raise InputError("reading NIfTI needs nibabel", hint="pip install segpipe[medical]") from None
    return nib


@dataclass(frozen=True)
class LabelVolume:
    """One label volume of the dataset (driver side, a few numbers: no voxels).

    Attributes:
        name: The slices' base file name (see the module docstring).
        volume: Volume id (:func:`volume_id` of ``name``).
        path: The label file.
        shape: ``(Z, H, W)``.
        affine: 4 × 4 nested list (RAS+).
    """

    name: str
    volume: str
    path: str
    shape: tuple[int, int, int]
    affine: list[list[float]]
    image: str | None = None
    window: tuple[float, float] | None = None

    def attrs(self, z: int) -> dict[str, Any]:
        """The slice attributes of :meth:`segpipe.storage.volume.Volume.slice_attrs` (plus its ``file``)."""
        cols = np.linalg.norm(np.asarray(self.affine, dtype=np.float64)[:3, :3], axis=0)
        return {"volume": self.volume, "z": int(z), "affine": self.affine, "shape": list(self.shape),
                "spacing": [float(cols[2]), float(cols[1]), float(cols[0])], "source": self.path,
                "file": slice_file_name(self.name, z)}


def _index_window(root: Path) -> tuple[float, float] | None:
    """The intensity window ``volumes.json`` records (``[center, width]``), used to render slice images."""
    f = root / VOLUMES_JSON
    try:
        w = read_json(f).get("window") if f.is_file() else None
        return (float(w[0]), float(w[1])) if isinstance(w, list) and len(w) == 2 and float(w[1]) > 0 else None
    except (SegpipeError, AttributeError, TypeError, ValueError):
        return None


def _index_entries(root: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """``{label path relative to labels/: entry}`` from ``volumes.json`` (else ``index.json``) and its file name."""
    for fname in (VOLUMES_JSON, INDEX_JSON):
        f = root / fname
        if not f.is_file():
            continue
        data = read_json(f)
        vols = data.get("volumes") if isinstance(data, dict) else None
        if not isinstance(vols, list):
            raise FormatError("expected an object with a 'volumes' list", path=f, where="volumes")
        out: dict[str, dict[str, Any]] = {}
        for i, e in enumerate(vols):
            where = f"volumes[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("labels"), str):
                raise FormatError("each volume needs a 'labels' file name", path=f, where=f"{where}.labels")
            rel = check_relative_name(e["labels"], source=f, where=f"{where}.labels")
            if not rel.startswith(f"{LABELS}/"):
                raise FormatError(f"label file {rel!r} is not under {LABELS}/", path=f, where=f"{where}.labels")
            out[rel[len(LABELS) + 1:]] = {**e, "_where": where}
        return out, fname
    return {}, None


def _categories(root: Path, index_file: str | None) -> tuple[list[Category] | None, int | None]:
    """Categories from ``labelmap.txt`` or the writer's ``index.json``, and its void value."""
    lm = root / LABELMAP
    if lm.is_file():
        entries: list[LabelEntry] = read_labelmap_file(lm)
        return [Category(id=i, name=e.name, isthing=False, color=e.color) for i, e in enumerate(entries)], None
    if index_file == INDEX_JSON:
        data = read_json(root / INDEX_JSON)
        cats = data.get("categories") if isinstance(data, dict) else None
        if isinstance(cats, list) and cats:
            try:
                out = [Category(id=int(c["id"]), name=str(c["name"]), isthing=False) for c in cats]
            except (KeyError, TypeError, ValueError):
                raise FormatError("categories need an integer 'id' and a 'name'", path=root / INDEX_JSON,
                                  where="categories") from None
            void = data.get("void")
            return out, int(void) if isinstance(void, int) else None
    return None, None


class NiftiReader:
    """Indexes a folder of NIfTI label volumes (driver side; headers only).

    Args:
        path: The folder holding ``labels/`` (see the module docstring).
    """

    format_name: ClassVar[str] = "nifti"

    def __init__(self, path: str | Path) -> None:
        nib = _nib()
        root = Path(path)
        if not (root / LABELS).is_dir():
            raise InputError(f"not a NIfTI label folder (no {LABELS}/ folder)", path=root)
        self.root = root
        self.problems: list[Problem] = []
        self._window = _index_window(root)
        index, index_file = _index_entries(root)
        on_disk = _rel_niftis(root / LABELS)
        for rel, e in sorted(index.items()):
            if rel not in on_disk:
                self.problems.append(Problem("error", f"{LABELS}/{rel}", f"{index_file}: {e['_where']}",
                                             "label volume listed but missing", "nifti.missing_labels"))
        self.volumes: list[LabelVolume] = []
        names: dict[str, str] = {}
        for rel in on_disk:
            vol = self._volume(nib, rel, index.get(rel), index_file)
            if vol.name in names:
                raise FormatError(f"label volumes {names[vol.name]} and {rel} are both for {vol.name!r}",
                                  path=root / index_file if index_file else root, where="volumes")
            names[vol.name] = rel
            self.volumes.append(vol)
        cats, void = _categories(root, index_file)
        if cats is None:
            values: set[int] = set()
            for v in self.volumes:
                for z in range(v.shape[0]):
                    values.update(int(x) for x in np.unique(read_label_slice(v.path, z)))
            values.discard(255)
            top = max(values | {0})
            cats = [Category(id=i, name="background" if i == 0 else f"class_{i}", isthing=False)
                    for i in range(top + 1)]
        if void is None:
            void = 255 if max((c.id for c in cats), default=0) < 255 else 65535
        self.meta = DatasetMeta(format="nifti", categories=tuple(cats), void_value=void)

    def _volume(self, nib: Any, rel: str, entry: dict[str, Any] | None, index_file: str | None) -> LabelVolume:
        path = safe_join(self.root / LABELS, rel)
        try:
            img: Any = nib.load(str(path))
        except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError ...
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FormatError(f"not a readable NIfTI file: {msg}", path=path) from None
        shape = nifti_zhw(img.shape, path, "label volume")
        if img.get_data_dtype().kind not in "iuf":
            raise FormatError(f"label volume has {img.get_data_dtype()} voxels, not integers", path=path,
                              where="datatype")
        affine = np.asarray(img.affine, dtype=np.float64)
        name = rel
        image_path: str | None = None
        if entry is not None:
            image = entry.get("image")
            if isinstance(image, str) and image:
                irel = check_relative_name(image, source=self.root / str(index_file), where=f"{entry['_where']}.image")
                parts = irel.split("/")
                name = "/".join(parts[1:]) if len(parts) > 1 else irel
                if self._check_image(path, shape, affine, irel):
                    image_path = str(safe_join(self.root, irel))
            elif isinstance(entry.get("file"), str) and entry["file"]:
                name = check_relative_name(entry["file"], source=self.root / str(index_file),
                                           where=f"{entry['_where']}.file")
            src = f"{index_file} {entry['_where']}"
            self._check(path, shape, affine, entry.get("shape"), entry.get("affine"), src)
        return LabelVolume(name, volume_id(name), str(path), shape, affine.tolist(), image_path, self._window)

    @staticmethod
    def _check(path: Path, shape: tuple[int, int, int], affine: np.ndarray, want_shape: Any, want_affine: Any,
               what: str) -> None:
        if want_shape is not None:
            try:
                ws = tuple(int(v) for v in want_shape)
            except (TypeError, ValueError):
                ws = None
            if ws != shape:
                raise FormatError(f"label volume is {list(shape)} (Z, H, W) but {what} is {want_shape}",
                                  path=path, where="shape")
        if want_affine is not None:
            try:
                wa = np.asarray(want_affine, dtype=np.float64)
            except (TypeError, ValueError):
                wa = None
            if wa is None or wa.shape != (4, 4) or not np.allclose(affine, wa, rtol=0, atol=AFFINE_ATOL):
                raise FormatError(f"label volume's affine differs from that of {what}", path=path, where="affine")

    def _check_image(self, path: Path, shape: tuple[int, int, int], affine: np.ndarray, irel: str) -> bool:
        """Checks the image volume against its labels; False when it is missing (a warning)."""
        ipath = safe_join(self.root, irel)
        if not ipath.exists():
            self.problems.append(Problem("warning", irel, str(path), "the image volume named in volumes.json is "
                                         "missing (the labels are still read)", "nifti.missing_image"))
            return False
        vol = open_volume(ipath, window=(0.0, 1.0))  # headers only: no percentile window
        self._check(path, shape, affine, list(vol.shape), vol.affine, f"image volume {irel}")
        return True

    def __len__(self) -> int:
        return sum(v.shape[0] for v in self.volumes)

    def samples(self) -> Iterator[Sample]:
        """Streams one sample per slice, volume by volume (sorted by label file), slice by slice."""
        for v in self.volumes:
            z_, h, w = v.shape
            for z in range(z_):
                # The id is the pre-labeling's (from "<file>#z<z>"); the name is an image file name.
                info = ImageInfo(stable_id(slice_file_name(v.name, z)), slice_image_name(v.volume, z), w, h,
                                 attributes=v.attrs(z))
                ref = slice_ref(v.image, z, v.window) if v.image else None
                yield Sample(info, image_path=ref, semantic_file=v.path)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> Any:
    return _nib().load(path)


def read_label_slice(path: str | Path, z: int) -> np.ndarray:
    """Slice ``z`` of a label volume as an ``(H, W)`` uint8/uint16 map (reads that slice only).

    Raises:
        ImageDecodeError: the voxels cannot be read.
        FormatError: values that are not non-negative integers below 65536.
    """
    p = str(path)
    st = os.stat(p)
    img = _load(p, st.st_mtime_ns, st.st_size)
    nd = len(img.shape)
    key: tuple[Any, ...] = (slice(None), slice(None), int(z), *([0] * (nd - 3))) if nd >= 3 else (slice(None),) * 2
    try:
        plane = np.asarray(img.dataobj[key])
    except Exception as e:  # truncated/corrupt data: nibabel raises OSError, EOFError, ValueError ...
        raise ImageDecodeError(f"cannot read slice {z}: {e}", path=p) from None
    plane = plane.T  # (i, j) → (H=j, W=i)
    if plane.dtype.kind == "f":
        if not np.isfinite(plane).all() or not np.array_equal(plane, np.round(plane)):
            raise FormatError(f"slice {z} holds non-integer labels", path=p, where="voxels")
    elif plane.dtype.kind not in "iu":
        raise FormatError(f"labels are {plane.dtype}, not integers", path=p, where="datatype")
    if plane.size and (plane.min() < 0 or plane.max() > 65535):
        raise FormatError(f"slice {z} has labels outside 0..65535", path=p, where="voxels")
    dtype = np.uint8 if not plane.size or plane.max() <= 255 else np.uint16
    return np.ascontiguousarray(plane.astype(dtype))


def materialize_nifti(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Reads the sample's slice of its label volume into ``class_map`` (worker side, one slice)."""
    void = meta.void_value if meta.void_value is not None else 255
    if sample.semantic_file is None:
        return Materialized(sample=sample, void_value=void)
    cm = read_label_slice(sample.semantic_file, int(sample.image.attributes["z"]))
    return Materialized(sample=sample, class_map=cm, void_value=void)


def validate_nifti(path: str | Path) -> Iterator[Problem]:
    """Checks a NIfTI label folder; yields one problem per issue (file and field named).

    Codes: ``nifti.unreadable`` (the folder cannot be indexed: the error names the file and field),
    ``nifti.missing_labels``, ``nifti.missing_image``, ``nifti.bad_slice``, ``nifti.unknown_value``
    (reads every slice, one at a time).
    """
    try:
        reader = NiftiReader(path)
    except SegpipeError as e:
        yield Problem("error", e.path or str(path), e.where or "", e.message, "nifti.unreadable")
        return
    yield from reader.problems
    ids = {c.id for c in reader.meta.categories}
    void = reader.meta.void_value
    for v in reader.volumes:
        rel = os.path.relpath(v.path, reader.root).replace(os.sep, "/")
        for z in range(v.shape[0]):
            try:
                plane = read_label_slice(v.path, z)
            except SegpipeError as e:
                yield Problem("error", rel, f"z {z}", e.message, "nifti.bad_slice")
                break
            bad = sorted(int(x) for x in np.unique(plane) if int(x) not in ids and int(x) != void)
            if bad:
                yield Problem("error", rel, f"z {z}", f"values {bad[:10]} are not categories ({len(ids)} "
                              f"categories; {void} = void)", "nifti.unknown_value")
                break
