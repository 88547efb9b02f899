"""The COCO kernel: samples of any format materialised into COCO dicts with RLE masks, for AP.

Ground truth becomes ``images`` and ``annotations`` entries; predictions become results (scores, no
ids, no crowd regions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segpipe.core import rle as rle_ops
from segpipe.core.problems import Problem
from segpipe.core.records import DatasetMeta, InstanceMask, Sample
from segpipe.errors import SegpipeError
from segpipe.formats import get_format
from segpipe.formats.coco.convert import image_to_coco, instance_to_coco
from segpipe.formats.derive import derive_instances
from segpipe.kernels.evaluate.pairs import problem


@dataclass(frozen=True)
class CocoShardSpec:
    """The constant arguments of :func:`coco_shard`.

    Attributes:
        fmt: The samples' format.
        meta: Its metadata.
        results: Build results (scores, no ids or crowd) rather than ground truth.
        on_error: ``skip`` or ``fail``.
    """

    fmt: str
    meta: DatasetMeta
    results: bool
    on_error: str


@dataclass(frozen=True)
class SampleShard:
    """One task's samples.

    Attributes:
        index: Shard position.
        items: ``(sample, ground-truth image id to record)`` pairs.
    """

    index: int
    items: tuple[tuple[Sample, int], ...]


@dataclass
class CocoShard:
    """COCO dicts built by a worker from one shard of samples.

    Attributes:
        index: Shard position.
        images: COCO ``images`` entries (ground truth only).
        annotations: Annotation (ground truth) or result (prediction) dicts.
        problems: Samples that could not be read.
        n_samples: Samples given.
    """

    index: int
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_samples: int = 0


def _rle_fields(d: dict[str, Any], rle: dict[str, Any]) -> None:
    """The mask as pycocotools wants it (compressed RLE, counts as the string JSON results carry)."""
    counts = rle["counts"]
    d["segmentation"] = {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
    if "area" not in d:
        d["area"] = float(rle_ops.area(rle))
    if "bbox" not in d:
        d["bbox"] = [float(v) for v in rle_ops.to_bbox(rle)]


def _annotation(im: InstanceMask, image_id: int, results: bool) -> dict[str, Any] | None:
    inst = im.instance
    if results and inst.iscrowd:
        return None  # a crowd region is not a detection
    d = instance_to_coco(inst, results=results)
    d["image_id"] = int(image_id)
    if im.rle is not None:
        _rle_fields(d, im.rle)
    elif "segmentation" in d and not d["segmentation"]:
        del d["segmentation"]
    if results:
        d.pop("id", None)
        d.setdefault("score", 1.0)  # a dataset used as predictions: every object is certain
    else:
        d.setdefault("iscrowd", 0)
        if "area" not in d and "bbox" in d:
            d["area"] = float(d["bbox"][2] * d["bbox"][3])
    return d


def coco_shard(spec: CocoShardSpec, shard: SampleShard) -> CocoShard:
    """Worker task: materialises samples into COCO annotation (or result) dicts with RLE masks.

    Args:
        spec: The samples' format and what to build.
        shard: The samples, each with the ground-truth image id to record.

    Returns:
        A :class:`CocoShard`.
    """
    fmt = get_format(spec.fmt)
    out = CocoShard(shard.index, n_samples=len(shard.items))
    for sample, image_id in shard.items:
        try:
            m = fmt.materialize(sample, spec.meta)
            instances, _ = derive_instances(m, spec.meta)
            anns = [_annotation(im, image_id, spec.results) for im in instances]
        except SegpipeError as e:
            if spec.on_error == "fail":
                raise
            out.problems.append(problem("error", sample, str(e), "eval.unreadable"))
            continue
        if not spec.results:
            img = image_to_coco(sample.image)
            img["id"] = int(image_id)
            out.images.append(img)
        out.annotations.extend(a for a in anns if a is not None)
    return out
