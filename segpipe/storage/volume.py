"""3-D medical volumes (NIfTI with nibabel, DICOM series with pydicom), read slice by slice.

``open_volume(path)`` returns a :class:`Volume`: lazy, picklable, one ``(H, W)`` slice in memory at
a time.

**Axis convention (one for both formats, no resampling, no reorientation).** The voxel grid is
``(i, j, k)`` as stored: NIfTI's array axes, or for DICOM ``i`` = column, ``j`` = row of each image
and ``k`` = slice order along the slice normal (sorted by ``ImagePositionPatient``, not by file name
or ``InstanceNumber``). segpipe exposes it as ``(Z, H, W) = (k, j, i)``:
``volume.slice(z)[y, x]`` is voxel ``(i=x, j=y, k=z)``. ``affine`` is the exact 4 × 4 matrix from
``(i, j, k, 1)`` to world millimetres in **RAS+** (NIfTI's convention; DICOM's LPS is converted by
negating the first two rows), so ``affine @ [x, y, z, 1]`` is where pixel ``(y, x)`` of slice ``z``
lies. Nothing is flipped to look "radiological": ``orientation`` names the axis codes (e.g.
``("L", "P", "S")``) for whoever needs to display it. Because a NIfTI file stores ``i`` fastest, a
``(H, W)`` C-order slice is exactly the file's bytes of one ``k`` plane, which the NIfTI writer uses
to stream volumes slice by slice.

**Intensities.** ``raw_slice`` gives real-world values (DICOM ``RescaleSlope/Intercept`` applied, so
CT is in Hounsfield units; NIfTI ``scl_slope/inter`` applied). ``slice`` maps them to ``(H, W, 3)
uint8`` with a linear window ``(center, width)``: ``lo = center - width/2``, ``out = clip((v - lo) /
width · 255)``. The window is, in order: the ``window`` argument (``--window 40,400`` for a CT soft
tissue window), the first ``WindowCenter/WindowWidth`` of the DICOM series, else the 1st and 99th
percentiles of up to :data:`SAMPLE_SLICES` evenly spaced slices.

**Bad input** is one line naming the file and the field: a NIfTI affine that is not invertible
(:class:`FormatError`, field ``affine``), a DICOM file without the ``DICM`` preamble or whose header
cannot be parsed or lacks a required field, and a DICOM series with missing slices (detected from the
``ImagePositionPatient`` spacing and ``InstanceNumber`` gaps; reported, never interpolated).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import FormatError, ImageDecodeError, InputError
from segpipe.storage.limits import check_pixel_count
from segpipe.storage.urls import is_url, redact

#: Slices read to compute a percentile window.
SAMPLE_SLICES = 8
#: A gap larger than this many times the slice spacing (the smallest step) means slices are missing.
GAP_FACTOR = 1.5
#: Relative deviation of slice spacing above which the series is called irregular (a warning).
IRREGULAR = 0.01
_NO_INTERP = "re-export the complete series; slices are never interpolated"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_REQUIRED = ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")


def parse_window(text: str | None) -> tuple[float, float] | None:
    """Parses ``"center,width"`` (e.g. ``"40,400"``); None for None or empty.

    Raises:
        InputError: malformed, or width <= 0.
    """
    if not text:
        return None
    try:
        c, w = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"window must be CENTER,WIDTH (e.g. 40,400), got {text!r}", where="--window") from None
    if not w > 0:
        raise InputError(f"window width must be > 0, got {w}", where="--window")
    return c, w


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear intensity window.

    Args:
        values: ``(H, W)`` real-world intensities.
        center: Window centre.
        width: Window width (> 0).

    Returns:
        ``(H, W, 3) uint8``.
    """
    lo = np.float32(center - width / 2.0)
    g = (values.astype(np.float32) - lo) * np.float32(255.0 / width)
    u8 = np.clip(g + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=2)


