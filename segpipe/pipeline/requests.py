"""What a command was asked to do: one frozen, typed request per command.

Each command's request is declared once, here, and the same model serves every way in:

* the command line: ``segpipe convert SRC DST --to voc`` builds a :class:`ConvertRequest` from its
  options (``segpipe/cli/commands/convert.py``; the option of a field is ``--`` + its key with ``-``
  for ``_``, a positional argument is one of :attr:`Request.ARGUMENTS`);
* pipeline files: a stage ``- convert: {src: ..., out: ..., to: voc}`` *is* a :class:`ConvertRequest`
  (``segpipe/pipeline/runspec.py``; the keys are the fields' keys);
* the Python API: ``segpipe.convert("coco.json", "out", to="voc")`` (``segpipe/api.py``, docs/api.md).

So a field added here is a pipeline-file key and an API keyword at once, and ``tests/cli/test_requests.py``
fails until the command has its option, with the same name and the same default. A field's key is its
alias where it has one (``from``, ``json``: Python keywords or pydantic names) and its name otherwise.

A bad value is one line naming the field, whichever way it came in: ``invalid value for --n: 0 is not
>= 1`` on the command line, ``p.yaml: stages[0].synth.n: 0 is not >= 1`` in a pipeline file and
``ConfigError("n: 0 is not >= 1")`` from the API (:func:`describe`, :meth:`Request.build`).

Paths: fields a command reads carry :attr:`PathRole.INPUT`, those it writes :attr:`PathRole.OUTPUT`;
pipeline files resolve both against their work folder and keep outputs inside it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from segpipe.errors import ConfigError, SegpipeError
from segpipe.formats import get_format
from segpipe.formats.splits import LAYOUT_TARGETS

#: Largest seed: numpy and torch both take it (torch's seed derivations stay in 64 bits).
MAX_SEED = 2**32 - 1

R = TypeVar("R", bound="Request")

DEVICE_PATTERN = r"(auto|cpu|cuda(:\d+)?)"
GPUS_PATTERN = r"\d+(,\d+)*"


class PathRole(Enum):
    """What a path field is to its command: pipeline files resolve each against their work folder."""

    INPUT = "input"
    OUTPUT = "output"
    #: A checkpoint file or ``ARCH:WEIGHTS`` (a path only when it is one).
    MODEL = "model"


# ------------------------------------------------------------------------------- values as typed


def _hw(value: Any) -> Any:
    """``"256x512"``, ``"256"`` (a square) or ``[256, 512]`` → ``(256, 512)``; anything else as it is."""
    if not isinstance(value, str):
        return value
    parts = value.lower().replace("×", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{value!r} is not HxW, e.g. 256x512") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2:
        raise ValueError(f"{value!r} is not HxW, e.g. 256x512")
    return tuple(sides)


def _csv(value: Any) -> Any:
    """``"4,3,2"`` → ``["4", "3", "2"]`` (the items are typed by the field); a list as it is."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _low_high(value: Any) -> Any:
    """``"2,98"`` → ``["2", "98"]``, refusing any other number of values (``LOW,HIGH``)."""
    items = _csv(value)
    if isinstance(items, (list, tuple)) and len(items) != 2:
        shown = value if isinstance(value, str) else ",".join(str(v) for v in items)
        raise ValueError(f"{shown!r} is not LOW,HIGH, e.g. 2,98")
    return items


def _text(value: Any) -> Any:
    """A path given for a field that also takes other text (a glob, ``ARCH:WEIGHTS``) as its text."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _task(value: Any) -> Any:
    """``keypoints``, the name ``evaluate`` took before, is ``landmarks``."""
    return "landmarks" if value == "keypoints" else value


def evaluation_task(task: str) -> str:
    """The evaluation library's name of a task: ``landmarks`` is evaluated (and reported) as COCO ``keypoints``."""
    return "keypoints" if task in ("landmarks", "keypoints") else task


