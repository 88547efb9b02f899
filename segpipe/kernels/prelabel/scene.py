"""Scenes (GeoTIFF/COG rasters): the chunked arrays a scene gets, and one block task's prediction.

A scene is read window by window, never whole. The driver creates its group and chunked arrays once
(:func:`create_scene_arrays`); each block task (:class:`~segpipe.kernels.prelabel.tasks.SceneBlock`)
predicts its core with a context margin and writes only the chunks of its core.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segpipe.errors import ConfigError
from segpipe.kernels.prelabel.sinks import CoreSink, WindowView, category_lut, label_void
from segpipe.kernels.prelabel.tasks import BLOCK, OutputSettings, SceneBlock
from segpipe.storage.manifest import ManifestEntry
from segpipe.storage.raster import RasterSource
from segpipe.storage.zarrstore import ZarrStore, array_digest, dimension_names, image_key, quantise_probs

if TYPE_CHECKING:  # the driver imports the kernels to submit them: the predictors load on the workers
    from segpipe.models.predict import Predictor, SemanticPredictor

#: A scene's label map has one chunk per block task. 4 MiB (uint8) chunks also write at 0.6–0.8×
#: min(disk, zstd × cores), where per-file costs held 1 MiB chunks to 0.4–0.6× (bench/RESULTS.md).
SCENE_LABEL_CHUNK = BLOCK
#: A scene's probabilities, ``(C, 1024, 1024)`` chunks: 22 MB uncompressed for 21 classes.
SCENE_PROB_CHUNK = 1024


def create_scene_arrays(store: ZarrStore, entry: ManifestEntry, src: RasterSource, n_classes: int,
                        lut_dtype: Any, probs: bool, resume: bool) -> None:
    """Creates a scene's group and chunked arrays (driver, before its block tasks run).

    ``attrs["geo"]["nodata"]`` records the label value written where the scene has no data (the
    exports declare it as the nodata value). A resumed run keeps the arrays an earlier run made.

    Args:
        store: The store.
        entry: The scene.
        src: The scene, opened.
        n_classes: Channels of the probabilities.
        lut_dtype: The label map's dtype (uint8, or uint16 above 254 category ids).
        probs: Whether probabilities ``(C, H, W)`` are stored.
        resume: Whether this run continues an earlier one.
    """
    # what `"labels" in group` answers on a local store, without opening (or creating) the group
    if resume and _has_labels(store, entry.id):
        return
    info = {"id": entry.id, "file": entry.file, "path": entry.path, "width": entry.width, "height": entry.height,
            "sha256": entry.sha256, "geo": {**src.geo_attrs(), "nodata": label_void(lut_dtype)}}
    g = store.image_group(entry.id, info)
    # Fill value = void: a block no task wrote reads as void (nodata) in any tool, never as background.
    void = label_void(lut_dtype)
    g.create_array("labels", shape=(entry.height, entry.width), dtype=lut_dtype,
                   chunks=(SCENE_LABEL_CHUNK, SCENE_LABEL_CHUNK), fill_value=void,
                   dimension_names=dimension_names("labels", 2),
                   attributes={**store.label_attributes(), "void_value": void})
    if probs:
        g.create_array("probs", shape=(n_classes, entry.height, entry.width), dtype="uint8",
                       chunks=(n_classes, SCENE_PROB_CHUNK, SCENE_PROB_CHUNK), fill_value=0,
                       dimension_names=dimension_names("probs", 3))


def _has_labels(store: ZarrStore, image_id: int) -> bool:
    # what `"labels" in group` answers, without opening (or creating) the group: one stat or one HEAD
    key = f"images/{image_key(image_id)}/labels/zarr.json"
    if store.location is not None:
        return store.location.exists(key)
    return (store.path / key).is_file()


def predict_block(predictor: Predictor, entry: ManifestEntry, part: SceneBlock, store: ZarrStore,
                  outputs: OutputSettings) -> tuple[dict[str, str], float]:
    """Predicts one chunk-aligned block of a scene with a context margin; writes only its core.

    Returns:
        ``({array name: digest of its core region}, seconds in the forward passes)``.

    Raises:
        ConfigError: the model is not a semantic one.
    """
    if predictor.task != "semantic":
        raise ConfigError(f"scenes are tiled for semantic models only, not {predictor.task}")
    src: Any = part.source
    y0, y1, x0, x1 = part.window
    margin = int(part.margin)
    ya, yb = max(0, y0 - margin), min(entry.height, y1 + margin)
    xa, xb = max(0, x0 - margin), min(entry.width, x1 + margin)
    lut = category_lut(predictor)
    g = store.image_group(entry.id, overwrite=False)  # made by create_scene_arrays: opened, not replaced
    labels = g["labels"]
    probs = g["probs"] if outputs.probs and "probs" in g else None
    t = time.perf_counter()
    # One windowed read per block (≈ 14 MB for 2048² + margins): tiles then slice memory instead of
    # decompressing the same TIFF strips once per tile. Memory stays bounded by the block, not the scene.
    window = np.ascontiguousarray(WindowView(src, ya, yb, xa, xb)[0 : yb - ya, 0 : xb - xa])
    core = [y0, y1, x0, x1]
    lsink = CoreSink(ya, xa, core, lambda v: lut[v], None, lut.dtype)
    psink = CoreSink(ya, xa, core, lambda v: quantise_probs(v.astype(np.float32)), len(lut), np.uint8) \
        if probs is not None else None
    cast("SemanticPredictor", predictor).predict_semantic(window, label_sink=lsink, prob_sink=psink,
                                                        keep_probs=psink is not None)
    infer = time.perf_counter() - t
    if src.has_nodata():  # the scene's nodata pixels (the model saw zeros there) are void, not a class
        nd = src.nodata_mask((slice(y0, y1), slice(x0, x1)))
        if nd.any():
            lsink.buf[nd] = label_void(lut.dtype)
            if psink is not None:
                psink.buf[:, nd] = 0
    digests = {"labels": array_digest(lsink.flush(labels))}
    if psink is not None:
        digests["probs"] = array_digest(psink.flush(probs))
    return digests, infer
