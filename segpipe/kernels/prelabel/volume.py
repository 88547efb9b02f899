"""Volumes (NIfTI, DICOM series): a slice read for a 2-D model, a slab predicted by a 3-D model."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segpipe.core.tiles import overlap_pixels
from segpipe.kernels.prelabel.sinks import category_lut
from segpipe.kernels.prelabel.tasks import OutputSettings, VolumeSlab, slice_id
from segpipe.storage.manifest import ManifestEntry
from segpipe.storage.volume import Volume, open_volume
from segpipe.storage.zarrstore import ZarrStore, quantise_probs

if TYPE_CHECKING:  # the driver imports the kernels to submit them: the predictors load on the workers
    from segpipe.models.predict import Predictor, SemanticPredictor


def volume_name(entry: ManifestEntry) -> str:
    """The volume id slices record: the path relative to the source without .nii/.nii.gz.

    A DICOM series gives its folder's relative path. ``p1/ct.nii.gz`` → ``p1/ct``: same-named volumes in
    different folders never collide.
    """
    # lazy: the medical reader loads the format registry (~0.3 s); only the workers of volume tasks need it
    from segpipe.formats.medical.reader import volume_id

    return volume_id(entry.file)


@functools.lru_cache(maxsize=4)
def _open_volume_cached(path: str, sha256: str, window: Any) -> Volume:
    return open_volume(path, window=window)


def worker_volume(entry: ManifestEntry, window: Any) -> Volume:
    """The volume of ``entry``, opened once per worker process (its tasks are its slices or slabs).

    Opening a DICOM series reads every header, and a NIfTI without ``--window`` samples slices for a
    percentile window: once per volume, not once per slice. The content hash is in the key, so a
    changed file is opened afresh.
    """
    return _open_volume_cached(str(entry.path), entry.sha256, tuple(window) if isinstance(window, list) else window)


def predict_slab(predictor: Predictor, entry: ManifestEntry, part: VolumeSlab, store: ZarrStore,
                 outputs: OutputSettings) -> tuple[dict[str, dict[str, str]], float]:
    """Predicts slices ``[z0, z1)`` of a volume with a 3-D model and writes each slice's group.

    The model sees the slab with a context margin of the tile overlap above and below, so slab
    borders blend like tile borders; only the slab's own slices are written (each slice group is
    owned by exactly one task).

    Returns:
        ``({slice image id: {array name: digest}}, inference seconds)``: labels ``(H, W)`` and probs
        ``(C, H, W)`` per slice.
    """
    predictor3 = cast("SemanticPredictor", predictor)
    z0, z1 = part.z0, part.z1
    vol = worker_volume(entry, outputs.window)
    depth = len(vol)
    tz = predictor3.tile3[0]
    margin = overlap_pixels(tz, predictor3.overlap) if tz <= depth else 0
    za, zb = max(0, z0 - margin), min(depth, z1 + margin)
    t = time.perf_counter()
    slab = np.stack([vol.slice(z)[..., 0] for z in range(za, zb)])
    pred = predictor3.predict_volume(slab, keep_probs=outputs.probs)
    infer = time.perf_counter() - t
    lut = category_lut(predictor)
    labels = cast(np.ndarray, pred.labels)  # predict_volume returns them (no sink)
    probs = pred.probs
    name = volume_name(entry)
    out: dict[str, dict[str, str]] = {}
    for z in range(z0, z1):
        image_id = slice_id(entry, z)
        h, w = slab.shape[1:]
        info = {"id": image_id, "file": f"{entry.file}#z{z:05d}", "path": entry.path, "width": w, "height": h,
                "sha256": entry.sha256, **vol.slice_attrs(name, z)}
        group = store.image_group(image_id, info)
        digests = {"labels": store.write_array(group, "labels", lut[labels[z - za]],
                                               attributes=store.label_attributes())}
        if probs is not None:
            digests["probs"] = store.write_array(group, "probs", quantise_probs(probs[:, z - za].astype(np.float32)))
        out[str(image_id)] = digests
    return out, infer