def _device(value: Any) -> Any:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (any case, spaces around ignored)."""
    if not isinstance(value, str):
        return value
    if re.fullmatch(DEVICE_PATTERN, value.strip().lower()) is None:
        raise ValueError(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value.strip().lower()


def _gpus(value: str | None) -> str | None:
    if value is not None and re.fullmatch(GPUS_PATTERN, value) is None:
        raise ValueError(f"{value!r} is not a list of GPU numbers, e.g. 0,2")
    return value


def _model_args(value: Any) -> Any:
    """``["base=16", "bilinear=true"]`` → ``{"base": 16, "bilinear": True}`` (JSON literals, else strings)."""
    if not isinstance(value, (list, tuple)):
        return value
    out: dict[str, Any] = {}
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not KEY=VALUE")
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{item!r} is not KEY=VALUE, e.g. base=16")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _percentiles(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not 0 <= value[0] < value[1] <= 100:
        raise ValueError(f"{value[0]:g},{value[1]:g} is not LOW,HIGH with 0 <= LOW < HIGH <= 100, e.g. 2,98")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


InPath = Annotated[Path, PathRole.INPUT]
#: A path, a glob or a manifest: text, resolved as a path by pipeline files.
InText = Annotated[str, PathRole.INPUT, BeforeValidator(_text)]
OptInPath = Annotated[Path | None, PathRole.INPUT]
OutPath = Annotated[Path, PathRole.OUTPUT]
OptOutPath = Annotated[Path | None, PathRole.OUTPUT]
Task = Annotated[Literal["semantic", "instance", "panoptic", "landmarks"], BeforeValidator(_task)]
OnError = Literal["skip", "fail"]
ImagesMode = Literal["copy", "link", "none"]
Layout = Literal["split", "single", "devkit", "flat"]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
# The patterns go into the schema (editors); the validators say what is wrong in words.
Device = Annotated[str, BeforeValidator(_device), Field(json_schema_extra={"pattern": f"^{DEVICE_PATTERN}$"})]
Gpus = Annotated[str | None, AfterValidator(_gpus), Field(json_schema_extra={"pattern": f"^{GPUS_PATTERN}$"})]
Side = Annotated[int, Field(ge=1)]
SynthSide = Annotated[int, Field(ge=16, le=8192)]
Finite = Annotated[float, AfterValidator(_finite)]

# --------------------------------------------------------------------------------------- errors


def describe(err: ErrorDetails | Mapping[str, Any]) -> str:
    """One pydantic error as a short reason: ``'1.5' is not an integer``, ``0 is not >= 1`` ...

    Pydantic's own sentence is kept where no shorter one says more (a validator's own message).
    """
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return short_reason(err) or " ".join(message.split()).rstrip(".")


def short_reason(err: ErrorDetails | Mapping[str, Any]) -> str | None:
    """The short reason of a wrong type, a number out of range, a missing value or a value not among the choices.

    Returns:
        The reason, or None for other errors (their message says it best).
    """
    kind, value, limits = str(err.get("type", "")), err.get("input"), err.get("ctx") or {}
    shown = repr(value) if isinstance(value, str) else str(value)
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{shown} is not an integer"
    if kind in ("float_parsing", "float_type"):
        return f"{shown} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not a boolean (true or false)"
    if kind.startswith(("greater_than", "less_than")):
        for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if key in limits:  # a number out of range: shown as typed
                return f"{value} is not {sign} {limits[key]}"
    if kind == "missing":
        return "required"
    if kind == "literal_error":  # "'a', 'b' or 'c'" → the values as --help lists them
        expected = str(limits.get("expected", "")).replace(" or ", ", ").replace("'", "")
        return f"{shown} is not one of {expected}"
    return None


def location(loc: tuple[int | str, ...]) -> str:
    """``("stages", 0, "synth", "n")`` → ``stages[0].synth.n``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ------------------------------------------------------------------------------------- the base


