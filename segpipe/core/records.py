"""The dataset model: frozen records shared by every format, evaluator and exporter.

Records are plain data. Pixel arrays are never stored in a record read from disk: a record names the
file that holds its label map (``semantic_file``, ``object_file``, ``panoptic_file``) and the
storage layer decodes it on the worker that needs it, so a dataset of any size streams through
memory one shard at a time.

Coordinates follow COCO: pixels are addressed by their top-left corner, boxes are
``(x, y, width, height)`` in floating-point pixels, keypoints are flat ``(x1, y1, v1, x2, ...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

T = TypeVar("T")

#: A COCO run-length encoding: ``{"size": [h, w], "counts": str | bytes | list[int]}``.
RLE = dict[str, Any]
#: One COCO polygon: a flat list ``[x1, y1, x2, y2, ...]`` of at least 6 numbers.
Polygon = tuple[float, ...]
BBox = tuple[float, float, float, float]

SegmentationKind = Literal["polygons", "rle", "rle_uncompressed"]


@dataclass(frozen=True, slots=True)
class Category:
    """One class.

    Attributes:
        id: The category id as the source states it (COCO ids are kept; VOC uses the label index).
        name: Unique class name.
        supercategory: COCO supercategory, ``""`` if none.
        isthing: True for countable objects (instances), False for stuff (panoptic semantics).
        color: RGB display / palette colour, or None to use the default colormap.
        keypoints: Keypoint names, in order, for keypoint categories.
        skeleton: Pairs of 1-based keypoint indices, as COCO writes them.
    """

    id: int
    name: str
    supercategory: str = ""
    isthing: bool = True
    color: tuple[int, int, int] | None = None
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """One image.

    Attributes:
        id: Stable integer id (COCO id, or assigned in sorted file-name order).
        file_name: Path relative to the dataset's image root, with forward slashes.
        width: Width in pixels (after the documented EXIF policy: the stored pixel grid, not rotated).
        height: Height in pixels.
        split: Dataset split (``train``, ``val`` ...), or None.
        attributes: Everything else the source stated (COCO ``license``, ``coco_url``, VOC ``source``,
            ...), kept so that a round trip loses nothing.
    """

    id: int
    file_name: str
    width: int
    height: int
    split: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=True, hash=False)


@dataclass(frozen=True, slots=True)
class Segmentation:
    """An instance mask in one of COCO's three encodings.

    Exactly one of ``polygons`` and ``rle`` is set. Compressed RLE (``counts`` a string) is the
    canonical lossless form; polygons are kept as given so that a COCO → COCO round trip is exact.

    Attributes:
        kind: ``polygons``, ``rle`` (compressed counts string) or ``rle_uncompressed`` (counts list).
        polygons: One or more polygons, each a flat ``(x1, y1, ...)`` tuple.
        rle: ``{"size": [h, w], "counts": ...}``.
    """

    kind: SegmentationKind
    polygons: tuple[Polygon, ...] | None = None
    rle: RLE | None = field(default=None, hash=False)

    @staticmethod
    def from_polygons(polygons: list[list[float]] | tuple[Polygon, ...]) -> Segmentation:
        """Builds a polygon segmentation from nested lists."""
        return Segmentation("polygons", polygons=tuple(tuple(float(v) for v in p) for p in polygons))

    @staticmethod
    def from_rle(rle: RLE) -> Segmentation:
        """Builds an RLE segmentation; the kind follows the type of ``counts``."""
        kind: SegmentationKind = "rle_uncompressed" if isinstance(rle.get("counts"), list) else "rle"
        return Segmentation(kind, rle=rle)


@dataclass(frozen=True, slots=True)
class Instance:
    """One object annotation (COCO instance / keypoint annotation, VOC object, detection result).

    Attributes:
        id: Annotation id, unique within the dataset (0 when the source has none, e.g. results).
        image_id: The image it belongs to.
        category_id: Its category.
        segmentation: Its mask, or None for box-only annotations.
        bbox: ``(x, y, w, h)``, or None when the source gives none.
        area: Area as the source states it (COCO: mask area), or None.
        iscrowd: COCO crowd flag (a region of many objects, ignored by evaluation).
        score: Confidence, for predictions; None for ground truth.
        keypoints: Flat ``(x, y, v, ...)``; v = 0 not labelled, 1 labelled but not visible, 2 visible.
        num_keypoints: Number of keypoints with v > 0, as COCO states it.
        attributes: Everything else (VOC ``difficult``, ``truncated``, ``occluded``, ``pose``; COCO
            extra keys), kept so that round trips lose nothing.
    """

    id: int
    image_id: int
    category_id: int
    segmentation: Segmentation | None = None
    bbox: BBox | None = None
    area: float | None = None
    iscrowd: bool = False
    score: float | None = None
    keypoints: tuple[float, ...] | None = None
    num_keypoints: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class PanopticSegment:
    """One segment of a COCO panoptic annotation.

    Attributes:
        id: Segment id; in the PNG, ``id = R + 256 G + 256² B``.
        category_id: Its category.
        iscrowd: Crowd flag.
        area: Pixel count, or None when not stated.
        bbox: ``(x, y, w, h)``, or None.
        attributes: Extra keys.
    """

    id: int
    category_id: int
    iscrowd: bool = False
    area: int | None = None
    bbox: BBox | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Sample:
    """One image with everything annotated on it. The unit that formats read and write.

    Pixel-level annotations are referenced by file, never held: the storage layer decodes them
    where they are needed.

    Attributes:
        image: The image record.
        image_path: Absolute path of the image file if it exists, else None (annotations still
            convert; the conversion report lists missing images).
        instances: Object annotations (with masks, boxes and/or keypoints).
        semantic_file: Absolute path of a label-map PNG (pixel value = category id, 255 = void).
        object_file: Absolute path of a VOC ``SegmentationObject`` PNG (pixel value = 1-based index
            into ``instances``, 0 background, 255 void).
        panoptic_file: Absolute path of a COCO panoptic PNG.
        panoptic_segments: The ``segments_info`` of that PNG.
    """

    image: ImageInfo
    image_path: str | None = None
    instances: tuple[Instance, ...] = ()
    semantic_file: str | None = None
    object_file: str | None = None
    panoptic_file: str | None = None
    panoptic_segments: tuple[PanopticSegment, ...] = ()

    def with_instances(self, instances: tuple[Instance, ...]) -> Sample:
        """Returns a copy with other instances."""
        return replace(self, instances=instances)

    @property
    def size_measured(self) -> bool:
        """Whether the recorded size was measured on the decoded image when the record was made.

        Such a size needs no second comparison with the image file's header (which costs a file
        open per image); the readers of recorded, hand-made sizes leave this False.
        """
        return False


#: Keys of :attr:`DatasetMeta.extra` that describe one reading of a source, not the dataset (the segpipe
#: store reader's per-reading cache token): writers never write them, so two exports of one store are equal.
READING_EXTRA = frozenset({"store_token"})


@dataclass(frozen=True, slots=True)
class DatasetMeta:
    """What a dataset says about itself, apart from its samples.

    Attributes:
        format: The format it was read from (a registry name).
        categories: Its classes, in the source's order.
        info: COCO ``info`` or equivalent.
        licenses: COCO ``licenses``.
        void_value: The label-map value meaning "void / ignore" (255 for VOC), or None.
        extra: Other top-level keys of the source, kept for round trips.
    """

    format: str
    categories: tuple[Category, ...]
    info: Mapping[str, Any] = field(default_factory=dict, hash=False)
    licenses: tuple[Mapping[str, Any], ...] = ()
    void_value: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def category_by_id(self) -> dict[int, Category]:
        """Returns ``{id: category}``."""
        return {c.id: c for c in self.categories}

    def category_by_name(self) -> dict[str, Category]:
        """Returns ``{name: category}``."""
        return {c.name: c for c in self.categories}


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Groups a stream (of samples, pairs …) into lists of at most ``size`` (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class InstanceMask:
    """An instance together with its mask as compressed RLE (decoded and validated).

    Attributes:
        instance: The annotation record (its ``segmentation`` is kept as the source gave it).
        rle: Its mask as compressed RLE at the image size, or None for box-only annotations.
    """

    instance: Instance
    rle: RLE | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class Materialized:
    """A sample with its pixel-level content decoded: what writers and evaluators consume.

    Built on a worker by the source format's ``materialize`` function, one sample at a time, so
    memory is bounded by one image.

    Attributes:
        sample: The sample record.
        instances: Instances with their masks as RLE, in the source's order (z-order: later on top).
        class_map: ``(H, W) uint8|uint16`` label map (category ids; ``void_value`` = void) when the
            source has one (VOC ``SegmentationClass``, mask directories, panoptic semantics).
        panoptic: ``((H, W) int32 segment-id map, segments)`` when the source is panoptic.
        void_value: The value meaning void in ``class_map`` (255 by default).
        unknown_values: ``{source value: pixels}`` of label values that are no category and that the
            reader already wrote as void in ``class_map`` (a Cityscapes label id outside its label
            table); the converter reports them as a loss with the values it finds itself.
        class_scores: ``{label value: confidence}`` of ``class_map``'s classes when the source stores
            probabilities (a store written with ``--probs``): the mean, over the class's pixels, of the
            highest class probability there (``probs.max(axis=0)``, dequantised).
        doubt: How unsure the model that made these pre-labels was (a segpipe store's record of
            :mod:`segpipe.kernels.prelabel.doubt`: ``doubt``, ``entropy``, ``regions`` ...), or None.
    """

    sample: Sample
    instances: tuple[InstanceMask, ...] = ()
    class_map: Any = field(default=None, compare=False, hash=False)
    panoptic: Any = field(default=None, compare=False, hash=False)
    void_value: int = 255
    unknown_values: Mapping[int, int] = field(default_factory=dict, compare=False, hash=False)
    class_scores: Mapping[int, float] = field(default_factory=dict, compare=False, hash=False)
    doubt: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
