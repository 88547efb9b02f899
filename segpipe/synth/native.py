"""Synthetic datasets in native modality formats: GeoTIFF scenes, NIfTI / DICOM volumes, EXIF JPEGs.

``synth_native(kind, out, n, seed, size, fmt, exif=False, depth=16)`` writes:

* ``satellite --format geotiff``: the usual dataset (``masks/*.png``, ``annotations.json``,
  ``labelmap.txt``) whose photos are 3-band uint8 tiled GeoTIFFs ``images/<stem>.tif`` in
  EPSG:32633 (UTM 33N) at :data:`SAT_RESOLUTION` m per pixel, image ``i`` placed east of image
  ``i - 1``. The masks share the photos' pixel grid (same georeference).
* ``medical --format nifti``: ``volumes/<vid>.nii.gz`` (int16 Hounsfield units) and
  ``labels/<vid>.nii.gz`` (uint8 label volumes), same affine (``diag(-0.75, -0.75, 2.5)`` plus an
  origin, i.e. LPS-like axes stored in RAS+), ``labelmap.txt`` and ``volumes.json`` (per volume: files,
  shape ``[Z, H, W]``, spacing, affine). ``n`` volumes of ``depth`` slices.
* ``medical --format dicom``: ``dicom/<vid>/IM<z>.dcm`` CT series (uint16 stored values, RescaleSlope 1,
  RescaleIntercept -1024, WindowCenter/Width that reproduce the grey photo, ImagePositionPatient,
  ImageOrientationPatient, PixelSpacing, InstanceNumber from 1), plus the NIfTI label volumes whose
  affine is the series' RAS+ affine, ``labelmap.txt`` and ``volumes.json``.
* ``--exif`` (any kind, JPEG): photos stored rotated/flipped with an EXIF orientation (1..8, from
  the seed) so that a viewer applying it shows the upright photo; masks, sizes and annotations are in
  upright coordinates (segpipe.storage.images' "upright" policy). ``exif_orientation.json`` maps each
  file to its orientation.

Everything is deterministic for a seed (DICOM UIDs are derived from it; no dates are written).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segpipe.errors import ConfigError, InputError
from segpipe.storage.atomic import atomic_open, write_json_atomic
from segpipe.storage.images import read_image
from segpipe.synth.base import KINDS, render
from segpipe.synth.writer import SynthResult, synth_output, synth_photos, write_synth

NATIVE_FORMATS = ("geotiff", "nifti", "dicom")
#: Ground resolution of synthetic satellite scenes (m per pixel).
SAT_RESOLUTION = 0.5
#: CRS of synthetic satellite scenes.
SAT_CRS = "EPSG:32633"
#: Voxel spacing of synthetic volumes (dz, dy, dx) in mm; all exactly representable in float32.
MED_SPACING = (2.5, 0.75, 0.75)
#: grey value g (0..255) of the rendered photo ↔ HU = g * HU_SCALE + HU_OFFSET.
HU_SCALE, HU_OFFSET = 8.0, -1000.0
#: The DICOM window that maps HU back to the grey photo: centre and width of [-1000, 1040].
SYNTH_WINDOW = (HU_OFFSET + 255 * HU_SCALE / 2.0, 255 * HU_SCALE)
#: PIL transpose that displays a stored image upright, per EXIF orientation (as ImageOps.exif_transpose).
_EXIF_METHOD = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}
#: The inverse of each of those methods (ROTATE_90 ↔ ROTATE_270; the others are involutions).
_INVERSE = {0: 0, 1: 1, 3: 3, 5: 5, 6: 6, 2: 4, 4: 2}


def synth_native(
    kind: str,
    out: str | Path,
    n: int = 16,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    fmt: str = "png",
    *,
    exif: bool = False,
    depth: int = 16,
    overwrite: bool = False,
) -> SynthResult:
    """Writes a synthetic dataset in a native format (see the module docstring).

    Args:
        kind: A synth kind (``satellite`` for geotiff, ``medical`` for nifti/dicom).
        out: Output folder.
        n: Images (volumes for nifti/dicom).
        seed: Random seed.
        size: ``(H, W)``; the kind's default when None.
        fmt: ``png``, ``jpg``, ``geotiff``, ``nifti`` or ``dicom``.
        exif: Store JPEG photos with an EXIF orientation (implies jpg).
        depth: Slices per volume (nifti/dicom).
        overwrite: Replace an earlier ``synth`` output at ``out`` (``--overwrite``).

    Returns:
        A :class:`~segpipe.synth.SynthResult` (``images`` counts slices for volumes).

    Raises:
        ConfigError: a format that does not fit the kind, or bad numbers.
        InputError: the optional package the format needs is missing.
    """
    if fmt in ("png", "jpg") and not exif:
        return synth_photos(kind, out, n=n, seed=seed, size=size, image_format=fmt, overwrite=overwrite)
    KINDS.get(kind)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    write: Callable[[Path], SynthResult]
    if exif:
        if fmt not in ("png", "jpg"):
            raise ConfigError(f"--exif writes JPEG photos; it does not combine with --format {fmt}")
        write = functools.partial(_exif, kind, n=n, seed=seed, size=size)
    elif fmt == "geotiff":
        if kind != "satellite":
            raise ConfigError(f"--format geotiff is for the satellite kind, not {kind!r}")
        write = functools.partial(_geotiff, n=n, seed=seed, size=size)
    elif fmt in ("nifti", "dicom"):
        if kind != "medical":
            raise ConfigError(f"--format {fmt} is for the medical kind, not {kind!r}")
        if not 1 <= depth <= 4096:
            raise ConfigError(f"depth must be in 1..4096, got {depth}")
        write = functools.partial(_medical, size=size, n=n, seed=seed, depth=depth, fmt=fmt)
    else:
        raise ConfigError(f"unknown format {fmt!r}; expected png, jpg, {', '.join(NATIVE_FORMATS)}")
    # Built beside OUT and swapped in whole (see segpipe.storage.outputs).
    with synth_output(out, overwrite=overwrite) as tmp:
        res = write(tmp)
    return dataclasses.replace(res, out=Path(out))


def _rewrite_file_names(out: Path, renames: dict[str, str]) -> None:
    coco = json.loads((out / "annotations.json").read_text(encoding="utf-8"))
    for im in coco["images"]:
        im["file_name"] = renames.get(im["file_name"], im["file_name"])
    write_json_atomic(out / "annotations.json", coco, indent=None)


# ------------------------------------------------------------------------------------------- EXIF


def exif_stored(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels to store so that applying EXIF ``orientation`` shows ``upright``.

    Args:
        upright: ``(H, W, 3) uint8``.
        orientation: 1..8.

    Returns:
        ``(H', W', 3) uint8`` (sides swapped for orientations 5..8).
    """
    if orientation == 1:
        return upright
    im = Image.fromarray(upright).transpose(Image.Transpose(_INVERSE[_EXIF_METHOD[orientation]]))
    return np.asarray(im)


