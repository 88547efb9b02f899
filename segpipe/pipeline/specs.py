"""Typed models at the edges: the shapes segpipe accepts and writes. JSON Schemas in ``schemas/`` are
generated from these (``segpipe schemas``) and a test fails when they drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# ---------------------------------------------------------------- category map


class CategoryMapSpec(BaseModel):
    """A category map file for ``segpipe convert --categories``. Steps apply in the order
    drop → merge → rename → ids; original ids are kept unless ``ids`` changes them.
    """

    model_config = ConfigDict(extra="forbid", title="segpipe category map")

    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    merge: dict[str, list[str]] = Field(default_factory=dict, description="new name -> old names merged into it")
    drop: list[str] = Field(default_factory=list, description="classes removed; their label-map pixels become void")
    ids: dict[str, int] = Field(default_factory=dict, description="resulting name -> new category id")
    unlisted: Literal["keep", "drop"] = Field("keep", description="what happens to classes named nowhere")


# ---------------------------------------------------------------- COCO shapes accepted


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class CocoRLE(BaseModel):
    """Run-length encoding; ``counts`` compressed (string) or uncompressed (list)."""

    model_config = ConfigDict(extra="forbid")
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str | list[int]


class CocoImage(_Open):
    """An image entry. Extra keys are kept."""

    id: int
    file_name: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class CocoCategory(_Open):
    """A category. ``keypoints``/``skeleton`` for keypoint datasets, ``isthing``/``color`` for panoptic."""

    id: int
    name: str
    supercategory: str | None = None
    keypoints: list[str] | None = None
    skeleton: list[list[int]] | None = None
    isthing: int | None = None
    color: list[int] | None = None


class CocoAnnotation(_Open):
    """An instance / keypoint annotation. Polygons are lists of >= 6 finite numbers (x, y pairs)."""

    id: int
    image_id: int
    category_id: int
    segmentation: list[list[float]] | CocoRLE | None = None
    bbox: list[float] | None = Field(None, min_length=4, max_length=4, description="[x, y, w, h]")
    area: float | None = None
    iscrowd: int = 0
    keypoints: list[float] | None = None
    num_keypoints: int | None = None


class CocoDataset(_Open):
    """COCO instances / keypoints dataset, as ``segpipe convert`` and ``validate`` accept it."""

    model_config = ConfigDict(extra="allow", title="COCO instances or keypoints dataset accepted by segpipe")
    info: dict[str, Any] | None = None
    licenses: list[dict[str, Any]] | None = None
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


class CocoResult(_Open):
    """One prediction, as pycocotools ``loadRes`` expects it."""

    image_id: int
    category_id: int
    score: float
    segmentation: list[list[float]] | CocoRLE | None = None
    bbox: list[float] | None = None
    keypoints: list[float] | None = None


class CocoPanopticSegment(_Open):
    """One entry of ``segments_info``."""

    id: int
    category_id: int
    iscrowd: int = 0
    area: int | None = None
    bbox: list[float] | None = None


class CocoPanopticAnnotation(_Open):
    """One image's panoptic annotation: a PNG (``id = R + 256 G + 256² B``) and its segments."""

    image_id: int
    file_name: str
    segments_info: list[CocoPanopticSegment]


class CocoPanoptic(_Open):
    """COCO panoptic: JSON + PNG folder (by default the JSON path without ``.json``)."""

    model_config = ConfigDict(extra="allow", title="COCO panoptic dataset accepted by segpipe")
    images: list[CocoImage]
    annotations: list[CocoPanopticAnnotation]
    categories: list[CocoCategory]


class CocoShapes(BaseModel):
    """The COCO shapes segpipe reads: a dataset, a results list or a panoptic dataset."""

    model_config = ConfigDict(title="COCO JSON accepted by segpipe")
    root: CocoDataset | list[CocoResult] | CocoPanoptic


# ---------------------------------------------------------------- reports


class Readable(BaseModel):
    """A typed report that also reads like the JSON it is written as: ``report["images"]["failed"]``.

    Callers written against the dict reports (and scripts reading the JSON) keep working; attributes
    (``report.images["failed"]``) are the typed way. A key is a field's alias or name.
    """

    def _field(self, key: str) -> str:
        for name, info in type(self).model_fields.items():
            if key in (name, info.alias):
                return name
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        # Item access reads like the JSON: nested models come back as their JSON values, so a caller
        # written against the dict reports can pass them to json.dumps (attributes stay typed).
        value = getattr(self, self._field(key))
        if isinstance(value, BaseModel) or (isinstance(value, list) and any(isinstance(v, BaseModel) for v in value)):
            return TypeAdapter(Any).dump_python(value, mode="json", by_alias=True)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when the report has no such field."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING


_MISSING = object()


class Losses(Readable):
    """What the target format could not hold, counted."""

    lossless: bool
    totals: dict[str, int] = Field(description="loss kind -> count (pixels, annotations or images; see notes)")
    by_category: dict[str, dict[str, int]] = Field(description="loss kind -> category name ('*' = any) -> count")
    notes: dict[str, str] = Field(description="loss or note kind -> one-sentence explanation")
    counts_in: dict[str, int] = Field(description="annotations read per category")
    counts_out: dict[str, int] = Field(description="annotations written per category")
    missing_images: list[str]


