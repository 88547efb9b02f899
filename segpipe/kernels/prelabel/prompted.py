"""The worker side of prompted pre-labeling: each image's boxes become instance masks with a SAM model.

A worker holds one :class:`PromptedResources` (the SAM model, the isolated decoder, and the run's boxes
by image id), built once from a :class:`PromptedSetup`. :func:`prompted_batch` runs its images in
order: decode, one image embedding, every box of the image through the prompt decoder
(:mod:`segpipe.models.predictors.prompted`), then the image's instance arrays
(the layout instance models write: ``instances/rle``, ``boxes`` xywh, ``scores``, ``labels`` as
category ids) and its receipt. Each box keeps its category and score.

Boxes are clipped to the image (a box reaching past the border is the part inside it); a box with
nothing inside the image fails its image with one line naming the box.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.errors import ConfigError, InputError, SegpipeError
from segpipe.kernels.prelabel.tasks import (
    Failure,
    PrelabelSettings,
    PrelabelTask,
    Receipt,
    TaskResult,
    Timings,
    WholeImage,
)
from segpipe.storage.isolated import IsolatedDecoder

if TYPE_CHECKING:  # built on the workers: the driver never loads the model
    from segpipe.models.predictors.prompted import BoxSegmenter


@dataclass(frozen=True)
class BoxPrompt:
    """One box to segment.

    Attributes:
        box: ``(x0, y0, x1, y1)`` pixels in the image.
        category_id: The category the mask gets (the box's).
        score: The score the mask gets (the box's; 1.0 for a ground-truth box).
        source: The file the box came from, for errors.
        where: Its place in that file (``[12].bbox``), for errors.
    """

    box: tuple[float, float, float, float]
    category_id: int
    score: float
    source: str = ""
    where: str = ""


#: Image id → its boxes, in the order they were read.
PromptTable = tuple[tuple[int, tuple[BoxPrompt, ...]], ...]


@dataclass
class PromptedResources:
    """A worker's SAM predictor, decoder and boxes, shared by every task it runs.

    Attributes:
        predictor: The SAM model (transformers SAM / SAM 2, or an ONNX encoder/decoder pair).
        decoder: Decodes images in a child process.
        prompts: Image id → its boxes.
    """

    predictor: BoxSegmenter
    decoder: IsolatedDecoder
    prompts: dict[int, tuple[BoxPrompt, ...]]

    def close(self) -> None:
        """Stops the decoder process."""
        self.decoder.close()


@dataclass(frozen=True)
class PromptedSetup:
    """How a worker builds its :class:`PromptedResources` (small and picklable: the model's path, not the model).

    Attributes:
        model: The SAM folder.
        prompts: The run's boxes by image id (only the images of the source).
        device: ``auto``, ``cpu``, ``cuda`` ...
    """

    model: str
    prompts: PromptTable
    device: str = "auto"

    def build(self) -> PromptedResources:
        """Loads the model and starts the decoder (on the worker)."""
        # lazy: torch and transformers load on the workers only
        from segpipe.kernels.prelabel.resources import INFERENCE_THREADS
        from segpipe.models.predictors.prompted import load_prompted

        # before torch is first imported here: its OpenMP pool starts at this size
        os.environ.setdefault("OMP_NUM_THREADS", str(INFERENCE_THREADS))
        predictor = load_prompted(self.model, device=self.device, threads=INFERENCE_THREADS)
        return PromptedResources(predictor, IsolatedDecoder(), dict(self.prompts))


def prompted_batch(resources: PromptedResources, settings: PrelabelSettings,
                   tasks: Sequence[PrelabelTask]) -> list[TaskResult]:
    """Worker task: :func:`prompted_task` for each image of a batch, in order.

    An image whose receipt already exists is not redone (Dask reruns a whole batch when its worker died).

    Returns:
        One result per task run (all of them unless ``stop_on_failure`` stopped at a failure).
    """
    ledger = settings.store.ledger()
    out: list[TaskResult] = []
    for task in tasks:
        if ledger.done(task.key):
            try:
                out.append(Receipt.from_json(ledger.read(task.key)))
                continue
            except (OSError, ValueError, TypeError, KeyError):  # unreadable: redo the image, which rewrites it
                pass
        result = prompted_task(resources, settings, task)
        out.append(result)
        if settings.stop_on_failure and isinstance(result, Failure):
            break
    return out


def prompted_task(resources: PromptedResources, settings: PrelabelSettings, task: PrelabelTask) -> TaskResult:
    """Worker task: decode one image, embed it once, segment its boxes, write its instances, then its receipt.

    Returns:
        The receipt, or the failure (one line).
    """
    t0 = time.perf_counter()
    entry = task.entry
    try:
        if not isinstance(task.part, WholeImage) or entry.kind != "image":
            raise ConfigError(f"prompted pre-labeling takes 2-D images; {entry.file} is a {entry.kind}")
        image = resources.decoder.read_image(entry.path)
        t1 = time.perf_counter()
        h, w = image.shape[:2]
        # boxes scored below --min-score would not be stored: they are not segmented either
        prompts = [p for p in resources.prompts.get(entry.id, ()) if p.score >= settings.outputs.min_score]
        boxes = clip_boxes(prompts, w, h, entry.file)
        pred = resources.predictor
        passes = pred.encoder_passes
        rles: list[dict[str, Any]] = []
        if len(boxes):  # an image without boxes is written empty, with no encoder pass
            rles = pred.segment_rles(pred.embed(image), boxes)
        infer = time.perf_counter() - t1
        info = {"id": entry.id, "file": entry.file, "path": entry.path, "width": w, "height": h,
                "sha256": entry.sha256,
                # what this image cost the encoder: one embedding for all its boxes (tests read it back)
                "prompts": {"boxes": len(boxes), "encoder_passes": pred.encoder_passes - passes}}
        group = settings.store.image_group(entry.id, info)
        outputs = write_instances(settings, group, rles, prompts)
    except SegpipeError as e:
        return Failure(key=task.key, image_id=entry.id, file=entry.file, reason=str(e), sha256=entry.sha256)
    t2 = time.perf_counter()
    receipt = Receipt(
        key=task.key, image_id=entry.id, file=entry.file, sha256=entry.sha256, outputs=outputs, width=w, height=h,
        timings=Timings(decode=t1 - t0, infer=infer, write=max(0.0, t2 - t1 - infer)),
        worker=f"{socket.gethostname()}:{os.getpid()}", time=time.time(),
    )
    settings.store.ledger().write(task.key, receipt.to_json())
    return receipt


def clip_boxes(prompts: Sequence[BoxPrompt], width: int, height: int, file: str) -> np.ndarray:
    """The boxes as ``(K, 4)`` float64 xyxy, clipped to the ``width × height`` image.

    Raises:
        InputError: a box with no area inside the image (it names the box's source and the image).
    """
    if not prompts:
        return np.zeros((0, 4), np.float64)
    b = np.array([p.box for p in prompts], dtype=np.float64)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    for p, (x0, y0, x1, y1) in zip(prompts, b, strict=True):
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise InputError(f"box {list(p.box)} (x0, y0, x1, y1) lies outside the {width}x{height} image {file}",
                             path=p.source or None, where=p.where or None, hint="fix or drop the box")
    return b


def write_instances(settings: PrelabelSettings, group: Any, rles: Sequence[dict[str, Any]],
                    prompts: Sequence[BoxPrompt]) -> dict[str, str]:
    """Writes one mask (a COCO RLE) per box as the image's instances; returns ``{array path: digest}``."""
    store = settings.store
    # The box of a stored instance is its mask's (as instance models store it); an empty mask keeps the prompt's.
    xywh = np.array([list(rle_ops.to_bbox(r)) if rle_ops.area(r) else _xywh(p.box)
                     for r, p in zip(rles, prompts, strict=True)], dtype=np.float32).reshape(-1, 4)
    counts = np.array([r["counts"] for r in rles], dtype=str)
    ig = group.require_group("instances")
    return {
        "instances/rle": store.write_array(ig, "rle", counts) if len(rles) else "",
        "instances/boxes": store.write_array(ig, "boxes", xywh),
        "instances/scores": store.write_array(ig, "scores", np.array([p.score for p in prompts], np.float32)),
        "instances/labels": store.write_array(ig, "labels", np.array([p.category_id for p in prompts], np.int32)),
    }


def _xywh(box: tuple[float, float, float, float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
