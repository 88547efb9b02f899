"""Writers of label maps as georeferenced rasters and vectors: ``geotiff`` (COG) and ``geojson``.

Both read the scene's georeference from the store image group's ``attrs["geo"]``, which the
pre-labeling writes from :meth:`segpipe.storage.raster.RasterSource.geo_attrs`::

    attrs["geo"] = {"crs": WKT or None, "transform": [a, b, c, d, e, f] or None,
                    "width": W, "height": H, ...}

(``transform`` in rasterio/``Affine`` order: ``x = a·col + b·row + c``, ``y = d·col + e·row + f``.)
An image without ``geo`` (or with a null CRS or transform) is written in pixel space and counted as
the loss ``georeference_missing``; a label map whose size differs from ``geo.width/height`` is an
error (its georeference would be wrong).

Layout written::

    out/labels/<stem>.tif        geotiff: one COG per image, uint8 (uint16 for ids > 255), the label
                                 values as stored (category ids; 0 background; void = nodata, 255)
    out/labels/<stem>.geojson    geojson: one FeatureCollection per image
    out/index.json               per image: id, file_name, the written file, crs present
    out/categories.json          id, name, colour of every category

Memory: the GeoTIFF is written in row bands of :data:`BAND_ROWS` rows from the label map, so a lazy
(zarr) label map streams; the GeoJSON polygonises whole images up to :data:`GEOJSON_WHOLE_PIXELS`
pixels and larger ones tile by tile (``WriteOptions.extra["tile"]`` sets the tile side): a region
crossing a tile border is then split into pieces that carry a ``tile`` property. Either way
rasterising the features again gives the label map exactly.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segpipe.core.records import DatasetMeta, Materialized
from segpipe.errors import FormatError, InputError
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.geo.common import image_attrs, label_map, safe_stem
from segpipe.storage.atomic import atomic_open, write_json_atomic
from segpipe.storage.paths import ensure_inside

#: Rows of label map handled at once by the GeoTIFF writer.
BAND_ROWS = 1024
#: COG internal tile side.
COG_BLOCK = 512
#: Images up to this many pixels are polygonised in one piece.
GEOJSON_WHOLE_PIXELS = 8192 * 8192
#: Tile side for larger images.
GEOJSON_TILE = 4096

NOTES = {
    "georeference_missing": "the image has no CRS/transform in the store (attrs['geo']); it was written in "
    "pixel coordinates",
    "no_label_map": "the image has no semantic label map or instance masks; nothing was written for it",
}


def _need_rasterio(fmt: str) -> None:
    try:
        import rasterio  # noqa: F401  # lazy: optional (geo extra): is it installed?
    except ImportError:
        raise InputError(f"the {fmt} writer needs rasterio", hint="pip install segpipe[geo]") from None


def _georef(attrs: dict[str, Any], shape: tuple[int, int], file_name: str) -> tuple[str | None, Any]:
    """``(crs wkt or None, Affine or None)`` of an image, checked against its label map's size."""
    from affine import Affine  # lazy: optional (geo extra, with rasterio)

    geo = attrs.get("geo") or {}
    if not isinstance(geo, dict):
        raise FormatError("attrs['geo'] must be a mapping", where=f"image {file_name}")
    h, w = shape
    gw, gh = geo.get("width"), geo.get("height")
    if gw is not None and gh is not None and (int(gh), int(gw)) != (h, w):
        raise FormatError(
            f"label map is {h}x{w} but the scene is {gh}x{gw}: its georeference would not apply",
            where=f"image {file_name}: geo.width/height",
        )
    t = geo.get("transform")
    if t is not None and len(t) != 6:
        raise FormatError(f"transform must have 6 numbers (a, b, c, d, e, f), got {len(t)}",
                          where=f"image {file_name}: geo.transform")
    return geo.get("crs"), Affine(*[float(v) for v in t]) if t is not None else None


def _categories(meta: DatasetMeta) -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.name, "color": list(c.color) if c.color else None} for c in meta.categories]


