"""What an evaluation compares: both sides' formats and readers; and the tally of images and problems.

All of it runs on the driver and holds records, never pixels.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core.problems import Problem
from segpipe.core.records import Sample
from segpipe.errors import FormatError, InputError, SegpipeError, UnsupportedError
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import DatasetReader, FormatSpec
from segpipe.formats.labelpngs import looks_like_labelpngs
from segpipe.kernels.evaluate.pairs import PairContext, problem
from segpipe.pipeline.evaluate.plan import Pairing
from segpipe.storage.images import read_image

#: Formats tried first per task when detecting: a folder valid in several formats is read in the one that
#: holds what the task evaluates (a synth folder's COCO JSON has its objects only, its masks every class).
PREFER = {
    "semantic": ("segpipe_zarr", "voc", "maskdir"),
    "panoptic": ("segpipe_zarr", "coco_panoptic"),
    "instance": ("segpipe_zarr", "coco_results", "coco"),
    "keypoints": ("segpipe_zarr", "coco_results", "coco"),
}


def resolve_format(path: Path, fmt: str, what: str, task: str = "") -> FormatSpec:
    """The readable format of ``path``: ``fmt``, or detected (``auto``) with ``task``'s preferences.

    A flat folder of label PNGs (a prediction dump) is never auto-detected elsewhere, where a folder of
    greyscale photos would look the same; for a semantic evaluation both inputs are annotations, so
    such a folder is read as ``labelpngs`` when nothing else matches.

    Args:
        path: The input.
        fmt: A format name, or ``auto``.
        what: ``gt`` or ``pred``, for the option named in messages (``--gt-format``).
        task: The evaluation task.

    Raises:
        InputError: nothing matches (naming ``--{what}-format``).
        FormatError: a file of the input is malformed.
        UnsupportedError: the format cannot be read.
    """
    if fmt == "auto":
        try:
            name = detect_format(path, prefer=PREFER.get(task, ()))
        except FormatError:
            raise  # a file of the input is malformed (a store's zarr.json): its own line names it
        except InputError as e:
            if not Path(path).exists():
                raise
            if task in ("semantic", "") and looks_like_labelpngs(path):
                return get_format("labelpngs")
            raise InputError(e.message, path=path, hint=f"pass --{what}-format (see `segpipe formats`)") from None
    else:
        name = fmt
    spec = get_format(name)
    if spec.reader is None or spec.materialize is None:
        raise UnsupportedError(f"format {name!r} cannot be read", path=path, hint=f"pass --{what}-format")
    return spec


def open_reader(spec: FormatSpec, path: Path, **options: Any) -> DatasetReader:
    """``spec``'s reader of ``path`` with the ``options`` its constructor takes (None ones left out)."""
    params = inspect.signature(spec.reader).parameters
    kwargs = {k: v for k, v in options.items() if v is not None and k in params}
    reader: DatasetReader = spec.reader(path, **kwargs)
    return reader


