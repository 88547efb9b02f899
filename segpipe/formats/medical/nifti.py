"""Writing label volumes as NIfTI (``nifti``): store slices assembled into one ``.nii.gz`` per volume.

A store holds one image group per slice, whose attributes the pre-labeling writes from
:meth:`segpipe.storage.volume.Volume.slice_attrs`::

    {"volume": "<volume id>", "z": k, "affine": 4×4 nested list (RAS+), "shape": [Z, H, W], ...}

and whose ``labels`` array is the ``(H, W)`` label map of slice ``k`` (``[y, x]`` = voxel
``(i=x, j=y, k)``, see :mod:`segpipe.storage.volume`).

Slices of one volume may land in different shards, so the writer works in two steps that never hold
a volume in memory: ``write_shard`` (workers) saves each slice as ``.slices/<volume hash>/<z>.npy`` in the
output staging folder and returns a small fragment; ``finalize`` (driver) streams each volume slice
by slice into ``labels/<volume>.nii.gz``: the NIfTI header (sform and qform = the source affine,
code 1 "scanner"; shape ``(W, H, Z)``) followed by the slices' bytes, which are exactly the file's
``k`` planes because NIfTI stores ``i`` fastest. Memory is one slice. The volume id is the source
volume's path relative to the pre-labeling source without ``.nii``/``.nii.gz`` (``p1/ct``), so the
output keeps the source's sub-folders (``labels/p1/ct.nii.gz``); an id that would leave ``labels/``
(``..``, an absolute path) is an error. ``index.json`` records each volume's source ``file`` (the
slices' file name without ``#z<k>``), which the ``nifti`` reader uses to pair it with the store again.

Slices missing from the store (a skipped or failed slice) are written as void (255) and counted in
``index.json`` (``missing_slices``) with a warning: never interpolated. Images without volume
attributes are not written (loss ``not_a_volume_slice``). The affine is exact for sources whose
affine is a float32 sform (as NIfTI stores it); others are rounded to float32 by the format.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segpipe.core.records import DatasetMeta, Materialized
from segpipe.errors import FormatError, InputError
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.geo.common import image_attrs, label_map
from segpipe.storage.atomic import atomic_open, write_json_atomic
from segpipe.storage.paths import check_relative_name, ensure_inside, safe_join

SLICES = ".slices"
VOID = 255
NOTES = {
    "not_a_volume_slice": "the image has no volume attributes (volume, z, affine, shape) in the store; "
    "it belongs to no volume and was not written",
    "no_label_map": "the slice has no label map or masks; it is written as void",
}
_SLICE_FILE = re.compile(r"^(.+)#z\d+$")


def _staging(vid: str) -> str:
    """The staging folder name of a volume id (flat and collision-free, whatever the id holds)."""
    return hashlib.sha1(vid.encode("utf-8")).hexdigest()[:20]


def _slice_meta(attrs: dict[str, Any], file_name: str) -> tuple[str, int, np.ndarray, tuple[int, int, int]] | None:
    if "volume" not in attrs:
        return None
    where = f"image {file_name}"
    try:
        vid = str(attrs["volume"])
        z = int(attrs["z"])
        affine = np.asarray(attrs["affine"], dtype=np.float64)
        zz, hh, ww = (int(v) for v in attrs["shape"])
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"bad volume attributes: {e}", where=where) from None
    if affine.shape != (4, 4):
        raise FormatError(f"affine must be 4x4, got {affine.shape}", where=f"{where}: affine")
    if not 0 <= z < zz:
        raise FormatError(f"slice index {z} outside the volume's {zz} slices", where=f"{where}: z")
    return vid, z, affine, (zz, hh, ww)


def nifti_header(shape_zhw: tuple[int, int, int], affine: np.ndarray, dtype: np.dtype) -> bytes:
    """The 352 bytes that precede the voxel data of a single-file NIfTI-1 (header + empty extension).

    Args:
        shape_zhw: ``(Z, H, W)``; the file's shape is ``(W, H, Z)``.
        affine: ``(4, 4)`` RAS+ affine of voxel ``(i, j, k)``.
        dtype: Voxel dtype (uint8 or uint16).
    """
    import nibabel as nib  # lazy: optional (medical extra), ~0.7 s to import

    z, h, w = shape_zhw
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((w, h, z))
    hdr.set_data_dtype(np.dtype(dtype).newbyteorder("<"))
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=1)
    hdr.set_xyzt_units("mm")
    hdr["vox_offset"] = 352
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0  # labels are stored as is
    block = hdr.binaryblock
    assert len(block) == 348
    return block + b"\x00\x00\x00\x00"  # no extensions


class NiftiWriter:
    """Assembles per-slice label maps of a store into NIfTI label volumes (see the module docstring).

    Args:
        out: Output folder.
        meta: The source dataset's meta.
        options: Shared write options (unused beyond the defaults).
    """

    format_name: ClassVar[str] = "nifti"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        try:
            import nibabel  # noqa: F401  # lazy: optional (medical extra): is it installed?
        except ImportError:
            raise InputError("the nifti writer needs nibabel", hint="pip install segpipe[medical]") from None
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()

    def prepare(self) -> None:
        """Creates ``out/labels`` and the slice staging folder."""
        (self.out / "labels").mkdir(parents=True, exist_ok=True)
        (self.out / SLICES).mkdir(parents=True, exist_ok=True)

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Saves each slice's label map to the staging folder; returns ``{volume, z, shape, affine, max}``."""
        res = ShardResult(index)
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            attrs = image_attrs(m, self.meta)
            sm = _slice_meta(attrs, img.file_name)
            if sm is None:
                res.losses.lose("not_a_volume_slice", 1, "", NOTES["not_a_volume_slice"])
                continue
            vid, z, affine, shape = sm
            labels = label_map(m, self.meta, res.losses)
            if labels is None:
                res.losses.lose("no_label_map", 1, "", NOTES["no_label_map"])
                continue
            arr = np.asarray(labels[:, :])
            if arr.shape != shape[1:]:
                raise FormatError(f"slice label map is {arr.shape}, the volume's slices are {shape[1:]}",
                                  where=f"image {img.file_name}: shape")
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise FormatError("label values must be in 0..65535", where=f"image {img.file_name}")
            d = ensure_inside(self.out, self.out / SLICES / _staging(vid))
            d.mkdir(parents=True, exist_ok=True)
            with atomic_open(d / f"{z:06d}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            res.fragments.append({"volume": vid, "z": z, "shape": list(shape), "affine": affine.tolist(),
                                  "max": int(arr.max()) if arr.size else 0,
                                  # the slice's "<file>#z<z>" as pre-labeling recorded it, else its name
                                  "file_name": str(attrs.get("file") or img.attributes.get("file") or img.file_name)})
        return res

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Streams each volume into ``labels/<volume>.nii.gz``; writes ``index.json``.

        Raises:
            FormatError: slices of one volume disagree on shape or affine, or a slice appears twice.
            UnsafePathError: a volume id would place its file outside ``labels/``.
        """
        vols: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(results, key=lambda r: r.index):
            for f in r.fragments:
                vols.setdefault(f["volume"], []).append(f)
        written: list[Path] = []
        index = []
        for vid in sorted(vols):
            frags = sorted(vols[vid], key=lambda f: f["z"])
            first = frags[0]
            for f in frags[1:]:
                if f["shape"] != first["shape"] or f["affine"] != first["affine"]:
                    raise FormatError(f"slices of volume {vid!r} disagree on shape or affine",
                                      where=f"image {f['file_name']}")
            zs = [f["z"] for f in frags]
            if len(set(zs)) != len(zs):
                raise FormatError(f"volume {vid!r} has two images for one slice", where=f"volume {vid}: z")
            shape = tuple(first["shape"])
            dtype = np.dtype(np.uint8) if max(max(f["max"] for f in frags), VOID) <= 255 else np.dtype(np.uint16)
            present = set(zs)
            missing = [z for z in range(shape[0]) if z not in present]
            if missing:
                warnings.warn(f"volume {vid}: {len(missing)} slice(s) missing from the store, written as void "
                              f"({VOID}): z = {missing[:10]}{' ...' if len(missing) > 10 else ''}", stacklevel=2)
            rel = f"{vid}.nii.gz"
            path = ensure_inside(self.out, safe_join(self.out / "labels", rel, where=f"volume {vid}"))
            path.parent.mkdir(parents=True, exist_ok=True)
            sdir = self.out / SLICES / _staging(vid)
            void_plane = np.full(shape[1:], VOID, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
            with atomic_open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="",
                                                              compresslevel=6) as gz:
                gz.write(nifti_header(shape, np.asarray(first["affine"]), dtype))
                for z in range(shape[0]):
                    if z in present:
                        plane = np.load(sdir / f"{z:06d}.npy", allow_pickle=False)
                        gz.write(np.ascontiguousarray(plane.astype(dtype.newbyteorder("<"))).tobytes())
                    else:
                        gz.write(void_plane)
            written.append(path)
            src = {m.group(1) for f in frags if (m := _SLICE_FILE.match(str(f["file_name"])))}
            entry: dict[str, Any] = {"volume": vid, "labels": f"labels/{check_relative_name(rel)}",
                                     "shape": list(shape), "affine": first["affine"], "missing_slices": missing}
            if len(src) == 1:
                entry["file"] = src.pop()
            index.append(entry)
        shutil.rmtree(self.out / SLICES, ignore_errors=True)
        cats = [{"id": c.id, "name": c.name} for c in self.meta.categories]
        ip = self.out / "index.json"
        write_json_atomic(ip, {"format": "nifti", "void": VOID, "categories": cats, "volumes": index})
        written.append(ip)
        return written