def write_label_cog(
    path: Path,
    labels: Any,
    *,
    crs: str | None,
    transform: Any,
    nodata: int | None = 255,
    colors: dict[int, tuple[int, int, int]] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Writes a label map as a Cloud-Optimized GeoTIFF, streaming row bands, atomically.

    Args:
        path: Output ``.tif``.
        labels: ``(H, W)`` integer array-like (numpy or lazy, sliced ``labels[y0:y1]``).
        crs: WKT (or any string rasterio accepts), or None.
        transform: ``affine.Affine`` or None (pixel space).
        nodata: Value marked as nodata (void), or None.
        colors: ``{value: (r, g, b)}`` written as a colour table (uint8 only).
        tags: Dataset tags (metadata) to write.
    """
    from rasterio.errors import NotGeoreferencedWarning  # lazy: optional (geo extra)

    h, w = int(labels.shape[0]), int(labels.shape[1])
    src_dtype = np.dtype(getattr(labels, "dtype", np.uint16))
    dtype = np.dtype(np.uint8) if src_dtype.itemsize == 1 and src_dtype.kind in "ub" else np.dtype(np.uint16)
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": dtype.name,
        "tiled": True, "blockxsize": COG_BLOCK, "blockysize": COG_BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None and nodata <= np.iinfo(dtype).max:
        profile["nodata"] = nodata
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.tif")
    part = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with warnings.catch_warnings():
            # pixel-space label maps are allowed here (the writer counts them as georeference_missing)
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            _write_tmp_and_cog(tmp, part, profile, labels, colors, tags)
        os.replace(part, path)
    finally:
        for p in (tmp, part):
            if p.exists():
                p.unlink()


def _write_tmp_and_cog(tmp: Path, part: Path, profile: dict[str, Any], labels: Any,
                       colors: dict[int, tuple[int, int, int]] | None, tags: dict[str, str] | None) -> None:
    """Streams row bands into a tiled GTiff, then lets GDAL's COG driver add overviews and reorder."""
    import rasterio  # lazy: optional (geo extra), ~0.5 s to import
    import rasterio.shutil  # lazy: optional (geo extra)
    from rasterio.windows import Window  # lazy: optional (geo extra)

    h, w, dtype = profile["height"], profile["width"], np.dtype(profile["dtype"])
    with rasterio.Env(GDAL_CACHEMAX=128), rasterio.open(tmp, "w", **profile) as ds:
        for y0 in range(0, h, BAND_ROWS):
            y1 = min(h, y0 + BAND_ROWS)
            band = np.asarray(labels[y0:y1])
            if band.size and dtype == np.uint16 and (band.min() < 0 or band.max() > 65535):
                raise FormatError("label values must be in 0..65535", path=tmp.parent)
            ds.write(band.astype(dtype, copy=False)[None], window=Window(0, y0, w, y1 - y0))
        if colors and dtype == np.uint8:
            ds.write_colormap(1, {int(k): (*v, 255) for k, v in colors.items() if 0 <= k <= 255})
        if tags:
            ds.update_tags(**tags)
    with rasterio.Env(GDAL_CACHEMAX=128):
        # Overviews of a label map must keep label values: nearest, never averaging.
        rasterio.shutil.copy(tmp, part, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=COG_BLOCK,
                             OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")


class _GeoWriter:
    """Shared shape of the two geo writers (picklable; ``write_shard`` runs on workers)."""

    format_name: ClassVar[str] = ""
    suffix: ClassVar[str] = ""

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        _need_rasterio(self.format_name)
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.names = {c.id: c.name for c in meta.categories}
        self.colors: dict[int, tuple[int, int, int]] = {
            c.id: (int(c.color[0]), int(c.color[1]), int(c.color[2])) for c in meta.categories if c.color
        }

    def prepare(self) -> None:
        """Creates ``out/labels``."""
        (self.out / "labels").mkdir(parents=True, exist_ok=True)

    def _write_one(self, path: Path, labels: Any, crs: str | None, transform: Any, void: int,
                   m: Materialized) -> None:
        raise NotImplementedError

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes one file per image of the shard; returns ``{id, file_name, stem, georeferenced}``."""
        res = ShardResult(index)
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            labels = label_map(m, self.meta, res.losses)
            if labels is None:
                res.losses.lose("no_label_map", 1, "", NOTES["no_label_map"])
                continue
            crs, transform = _georef(image_attrs(m, self.meta), tuple(labels.shape[:2]), img.file_name)
            if crs is None or transform is None:
                res.losses.lose("georeference_missing", 1, "", NOTES["georeference_missing"])
            stem = safe_stem(img.file_name)
            path = ensure_inside(self.out, self.out / "labels" / f"{stem}{self.suffix}")
            self._write_one(path, labels, crs, transform, int(m.void_value), m)
            res.fragments.append({"id": img.id, "file_name": img.file_name, "stem": stem,
                                  "georeferenced": crs is not None and transform is not None})
        return res

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ``index.json`` and ``categories.json``.

        Raises:
            FormatError: two images map to the same output file.
        """
        frags = [f for r in sorted(results, key=lambda r: r.index) for f in r.fragments]
        seen: dict[str, str] = {}
        for f in frags:
            if f["stem"] in seen:
                raise FormatError(f"images {seen[f['stem']]!r} and {f['file_name']!r} both map to "
                                  f"labels/{f['stem']}{self.suffix}", path=self.out, hint="rename one of the images")
            seen[f["stem"]] = f["file_name"]
        index = [{"id": f["id"], "file_name": f["file_name"], "labels": f"labels/{f['stem']}{self.suffix}",
                  "georeferenced": f["georeferenced"]} for f in frags]
        ip, cp = self.out / "index.json", self.out / "categories.json"
        write_json_atomic(ip, {"format": self.format_name, "images": index})
        write_json_atomic(cp, {"categories": _categories(self.meta)})
        return [ip, cp]


class GeoTiffWriter(_GeoWriter):
    """Label maps as Cloud-Optimized GeoTIFFs with the scene's CRS, transform and size."""

    format_name: ClassVar[str] = "geotiff"
    suffix: ClassVar[str] = ".tif"

    def _write_one(self, path: Path, labels: Any, crs: str | None, transform: Any, void: int,
                   m: Materialized) -> None:
        tags = {"SEGPIPE_CATEGORIES": json.dumps(_categories(self.meta), separators=(",", ":")),
                "SEGPIPE_IMAGE": m.sample.image.file_name}
        write_label_cog(path, labels, crs=crs, transform=transform, nodata=void, colors=self.colors, tags=tags)


def label_features(
    labels: Any,
    transform: Any,
    names: dict[int, str],
    *,
    void: int = 255,
    tile: int = 0,
) -> Iterator[dict[str, Any]]:
    """Polygons of a label map as GeoJSON features (background 0 and ``void`` excluded).

    Args:
        labels: ``(H, W)`` integer array-like.
        transform: ``affine.Affine`` pixel → CRS, or None (pixel coordinates: x = column, y = row).
        names: ``{label value: class name}``; unknown values are named ``class_<v>``.
        void: Value excluded like the background.
        tile: 0 = whole map at once; else tiles of ``tile`` × ``tile`` (pieces get a ``tile`` property).

    Yields:
        ``{"type": "Feature", "properties": {"class", "label"[, "tile"]}, "geometry": Polygon}``.
    """
    from affine import Affine  # lazy: optional (geo extra, with rasterio)
    from rasterio.features import shapes  # lazy: optional (geo extra)

    h, w = int(labels.shape[0]), int(labels.shape[1])
    base = transform if transform is not None else Affine.identity()
    step_y, step_x = (tile, tile) if tile else (h, w)
    for y0 in range(0, h, max(1, step_y)):
        for x0 in range(0, w, max(1, step_x)):
            arr = np.asarray(labels[y0:y0 + step_y, x0:x0 + step_x])
            if arr.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
                arr = arr.astype(np.int32)
            mask = (arr != 0) & (arr != void)
            if not mask.any():
                continue
            t = base @ Affine.translation(x0, y0)
            for geom, value in shapes(arr, mask=mask, connectivity=4, transform=t):
                v = int(value)
                props: dict[str, Any] = {"class": names.get(v, f"class_{v}"), "label": v}
                if tile:
                    props["tile"] = [y0 // step_y, x0 // step_x]
                yield {"type": "Feature", "properties": props, "geometry": geom}


def _crs_member(crs: str | None) -> dict[str, Any] | None:
    if crs is None:
        return None
    from rasterio.crs import CRS  # lazy: optional (geo extra)

    try:
        code = CRS.from_user_input(crs).to_epsg()
    except Exception:  # an unparsable CRS still travels in the segpipe member
        code = None
    return {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{code}"}} if code else None


class GeoJsonWriter(_GeoWriter):
    """Vector polygons of each label map in the scene CRS, one FeatureCollection per image.

    The file carries the 2008 GeoJSON ``crs`` member (EPSG URN) when the CRS has an EPSG code, and a
    ``segpipe`` foreign member with the full WKT, the transform and the size (RFC 7946 allows
    foreign members; strict RFC 7946 readers assume WGS 84, so reproject if you need that).
    """

    format_name: ClassVar[str] = "geojson"
    suffix: ClassVar[str] = ".geojson"

    def _write_one(self, path: Path, labels: Any, crs: str | None, transform: Any, void: int,
                   m: Materialized) -> None:
        h, w = int(labels.shape[0]), int(labels.shape[1])
        tile = int(self.options.extra.get("tile", 0) or (0 if h * w <= GEOJSON_WHOLE_PIXELS else GEOJSON_TILE))
        head: dict[str, Any] = {"type": "FeatureCollection"}
        member = _crs_member(crs)
        if member:
            head["crs"] = member
        head["segpipe"] = {
            "image_id": m.sample.image.id, "file_name": m.sample.image.file_name, "crs_wkt": crs,
            "transform": list(transform)[:6] if transform is not None else None, "width": w, "height": h,
            "tile": tile or None,
        }
        text = json.dumps(head, separators=(",", ":"))[:-1]  # reopen the object to stream the features
        with atomic_open(path, "w") as f:
            f.write(text + ',"features":[')
            for k, feat in enumerate(label_features(labels, transform, self.names, void=void, tile=tile)):
                f.write(("," if k else "") + json.dumps(feat, separators=(",", ":")))
            f.write("]}\n")
