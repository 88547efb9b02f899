"""Box prompts for ``segpipe prelabel SOURCE --prompts BOXES --model SAM_DIR``: read, matched to the source,
and the run's model plan (driver side, no torch).

``BOXES`` is one of:

* a COCO results file (a JSON list of ``{image_id, bbox: [x, y, w, h], category_id, score}``): boxes
  name their image by ``image_id`` (the source's ids: a COCO dataset's own, or the ids segpipe gives a
  folder's images, as in its stores and exports); categories are named after their ids;
* a segpipe instance store (written by ``segpipe prelabel`` with a detector): its boxes, scores and
  categories; boxes name their image by its file;
* any other dataset segpipe reads (COCO, VOC, YOLO, Label Studio ...): its instances' boxes (a box
  from the instance's polygon or RLE where it has no ``bbox``), score 1.0, its categories; boxes name
  their image by its file name. Crowd regions are not prompts; they are counted as ignored.

A box whose image is not in ``SOURCE`` is never dropped silently: the run report counts them
(``prompts.unmatched_boxes``) and the CLI prints a warning line.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segpipe.core import rle as rle_ops
from segpipe.errors import ConfigError, InputError
from segpipe.kernels.prelabel.prompted import BoxPrompt, PromptedSetup, PromptTable
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.ref import ModelRef
from segpipe.models.sources.sam import read_sam
from segpipe.pipeline.prelabel.config import ModelPlan, config_hash
from segpipe.pipeline.prelabel.report import PromptCounts
from segpipe.pipeline.prelabel.request import PrelabelRequest
from segpipe.pipeline.prelabel.source import SourceListing, list_source
from segpipe.storage.jsonio import read_json
from segpipe.storage.manifest import stable_id
from segpipe.storage.zarrstore import ZarrStore


@dataclass
class Prompt:
    """A box as read, before it is matched to an image of the source.

    Attributes:
        image_id: The image id it names (COCO results), or None.
        file: The image file it names (datasets, stores), or None.
        box: The box, its category and score.
    """

    image_id: int | None
    file: str | None
    box: BoxPrompt


@dataclass
class PromptSet:
    """Every box of ``--prompts`` and the categories they use.

    Attributes:
        path: The file or folder read.
        kind: ``coco_results``, ``segpipe_zarr`` or the dataset's format name.
        prompts: The boxes in file order.
        categories: ``{"id", "name"}`` of every category the boxes may use, by id.
        ignored: Annotations that are no box prompt (crowd regions, instances with no box nor shape).
    """

    path: Path
    kind: str
    prompts: list[Prompt] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0


def read_prompts(path: str | Path) -> PromptSet:
    """Reads ``--prompts``.

    Raises:
        InputError: a missing path, a malformed file (one line naming the file and the field).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such prompts file or folder", path=p, where="--prompts")
    if p.is_file() and p.suffix.lower() == ".json":
        data = read_json(p)
        if isinstance(data, list):
            return _coco_results(p, data)
    # lazy: the format registry (~0.3 s) is read for dataset prompts only
    from segpipe.formats import detect_format, get_format

    fmt = detect_format(p)
    if fmt == "segpipe_zarr":
        return _store(p)
    if fmt == "coco_results":
        data = read_json(p / "results.json" if p.is_dir() else p)
        if isinstance(data, list):
            return _coco_results(p, data)
    return _dataset(p, fmt, get_format(fmt).reader(p))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _xyxy(bbox: Any, path: Path, where: str) -> tuple[float, float, float, float]:
    """``[x, y, w, h]`` as ``(x0, y0, x1, y1)``; a malformed or empty box is one error line."""
    if not (isinstance(bbox, list | tuple) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise InputError(f"bbox must be [x, y, width, height] numbers, got {json.dumps(bbox)[:80]}", path=path,
                         where=where)
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise InputError(f"bbox {[x, y, w, h]} has no area (width and height must be > 0)", path=path, where=where)
    return (x, y, x + w, y + h)


def _coco_results(path: Path, data: list[Any]) -> PromptSet:
    out = PromptSet(path, "coco_results")
    cats: set[int] = set()
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise InputError("a result is not a JSON object", path=path, where=f"[{i}]")
        iid, cid, score = r.get("image_id"), r.get("category_id"), r.get("score", 1.0)
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise InputError(f"image_id must be an integer, got {iid!r}", path=path, where=f"[{i}].image_id")
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise InputError(f"category_id must be an integer, got {cid!r}", path=path, where=f"[{i}].category_id")
        if not _number(score) or not 0.0 <= float(score) <= 1.0:
            raise InputError(f"score must be a number in [0, 1], got {score!r}", path=path, where=f"[{i}].score")
        box = _xyxy(r.get("bbox"), path, f"[{i}].bbox")
        cats.add(cid)
        out.prompts.append(Prompt(iid, None, BoxPrompt(box, cid, float(score), str(path), f"[{i}].bbox")))
    if not out.prompts:
        raise InputError("the results file holds no box", path=path, where="$")
    out.categories = [{"id": c, "name": f"category_{c}"} for c in sorted(cats)]
    return out


def _store(path: Path) -> PromptSet:
    """The boxes of an instance store (a detector's pre-labels)."""
    store = ZarrStore.open(path)
    attrs = store.attrs()
    if attrs.get("task") != "instance":
        raise InputError(f"a {attrs.get('task')} store has no boxes; --prompts takes an instance store",
                         path=path, where="zarr.json: attributes.segpipe.task")
    out = PromptSet(path, "segpipe_zarr",
                    categories=[{"id": int(c["id"]), "name": str(c["name"])} for c in attrs.get("categories", [])])
    for image_id, group in store.iter_groups():
        file = str(dict(group.attrs).get("file", ""))
        if "instances" not in group:
            continue
        boxes = store.read(image_id, "instances/boxes")
        scores = store.read(image_id, "instances/scores")
        labels = store.read(image_id, "instances/labels")
        for k, (b, s, c) in enumerate(zip(boxes, scores, labels, strict=True)):
            where = f"images/{image_id}/instances/boxes[{k}]"
            box = _xyxy([float(v) for v in b], path, where)
            out.prompts.append(Prompt(image_id, file or None, BoxPrompt(box, int(c), float(s), str(path), where)))
    return out


def _dataset(path: Path, fmt: str, reader: Any) -> PromptSet:
    """The instances' boxes of a dataset (ground truth: score 1.0)."""
    out = PromptSet(path, fmt, categories=[{"id": c.id, "name": c.name} for c in reader.meta.categories])
    for s in reader.samples():
        info = s.image
        for inst in s.instances:
            where = f"image {info.file_name or info.id}, instance {inst.id}"
            bbox = inst.bbox
            if bbox is None and inst.segmentation is not None and info.width and info.height:
                bbox = rle_ops.to_bbox(rle_ops.to_rle(inst.segmentation, info.height, info.width))
            if inst.iscrowd or bbox is None or bbox[2] <= 0 or bbox[3] <= 0:
                out.ignored += 1
                continue
            box = _xyxy(list(bbox), path, where)
            score = float(inst.score) if inst.score is not None else 1.0
            out.prompts.append(Prompt(info.id, info.file_name or None,
                                      BoxPrompt(box, int(inst.category_id), score, str(path), where)))
    return out


@dataclass(frozen=True)
class Matched:
    """The boxes matched to the source's images.

    Attributes:
        table: Image id → its boxes (the images of the source that have any).
        boxes: Boxes matched.
        unmatched_boxes: Boxes naming an image not in the source.
        unmatched_images: Distinct images they name.
        examples: A few of those images (ids or file names), for the warning.
    """

    table: PromptTable
    boxes: int
    unmatched_boxes: int
    unmatched_images: int
    examples: tuple[str, ...]


def match_prompts(prompts: PromptSet, listing: SourceListing) -> Matched:
    """Matches every box to an image of the source: by file name when it names one, else by image id.

    A file name matches the source's relative name, or its base name when only one image has it.
    """
    ids: set[int] = set()
    by_name: dict[str, int] = {}
    by_base: dict[str, list[int]] = {}
    items: list[tuple[str, int]] = []
    if listing.manifest is not None:
        items = [(e.file, e.id) for e in listing.manifest]
    else:
        for group in listing.groups.values():
            items.extend((n, stable_id(n) if i is None else int(i)) for n, i in group)
    for name, item_id in items:
        ids.add(item_id)
        by_name[name] = item_id
        by_base.setdefault(Path(name).name, []).append(item_id)
    table: dict[int, list[BoxPrompt]] = {}
    missing: dict[str, int] = {}
    for pr in prompts.prompts:
        iid: int | None = None
        if pr.file:
            iid = by_name.get(pr.file)
            if iid is None and len(by_base.get(Path(pr.file).name, [])) == 1:
                iid = by_base[Path(pr.file).name][0]
        elif pr.image_id is not None and pr.image_id in ids:
            iid = pr.image_id
        if iid is None:
            label = pr.file or f"image_id {pr.image_id}"
            missing[label] = missing.get(label, 0) + 1
            continue
        table.setdefault(iid, []).append(pr.box)
    matched = sum(len(v) for v in table.values())
    return Matched(tuple((k, tuple(v)) for k, v in sorted(table.items())), matched, sum(missing.values()),
                   len(missing), tuple(sorted(missing)[:3]))


def prompted_model(req: PrelabelRequest, prompts: PromptSet, matched: Matched) -> ModelPlan:
    """The run's model plan: a SAM model whose classes are the boxes' categories, task ``instance``.

    Raises:
        CheckpointError: ``--model`` is not a SAM folder.
        ConfigError: an option that does not apply to a prompted run, or no box names an image of the source.
    """
    info = read_sam(req.model)
    for name, value in (("--arch", req.arch), ("--num-classes", req.num_classes), ("--classes", req.classes)):
        if value is not None:
            raise ConfigError(f"{name} does not apply with --prompts: the boxes' categories are the classes")
    # averaging options of semantic models (read with getattr: a request of another version may lack them)
    if getattr(req, "tta", "none") != "none" or getattr(req, "ensemble", None):
        raise ConfigError("--tta and --ensemble average semantic models; they do not apply with --prompts")
    if req.task not in (None, "instance"):
        raise ConfigError(f"--task {req.task}: --prompts makes instance masks (--task instance)")
    if not matched.boxes:
        raise ConfigError(f"none of the {matched.unmatched_boxes} boxes of {prompts.path} names an image of "
                          f"{req.source} (e.g. {', '.join(matched.examples)})",
                          hint="boxes match images by file name, or COCO results by image_id")
    used = {b.category_id for _, boxes in matched.table for b in boxes}
    named = {int(c["id"]): str(c["name"]) for c in prompts.categories}
    cats = [{"index": i, "id": c, "name": named.get(c, f"category_{c}"), "color": None, "isthing": True}
            for i, c in enumerate(sorted(set(named) | used))]
    meta = CheckpointMeta.from_dict({"arch": info.arch, "task": "instance", "num_classes": len(cats),
                                     "categories": cats, "tile_size": [info.image_size, info.image_size]},
                                    path=req.model)
    ref = ModelRef(req.model)
    table_digest = hashlib.sha256(json.dumps(
        [[k, [[list(b.box), b.category_id, b.score] for b in boxes]] for k, boxes in matched.table]).encode()
    ).hexdigest()
    config = {
        "layout": 2,
        "model": ref.fingerprint(),
        "task": "instance",
        "prompts": table_digest,
        "min_score": req.min_score,
        # masks are the SAM processor's (or the ONNX decoder's): upsampled logits above 0. The SAM text is
        # kept as it was, so stores made before SAM 2 and ONNX pairs were read still resume.
        "prompted": "sam boxes, mask threshold 0" if info.model_type == "sam" else
                    f"{info.model_type} boxes, mask threshold 0",
        "cpu_inference": "1 thread, 1 tile per pass",
    }
    return ModelPlan(ref=ref, meta=meta, dims=2, config=config, cfg_hash=config_hash(config))


def prompted_setup(req: PrelabelRequest, matched: Matched) -> PromptedSetup:
    """What each worker builds its SAM model and boxes from."""
    return PromptedSetup(str(req.model), matched.table, device=req.device)


@dataclass(frozen=True)
class PromptedRun:
    """What the driver needs of a prompted run, before any cluster starts.

    Attributes:
        model: The model plan (SAM, task ``instance``, the boxes' categories).
        setup: What the workers build from.
        listing: The source, listed once (boxes were matched against it).
        counts: The boxes, counted for the report.
    """

    model: ModelPlan
    setup: PromptedSetup
    listing: SourceListing
    counts: PromptCounts


def plan_prompted(req: PrelabelRequest) -> PromptedRun:
    """Reads the SAM folder and ``--prompts``, lists the source and matches the boxes to its images.

    Raises:
        SegpipeError: not a SAM folder, an unreadable prompts file, no box for any image (one line).
    """
    assert req.prompts is not None
    read_sam(req.model)  # a folder that is no SAM is refused before the prompts are read
    prompts = read_prompts(req.prompts)
    listing = list_source(req.source, limit=req.limit)
    matched = match_prompts(prompts, listing)
    model = prompted_model(req, prompts, matched)
    counts = PromptCounts(file=str(req.prompts), boxes=len(prompts.prompts), matched=matched.boxes,
                          unmatched_boxes=matched.unmatched_boxes, unmatched_images=matched.unmatched_images,
                          ignored=prompts.ignored)
    return PromptedRun(model, prompted_setup(req, matched), listing, counts)