def _exif(kind: str, out: Path, n: int, seed: int, size: tuple[int, int] | None) -> SynthResult:
    res = write_synth(kind, out, n=n, seed=seed, size=size, image_format="png")
    renames: dict[str, str] = {}
    orient: dict[str, int] = {}
    for i in range(n):
        png = out / "images" / f"{i:05d}.png"
        upright = read_image(png, exif=False)
        # A separate stream: the photos and masks equal those of the same seed without --exif.
        o = int(np.random.default_rng([seed, i, 0xE1F]).integers(1, 9))
        stored = exif_stored(upright, o)
        ex = Image.Exif()
        ex[0x0112] = o
        jpg = png.with_suffix(".jpg")
        with atomic_open(jpg, "wb") as f:
            Image.fromarray(stored).save(f, format="JPEG", quality=95, exif=ex.tobytes())
        png.unlink()
        renames[png.name] = jpg.name
        orient[jpg.name] = o
    _rewrite_file_names(out, renames)
    write_json_atomic(out / "exif_orientation.json", orient)
    return res


# ------------------------------------------------------------------------------------------- GeoTIFF


def _geotiff(out: Path, n: int, seed: int, size: tuple[int, int] | None) -> SynthResult:
    try:
        import rasterio  # lazy: optional (geo extra), ~0.5 s to import
        from affine import Affine  # lazy: optional (geo extra, with rasterio)
    except ImportError:
        raise InputError("--format geotiff needs rasterio", hint="pip install segpipe[geo]") from None
    res = write_synth("satellite", out, n=n, seed=seed, size=size, image_format="png")
    h, w = res.size
    renames: dict[str, str] = {}
    for i in range(n):
        png = out / "images" / f"{i:05d}.png"
        rgb = read_image(png, exif=False)
        tif = png.with_suffix(".tif")
        transform = Affine(SAT_RESOLUTION, 0.0, 500000.0 + i * w * SAT_RESOLUTION, 0.0, -SAT_RESOLUTION, 5000000.0)
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8", "crs": SAT_CRS,
            "transform": transform, "compress": "deflate", "photometric": "RGB",
        }
        if h >= 256 and w >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        partial = tif.with_name(tif.name + ".partial")
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(partial, "w", **profile) as ds:
            ds.write(np.moveaxis(rgb, -1, 0))
        partial.replace(tif)
        png.unlink()
        renames[png.name] = tif.name
    _rewrite_file_names(out, renames)
    return res


# ------------------------------------------------------------------------------------------- volumes


def synthetic_affine(index: int, h: int, w: int) -> np.ndarray:
    """The RAS+ affine of synthetic volume ``index``: LPS-like axes (i → left, j → posterior, k → up).

    Returns:
        ``(4, 4) float64``, all entries exactly representable in float32.
    """
    dz, dy, dx = MED_SPACING
    a = np.eye(4)
    a[0, 0], a[1, 1], a[2, 2] = -dx, -dy, dz
    a[:3, 3] = (w * dx / 2.0, h * dy / 2.0, -100.0 + 1000.0 * index)
    return a


