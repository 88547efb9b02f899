"""A request checked and resolved against its model: the config hashed into every task key, the store's
attributes, and the settings the workers get. Driver side, before any cluster starts (no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from segpipe import __version__
from segpipe.core.tiles import max_overlap_fraction, min_stride, overlap_pixels
from segpipe.errors import ConfigError
from segpipe.kernels.prelabel.resources import PredictorOptions
from segpipe.kernels.prelabel.tasks import OutputSettings
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.ref import ModelRef
from segpipe.models.registry import arch_dims
from segpipe.models.tta import check_members, tta_spec
from segpipe.pipeline.prelabel.request import PrelabelRequest
from segpipe.storage.location import names_object_storage
from segpipe.storage.volume import parse_window


def check_request(req: PrelabelRequest) -> None:
    """Checks the options that need no model, before anything is read.

    Raises:
        ConfigError: naming the option (``--on-error``, ``--resume`` with ``--overwrite``,
            ``--min-score``, ``--stretch``, ``--window``).
    """
    if req.on_error not in ("skip", "fail"):
        raise ConfigError(f"--on-error must be skip or fail, got {req.on_error!r}")
    if req.resume and req.overwrite:  # which one was meant cannot be guessed: continue, or replace
        raise ConfigError("--resume continues the store and --overwrite replaces it; pass one of them, not both")
    if not (math.isfinite(req.min_score) and 0.0 <= req.min_score <= 1.0):
        raise ConfigError(f"--min-score {req.min_score} is not a score in [0, 1]")
    if req.stretch not in ("auto", "percentile", "minmax", "none"):
        raise ConfigError(f"--stretch must be auto, percentile, minmax or none, got {req.stretch!r}")
    if req.gpu_decode == "on" and req.device == "cpu":  # the one device the driver knows a worker resolves to
        raise ConfigError("--gpu-decode on decodes on a CUDA device, but --device is cpu",
                          hint="use --device cuda (or auto on a GPU machine), or --gpu-decode auto/off")
    if req.window:
        parse_window(req.window)  # a malformed window is one line before anything runs
    url = names_object_storage(req.model) if req.prompts is not None else None
    if url is not None:  # the SAM folder is opened by path on the driver and on each worker
        raise ConfigError("--prompts reads its SAM model from a local folder; a model URL is not read there",
                          path=url, hint="copy the SAM folder to a path every worker can read")
    tta_spec(req.tta, req.tta_scales)  # a bad --tta or --tta-scales is one line before the model is read


def check_tiling(tile: int | None, overlap: float | None, meta: Any) -> None:
    """Checks that the tile overlap leaves a useful stride on every tile side, before any work.

    ``--overlap`` is a fraction in [0, 1) (checked when parsed), but close to 1 the stride shrinks to a
    few pixels and the tiles per image explode (0.99 of a 128-pixel tile is a stride of 1 pixel: ~50k
    tiles for a 256 × 512 image). The stride must be at least 1/16 of the tile
    (:func:`segpipe.core.tiles.min_stride`), which bounds the tiles at 256 times those of a grid without
    overlap.

    Args:
        tile: ``--tile``, or None for the checkpoint's tile size.
        overlap: ``--overlap``, or None for the checkpoint's ``tile_overlap``.
        meta: The model's :class:`~segpipe.models.checkpoint.CheckpointMeta`.

    Raises:
        ConfigError: naming ``--overlap`` (or the checkpoint's ``tile_overlap``) and ``--tile`` (or the
            checkpoint's tile size), and the largest overlap that fits.
    """
    sides = [tile] if tile else [int(t) for t in meta.tile_size]
    value = float(overlap) if overlap is not None else float(meta.tile_overlap)
    name = "--overlap" if overlap is not None else "the checkpoint's tile_overlap"
    tile_name = "--tile" if tile else "the checkpoint's tile_size"
    for side in sides:
        if side < 2:
            raise ConfigError(f"tile side {side} leaves no room for a sliding window",
                              where="tile_size" if tile is None else "--tile")
        try:
            stride = side - overlap_pixels(side, value)
        except ValueError:
            stride = 0
        if stride < min_stride(side):
            raise ConfigError(
                f"{name} {value} on a {side}-pixel tile ({tile_name}) leaves a stride of {max(stride, 0)} px; "
                f"it must be at least {min_stride(side)} px (1/16 of the tile)",
                hint=f"use --overlap {max_overlap_fraction(side)} or less, e.g. 0.25, or a larger --tile")


def output_config(req: PrelabelRequest, model_fp: str, meta: Any, members: list[str] | None = None) -> dict[str, Any]:
    """The part of the request that determines the outputs (hashed into every task key).

    Args:
        req: The request.
        model_fp: The model's fingerprint.
        meta: Its metadata.
        members: The fingerprints of ``--ensemble``'s models, in order.
    """
    members = members or []
    return {
        "layout": 2,
        "model": model_fp,
        "task": meta.task,
        "tile": req.tile or list(meta.tile_size),
        "overlap": req.overlap if req.overlap is not None else meta.tile_overlap,
        "probs": req.probs,
        "heatmaps": req.heatmaps,
        "min_score": req.min_score,
        "bands": req.bands,
        "window": req.window,
        # Only when asked for: stores made before these options existed keep their config hash.
        **({"stretch": req.stretch} if req.stretch != "auto" else {}),
        **({"percentiles": list(req.percentiles)} if req.percentiles else {}),
        # How a forward pass runs on the CPU (segpipe.kernels.prelabel.resources.INFERENCE_THREADS and
        # CPU_TILES_PER_PASS): outputs do not depend on --workers, --threads or --batch. Stores of
        # segpipe before it used the worker's thread count and the batch, and are not resumed.
        "cpu_inference": "1 thread, 1 tile per pass",
        # bf16 or fp32 asked for (auto keeps the hash of stores made before --precision); pixels
        # decoded on a GPU may differ from the CPU decoder's by a few levels
        **({"precision": req.precision} if req.precision != "auto" else {}),
        **({"gpu_decode": "on"} if req.gpu_decode == "on" else {}),
        **_averaging_config(req, members),
    }


def _averaging_config(req: PrelabelRequest, members: list[str]) -> dict[str, Any]:
    """``--tta`` and ``--ensemble`` in the config, only when asked for (other stores keep their hash)."""
    spec = tta_spec(req.tta, req.tta_scales)
    out: dict[str, Any] = {}
    if spec is not None:
        out["tta"] = spec.to_config()
    if members:
        out["ensemble"] = members
    return out


def config_hash(config: dict[str, Any]) -> str:
    """Stable hash of a config dict."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ModelPlan:
    """A run's model, read on the driver without torch, and the config it makes of the request.

    Attributes:
        ref: The model.
        meta: Its checkpoint metadata (task, categories, tile size ...).
        dims: 2, or 3 for a volumetric architecture (its slabs are planned instead of slices).
        config: What determines the outputs (:func:`output_config`).
        cfg_hash: Its hash, part of every task key and of the store's attributes.
        members: ``--ensemble``'s models, as read here (a model URL pinned: workers load these bytes).
    """

    ref: ModelRef
    meta: CheckpointMeta
    dims: int
    config: dict[str, Any]
    cfg_hash: str
    members: tuple[ModelRef, ...] = ()

    def store_attrs(self) -> dict[str, Any]:
        """The store's ``segpipe`` attributes for a run of this model (task, categories, model, config)."""
        meta = self.meta
        cats = []
        for i, c in enumerate(meta.categories):
            cats.append({"id": int(c.get("id", i)), "name": str(c.get("name", f"class_{i}")),
                         "color": c.get("color"), "isthing": bool(c.get("isthing", True)),
                         "index": int(c.get("index", i))})
        return {
            "task": meta.task,
            "categories": cats,
            "keypoints": list(getattr(meta, "keypoints", [])),
            "probabilities": {"dtype": "uint8", "scale": "p = value / 255", "channels": [c["id"] for c in cats]},
            "labels": "category id per pixel",
            "model": {"spec": self.ref.spec, "arch": meta.arch, "fingerprint": self.config["model"],
                      "provenance": getattr(meta, "provenance", {})},
            "config": self.config,
            "config_hash": self.cfg_hash,
            "segpipe_version": __version__,
        }


def read_model(req: PrelabelRequest) -> ModelPlan:
    """Reads the model's metadata and checks the request against it.

    Raises:
        SegpipeError: an unreadable checkpoint or unknown weights; ``--task`` other than the model's; a
            tiling without a useful stride (:func:`check_tiling`).
    """
    # a model URL is pinned here: its objects' ETags, sizes and sha256 travel to the workers with the ref
    ref = ModelRef(req.model, req.arch, num_classes=req.num_classes, classes=req.classes, task=req.task).pinned()
    meta = ref.meta()
    if req.task and req.task != meta.task:
        raise ConfigError(f"--task {req.task} but the model {meta.arch} is a {meta.task} model")
    check_tiling(req.tile, req.overlap, meta)  # before any cluster starts: a tiling with no stride is one line
    members = [m.pinned() for m in ensemble_refs(req)]
    if members or tta_spec(req.tta, req.tta_scales) is not None:  # averaged: the same classes, semantic 2-D
        check_members([meta, *(m.meta() for m in members)], [ref.spec, *(m.spec for m in members)],
                      averaging="--ensemble" if members else "--tta")
    fp = ref.fingerprint()
    dims = arch_dims(meta.arch)  # the architecture's, as the workers' predictor sees it (no torch here)
    config = output_config(req, fp, meta, [m.fingerprint() for m in members])
    return ModelPlan(ref=ref, meta=meta, dims=dims, config=config, cfg_hash=config_hash(config),
                     members=tuple(members))


def ensemble_refs(req: PrelabelRequest) -> list[ModelRef]:
    """``--ensemble``'s models, read with ``--model``'s options (``--arch``, ``--num-classes``, ``--classes``)."""
    return [ModelRef(m, req.arch, num_classes=req.num_classes, classes=req.classes, task=req.task)
            for m in (req.ensemble or ())]


def predictor_options(req: PrelabelRequest, meta: Any, members: tuple[ModelRef, ...] | None = None) -> PredictorOptions:
    """The predictor's options for ``req`` (the score threshold for instance models only).

    Args:
        req: The request.
        meta: The model's metadata.
        members: ``--ensemble``'s models as :func:`read_model` pinned them (default: read from ``req``).
    """
    ensemble = tuple(ensemble_refs(req)) if members is None else members
    return PredictorOptions(device=req.device, batch_size=req.batch, tile=req.tile, overlap=req.overlap,
                            score_thresh=req.min_score if meta.task == "instance" else None,
                            tta=tta_spec(req.tta, req.tta_scales), ensemble=ensemble,
                            precision=req.precision, gpu_decode=req.gpu_decode)


def output_settings(req: PrelabelRequest) -> OutputSettings:
    """What every task stores for ``req``."""
    return OutputSettings(probs=req.probs, heatmaps=req.heatmaps, min_score=req.min_score, window=req.window)
