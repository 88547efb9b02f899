"""Geospatial writers: label maps as Cloud-Optimized GeoTIFFs (``geotiff``) and GeoJSON polygons
(``geojson``), georeferenced from the store's ``attrs["geo"]`` (see :mod:`segpipe.formats.geo.writers`).
Writer-only: scenes are read with :func:`segpipe.storage.raster.open_raster` by the pre-labeling.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.formats.base import FormatSpec
from segpipe.formats.geo.writers import GeoJsonWriter, GeoTiffWriter, label_features, write_label_cog
from segpipe.formats.registry import register_format

__all__ = ["GEOJSON", "GEOTIFF", "GeoJsonWriter", "GeoTiffWriter", "label_features", "write_label_cog"]


def _never(path: Path) -> bool:
    """Writer-only formats are never detected as sources."""
    return False


GEOTIFF = register_format(
    FormatSpec(
        name="geotiff",
        description="label maps as Cloud-Optimized GeoTIFFs in the scene's CRS (write-only; needs rasterio)",
        detect=_never,
        writer=GeoTiffWriter,
        holds=frozenset({"semantic"}),
    )
)
GEOJSON = register_format(
    FormatSpec(
        name="geojson",
        description="label-map polygons as one GeoJSON FeatureCollection per image (write-only; needs rasterio)",
        detect=_never,
        writer=GeoJsonWriter,
        holds=frozenset({"semantic"}),
    )
)