class ProblemModel(Readable):
    """One problem (validation or a per-image failure)."""

    severity: Literal["error", "warning"]
    file: str
    where: str
    message: str
    code: str


class ConversionReport(Readable):
    """``DST/conversion_report.json``, written by ``segpipe convert``."""

    model_config = ConfigDict(title="segpipe conversion report")
    segpipe_version: str
    source: dict[str, Any]
    target: dict[str, Any]
    category_map: str | None
    images: dict[str, int] = Field(description="total, converted, failed, missing_files")
    losses: Losses
    repairs: list[Any] = Field(description="documented repairs applied while reading the source")
    problems: list[ProblemModel]
    shards: int
    workers: int | str
    elapsed_s: float


class ValidationReport(Readable):
    """What ``segpipe validate`` found; ``--json FILE`` writes it."""

    model_config = ConfigDict(title="segpipe validation report")
    segpipe_version: str
    path: str
    format: str = Field(description="the format validated (pipeline for a pipeline file)")
    problems: list[ProblemModel]

    @property
    def errors(self) -> int:
        """Problems of severity ``error``."""
        return sum(1 for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        """Problems of severity ``warning``."""
        return len(self.problems) - self.errors


# ---------------------------------------------------------------- Zarr store layout


class StoreCategory(BaseModel):
    """A category as the store records it."""

    id: int
    name: str
    color: list[int] | None = None
    isthing: bool = True
    index: int | None = Field(None, description="the model's channel / label index")


class StoreImageAttrs(BaseModel):
    """Attributes of ``images/<image id>/`` (one group per image, written by the task that owns it).

    Arrays of the group: ``labels (H, W) uint8|uint16`` category id per pixel; ``probs (C, H, W) uint8``
    probability quantised as ``p = value / 255`` (channels in ``probabilities.channels`` order);
    ``panoptic (H, W) int32`` segment ids with ``segments`` below; ``heatmaps (K, H, W) float16``;
    ``keypoints (N, K, 3) float32`` rows x, y, confidence; ``instances/rle (N,) str`` COCO compressed RLE
    counts at the image size, ``instances/boxes (N, 4) float32`` x, y, w, h, ``instances/scores (N,)
    float32``, ``instances/labels (N,) int32`` category ids.
    """

    model_config = ConfigDict(extra="allow")
    id: int
    file: str
    width: int
    height: int
    path: str | None = None
    sha256: str | None = None
    segments: list[dict[str, Any]] | None = Field(None, description="panoptic segments_info (category ids)")
    geo: dict[str, Any] | None = Field(None, description="crs (WKT) and transform (6 numbers) of a georeferenced scene")


class StoreAttrs(BaseModel):
    """``attrs["segpipe"]`` of a store's root group (layout version 2; 1 is read too), written once by the driver.

    Layout 2 adds ``stacks/<H>x<W>/`` to layout 1's ``images/<image id>/`` groups. A semantic run
    stacks its same-size images (up to 1024² pixels, sizes with at least 8 images): ``labels (N, H, W)``
    and ``probs (N, C, H, W)`` hold one image per slot (sharded 8 slots per file), ``ids (N,) int64``
    the image id of each slot (-1: none), ``attrs (N,) str`` its attributes as JSON (as an image
    group's), ``done (N,) uint8`` 1 where the slot is written. Everything else (scenes, volumes,
    instance, panoptic and landmark outputs, rare sizes) keeps a group per image.

    Private files (not zarr) live in ``.segpipe/``: ``ledger/<task key>.json`` receipts,
    ``manifest.jsonl`` (one line per image: id, file, path, width, height, sha256, bytes) and
    ``runs/<run id>.json`` run reports. Read with plain zarr::

        import zarr
        root = zarr.open_group("prelabels.zarr", mode="r")
        labels = root["images/<image id>/labels"][...]      # (H, W) category ids, an image with a group
        stack = root["stacks/512x512"]                      # or a stacked one: find its slot
        labels = stack["labels"][list(stack["ids"][...]).index(image_id)]
    """

    model_config = ConfigDict(extra="allow", title="segpipe Zarr store layout (root attributes)")
    layout: Literal[1, 2]
    task: str = Field(description="semantic | instance | panoptic | landmarks | dataset")
    categories: list[StoreCategory]
    keypoints: list[str] | None = None
    probabilities: dict[str, Any] | None = Field(None, description="dtype, scale, channels (category ids)")
    labels: str | None = Field(None, description="what label-map pixels hold")
    model: dict[str, Any] | None = Field(None, description="spec, arch, fingerprint, provenance")
    config: dict[str, Any] | None = Field(None, description="what determined the outputs (hashed into task keys)")
    config_hash: str | None = None
    segpipe_version: str | None = None
    images: StoreImageAttrs | None = Field(None, description="(documentation) attributes of each image group")