class Request(BaseModel):
    """What one command was asked to do (frozen: a request is a record, not a settings bag).

    Class attributes:
        COMMAND: The command's words after ``segpipe`` (``convert``, ``push labelstudio``).
        STAGE: The key of the pipeline-file stage that runs it, or None (no stage: see the class).
        ARGUMENTS: The fields that are positional arguments on the command line, in order; the
            Python API takes them positionally too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    COMMAND: ClassVar[str] = ""
    STAGE: ClassVar[str | None] = None
    ARGUMENTS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def what(cls) -> str:
        """``segpipe convert``, or ``the ingest stage`` for a request no command makes."""
        return f"segpipe {cls.COMMAND}" if cls.COMMAND else f"the {cls.STAGE} stage"

    @classmethod
    def keys(cls) -> dict[str, str]:
        """``{key: field name}``: the key is what pipeline files and the command line use."""
        return {(f.alias or name): name for name, f in cls.model_fields.items()}

    @classmethod
    def key_of(cls, name: str) -> str:
        """The key of the field ``name`` (its alias, or the name)."""
        return cls.model_fields[name].alias or name

    @classmethod
    def role(cls, name: str) -> PathRole | None:
        """The :class:`PathRole` of the field ``name``, or None for a field that is no path."""
        return next((m for m in cls.model_fields[name].metadata if isinstance(m, PathRole)), None)

    @classmethod
    def build(cls: type[R], *args: Any, **fields: Any) -> R:
        """The request from positional values (:attr:`ARGUMENTS`) and keywords, as the Python API takes them.

        Raises:
            ConfigError: a value the field refuses, an unknown keyword or a missing one, naming the field.
        """
        if len(args) > len(cls.ARGUMENTS):
            names = ", ".join(cls.ARGUMENTS) or "none"
            raise ConfigError(f"{cls.what()} takes {len(cls.ARGUMENTS)} positional values ({names}), got {len(args)}")
        given = dict(zip(cls.ARGUMENTS, args, strict=False))
        twice = sorted(set(given) & set(fields))
        if twice:
            raise ConfigError(f"given twice, positionally and as {twice[0]}=", where=twice[0])
        return cls.parse({**given, **fields})

    @classmethod
    def parse(cls: type[R], data: Mapping[str, Any]) -> R:
        """Validates ``data`` (keys or field names).

        Raises:
            RequestError: the first problem, with the field's key as ``where``.
        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise cls.error(e.errors()[0]) from None

    @classmethod
    def error(cls, err: ErrorDetails) -> RequestError:
        """One pydantic error of this model as a :class:`RequestError` naming the field."""
        loc = tuple(err.get("loc") or ())
        name = cls.keys().get(str(loc[0]), str(loc[0])) if loc else ""
        if err.get("type") == "extra_forbidden" and loc:
            key = str(loc[0])
            close = difflib.get_close_matches(key, list(cls.keys()), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(cls.keys())}"
            return RequestError(f"not an option of {cls.what()}", field=key, where=key, hint=hint)
        where = location(tuple(cls.key_of(p) if i == 0 and p in cls.model_fields else p
                               for i, p in enumerate(loc)))
        return RequestError(describe(err), field=name, where=where or None)


class RequestError(ConfigError):
    """A value a request refuses (``where``: the field's key and any index, ``field``: the field's name).

    The command line turns it into a usage error naming the option; pipeline files name the stage's key.
    """

    def __init__(self, message: str, *, field: str, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, where=where, hint=hint)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:  # keep the field when the error crosses processes
        return (_rebuild_request_error, (self.message, self.field, self.where, self.hint))


def _rebuild_request_error(message: str, field: str, where: str | None, hint: str | None) -> RequestError:
    return RequestError(message, field=field, where=where, hint=hint)


def _known_kind(value: str) -> str:
    """A registered synthetic kind (``synth KIND``)."""
    # lazy: the kinds' module imports numpy; only a synth request needs it
    from segpipe.synth import KINDS

    try:
        KINDS.get(value)
    except SegpipeError as e:
        raise ValueError(e.message) from None
    return value


def _writable(value: str) -> str:
    """A format segpipe writes (``--to``): the registry loads the formats' modules on first use."""
    try:
        spec = get_format(value)
    except SegpipeError as e:
        raise ValueError(e.message) from None
    if spec.writer is None:
        raise ValueError(f"format {value!r} cannot be written")
    return value


def _layout_for(layout: str | None, info: ValidationInfo) -> str | None:
    """``layout`` only for targets with more than one (coco: split/single, voc: devkit/flat)."""
    to = info.data.get("to")
    if layout is not None and to is not None and to not in LAYOUT_TARGETS:
        raise ValueError(f"applies to coco and voc targets, not {to!r}")
    return layout

# ----------------------------------------------------------------------------- data and datasets