def _medical(out: Path, n: int, seed: int, size: tuple[int, int] | None, depth: int, fmt: str) -> SynthResult:
    try:
        import nibabel as nib  # lazy: optional (medical extra), ~0.7 s to import
    except ImportError:
        raise InputError(f"--format {fmt} needs nibabel", hint="pip install segpipe[medical]") from None
    spec = KINDS.get("medical")
    h, w = size or spec.default_size
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    (out / "labels").mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    for v in range(n):
        vid = f"{v:05d}"
        hu = np.empty((depth, h, w), dtype=np.int16)
        lab = np.empty((depth, h, w), dtype=np.uint8)
        for z in range(depth):
            rng = np.random.default_rng([seed, v, z])
            sample = spec.generate(rng, h, w)
            grey = render(sample, spec.classes, rng)[..., 0].astype(np.float64)
            hu[z] = np.rint(grey * HU_SCALE + HU_OFFSET).astype(np.int16)
            lab[z] = sample.labels
        affine = synthetic_affine(v, h, w)
        label_file = out / "labels" / f"{vid}.nii.gz"
        # (Z, H, W) → NIfTI (i, j, k) = (W, H, Z): slice z's (H, W) is voxel (i=x, j=y, k=z).
        _save_nifti(nib.Nifti1Image(np.transpose(lab, (2, 1, 0)), affine), label_file, atomic_open)
        entry: dict[str, Any] = {
            "id": vid, "labels": f"labels/{vid}.nii.gz", "shape": [depth, h, w],
            "spacing": list(MED_SPACING), "affine": affine.tolist(),
        }
        if fmt == "nifti":
            (out / "volumes").mkdir(parents=True, exist_ok=True)
            _save_nifti(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)), affine), out / "volumes" / f"{vid}.nii.gz",
                        atomic_open)
            entry["image"] = f"volumes/{vid}.nii.gz"
        else:
            entry["image"] = f"dicom/{vid}"
            write_dicom_series(out / "dicom" / vid, hu, affine, seed=seed, series=v)
        index.append(entry)
    palette = [(0, 0, 0)] + [c.color for c in spec.classes[1:]]
    with atomic_open(out / "labelmap.txt", "w") as f:
        f.write("# label:color_rgb:parts:actions\n")
        f.write("".join(f"{c.name}:{','.join(str(int(x)) for x in col)}::\n" for c, col in zip(spec.classes, palette,
                                                                                              strict=True)))
    write_json_atomic(out / "volumes.json", {"format": fmt, "window": list(SYNTH_WINDOW), "volumes": index})
    return SynthResult(out, n * depth, 0, (h, w))


def _save_nifti(img: Any, path: Path, atomic_open: Any) -> None:
    img.set_sform(img.affine, code=1)  # scanner coordinates; the sform is what readers use, exactly
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    # nibabel picks the format from the extension: write to the final name, then move via atomic_open.
    raw = img.to_bytes()
    with atomic_open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)


def write_dicom_series(folder: Path, hu: np.ndarray, affine: np.ndarray, *, seed: int = 0, series: int = 0,
                       window: tuple[float, float] = SYNTH_WINDOW) -> list[Path]:
    """Writes a minimal valid CT series (one file per slice) whose geometry matches ``affine``.

    Args:
        folder: Output folder (created).
        hu: ``(Z, H, W) int16`` Hounsfield units (stored as uint16 ``HU + 1024``).
        affine: RAS+ affine of the voxel grid (axes must be a diagonal, LPS-aligned grid as
            :func:`synthetic_affine` makes).
        seed: Seed of the deterministic UIDs.
        series: Series number (part of the UIDs).
        window: ``(center, width)`` written as WindowCenter/WindowWidth.

    Returns:
        The files written, in slice order.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset  # lazy: optional (medical extra)
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # lazy: optional (medical extra)

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    dc, dr = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    rc, cc = lps[:3, 0] / dc, lps[:3, 1] / dr
    study = generate_uid(entropy_srcs=[f"segpipe-study-{seed}"])
    suid = generate_uid(entropy_srcs=[f"segpipe-series-{seed}-{series}"])
    frame = generate_uid(entropy_srcs=[f"segpipe-frame-{seed}-{series}"])
    files = []
    for z in range(hu.shape[0]):
        uid = generate_uid(entropy_srcs=[f"segpipe-slice-{seed}-{series}-{z}"])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        f = folder / f"IM{z:05d}.dcm"
        ds = FileDataset(str(f), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, suid, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "SEGPIPE^SYNTH", f"SYNTH{seed}"
        ds.SeriesNumber, ds.InstanceNumber = series + 1, z + 1
        ipp = lps[:3, 3] + z * lps[:3, 2]
        ds.ImagePositionPatient = [float(round(v, 6)) for v in ipp]
        ds.ImageOrientationPatient = [float(round(v, 6)) for v in (*rc, *cc)]
        ds.PixelSpacing = [dr, dc]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
        ds.PixelData = (hu[z].astype(np.int32) + 1024).astype("<u2").tobytes()
        with atomic_open(f, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
        files.append(f)
    return files
