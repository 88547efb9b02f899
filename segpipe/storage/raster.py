"""Windowed reading of GeoTIFF / Cloud-Optimized GeoTIFF scenes of any size.

``open_raster(path)`` returns a :class:`RasterSource`: a lazy, picklable, read-only view of one scene
that behaves like an ``(H, W, 3) uint8`` image for slicing, so it can be handed directly to
``Predictor.predict_semantic(image)`` (which only calls ``image.shape`` and ``image[y0:y1, x0:x1]``).
Only the requested window is ever read; a 40k × 40k scene never sits in memory.

Policies:

* **Backends.** rasterio (GDAL) when importable, else tifffile (pure Python + zarr; no reprojection,
  and the CRS is then reported as ``"EPSG:<code>"`` from the GeoKeys instead of WKT).
* **Band selection.** ``bands`` are 1-based band numbers (GDAL convention). Default: bands 1, 2, 3
  when the scene has at least 3 bands, else band 1 repeated to three channels (grayscale).
* **Normalisation to uint8** (``stretch``):

  - ``"auto"`` (default): uint8 scenes pass through unchanged (so a model trained on 8-bit photos
    sees the same values); every other dtype gets ``"percentile"``.
  - ``"percentile"``: per band, ``lo, hi`` = the ``percentiles`` (default 2 and 98) of the valid
    (non-nodata) pixels of a **sample** of the scene, and ``out = clip((x - lo) / (hi - lo) * 255)``.
    The sample is the coarsest overview with at least :data:`SAMPLE_SIDE` pixels on its long side
    when the file has overviews (a COG), else a regular grid of small windows spread over the scene
    (:data:`SAMPLE_GRID`² windows of :data:`SAMPLE_WINDOW`² pixels). Either way the cost is bounded
    and independent of the scene size, and the statistics are computed once, on the process that
    opens the scene, then travel with the pickled object so every tile of every worker uses the
    same ``lo, hi``.
  - ``"minmax"``: as percentile with percentiles 0 and 100.
  - ``"none"``: values are clipped to 0..255 and cast (for data already in 8-bit range).
  - ``ranges=[(lo, hi), ...]`` (one per selected band) overrides the computed statistics.

* **Nodata.** Pixels the dataset marks invalid (the nodata value, an internal mask or an alpha band:
  GDAL's dataset mask) are 0 in all three channels; :meth:`RasterSource.nodata_mask` returns them.
* **Georeference.** ``crs`` is WKT (or None), ``transform`` the GDAL 6-tuple ``(a, b, c, d, e, f)``
  of ``x = a·col + b·row + c``, ``y = d·col + e·row + f`` (rasterio's ``Affine`` order). A scene
  without CRS is read in pixel space with a :class:`GeoreferenceWarning`, never an error.
* **Object storage.** ``path`` may be an ``s3://``, ``gs://``, ``az://`` or ``https://`` URL (rasterio
  only): GDAL reads it through ``/vsis3/``, ``/vsigs/``, ``/vsiaz/`` or ``/vsicurl/``, range request by
  range request, so a window costs the blocks it covers, never the whole file. Credentials and the
  endpoint come from the standard environment: GDAL reads ``AWS_ACCESS_KEY_ID`` … itself, and what it
  does not know (``AWS_ENDPOINT_URL``, obstore's Azure names) is given under GDAL's names inside the
  ``rasterio.Env`` of each read (:func:`gdal_cloud_options`; never printed, never stored).
* **Memory.** GDAL's block cache is capped at :data:`GDAL_CACHE_MB` MB per process (``GDAL_CACHEMAX``
  in the environment wins), so reading tile by tile keeps the resident memory flat.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from segpipe.errors import FormatError, ImageDecodeError, InputError
from segpipe.storage.limits import check_pixel_count
from segpipe.storage.urls import is_url, redact, split_url

#: Long side (pixels) of the overview used for the percentile statistics.
SAMPLE_SIDE = 1024
#: Without overviews: a SAMPLE_GRID × SAMPLE_GRID grid of windows ...
SAMPLE_GRID = 8
#: ... each SAMPLE_WINDOW × SAMPLE_WINDOW pixels.
SAMPLE_WINDOW = 128
#: GDAL block cache per process, MB (GDAL's own default is 5 % of RAM, far too much per worker).
GDAL_CACHE_MB = int(os.environ.get("SEGPIPE_GDAL_CACHE_MB", "128"))

STRETCHES = ("auto", "percentile", "minmax", "none")


class GeoreferenceWarning(UserWarning):
    """A raster has no CRS or no transform: outputs are in pixel coordinates."""


def have_rasterio() -> bool:
    """True when rasterio (GDAL) can be imported."""
    try:
        import rasterio  # noqa: F401  # lazy: optional (geo extra): is it installed?
    except ImportError:
        return False
    return True


def _gdal_env(remote: bool = False) -> Any:
    import rasterio  # lazy: optional (geo extra), ~0.5 s to import

    opts: dict[str, Any] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    if "GDAL_CACHEMAX" not in os.environ:
        opts["GDAL_CACHEMAX"] = GDAL_CACHE_MB  # a bare integer is MB for GDAL
    if remote:
        opts.update(gdal_cloud_options())
    return rasterio.Env(**opts)


def gdal_cloud_options(environ: Any = None) -> dict[str, str]:
    """GDAL's names for what the standard environment of obstore and the cloud SDKs says.

    GDAL reads the credentials and the region from the environment itself, but not
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``: an S3-compatible server (MinIO, moto, a cloud's
    own) is ``AWS_S3_ENDPOINT`` (host and port), ``AWS_HTTPS`` and path-style addressing for GDAL. Azure's
    ``AZURE_STORAGE_ACCOUNT_NAME`` / ``_KEY`` (obstore's names) are GDAL's ``AZURE_STORAGE_ACCOUNT`` and
    ``AZURE_STORAGE_ACCESS_KEY``; obstore's emulator switch ``AZURE_STORAGE_USE_EMULATOR`` (Azurite, at
    ``AZURITE_BLOB_STORAGE_URL``) is GDAL's ``AZURE_STORAGE_CONNECTION_STRING`` with that ``BlobEndpoint``.
    For GCS, obstore's ``GOOGLE_BASE_URL`` (or the ``gcs_base_url`` of the service-account file obstore
    reads, as an emulator's is) is GDAL's ``CPL_GS_ENDPOINT``, and ``GOOGLE_SKIP_SIGNATURE`` (or that
    file's ``disable_oauth``) its ``GS_NO_SIGN_REQUEST``. Options already set under GDAL's own names win.

    The CA bundle of ``https://`` (a private CA's, say): GDAL's curl reads ``GDAL_CURL_CA_BUNDLE``, then
    ``CURL_CA_BUNDLE``, then ``SSL_CERT_FILE`` (the one obstore reads), but rasterio sets the first to
    certifi's bundle when it is imported, which hides the other two: they are given to GDAL as
    ``GDAL_CURL_CA_BUNDLE``, unless that names a bundle of the user's own.

    Args:
        environ: The environment (default :data:`os.environ`).

    Returns:
        The options to set inside a ``rasterio.Env`` (empty when GDAL's defaults apply).
    """
    env = os.environ if environ is None else environ
    opts: dict[str, str] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and "AWS_S3_ENDPOINT" not in env:
        parts = urlsplit(endpoint)
        opts["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
        opts["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        if "AWS_VIRTUAL_HOSTING" not in env:
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"  # bucket in the path: what a custom endpoint serves
    for ours, gdal in (("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"),
                       ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY")):
        if env.get(ours) and gdal not in env:
            opts[gdal] = env[ours]
    if _true(env.get("AZURE_STORAGE_USE_EMULATOR")) and "AZURE_STORAGE_CONNECTION_STRING" not in env:
        # As obstore does: the emulator's own account and key unless others are given, at Azurite's URL.
        account = env.get("AZURE_STORAGE_ACCOUNT_NAME") or AZURITE_ACCOUNT
        key = env.get("AZURE_STORAGE_ACCOUNT_KEY") or AZURITE_KEY
        blob = urlsplit(env.get("AZURITE_BLOB_STORAGE_URL") or "http://127.0.0.1:10000")
        opts["AZURE_STORAGE_CONNECTION_STRING"] = (
            f"DefaultEndpointsProtocol={blob.scheme};AccountName={account};AccountKey={key};"
            f"BlobEndpoint={blob.scheme}://{blob.netloc}/{account}")
    bundle = env.get("CURL_CA_BUNDLE") or env.get("SSL_CERT_FILE")
    if bundle and _rasterios_bundle(env.get("GDAL_CURL_CA_BUNDLE")):
        opts["GDAL_CURL_CA_BUNDLE"] = bundle
    account = _gcs_service_account(env)
    base = env.get("GOOGLE_BASE_URL") or account.get("gcs_base_url")
    if base and "CPL_GS_ENDPOINT" not in env:
        opts["CPL_GS_ENDPOINT"] = str(base).rstrip("/") + "/"
    if (_true(env.get("GOOGLE_SKIP_SIGNATURE")) or account.get("disable_oauth") is True) \
            and "GS_NO_SIGN_REQUEST" not in env:
        opts["GS_NO_SIGN_REQUEST"] = "YES"
    return opts


def _rasterios_bundle(value: str | None) -> bool:
    """Whether ``GDAL_CURL_CA_BUNDLE`` is unset or rasterio's own default (certifi's bundle)."""
    if not value:
        return True
    try:
        import certifi  # lazy: rasterio's dependency, read only to recognise rasterio's default
    except ImportError:
        return False
    return os.path.realpath(value) == os.path.realpath(certifi.where())


def _gcs_service_account(env: Any) -> dict[str, Any]:
    """The endpoint fields of the service account obstore reads (``GOOGLE_SERVICE_ACCOUNT_KEY`` inline, or the
    file of ``GOOGLE_SERVICE_ACCOUNT`` / ``_PATH``); empty when there is none or it cannot be read (obstore
    then says so). Only ``gcs_base_url`` and ``disable_oauth`` are kept: never a key.
    """
    text = env.get("GOOGLE_SERVICE_ACCOUNT_KEY")
    path = env.get("GOOGLE_SERVICE_ACCOUNT") or env.get("GOOGLE_SERVICE_ACCOUNT_PATH")
    try:
        if not text and path:
            text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: doc[k] for k in ("gcs_base_url", "disable_oauth") if k in doc}


#: Azurite's one account and its key: public values Microsoft documents for the emulator (obstore's defaults).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


#: GDAL's virtual file system of each URL scheme.
_VSI = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/", "abfs": "/vsiaz/"}


def gdal_path(url: str) -> str:
    """The GDAL name of an object-storage URL (``s3://b/k.tif`` → ``/vsis3/b/k.tif``).

    Raises:
        InputError: not a URL segpipe reads (see :func:`segpipe.storage.urls.split_url`).
    """
    loc, key = split_url(url)
    parts = urlsplit(loc.url)
    if parts.scheme == "https":
        return f"/vsicurl/{loc.url}/{key}"
    return f"{_VSI[parts.scheme]}{parts.netloc}/{key}"


def _norm_slice(s: Any, n: int, axis: str) -> tuple[int, int]:
    if isinstance(s, (int, np.integer)):
        i = int(s) + (n if int(s) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"{axis} index {s} out of range 0..{n - 1}")
        return i, i + 1
    if not isinstance(s, slice):
        raise TypeError(f"RasterSource indices must be slices or ints, got {type(s).__name__}")
    start, stop, step = s.indices(n)
    if step != 1:
        raise IndexError("RasterSource slices must have step 1")
    return start, max(start, stop)


class RasterSource:
    """A lazy ``(H, W, 3) uint8`` view of one GeoTIFF scene (see the module docstring for policies).

    Args:
        path: The GeoTIFF / COG file, or its ``s3://``, ``gs://``, ``az://`` or ``https://`` URL.
        bands: 1-based band numbers to use as R, G, B (1 or 3 of them); default as documented.
        stretch: ``auto``, ``percentile``, ``minmax`` or ``none``.
        percentiles: ``(low, high)`` percentiles of the ``percentile`` stretch.
        ranges: Explicit ``(lo, hi)`` per selected band; overrides ``stretch`` statistics.
        backend: ``auto``, ``rasterio`` or ``tifffile``.

    Attributes:
        path: The file, or the URL (without any ``user:password@``).
        shape: ``(H, W)`` of the scene.
        bands: Number of bands in the file.
        band_indexes: The selected 1-based bands, in output order.
        bands_explicit: Whether the caller chose ``bands`` (see :func:`check_bands`).
        dtype: The file's sample dtype.
        crs: WKT (``"EPSG:<code>"`` with the tifffile backend), or None.
        transform: ``(a, b, c, d, e, f)`` affine, or None.
        nodata: The nodata value, or None.
        ranges: Per selected band ``(lo, hi)`` of the stretch, or None (pass-through).

    Raises:
        InputError: the file does not exist or the band selection is invalid.
        ImageDecodeError: not a readable TIFF.
        PixelLimitError: the header claims more pixels than ``SEGPIPE_MAX_SCENE_PIXELS`` (checked
            before anything is planned from it).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        bands: Sequence[int] | None = None,
        stretch: str = "auto",
        percentiles: tuple[float, float] = (2.0, 98.0),
        ranges: Sequence[tuple[float, float]] | None = None,
        backend: str = "auto",
    ) -> None:
        #: What GDAL opens: the file, or the ``/vsis3/``-style name of a URL (None for a local file).
        self._gdal_name: str | None = gdal_path(str(path)) if is_url(path) else None
        # A URL is named redacted (a Path would make of s3://b/k "s3:/b/k").
        self.path: Path | str = redact(str(path)) if self._gdal_name is not None else Path(path)
        if self._gdal_name is None and not Path(path).is_file():
            raise InputError("file not found", path=self.path)
        if stretch not in STRETCHES:
            raise InputError(f"unknown stretch {stretch!r}; expected one of {', '.join(STRETCHES)}", path=self.path)
        if backend == "auto":
            backend = "rasterio" if have_rasterio() else "tifffile"
        if backend not in ("rasterio", "tifffile"):
            raise InputError(f"unknown raster backend {backend!r}", path=self.path)
        if backend == "tifffile" and self._gdal_name is not None:
            raise InputError("reading a scene from object storage needs rasterio (GDAL)", path=self.path,
                             hint="pip install segpipe[geo]")
        self.backend = backend
        self._handle: Any = None
        self._tiff_store: Any = None
        self._pid = -1
        self.crs: str | None = None
        self.transform: tuple[float, float, float, float, float, float] | None = None
        self.nodata: float | None = None
        self._has_overviews = False
        if backend == "rasterio":
            self._init_rasterio()
        else:
            self._init_tifffile()
        # The header's claim, checked before anything is planned from it: a 152-byte (or sparse) TIFF
        # can claim 10^12 pixels, which would plan hundreds of thousands of block tasks.
        check_pixel_count(self.shape[1], self.shape[0], path=self.path, where="size", what="scene", scene=True)
        if self.crs is None or self.transform is None:
            missing = "CRS" if self.crs is None else "transform"
            warnings.warn(
                f"{self.path}: GeoTIFF has no {missing}; outputs will be in pixel coordinates",
                GeoreferenceWarning,
                stacklevel=2,
            )
        self.bands_explicit = bands is not None
        if bands is None:
            bands = [1, 2, 3] if self.bands >= 3 else [1]
        bands = [int(b) for b in bands]
        if len(bands) not in (1, 3):
            raise InputError(f"select 1 or 3 bands, got {len(bands)} ({bands})", path=self.path, where="bands")
        bad = [b for b in bands if not 1 <= b <= self.bands]
        if bad:
            raise InputError(
                f"band {bad[0]} does not exist: the file has {self.bands} band(s), numbered from 1",
                path=self.path,
                where="bands",
            )
        self.band_indexes: tuple[int, ...] = tuple(bands)
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        if ranges is not None:
            rs = [(float(lo), float(hi)) for lo, hi in ranges]
            if len(rs) != len(bands):
                raise InputError(f"{len(rs)} ranges for {len(bands)} bands", path=self.path, where="ranges")
            self.ranges: tuple[tuple[float, float], ...] | None = tuple(rs)
        elif stretch == "none" or (stretch == "auto" and self.dtype == np.uint8):
            self.ranges = None
        else:
            pct = (0.0, 100.0) if stretch == "minmax" else self.percentiles
            self.ranges = self._compute_ranges(pct)

    # ------------------------------------------------------------------ opening

    def _init_rasterio(self) -> None:
        import rasterio  # lazy: optional (geo extra), ~0.5 s to import
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError  # lazy: optional (geo extra)

        with _gdal_env(self._gdal_name is not None), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # we warn once, in our words
            try:
                ds = rasterio.open(self._gdal_name or self.path)
            except RasterioIOError as e:
                raise ImageDecodeError(f"not a readable raster: {_gdal_reason(e, self._gdal_name)}",
                                       path=self.path) from None
            with ds:
                if ds.driver not in ("GTiff", "COG"):
                    raise ImageDecodeError(f"expected a GeoTIFF, GDAL reads it as {ds.driver}", path=self.path)
                self.shape = (int(ds.height), int(ds.width))
                self.bands = int(ds.count)
                self.dtype = np.dtype(ds.dtypes[0])
                self.crs = ds.crs.to_wkt() if ds.crs is not None else None
                t = ds.transform
                self.transform = None if t.is_identity else (t.a, t.b, t.c, t.d, t.e, t.f)
                self.nodata = float(ds.nodata) if ds.nodata is not None else None
                self._has_overviews = bool(ds.overviews(1))
                self._mask_flags = [int(f) for f in ds.mask_flag_enums[0]] if ds.count else []

    def _init_tifffile(self) -> None:
        try:
            import tifffile  # lazy: optional (geo extra), the fallback backend
        except ImportError:
            raise InputError(
                "reading GeoTIFFs needs rasterio or tifffile", path=self.path, hint="pip install segpipe[geo]"
            ) from None
        try:
            with tifffile.TiffFile(self.path) as tf:
                series = tf.series[0]
                axes = series.axes
                shp = series.shape
                page = tf.pages.first
                geo = page.geotiff_tags or {}
                nod = page.tags.get(42113)
        except (tifffile.TiffFileError, OSError, ValueError) as e:
            raise ImageDecodeError(f"not a readable TIFF: {e}", path=self.path) from None
        if axes not in ("YX", "YXS", "SYX"):
            raise FormatError(f"unsupported TIFF layout {axes!r} (expected YX, YXS or SYX)", path=self.path)
        self._axes = axes
        if axes == "YX":
            self.shape, self.bands = (int(shp[0]), int(shp[1])), 1
        elif axes == "YXS":
            self.shape, self.bands = (int(shp[0]), int(shp[1])), int(shp[2])
        else:
            self.shape, self.bands = (int(shp[1]), int(shp[2])), int(shp[0])
        self.dtype = np.dtype(series.dtype)
        if nod is not None:
            try:
                self.nodata = float(str(nod.value).strip("\x00 "))
            except ValueError:
                self.nodata = None
        code = geo.get("ProjectedCSTypeGeoKey") or geo.get("GeographicTypeGeoKey")
        if code is not None and int(code) != 32767:  # 32767 = user-defined: no EPSG code to name
            self.crs = f"EPSG:{int(code)}"
        if "ModelTransformation" in geo:
            m = np.asarray(geo["ModelTransformation"], dtype=float).reshape(4, 4)
            self.transform = (m[0, 0], m[0, 1], m[0, 3], m[1, 0], m[1, 1], m[1, 3])
        elif "ModelPixelScale" in geo and "ModelTiepoint" in geo:
            sx, sy = float(geo["ModelPixelScale"][0]), float(geo["ModelPixelScale"][1])
            tp = [float(v) for v in geo["ModelTiepoint"]]
            i, j, x, y = tp[0], tp[1], tp[3], tp[4]
            self.transform = (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)

    def _open(self) -> Any:
        # Handles are per process: a GDAL dataset inherited through fork (or pickled) is not safe.
        if self._handle is not None and self._pid == os.getpid():
            return self._handle
        if self.backend == "rasterio":
            import rasterio  # lazy: optional (geo extra), ~0.5 s to import
            from rasterio.errors import NotGeoreferencedWarning  # lazy: optional (geo extra)

            with _gdal_env(self._gdal_name is not None), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._handle = rasterio.open(self._gdal_name or self.path)
        else:
            import tifffile  # lazy: optional (geo extra), the fallback backend
            import zarr  # lazy: zarr costs ~0.5 s to import

            self._tiff_store = tifffile.imread(self.path, aszarr=True, level=0)
            self._handle = zarr.open(self._tiff_store, mode="r")
        self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Closes the file handle of this process (it reopens on the next read)."""
        if self._handle is not None and self._pid == os.getpid():
            if self.backend == "rasterio":
                self._handle.close()
            else:
                self._tiff_store.close()
        self._handle = None
        self._tiff_store = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # reopened lazily by each process
        state["_tiff_store"] = None
        state["_pid"] = -1
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def read_raw(self, y0: int, y1: int, x0: int, x1: int, bands: Sequence[int] | None = None) -> np.ndarray:
        """Reads a window of raw samples (no stretch, no nodata handling).

        Args:
            y0: First row of the window.
            y1: Row after the last.
            x0: First column.
            x1: Column after the last.
            bands: 1-based bands; the selected bands when None.

        Returns:
            ``(B, h, w)`` array of the file's dtype.
        """
        idx = list(bands or self.band_indexes)
        ds = self._open()
        if self.backend == "rasterio":
            from rasterio.windows import Window  # lazy: optional (geo extra)

            with _gdal_env(self._gdal_name is not None):
                try:
                    return np.asarray(ds.read(idx, window=Window(x0, y0, x1 - x0, y1 - y0)))
                except Exception as e:  # GDAL reports corrupt blocks as generic RasterioIOError
                    raise ImageDecodeError(f"cannot read window y={y0}:{y1} x={x0}:{x1}: {e}", path=self.path) from None
        if self._axes == "YX":
            a = np.asarray(ds[y0:y1, x0:x1])[None]
            return np.repeat(a, len(idx), axis=0) if len(idx) > 1 else a
        if self._axes == "YXS":
            a = np.asarray(ds[y0:y1, x0:x1, :])
            return np.moveaxis(a[..., [b - 1 for b in idx]], -1, 0)
        return np.stack([np.asarray(ds[b - 1, y0:y1, x0:x1]) for b in idx])

    def has_nodata(self) -> bool:
        """Whether some pixels may be nodata (a nodata value, an internal mask or an alpha band).

        False means :meth:`nodata_mask` is all False everywhere, so callers may skip reading it.
        """
        if self.nodata is not None:
            return True
        # rasterio: band 1's mask flags are [all_valid] (1) unless the dataset has a mask or alpha band
        return self.backend == "rasterio" and list(getattr(self, "_mask_flags", [1])) != [1]

    def nodata_mask(self, key: Any = (slice(None), slice(None))) -> np.ndarray:
        """Where the scene has no data, for a window ``(slice_y, slice_x)``.

        Returns:
            ``(h, w) bool``: True where the pixel is nodata (masked, alpha 0 or equal to ``nodata``).
        """
        y0, y1, x0, x1 = self._window(key)
        if self.backend == "rasterio":
            from rasterio.windows import Window  # lazy: optional (geo extra)

            ds = self._open()
            with _gdal_env(self._gdal_name is not None):
                m = ds.dataset_mask(window=Window(x0, y0, x1 - x0, y1 - y0))
            return np.asarray(m) == 0
        if self.nodata is None:
            return np.zeros((y1 - y0, x1 - x0), dtype=bool)
        raw = self.read_raw(y0, y1, x0, x1, list(range(1, self.bands + 1)) if self._axes != "YX" else [1])
        nd = np.isnan(raw) if np.isnan(self.nodata) else raw == self.nodata
        return np.asarray(nd.all(axis=0))  # GDAL's rule: invalid only where every band is nodata

    def _window(self, key: Any) -> tuple[int, int, int, int]:
        if not isinstance(key, tuple):
            key = (key, slice(None))
        if len(key) == 3:  # allow image[y0:y1, x0:x1, :] as numpy code writes it
            if key[2] != slice(None):
                raise IndexError("RasterSource channel index must be ':'")
            key = key[:2]
        if len(key) != 2:
            raise IndexError(f"RasterSource takes (rows, cols) indices, got {len(key)}")
        y0, y1 = _norm_slice(key[0], self.shape[0], "row")
        x0, x1 = _norm_slice(key[1], self.shape[1], "column")
        return y0, y1, x0, x1

    def __getitem__(self, key: Any) -> np.ndarray:
        """Reads and normalises a window.

        Args:
            key: ``(slice_y, slice_x)`` (step 1; numpy clipping rules), optionally with a trailing ``:``.

        Returns:
            ``(h, w, 3) uint8``; nodata pixels are 0.
        """
        y0, y1, x0, x1 = self._window(key)
        if y1 <= y0 or x1 <= x0:
            return np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        raw = self.read_raw(y0, y1, x0, x1)
        out = self._to_uint8(raw)
        if self.nodata is not None or self.backend == "rasterio":
            nd = self.nodata_mask((slice(y0, y1), slice(x0, x1)))
            if nd.any():
                out[nd] = 0
        return out

    def _to_uint8(self, raw: np.ndarray) -> np.ndarray:
        """``(B, h, w)`` raw → ``(h, w, 3) uint8`` with the stretch."""
        if self.ranges is None:
            u8 = np.clip(raw, 0, 255).astype(np.uint8) if raw.dtype != np.uint8 else raw
        else:
            u8 = np.empty(raw.shape, dtype=np.uint8)
            for k, (lo, hi) in enumerate(self.ranges):
                scale = 255.0 / (hi - lo) if hi > lo else 0.0
                band = (raw[k].astype(np.float32) - np.float32(lo)) * np.float32(scale)
                u8[k] = np.clip(band + 0.5, 0, 255).astype(np.uint8)
        hwc = np.moveaxis(u8, 0, -1)
        if hwc.shape[-1] == 1:
            hwc = np.repeat(hwc, 3, axis=-1)
        return np.ascontiguousarray(hwc)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A bounded, scene-size-independent sample of the selected bands (see the module docstring).

        Returns:
            ``(B, N)`` raw values and ``(N,) bool`` validity (False where nodata).
        """
        h, w = self.shape
        if self.backend == "rasterio" and self._has_overviews:
            from rasterio.enums import Resampling  # lazy: optional (geo extra)

            ds = self._open()
            # The coarsest overview whose long side still has SAMPLE_SIDE pixels: GDAL picks it.
            f = max(1.0, max(h, w) / SAMPLE_SIDE)
            oh, ow = max(1, int(h / f)), max(1, int(w / f))
            with _gdal_env(self._gdal_name is not None):
                vals = ds.read(list(self.band_indexes), out_shape=(len(self.band_indexes), oh, ow),
                               resampling=Resampling.nearest)
                m = ds.dataset_mask(out_shape=(oh, ow), resampling=Resampling.nearest)
            return vals.reshape(len(self.band_indexes), -1), (np.asarray(m) != 0).reshape(-1)
        parts, valid = [], []
        for y0, y1, x0, x1 in self._sample_windows():
            parts.append(self.read_raw(y0, y1, x0, x1).reshape(len(self.band_indexes), -1))
            valid.append(~self.nodata_mask((slice(y0, y1), slice(x0, x1))).reshape(-1))
        return np.concatenate(parts, axis=1), np.concatenate(valid)

    def _sample_windows(self) -> Iterator[tuple[int, int, int, int]]:
        h, w = self.shape
        wh, ww = min(SAMPLE_WINDOW, h), min(SAMPLE_WINDOW, w)
        ny = min(SAMPLE_GRID, max(1, h // wh))
        nx = min(SAMPLE_GRID, max(1, w // ww))
        for i in range(ny):
            y0 = int(round(i * (h - wh) / max(1, ny - 1))) if ny > 1 else (h - wh) // 2
            for j in range(nx):
                x0 = int(round(j * (w - ww) / max(1, nx - 1))) if nx > 1 else (w - ww) // 2
                yield y0, y0 + wh, x0, x0 + ww

    def _compute_ranges(self, pct: tuple[float, float]) -> tuple[tuple[float, float], ...]:
        vals, valid = self.sample()
        out = []
        for k in range(vals.shape[0]):
            v = vals[k][valid]
            if v.dtype.kind == "f":
                v = v[np.isfinite(v)]
            if v.size == 0:
                out.append((0.0, 255.0))  # an all-nodata sample: any range gives zeros after masking
                continue
            lo, hi = np.percentile(v, pct)
            out.append((float(lo), float(hi)))
        return tuple(out)

    def __repr__(self) -> str:
        return (f"RasterSource({str(self.path)!r}, shape={self.shape}, bands={self.bands}, "
                f"dtype={self.dtype}, backend={self.backend!r})")

    # ------------------------------------------------------------------ store integration

    def geo_attrs(self) -> dict[str, Any]:
        """What the pre-labeling writes to the store image group as ``attrs["geo"]``.

        Returns:
            ``{"crs": wkt | None, "transform": [a, b, c, d, e, f] | None, "width": W, "height": H,
            "bands": [selected 1-based bands], "ranges": [[lo, hi], ...] | None, "source": path}``.
        """
        return {
            "crs": self.crs,
            "transform": list(self.transform) if self.transform is not None else None,
            "width": self.shape[1],
            "height": self.shape[0],
            "bands": list(self.band_indexes),
            "ranges": [list(r) for r in self.ranges] if self.ranges is not None else None,
            "source": str(self.path),
        }


def _gdal_reason(e: Exception, gdal_name: str | None) -> str:
    """GDAL's first line, naming the object by its URL rather than by its ``/vsis3/`` name."""
    line = str(e).splitlines()[0]
    if gdal_name is not None:
        line = line.replace(gdal_name, "it")
        if "does not exist" in line or "No such file" in line or "HTTP response code: 404" in line:
            return "not found (no such bucket or object)"
    return line


def open_raster(path: str | Path, **kwargs: Any) -> RasterSource:
    """Opens a GeoTIFF / COG lazily; see :class:`RasterSource` for the keyword arguments."""
    return RasterSource(path, **kwargs)


def check_bands(source: RasterSource, expected: int) -> None:
    """Checks that the scene has the number of bands a model expects.

    Args:
        source: The opened scene.
        expected: Input channels of the model.

    An explicit selection of exactly ``expected`` bands (``open_raster(p, bands=[4, 3, 2])``) is
    accepted whatever the file holds: the user chose.

    Raises:
        InputError: one line naming both counts.
    """
    if source.bands_explicit and len(source.band_indexes) == expected:
        return  # the user chose which bands feed the model (bands=[1, 1, 1] for a grayscale scene)
    if source.bands != expected:
        raise InputError(
            f"the scene has {source.bands} band(s) but the model expects {expected}",
            path=source.path,
            where="bands",
            hint="choose three with --bands, e.g. --bands 3,2,1, or use a model trained on this band count",
        )