def _axcodes(affine: np.ndarray) -> tuple[str, ...]:
    try:
        import nibabel as nib  # lazy: optional (medical extra), ~0.7 s to import

        return tuple(str(c) for c in nib.aff2axcodes(affine))
    except Exception:  # an exotic affine without a dominant axis: no codes, not an error
        return ("?", "?", "?")


class Volume:
    """A lazy 3-D volume (see the module docstring for the conventions).

    Attributes:
        path: The NIfTI file or the DICOM series folder.
        kind: ``nifti`` or ``dicom``.
        shape: ``(Z, H, W)``.
        affine: ``(4, 4) float64`` voxel ``(i, j, k, 1)`` → RAS+ mm, exact.
        spacing: ``(dz, dy, dx)`` mm, the norms of the affine's ``k``, ``j``, ``i`` columns.
        window: ``(center, width)`` used by :meth:`slice`.
        orientation: Axis codes of ``(i, j, k)``, e.g. ``("R", "A", "S")``.
        files: DICOM: the slice files in ``z`` order; NIfTI: ``[path]``.
    """

    def __init__(
        self,
        path: Path,
        kind: str,
        shape: tuple[int, int, int],
        affine: np.ndarray,
        files: Sequence[Path],
        window: tuple[float, float] | None,
        slopes: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        self.path = path
        self.kind = kind
        self.shape = shape
        self.affine = np.asarray(affine, dtype=np.float64)
        self.files = [Path(f) for f in files]
        self._slopes = list(slopes) if slopes is not None else None
        self._img: Any = None
        self._pid = -1
        cols = np.linalg.norm(self.affine[:3, :3], axis=0)
        self.spacing = (float(cols[2]), float(cols[1]), float(cols[0]))
        self.orientation = _axcodes(self.affine)
        self.window = window if window is not None else self._percentile_window()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_img"] = None  # nibabel images reopen lazily in each process
        state["_pid"] = -1
        return state

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Volume({str(self.path)!r}, kind={self.kind!r}, shape={self.shape}, orientation={self.orientation})"

    def _nifti(self) -> Any:
        if self._img is None or self._pid != os.getpid():
            import nibabel as nib  # lazy: optional (medical extra), ~0.7 s to import

            self._img = nib.load(str(self.path))
            self._pid = os.getpid()
        return self._img

    def raw_slice(self, z: int) -> np.ndarray:
        """Real-world intensities of slice ``z``.

        Returns:
            ``(H, W) float32`` (Hounsfield units for CT).
        """
        nz = self.shape[0]
        if not -nz <= z < nz:
            raise IndexError(f"slice {z} out of range 0..{nz - 1}")
        z = z % nz
        if self.kind == "nifti":
            img = self._nifti()
            try:
                plane = np.asarray(img.dataobj[..., z] if len(img.shape) == 3 else img.dataobj[:, :])
            except Exception as e:  # truncated/corrupt data: nibabel raises OSError, EOFError, ValueError ...
                raise ImageDecodeError(f"cannot read slice {z}: {e}", path=self.path) from None
            return np.ascontiguousarray(plane.T, dtype=np.float32)  # (i, j) → (H=j, W=i)
        import pydicom  # lazy: optional (medical extra), ~0.4 s to import

        f = self.files[z]
        try:
            ds = pydicom.dcmread(f)
            arr = np.asarray(ds.pixel_array)
        except Exception as e:  # pydicom raises many types for bad pixel data; one line each
            raise ImageDecodeError(f"cannot decode pixel data: {e}", path=f) from None
        if arr.shape != self.shape[1:]:
            raise FormatError(f"pixel data is {arr.shape}, header says {self.shape[1:]}", path=f, where="PixelData")
        slope, inter = self._slopes[z] if self._slopes else (1.0, 0.0)
        return (arr.astype(np.float32) * np.float32(slope) + np.float32(inter)).astype(np.float32)

    def slice(self, z: int, window: tuple[float, float] | None = None) -> np.ndarray:
        """Slice ``z`` windowed to 8 bits.

        Args:
            z: Slice index, ``0 <= z < Z``.
            window: ``(center, width)``; the volume's :attr:`window` when None.

        Returns:
            ``(H, W, 3) uint8``.
        """
        c, w = window or self.window
        return apply_window(self.raw_slice(z), c, w)

    def _percentile_window(self) -> tuple[float, float]:
        nz = self.shape[0]
        zs = sorted({int(round(v)) for v in np.linspace(0, nz - 1, min(SAMPLE_SLICES, nz))})
        vals = np.concatenate([self.raw_slice(z)[::4, ::4].ravel() for z in zs])
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return 0.5, 1.0
        lo, hi = (float(v) for v in np.percentile(vals, (1.0, 99.0)))
        return (lo + hi) / 2.0, max(hi - lo, 1e-6)

    def slice_attrs(self, volume_id: str, z: int) -> dict[str, Any]:
        """The attributes a store image group of slice ``z`` carries (read by the ``nifti`` writer).

        Returns:
            ``{"volume": id, "z": z, "affine": 4×4 nested list, "shape": [Z, H, W],
            "spacing": [dz, dy, dx], "source": path}``.
        """
        return {
            "volume": str(volume_id),
            "z": int(z),
            "affine": self.affine.tolist(),
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "source": str(self.path),
        }


# ------------------------------------------------------------------------------------------- NIfTI


def _open_nifti(path: Path, window: tuple[float, float] | None) -> Volume:
    try:
        import nibabel as nib  # lazy: optional (medical extra), ~0.7 s to import
    except ImportError:
        raise InputError("reading NIfTI needs nibabel", path=path, hint="pip install segpipe[medical]") from None
    try:
        img: Any = nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError ...
        raise FormatError(f"not a readable NIfTI file: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                          path=path) from None
    shape = nifti_zhw(img.shape, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise FormatError("affine has non-finite values", path=path, where="affine")
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise FormatError("affine is not invertible (determinant 0): voxel → world is undefined",
                          path=path, where="affine", hint="fix the sform/qform of the file")
    return Volume(path, "nifti", shape, affine, [path], window)


def nifti_zhw(shape: tuple[int, ...], path: Path, what: str = "volume") -> tuple[int, int, int]:
    """A NIfTI image's ``(x, y, z[, 1, ...])`` shape as ``(Z, H, W)`` (a 2-D image is one slice).

    Raises:
        FormatError: not 3-D once trailing singleton dimensions are dropped (field ``dim``).
        PixelLimitError: a slice claims more pixels than ``SEGPIPE_MAX_PIXELS`` (field ``dim``).
    """
    shp = tuple(int(s) for s in shape)
    while len(shp) > 3 and shp[-1] == 1:
        shp = shp[:-1]
    if len(shp) == 2:
        shp = (*shp, 1)
    if len(shp) != 3 or min(shp) < 1:
        raise FormatError(f"expected a 3-D {what}, got shape {tuple(shape)}", path=path, where="dim")
    # Each slice is decoded whole: the header's claim is checked before any slice is planned or read.
    check_pixel_count(shp[0], shp[1], path=path, where="dim", what=f"{what} slice")
    return shp[2], shp[1], shp[0]


# ------------------------------------------------------------------------------------------- DICOM


def _floats(ds: Any, name: str, n: int, f: Path) -> list[float]:
    try:
        vals = [float(v) for v in ds[name].value]
    except KeyError:
        raise FormatError("required field is missing", path=f, where=name) from None
    except (TypeError, ValueError):
        raise FormatError("field is not numeric", path=f, where=name) from None
    if len(vals) != n or not all(np.isfinite(vals)):
        raise FormatError(f"expected {n} finite numbers, got {vals}", path=f, where=name)
    return vals


def _first(v: Any) -> float | None:
    try:
        from pydicom.multival import MultiValue  # lazy: optional (medical extra), ~0.4 s to import

        return float(v[0]) if isinstance(v, (MultiValue, list, tuple)) else float(v)
    except (TypeError, ValueError, IndexError):
        return None


def read_dicom_header(f: Path) -> Any:
    """Reads one DICOM file's header (no pixel data), strictly.

    Raises:
        FormatError: no ``DICM`` preamble, an unparsable header, or a missing required field.
    """
    import pydicom  # lazy: optional (medical extra), ~0.4 s to import
    from pydicom.errors import InvalidDicomError  # lazy: optional (medical extra), ~0.4 s to import

    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True)  # force=False: the preamble is required
    except InvalidDicomError:
        raise FormatError("not a DICOM file (no 128-byte preamble with 'DICM')", path=f, where="preamble") from None
    except Exception as e:  # truncated or garbled elements
        raise FormatError(f"bad DICOM header: {e}", path=f, where="header") from None
    for name in _REQUIRED:
        if name not in ds:
            raise FormatError("required field is missing", path=f, where=name)
    return ds


def _dicom_headers(folder: Path) -> list[tuple[Path, Any]]:
    """The headers of the one series a folder holds, ``[(file, dataset)]`` in file-name order.

    Raises:
        InputError: pydicom is missing, or the folder holds no DICOM file.
        FormatError: a bad header, or several series.
    """
    try:
        import pydicom  # noqa: F401  # lazy: optional (medical extra): is it installed?
    except ImportError:
        raise InputError("reading DICOM needs pydicom", path=folder, hint="pip install segpipe[medical]") from None
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")
    if not files:
        raise InputError("no DICOM files in the folder", path=folder)
    heads = [(f, read_dicom_header(f)) for f in files]
    series = {str(d.get("SeriesInstanceUID", "")) for _, d in heads}
    if len(series) > 1:
        raise FormatError(f"the folder holds {len(series)} series; give one series per folder",
                          path=folder, where="SeriesInstanceUID")
    return heads


_SliceEntry = tuple[float, np.ndarray, Path, tuple[float, float], int | None]


def _slice_entries(heads: list[tuple[Path, Any]], rows: int, cols: int, iop: np.ndarray, ps: list[float],
                   normal: np.ndarray) -> list[_SliceEntry]:
    """One entry per slice, sorted along the normal: ``(position along the normal, ImagePositionPatient
    (3,), file, (rescale slope, intercept), InstanceNumber or None)``.

    Raises:
        FormatError: a slice whose size, orientation or pixel spacing differs from the first one's.
    """
    entries: list[_SliceEntry] = []
    for f, d in heads:
        if (int(d.Rows), int(d.Columns)) != (rows, cols):
            raise FormatError(f"slice is {int(d.Rows)}x{int(d.Columns)}, the series {rows}x{cols}",
                              path=f, where="Rows")
        if not np.allclose(_floats(d, "ImageOrientationPatient", 6, f), iop, atol=1e-4):
            raise FormatError("orientation differs from the rest of the series", path=f,
                              where="ImageOrientationPatient")
        if not np.allclose(_floats(d, "PixelSpacing", 2, f), ps, rtol=1e-5):
            raise FormatError("pixel spacing differs from the rest of the series", path=f, where="PixelSpacing")
        ipp = np.asarray(_floats(d, "ImagePositionPatient", 3, f))
        slope = _first(d.get("RescaleSlope", 1.0))
        inter = _first(d.get("RescaleIntercept", 0.0))
        num = d.get("InstanceNumber")
        entries.append((float(ipp @ normal), ipp, f, (slope if slope is not None else 1.0,
                                                      inter if inter is not None else 0.0),
                        int(num) if num is not None and str(num).strip() else None))
    entries.sort(key=lambda e: e[0])
    return entries


def _slice_step(folder: Path, entries: list[_SliceEntry], d0: Any) -> np.ndarray:
    """The ``(3,)`` step from one slice to the next of a series of two or more (the mean step).

    Raises:
        FormatError: two slices at one position, a gap (missing slices, by position or by
            InstanceNumber) — never interpolated.
    """
    pos = np.asarray([e[0] for e in entries])
    d = np.diff(pos)
    dup = np.flatnonzero(d < 1e-4)
    if dup.size:
        k = int(dup[0])
        raise FormatError(f"two slices at the same position ({pos[k]:.3f} mm along the normal): "
                          f"{entries[k][2].name} and {entries[k + 1][2].name}",
                          path=folder, where="ImagePositionPatient")
    # The smallest step is the reference: with a median, one gap in a short series (steps 2.5 and
    # 5.0) would set the reference itself. A declared SpacingBetweenSlices also catches a series
    # that lost every other slice (uniform steps, each twice the declared spacing).
    step = float(d.min())
    declared = _first(d0.get("SpacingBetweenSlices"))
    if declared and declared > 0 and step > GAP_FACTOR * float(declared):
        step = float(declared)
    gaps = np.flatnonzero(d > GAP_FACTOR * step)
    if gaps.size:
        missing = int(sum(round(float(d[k]) / step) - 1 for k in gaps))
        k = int(gaps[0])
        raise FormatError(
            f"series has {max(missing, 1)} missing slice(s): a gap of {d[k]:.3f} mm between "
            f"{entries[k][2].name} and {entries[k + 1][2].name} where slices are {step:.3f} mm apart",
            path=folder, where="ImagePositionPatient", hint=_NO_INTERP,
        )
    nums = [e[4] for e in entries]
    if all(n is not None for n in nums):
        order = sorted(n for n in nums if n is not None)
        jumps = [(a, b) for a, b in zip(order, order[1:], strict=False) if b - a > 1]
        if jumps:
            a, b = jumps[0]
            raise FormatError(
                f"series has missing slice(s): InstanceNumber jumps from {a} to {b}",
                path=folder, where="InstanceNumber", hint=_NO_INTERP,
            )
    if float(np.max(np.abs(d - step))) > IRREGULAR * step:
        warnings.warn(f"{folder}: irregular slice spacing ({d.min():.4f}..{d.max():.4f} mm); the affine uses "
                      "the mean step", stacklevel=4)
    return (entries[-1][1] - entries[0][1]) / (len(entries) - 1)


def _open_dicom(folder: Path, window: tuple[float, float] | None) -> Volume:
    heads = _dicom_headers(folder)
    f0, d0 = heads[0]
    rows, cols = int(d0.Rows), int(d0.Columns)
    check_pixel_count(cols, rows, path=f0, where="Rows, Columns", what="DICOM slice")
    iop = np.asarray(_floats(d0, "ImageOrientationPatient", 6, f0))
    ps = _floats(d0, "PixelSpacing", 2, f0)
    rc, cc = iop[:3], iop[3:]
    normal = np.cross(rc, cc)
    if np.linalg.norm(normal) < 1e-6:
        raise FormatError("row and column directions are parallel", path=f0, where="ImageOrientationPatient")
    entries = _slice_entries(heads, rows, cols, iop, ps, normal)
    if len(entries) > 1:
        kvec = _slice_step(folder, entries, d0)
    else:
        th = _first(d0.get("SpacingBetweenSlices", d0.get("SliceThickness", 1.0))) or 1.0
        kvec = normal / np.linalg.norm(normal) * th
    lps = np.eye(4)
    # i = column index moves along the row direction cosine by the column spacing (PixelSpacing[1]);
    # j = row index moves along the column direction cosine by the row spacing (PixelSpacing[0]).
    lps[:3, 0] = rc * ps[1]
    lps[:3, 1] = cc * ps[0]
    lps[:3, 2] = kvec
    lps[:3, 3] = entries[0][1]
    affine = _LPS_TO_RAS @ lps
    if window is None:
        wc, ww = _first(d0.get("WindowCenter")), _first(d0.get("WindowWidth"))
        if wc is not None and ww is not None and ww > 0:
            window = (wc, ww)
    return Volume(folder, "dicom", (len(entries), rows, cols), affine, [e[2] for e in entries], window,
                  [e[3] for e in entries])


def open_volume(path: str | Path, *, window: tuple[float, float] | str | None = None) -> Volume:
    """Opens a NIfTI file (``.nii``, ``.nii.gz``) or a DICOM series folder lazily.

    Args:
        path: A NIfTI file, a DICOM series folder, or one file of a DICOM series (its folder is used).
        window: ``(center, width)`` or ``"center,width"``; a default as documented when None.

    Returns:
        A :class:`Volume`.

    Raises:
        InputError: missing path, missing optional dependency.
        FormatError: the bad inputs of the module docstring, one line naming the file and the field.
    """
    if is_url(str(path)):
        # a URL through Path loses a slash (s3://b/v → s3:/b/v) and names a local file that is not there
        raise InputError("volumes (NIfTI, DICOM) are read from local files only; copy them to a folder",
                         path=redact(str(path)))
    p = Path(path)
    win = parse_window(window) if isinstance(window, str) else window
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    name = p.name.lower()
    if p.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz")):
        return _open_nifti(p, win)
    if p.is_file():
        read_dicom_header(p)  # a clear error for a lone non-DICOM file before scanning its folder
        p = p.parent
    return _open_dicom(p, win)


# ------------------------------------------------------------------------------------ slice images

#: ``<volume path>#z<z>[@<center>,<width>]``: one windowed slice of a volume, where a dataset record
#: needs an image file (exports with ``--images copy``); rendered as a grey PNG on copy.
_SLICE_REF = re.compile(r"^(?P<path>.+)#z(?P<z>\d+)(?:@(?P<c>[^,@#]+),(?P<w>[^,@#]+))?$")


def slice_image_name(volume_id: str, z: int) -> str:
    """The image file name datasets give slice ``z`` of volume ``volume_id``: ``<id>_z<zzzzz>.png``."""
    return f"{volume_id}_z{int(z):05d}.png"


def slice_ref(path: str | Path, z: int, window: tuple[float, float] | None = None) -> str:
    """A reference to slice ``z`` of the volume at ``path`` (see :func:`write_slice_png`)."""
    ref = f"{path}#z{int(z):05d}"
    # repr() of a float round-trips exactly: the slice is rendered with the window the model saw.
    return ref + (f"@{float(window[0])!r},{float(window[1])!r}" if window else "")


def parse_slice_ref(text: str) -> tuple[Path, int, tuple[float, float] | None] | None:
    """``(volume path, z, window)`` of a slice reference whose volume exists, else None."""
    m = _SLICE_REF.match(str(text))
    if m is None or Path(text).exists():
        return None
    path = Path(m["path"])
    # Only a volume: a NIfTI file or a (DICOM series) folder. A missing "photo.png#z00001" stays missing.
    if not (path.is_dir() or (path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")))):
        return None
    window = (float(m["c"]), float(m["w"])) if m["c"] is not None else None
    return path, int(m["z"]), window


def write_slice_png(ref: str, dest: str | Path) -> None:
    """Renders the slice a reference names as a grey 8-bit PNG (its window applied) at ``dest``.

    Raises:
        InputError: ``ref`` is not a reference to an existing volume.
    """
    from PIL import Image  # lazy: only slices rendered as PNG need Pillow

    parsed = parse_slice_ref(ref)
    if parsed is None:
        raise InputError("not a slice of an existing volume", path=ref)
    path, z, window = parsed
    plane = open_volume(path, window=window).slice(z)[..., 0]
    with open(dest, "wb") as f:
        Image.fromarray(np.ascontiguousarray(plane), mode="L").save(f, format="PNG", compress_level=1)