class SynthRequest(Request):
    """``segpipe synth KIND OUT``: a synthetic collection with exact ground truth."""

    COMMAND = "synth"
    STAGE = "synth"
    ARGUMENTS = ("kind", "out")

    kind: str = Field(description="streetview, satellite, medical or landmarks (or a registered plug-in kind)")
    out: OutPath = Field(description="the output folder")
    n: int = Field(16, ge=1, description="number of images (volumes for nifti and dicom)")
    seed: Seed = Field(0, description="random seed (same seed, same bytes)")
    size: Annotated[tuple[SynthSide, SynthSide] | None, BeforeValidator(_hw)] = Field(
        None, description="[height, width] (HxW on the command line); default: per kind")
    format: Literal["png", "jpg", "geotiff", "nifti", "dicom"] | None = Field(
        None, description="photos as png or jpg; scenes as geotiff (satellite); volumes as nifti or dicom "
                          "(medical). Default: png (jpg with exif)")
    exif: bool = Field(False, description="JPEG photos stored rotated with an EXIF orientation")
    depth: int = Field(16, ge=1, description="slices per volume (nifti, dicom)")
    overwrite: bool = Field(False, description="replace an earlier `segpipe synth` output")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        return _known_kind(value)


class TrainRequest(Request):
    """``segpipe train DATASET --arch NAME --out DIR``: train or fine-tune a registered architecture."""

    COMMAND = "train"
    STAGE = "train"
    ARGUMENTS = ("dataset",)

    dataset: InPath = Field(description="dataset folder: images/, masks/, annotations.json, labelmap.txt")
    arch: str = Field(description="architecture (see `segpipe models`)")
    out: OutPath = Field(description="folder for epoch_NNN.ckpt, best.ckpt, metrics.jsonl")
    epochs: int = Field(10, ge=1, description="maximum epochs")
    max_minutes: Finite | None = Field(None, gt=0, description="stop at this wall-clock budget")
    val: OptInPath = Field(None, description="validation dataset (default: hold out 10%)")
    resume: bool = Field(False, description="continue from the last epoch checkpoint in out")
    overwrite: bool = Field(False, description="replace an earlier `segpipe train` output")
    seed: Seed = Field(0, description="random seed")
    batch: int = Field(4, ge=1, description="batch size")
    lr: Finite = Field(1e-3, gt=0, description="AdamW learning rate")
    device: Device = Field("auto", description="auto | cpu | cuda | cuda:N")
    model_arg: Annotated[dict[str, Any], BeforeValidator(_model_args)] = Field(
        {}, description="architecture options, e.g. {base: 16} (KEY=VALUE, repeatable, on the "
                                          "command line)")
    crop: Annotated[tuple[Side, Side] | None, BeforeValidator(_hw)] = Field(
        None, description="training crop [height, width] (HxW on the command line); default: the model's input")


class IngestRequest(Request):
    """A manifest of a collection (stable ids, sizes, content hashes); a pipeline stage, no command."""

    COMMAND = ""
    STAGE = "ingest"
    ARGUMENTS = ("source", "out")

    source: InText = Field(description="a folder or glob of images, or a dataset")
    out: OutPath = Field(description="the manifest file (.jsonl)")


class ExportRequest(Request):
    """``segpipe export STORE DST --to FORMAT``: a store's pre-labels as files annotators' tools read."""

    COMMAND = "export"
    STAGE = "export"
    ARGUMENTS = ("store", "out")

    store: InPath = Field(description="a segpipe Zarr store made by `segpipe prelabel`")
    out: OutPath = Field(description="the output folder (DST)")
    to: str = Field(description="a writable format: coco, coco_results, coco_panoptic, voc, labelstudio, maskdir, "
                                "cityscapes, yolo, labelme, cvat, geotiff, geojson, nifti (see `segpipe formats`)")
    min_score: Score = Field(0.0, description="drop instances scored below this (0..1)")
    polygons: bool = Field(False, description="masks as polygons (approximate, losses counted) or RLE (exact)")
    images: ImagesMode = Field("none", description="what to do with the source images")
    overwrite: bool = Field(False, description="replace an earlier segpipe output in out")
    layout: Layout | None = Field(None, description="coco: split (default) or single; voc: devkit (default) or flat")

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        if value == "segpipe_zarr":
            raise ValueError("a store is exported to another format; copy the store itself to keep it as a store")
        return _writable(value)

    _layout = field_validator("layout")(_layout_for)


