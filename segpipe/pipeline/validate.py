"""``segpipe validate``: the format's own checks, then an integrity check of every image file.

Pipeline files are checked against their schema (:func:`segpipe.pipeline.runspec.validate_pipeline_file`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from PIL import Image

from segpipe import __version__
from segpipe.core.problems import Problem
from segpipe.errors import PixelLimitError, SegpipeError, UnsupportedError
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import FormatSpec
from segpipe.formats.checks import check_recorded_size
from segpipe.pipeline.requests import ValidateRequest
from segpipe.pipeline.runspec import validate_pipeline_file
from segpipe.pipeline.specs import ProblemModel, ValidationReport
from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.images import read_image
from segpipe.storage.outputs import check_output, dataset_inputs

#: Photo formats whose integrity is checked; rasters and volumes (GeoTIFF, NIfTI, DICOM) have their own
#: readers, which fail per file.
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"}


def check_image_file(path: str, *, deep: bool = False) -> str | None:
    """Why an image file is unusable, or None.

    The default check reads the whole file through Pillow's ``verify()`` (PNG chunk CRCs and the end
    marker: a truncated PNG fails); ``deep`` decodes every pixel (catches truncated JPEGs, which
    ``verify`` does not).
    """
    if Path(path).suffix.lower() not in PHOTO_SUFFIXES:
        return None
    try:
        if deep:
            read_image(path)
            return None
        with Image.open(path) as im:
            im.verify()
    except SegpipeError as e:
        return e.message
    except Exception as e:  # Pillow raises many types for corrupt files; any of them means "unusable"
        return f"corrupt or truncated image: {type(e).__name__}: {e}"
    return None


def is_pipeline(path: Path, fmt: str = "auto") -> bool:
    """Whether ``path`` is validated as a pipeline file (a YAML, and no dataset format asked for)."""
    return path.suffix in (".yaml", ".yml") and fmt in ("auto", "pipeline")


def validate(req: ValidateRequest) -> ValidationReport:
    """Validates a dataset or a pipeline file (``segpipe validate``); writes ``req.json_out`` when given.

    The JSON file is checked before anything is read: it never replaces what is validated, nor a file
    segpipe did not write.

    Returns:
        Every problem found, in the order found (a clean dataset: none).

    Raises:
        InputError: the path cannot be read at all.
        OutputError: ``json_out`` is refused.
    """
    if req.json_out is not None:
        # A dataset given as its annotation file occupies the folder its images are read from.
        inputs = [req.path] if is_pipeline(req.path, req.format) else dataset_inputs(req.path, req.image_root)
        check_output(req.json_out, [*inputs, req.image_root], option="--json", command="validate", kind="file")
    fmt, problems = validate_path(req.path, req.format, image_root=req.image_root, images=req.images)
    report = ValidationReport(segpipe_version=__version__, path=str(req.path), format=fmt,
                              problems=[ProblemModel.model_validate(p.to_dict()) for p in problems])
    if req.json_out is not None:
        write_json_atomic(req.json_out, report.model_dump(mode="json"))
    return report


def validate_path(
    path: Path, fmt: str = "auto", *, image_root: Path | None = None, images: str = "verify"
) -> tuple[str, list[Problem]]:
    """Validates a dataset; returns ``(format, problems)``.

    Args:
        path: Dataset file or folder, or a pipeline YAML.
        fmt: Format name or ``auto``.
        image_root: Where the images are, if not beside the annotations.
        images: ``verify`` (read every image file and check its integrity), ``decode`` (decode every
            pixel) or ``none``.

    Raises:
        InputError: the path cannot be read at all (exit 2).
    """
    if is_pipeline(path, fmt):
        return "pipeline", list(validate_pipeline_file(path))
    name = detect_format(path) if fmt == "auto" else fmt
    spec = get_format(name)
    if spec.validate is None:
        raise UnsupportedError(f"format {name!r} has no validator")
    kwargs = {}
    if image_root is not None and "image_root" in inspect.signature(spec.validate).parameters:
        kwargs["image_root"] = image_root
    problems = list(spec.validate(path, **kwargs))
    if spec.reader is not None and not any(p.severity == "error" for p in problems):
        problems.extend(_image_problems(spec, path, image_root, deep=images == "decode", files=images != "none"))
    return name, problems


def _image_problems(
    spec: FormatSpec, path: Path, image_root: Path | None, *, deep: bool, files: bool = True
) -> list[Problem]:
    """Reads the dataset with convert's reader; then checks each recorded size and (``files``) image file."""
    reader_cls = spec.reader
    params = inspect.signature(reader_cls).parameters
    try:
        reader = reader_cls(path, image_root=image_root) if image_root is not None and "image_root" in params \
            else reader_cls(path)
        samples = list(reader.samples())
    except SegpipeError as e:
        # Only reached when the format's validator found no error: the reader convert uses refuses the
        # dataset all the same, so its error is validate's too (a file never validates and then fails
        # to convert).
        return [Problem("error", e.path or str(path), e.where or "", e.message, "read.refused")]
    out: list[Problem] = []
    if not files:
        return out
    for s in samples:
        try:
            # The recorded size against the ceiling and the file's header: a mismatch would become
            # a mask of the wrong size in convert.
            check_recorded_size(s, source=path)
        except SegpipeError as e:
            code = "image.too_large" if isinstance(e, PixelLimitError) else "image.size_mismatch"
            message = e.message + (f" ({e.hint})" if e.hint else "")
            out.append(Problem("error", e.path or str(path), e.where or f"image {s.image.id}", message, code))
            continue
        if s.image_path is None:
            continue
        why = check_image_file(s.image_path, deep=deep)
        if why:
            out.append(Problem("error", s.image_path, f"image {s.image.id}", why, "image.corrupt"))
    return out