@dataclass(frozen=True)
class Sources:
    """The two sides of an evaluation and the folders their files are read from.

    Attributes:
        gt: Ground truth, as given.
        pred: Predictions, as given.
        gt_spec: The ground truth's format.
        pred_spec: The predictions' format.
        image_root: Folder of the ground-truth photos, if not beside them.
        gt_png_dir: The ground truth's PNG folder (panoptic), if not the default.
        pred_png_dir: The predictions' PNG folder (panoptic), if not the default.
        categories: Class names of label-PNG folders, if given.
    """

    gt: Path
    pred: Path
    gt_spec: FormatSpec
    pred_spec: FormatSpec
    image_root: Path | None = None
    gt_png_dir: Path | None = None
    pred_png_dir: Path | None = None
    categories: Path | None = None

    def pair_readers(self, tally: Tally) -> tuple[DatasetReader, DatasetReader]:
        """Both readers for a per-pair evaluation (semantic, panoptic); their errors go to ``tally``."""
        gt_reader = open_reader(self.gt_spec, self.gt, image_root=self.image_root, png_root=self.gt_png_dir,
                                categories=self.categories)
        # COCO results name images by id only: the ground truth gives their files and sizes.
        results_of_gt = self.pred_spec.name == "coco_results" and self.gt_spec.name == "coco"
        pred_reader = open_reader(self.pred_spec, self.pred, gt=self.gt if results_of_gt else None,
                                  png_root=self.pred_png_dir, categories=self.categories)
        tally.reader_errors(gt_reader)
        tally.reader_errors(pred_reader)
        return gt_reader, pred_reader

    def gt_reader(self) -> DatasetReader:
        """The ground truth's reader for a COCO evaluation (class names play no part there)."""
        return open_reader(self.gt_spec, self.gt, image_root=self.image_root, png_root=self.gt_png_dir)

    def pred_reader(self) -> DatasetReader:
        """The predictions' reader for a COCO evaluation of samples (not a results file)."""
        return open_reader(self.pred_spec, self.pred, png_root=self.pred_png_dir)


def read_photo(sample: Sample) -> np.ndarray | None:
    """The ground-truth photo of ``sample`` for an overlay, or None (an overlay on grey is still useful)."""
    if not sample.image_path:
        return None
    try:
        return read_image(sample.image_path)
    except SegpipeError:
        return None


@dataclass
class Tally:
    """The images counted and the problems found by one evaluation, on the driver.

    Attributes:
        gt: Ground-truth images taking part (after ``--img-ids``).
        pred: Images in the predictions.
        evaluated: Images whose pair was evaluated.
        failed: Images that could not be evaluated.
        unmatched_gt: Ground-truth images without a prediction.
        unmatched_pred: Predicted images without ground truth.
        problems: Per-image problems and readers' errors, in the order found.
    """

    gt: int = 0
    pred: int = 0
    evaluated: int = 0
    failed: int = 0
    unmatched_gt: int = 0
    unmatched_pred: int = 0
    problems: list[Problem] = field(default_factory=list)

    def reader_errors(self, reader: DatasetReader) -> None:
        """Keeps the errors a reader found while listing its input."""
        self.problems.extend(p for p in getattr(reader, "problems", []) if p.severity == "error")

    def failures(self, problems: Iterable[Problem]) -> None:
        """Counts images a worker could not evaluate."""
        found = list(problems)
        self.problems.extend(found)
        self.failed += len(found)

    def missing_prediction(self, gt: Sample, *, error: bool) -> None:
        """Counts a ground-truth image without a prediction (a problem when ``error``)."""
        self.unmatched_gt += 1
        if error:
            self.problems.append(problem("error", gt, "no prediction for this image", "eval.no_prediction"))

    def unmatched_predictions(self, pairing: Pairing, pred: Path) -> None:
        """Counts and warns about the predictions no ground-truth image took."""
        for s in pairing.unmatched():
            self.unmatched_pred += 1
            self.problems.append(Problem("warning", s.image.file_name or str(pred), f"image {s.image.id}",
                                         "prediction has no ground-truth image (ignored)", "eval.no_ground_truth"))


class WorstPairs:
    """The worst images' ground-truth samples and their paired predictions, found again on the driver.

    Only the wanted keys' ground-truth samples are kept (one more pass over the reader); each task's
    overlay loader turns a pair into the maps it draws.
    """

    def __init__(self, gt_reader: DatasetReader, pairing: Pairing, ctx: PairContext,
                 keys: Sequence[tuple[int, str]]) -> None:
        wanted = {int(k[0]) for k in keys}
        self.gt = {s.image.id: s for s in gt_reader.samples() if s.image.id in wanted} if wanted else {}
        self.pred = {i: pairing.by_id[pairing.matches[i]] for i in wanted if i in pairing.matches}
        self.ctx = ctx