class ConvertRequest(Request):
    """``segpipe convert SRC DST --to FORMAT``: a dataset in another format, every loss reported."""

    COMMAND = "convert"
    STAGE = "convert"
    ARGUMENTS = ("src", "out")

    src: InPath = Field(description="a COCO JSON file or a dataset folder")
    out: OutPath = Field(description="the output folder (DST); an earlier segpipe output needs overwrite")
    to: str = Field(description="target format (see `segpipe formats`)")
    from_: str = Field("auto", alias="from", description="source format, or auto to detect it")
    categories: OptInPath = Field(None, description="category map (YAML/JSON): rename, merge, drop, ids")
    strict: bool = Field(False, description="any loss or missing image is an error (nothing is written)")
    images: ImagesMode = Field("copy", description="what to do with the image files")
    image_root: OptInPath = Field(None, description="folder holding the source images")
    gt: OptInPath = Field(None, description="COCO results: the ground truth naming their images")
    overwrite: bool = Field(False, description="replace an earlier segpipe output in out")
    # fail, unlike prelabel and evaluate: a converted dataset is complete or not written.
    on_error: OnError = Field("fail", description="unreadable samples: fail stops and writes nothing; skip reports "
                                                  "each and writes the rest")
    shard_size: int | None = Field(None, ge=1, description="images per task (default: automatic)")
    polygons: bool = Field(False, description="COCO / Label Studio targets: masks as polygons (holes kept by keyhole "
                                              "cuts; differences counted) or RLE (exact)")
    polygon_tolerance: Finite = Field(0.0, ge=0.0, description="simplify polygons by up to this many pixels")
    image_url_prefix: str | None = Field(None, description="Label Studio target: the task images' URL prefix "
                                                           "(default /data/local-files/?d=images/)")
    model_version: str | None = Field(None, description="Label Studio target: the predictions' model_version "
                                                        "(default: the source's model)")
    layout: Layout | None = Field(None, description="coco: split (default) or single; voc: devkit (default) or flat")

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        return _writable(value)

    @field_validator("image_url_prefix", "model_version")
    @classmethod
    def _labelstudio_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        to = info.data.get("to")
        if value is not None and to is not None and to != "labelstudio":
            raise ValueError(f"applies to the labelstudio target, not {to!r}")
        return value

    _layout = field_validator("layout")(_layout_for)


class ValidateRequest(Request):
    """``segpipe validate PATH``: one problem per line naming the file and the field.

    No pipeline stage: a pipeline's conversions and exports already refuse what validate would flag.
    """

    COMMAND = "validate"
    ARGUMENTS = ("path",)

    path: InPath = Field(description="a COCO JSON file, a dataset folder or a pipeline YAML")
    format: str = Field("auto", description="format name, or auto to detect it")
    image_root: OptInPath = Field(None, description="folder holding the images")
    fail_on_warnings: bool = Field(False, description="warnings count as problems too (exit 1)")
    json_out: OptOutPath = Field(None, alias="json", description="also write the problems as JSON here")
    images: Literal["verify", "decode", "none"] = Field(
        "verify", description="verify reads each image file and checks its integrity; decode decodes every pixel; "
                              "none skips them")


# ----------------------------------------------------------------------------------- pre-labels


class PrelabelRequest(Request):
    """``segpipe prelabel SOURCE --model CKPT|ARCH:WEIGHTS --out STORE.zarr``: pre-labels into a Zarr store."""

    COMMAND = "prelabel"
    STAGE = "prelabel"
    ARGUMENTS = ("source",)

    source: InText = Field(description="a folder or glob of images, a COCO/VOC dataset, or a manifest")
    model: Annotated[str, PathRole.MODEL, BeforeValidator(_text)] = Field(
        description="checkpoint file or folder (a local path, an s3://, gs:// or az:// URL of a file or folder "
                    "prefix, or an https:// file), or ARCH:WEIGHTS from TORCH_HOME")
    out: OutPath = Field(description="the Zarr store to write (STORE.zarr)")
    arch: str | None = Field(None, description="architecture of a plain state-dict checkpoint")
    task: Task | None = Field(None, description="the model's task, checked against the checkpoint (keypoints is "
                                                "accepted for landmarks)")
    tile: int | None = Field(None, ge=16, description="tile side in pixels (default: the checkpoint's)")
    overlap: float | None = Field(None, ge=0.0, lt=1.0, description="tile overlap as a fraction of the tile, in "
                                                                    "[0, 1) (default: the checkpoint's)")
    batch: int = Field(4, ge=1, description="tiles per forward pass")
    device: Device = Field("auto", description="auto | cpu | cuda | cuda:N (a CUDA device must exist where it runs)")
    gpus: Gpus = Field(None, description="GPUs of the local cluster, e.g. 0,2: one worker each")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="inference precision: auto is bf16 autocast on a CUDA device that supports it and fp32 "
                            "elsewhere; bf16 applies on the CPU too")
    gpu_decode: Literal["auto", "on", "off"] = Field(
        "auto", description="decode JPEGs on the GPU when the device is CUDA (auto; on also refuses --device cpu); "
                            "a file the GPU decoder refuses goes to the CPU decoder; off never")
    resume: bool = Field(False, description="continue a store made with the same model and config")
    overwrite: bool = Field(False, description="start a new run, replacing the store")
    on_error: OnError = Field("skip", description="unreadable images: skip reports each and stores the rest; fail "
                                                  "stops at the first")
    heatmaps: bool = Field(True, description="store landmark heatmaps")
    probs: bool = Field(True, description="store per-class probabilities (uint8)")
    min_score: Score = Field(0.05, description="instances below this score are not stored")
    limit: int | None = Field(None, ge=1, description="only the first N images")
    threads: int | None = Field(None, ge=1, description="images each worker runs at once")
    bands: Annotated[tuple[Side, ...] | None, BeforeValidator(_csv)] = Field(
        None, description="GeoTIFF bands as [R, G, B], 1-based (R,G,B on the command line)")
    window: str | None = Field(None, description="intensity window CENTER,WIDTH for volumes, e.g. 40,400")
    stretch: Literal["auto", "percentile", "minmax", "none"] = Field(
        "auto", description="GeoTIFF to 8-bit: auto is percentile unless the scene is 8-bit")
    percentiles: Annotated[tuple[float, float] | None, BeforeValidator(_low_high),
                           AfterValidator(_percentiles)] = Field(
        None, description="[low, high] of the stretch (LOW,HIGH on the command line), 0 <= low < high <= 100")
    num_classes: int | None = Field(None, ge=1, description="classes of a model whose weights do not say")
    classes: str | None = Field(None, description="class names: labelmap.txt, names.yaml, VOC, COCO or Cityscapes")
    tta: Literal["none", "flip", "flip+scale"] = Field(
        "none", description="test-time augmentation of a semantic model: flip averages the probabilities of the "
                            "image and its h, v and hv flips; flip+scale also at each of tta_scales")
    tta_scales: Annotated[tuple[float, ...] | None, BeforeValidator(_csv)] = Field(
        None, description="scales of tta flip+scale, each in [0.25, 4] (0.75,1,1.25 on the command line; "
                          "default [0.75, 1, 1.25])")
    ensemble: Annotated[tuple[str, ...] | None, PathRole.MODEL, BeforeValidator(_csv)] = Field(
        None, description="more semantic models of the same classes whose probabilities are averaged with model's "
                          "(B,C on the command line)")
    prompts: OptInPath = Field(None, description="boxes to turn into instance masks with a SAM model (--model "
                                                 "SAM_DIR): a COCO results file, any dataset segpipe reads, or a "
                                                 "segpipe instance store")


class FsckRequest(Request):
    """``segpipe fsck STORE``: receipts against their outputs. No pipeline stage (a check of a finished store)."""

    COMMAND = "fsck"
    ARGUMENTS = ("store",)

    store: InPath = Field(description="a segpipe Zarr store")
    repair: bool = Field(False, description="remove orphan *.partial files and bad receipts; rewrite wrong stack "
                                          "attrs from the manifest (or clear their slots for --resume)")


# ----------------------------------------------------------------------------------- evaluation


class EvaluateRequest(Request):
    """``segpipe evaluate GT PRED --task ...``: mIoU, COCO AP, PQ or keypoint AP."""

    COMMAND = "evaluate"
    STAGE = "evaluate"
    ARGUMENTS = ("gt", "pred")

    gt: InPath = Field(description="ground truth: any format segpipe reads")
    pred: InPath = Field(description="predictions: any format segpipe reads, or a segpipe Zarr store")
    task: Task = Field("semantic", description="semantic, instance, panoptic or landmarks (keypoints is accepted "
                                               "for landmarks)")
    gt_format: str = Field("auto", description="format of gt, or auto to detect it")
    pred_format: str = Field("auto", description="format of pred, or auto to detect it")
    iou_types: Annotated[tuple[Literal["segm", "bbox", "keypoints"], ...] | None, BeforeValidator(_csv)] = Field(
        None, description="segm, bbox, keypoints (default: every type the predictions support)")
    num_classes: int | None = Field(None, ge=1, description="semantic: label values 0..N-1 are the classes")
    ignore_index: int = Field(255, description="semantic: ground-truth value ignored (besides the dataset's void)")
    img_ids: str | None = Field(None, description="only these ground-truth images: first:N (smallest ids) or ID,ID,...")
    json_out: OptOutPath = Field(None, alias="json", description="write the report JSON here")
    report_dir: OptOutPath = Field(None, description="write report.json, summary.md, per_class.csv and plots here")
    worst: int = Field(8, ge=0, description="how many worst images to list and draw")
    image_root: OptInPath = Field(None, description="folder of the ground-truth photos")
    gt_png_dir: OptInPath = Field(None, description="panoptic: ground-truth PNG folder")
    pred_png_dir: OptInPath = Field(None, description="panoptic: predicted PNG folder")
    kpt_sigmas: Annotated[tuple[Annotated[float, Field(gt=0)], ...] | None, BeforeValidator(_csv)] = Field(
        None, description="keypoints: OKS sigmas, one per keypoint (default COCO's 17)")
    on_error: OnError = Field("skip", description="images that cannot be evaluated: skip reports each; fail stops "
                                                  "at the first")
    match_classes: Literal["id", "name"] = Field(
        "id", description="semantic: id compares label values; name maps pred's ids to gt's by class name")
    categories: OptInPath = Field(None, description="class names of label-PNG folders: {id: name} or a labelmap.txt")
    shards: int | None = Field(None, ge=1, description="number of image shards")


class EvaluateCheckpointsRequest(Request):
    """``segpipe evaluate-checkpoints GT CKPT... --images DIR``: a leaderboard of checkpoints on one archive."""

    COMMAND = "evaluate-checkpoints"
    STAGE = "evaluate-checkpoints"
    ARGUMENTS = ("gt", "checkpoints")

    gt: InPath = Field(description="the labeled archive (any format segpipe reads)")
    checkpoints: Annotated[tuple[Path, ...], PathRole.INPUT] = Field(
        min_length=1, description="checkpoint files in order (globs such as ckpt/epoch_*.ckpt in pipeline files)")
    images: InPath = Field(description="the archive's images")
    report_dir: OutPath = Field(Path("checkpoint-report"), description="output folder")
    task: Task = Field("semantic", description="semantic, instance, panoptic or landmarks")
    arch: str | None = Field(None, description="architecture of plain state-dict checkpoints")


# ---------------------------------------------------------------------------------------- viewing


class ViewRequest(Request):
    """``segpipe view STORE|DATASET --out REPORT``: a self-contained HTML report of pre-labels over the images.

    No pipeline stage: a report is for people to look at, made when wanted. The sizes' ranges are
    checked by the workflow (their messages name each other: ``--large`` is at least ``--thumb``).
    """

    COMMAND = "view"
    ARGUMENTS = ("source",)

    # Optional only because `segpipe view --serve` serves an existing report; the workflow requires it.
    source: OptInPath = Field(None, description="a segpipe store, or any dataset segpipe reads")
    out: OutPath = Field(Path("view-report"), description="the report folder (index.html inside)")
    gt: OptInPath = Field(None, description="ground truth to compare with: adds its layer, an error map and "
                                            "per-image error")
    source_format: str = Field("auto", alias="format", description="format of source, or auto to detect it")
    gt_format: str = Field("auto", description="format of gt, or auto to detect it")
    image_root: OptInPath = Field(None, description="folder holding the source's photos")
    thumb: int = Field(256, description="longest side of the grid's thumbnails (32..2048 px)")
    large: int = Field(1024, description="longest side of the detail view's images (0 = none; thumb..8192 px)")
    page_size: int = Field(200, description="images per data page and per task (10..5000)")
    title: str | None = Field(None, description="the page's title (default: the source's name)")
    on_error: OnError = Field("skip", description="images that cannot be shown: skip shows each as a failed card; "
                                                  "fail stops at the first")


# ---------------------------------------------------------------------------------- Label Studio


class PushRequest(Request):
    """``segpipe push labelstudio STORE --url URL --project NAME|ID``.

    No pipeline stage: it needs a server and its token, which do not belong in a file.
    """

    COMMAND = "push labelstudio"
    ARGUMENTS = ("store",)

    store: InPath = Field(description="a segpipe Zarr store made by `segpipe prelabel`")
    url: str = Field(description="the Label Studio server, e.g. http://localhost:8080")
    project: str = Field(description="project id, or title (created when no project has it)")
    token: SecretStr | None = Field(None, description="API token (default: $LABEL_STUDIO_API_KEY); never shown")
    batch: int = Field(100, ge=1, le=10000, description="tasks per import request")
    image_url_prefix: str | None = Field(None, description="prefix of the tasks' image URLs")
    model_version: str | None = Field(None, description="the predictions' model_version (default: the store's model)")
    resend: bool = Field(False, description="ignore the record of earlier pushes; send every image")


class PullRequest(Request):
    """``segpipe pull labelstudio --url URL --project NAME|ID OUT``. No pipeline stage (a server and a token)."""

    COMMAND = "pull labelstudio"
    ARGUMENTS = ("out",)

    out: OutPath = Field(description="output folder: export.json, label_config.xml, segpipe_pull.json")
    url: str = Field(description="the Label Studio server, e.g. http://localhost:8080")
    project: str = Field(description="project id or title")
    token: SecretStr | None = Field(None, description="API token (default: $LABEL_STUDIO_API_KEY); never shown")
    overwrite: bool = Field(False, description="replace an earlier `segpipe pull` output in out")


# ---------------------------------------------------------------------------------- whole runs


class DemoRequest(Request):
    """``segpipe demo``: the quickstart end to end on generated data. No pipeline stage (it is one)."""

    COMMAND = "demo"

    out: OutPath = Field(Path("demo-out"), description="folder for everything the demo makes")
    n: int = Field(8, ge=2, description="new images to pre-label")
    epochs: int = Field(20, ge=1, le=1000, description="training epochs (fixed: the result does not depend on how "
                                                       "busy the machine is)")
    train_seconds: Finite = Field(300.0, ge=5, description="training time cap on a very slow machine")


class RunRequest(Request):
    """``segpipe run PIPELINE.yaml``: the stages of a pipeline file. No stage of its own."""

    COMMAND = "run"
    ARGUMENTS = ("pipeline",)

    pipeline: InPath = Field(description="a pipeline YAML (schema: schemas/pipeline.schema.json)")
    workdir: Path | None = Field(None, description="resolve relative paths here")
    stage: tuple[Annotated[int, Field(ge=1)], ...] = Field((), description="run only these stages (1-based)")


#: Every request model. A command without one is a listing (``formats``, ``models``, ``schemas``).
REQUESTS: tuple[type[Request], ...] = (
    SynthRequest, TrainRequest, IngestRequest, PrelabelRequest, FsckRequest, ExportRequest, ConvertRequest,
    ValidateRequest, EvaluateRequest, EvaluateCheckpointsRequest, ViewRequest, PushRequest, PullRequest, DemoRequest,
    RunRequest,
)

#: Stage key → request model, in the order pipeline files list them.
STAGES: dict[str, type[Request]] = {m.STAGE: m for m in REQUESTS if m.STAGE}
