"""``segpipe convert`` and ``segpipe export``: plan a sharded conversion, run it on Dask, report every loss.

A :class:`~segpipe.pipeline.requests.ConvertRequest` or :class:`~segpipe.pipeline.requests.ExportRequest`
(what the user asked) becomes a :class:`Conversion` (what the engine runs: reader and writer options
spelt out), which :func:`run_conversion` carries out. Other workflows that convert on the way (the
ground truth of ``evaluate-checkpoints`` into a store) build a :class:`Conversion` themselves.

The driver reads the source index once and streams shards of lightweight samples to the workers;
each worker decodes its images' masks, applies the category map and writes per-image outputs into a
staging folder beside the destination. The driver then writes the index files (COCO JSON, VOC
ImageSets ...) from the shards' small results, in shard order, and swaps the staging folder in for
the destination — or, under ``--strict`` with any loss, removes it and fails, leaving nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from segpipe import __version__
from segpipe.core.categories import CategoryMapper
from segpipe.core.losses import LossCounter
from segpipe.core.problems import Problem
from segpipe.core.records import DatasetMeta, Materialized, Sample, chunked
from segpipe.errors import (
    ConfigError,
    ImageDecodeError,
    InputError,
    LossError,
    OutputError,
    SegpipeError,
    UnsupportedError,
    describe_failure,
)
from segpipe.execution.cluster import ClusterSpec, use_client
from segpipe.execution.runner import run_tasks
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.checks import check_class_map, check_recorded_size
from segpipe.pipeline import requests
from segpipe.pipeline.specs import CategoryMapSpec, ConversionReport
from segpipe.pipeline.validate import check_image_file
from segpipe.storage import outputs
from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.location import Location, as_location, describe_storage_error, names_object_storage
from segpipe.storage.manifest import file_sha256
from segpipe.storage.spill import spill

if TYPE_CHECKING:
    from segpipe.storage.outputs import OutputPlan

REPORT_NAME = "conversion_report.json"


@dataclass
class Conversion:
    """What the conversion engine runs: a request with its reader and writer options spelt out.

    Attributes:
        src: A COCO JSON file or a dataset folder.
        dst: The output folder (created; must be empty unless ``overwrite``).
        to: Target format name.
        from_: Source format name or ``auto``.
        category_map: A YAML/JSON category map file, or None.
        strict: Any loss (or missing image) is an error and nothing is written.
        copy_images: ``copy``, ``link`` or ``none``.
        overwrite: Replace an earlier ``convert``/``export`` output in ``dst`` (whole, atomically).
        on_error: ``fail`` stops at the first unreadable sample; ``skip`` reports it and goes on.
        shard_size: Images per task; None = automatic.
        image_root: Where the source's images are, if not beside the annotations.
        writer_options: Format-specific writer options.
        gt: For COCO results sources: the ground-truth COCO JSON that names their images.
        reader_options: Source-format options (e.g. ``{"min_score": 0.5}`` for a store).
        shown_dst: The destination as the report names it, when ``dst`` is a local folder the output
            is built in before it is uploaded (an export to object storage).
    """

    src: Path
    dst: Path
    to: str
    from_: str = "auto"
    category_map: Path | None = None
    strict: bool = False
    copy_images: str = "copy"
    overwrite: bool = False
    on_error: str = "fail"
    shard_size: int | None = None
    image_root: Path | None = None
    writer_options: dict[str, Any] = field(default_factory=dict)
    gt: Path | None = None
    reader_options: dict[str, Any] = field(default_factory=dict)
    shown_dst: str | None = None


def _layout(layout: str | None) -> dict[str, Any]:
    return {"layout": layout} if layout is not None else {}


def conversion_of(req: requests.ConvertRequest | requests.ExportRequest) -> Conversion:
    """The engine's job for a user's request (``export`` reads a store, and skips an image that fails its receipt).

    Args:
        req: A validated request.

    Returns:
        The :class:`Conversion` that carries it out.
    """
    if isinstance(req, requests.ExportRequest):
        return Conversion(
            src=req.store, dst=req.out, to=req.to, from_="segpipe_zarr", copy_images=req.images,
            overwrite=req.overwrite, on_error="skip", reader_options={"min_score": req.min_score},
            writer_options={**({"polygons": True} if req.polygons else {}), **_layout(req.layout)})
    writer = {
        **({"polygons": True, "polygon_tolerance": req.polygon_tolerance} if req.polygons else {}),
        **({"image_url_prefix": req.image_url_prefix} if req.image_url_prefix is not None else {}),
        **({"model_version": req.model_version} if req.model_version is not None else {}),
        **_layout(req.layout),
    }
    return Conversion(src=req.src, dst=req.out, to=req.to, from_=req.from_, category_map=req.categories,
                      strict=req.strict, copy_images=req.images, overwrite=req.overwrite, on_error=req.on_error,
                      shard_size=req.shard_size, image_root=req.image_root, gt=req.gt, writer_options=writer)


def load_category_map(path: Path) -> dict[str, Any]:
    """Reads and validates a category map file (YAML or JSON) against its typed model."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read category map: {e.strerror}", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start})",
                          path=path, hint="save the category map as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {str(e).splitlines()[0]}", path=path) from None
    except RecursionError:  # PyYAML composes recursively: deep nesting exhausts the stack
        raise ConfigError("not valid YAML: nested too deeply to read (refused)", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("a category map must be a mapping", path=path)
    try:
        CategoryMapSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(err["msg"], path=path, where=where) from None
    return data


def _open_reader(
    spec: Any, src: Path, image_root: Path | None, gt: Path | None = None, options: dict[str, Any] | None = None
) -> Any:
    if spec.reader is None:
        raise UnsupportedError(f"format {spec.name!r} cannot be read")
    params = inspect.signature(spec.reader).parameters
    kwargs: dict[str, Any] = {}
    if image_root is not None and "image_root" in params:
        kwargs["image_root"] = image_root
    if gt is not None:
        if "gt" not in params:
            raise UnsupportedError(f"--gt applies to COCO results sources, not {spec.name!r}")
        kwargs["gt"] = gt
    for k, v in (options or {}).items():
        if k not in params:
            raise UnsupportedError(f"option {k!r} does not apply to {spec.name!r} sources")
        kwargs[k] = v
    return spec.reader(src, **kwargs)


def source_changed(sample: Sample) -> str | None:
    """Why a pre-labeled image's file is no longer the one its labels were made from (None: it is).

    A prelabel store records each image's sha256 (receipt and stack attrs); an export that copies
    images takes whatever file is now at the recorded ``path``. A file edited or replaced since the run
    would be paired with the old labels, so its bytes are checked first. Samples of other sources, a
    volume slice (rendered, not copied) and a folder (a DICOM series) carry no file digest to check.

    Args:
        sample: The sample about to be copied (its ``image_path`` set).

    Returns:
        The message for that image, or None when unchanged or not checkable.
    """
    stated = sample.image.attributes.get("sha256")
    path = sample.image_path
    if getattr(sample, "check", None) is None or not isinstance(stated, str) or len(stated) != 64:
        return None
    if path is None or not Path(path).is_file():
        return None
    got = file_sha256(path)
    if got == stated.lower():
        return None
    return (f"the source image changed since it was pre-labeled (sha256 {stated[:12]}..., the file now has "
            f"{got[:12]}...): re-run prelabel --resume")


def _count_in(m: Materialized, names: dict[int, str], lc: LossCounter) -> None:
    if m.instances:
        for im in m.instances:
            lc.counts_in[names.get(im.instance.category_id, str(im.instance.category_id))] += 1
    elif m.panoptic is not None:
        for s in m.panoptic[1]:
            lc.counts_in[names.get(s.category_id, str(s.category_id))] += 1
    elif m.sample.instances:
        for inst in m.sample.instances:
            lc.counts_in[names.get(inst.category_id, str(inst.category_id))] += 1


def convert_shard(
    index: int,
    samples: list[Sample],
    src_format: str,
    src_meta: DatasetMeta,
    writer: Any,
    mapper: CategoryMapper | None,
    on_error: str,
    spill_dir: str,
    check_images: bool = False,
) -> ShardResult:
    """Worker task: materialize each sample, map categories, write, and spill the fragments.

    With ``check_images`` (images are copied into the output) every image file is verified first: a
    corrupt or truncated image is never copied silently; it fails under ``fail`` and is reported and
    skipped under ``skip``.

    Returns a small :class:`ShardResult` whose fragments live in a spill file.
    """
    spec = get_format(src_format)
    problems: list[Problem] = []
    pre = LossCounter()
    names = {c.id: c.name for c in src_meta.categories}

    def stream() -> Iterator[Materialized]:
        for s in samples:
            try:
                if check_images and s.image_path is not None:
                    why = check_image_file(s.image_path)
                    if why:
                        raise ImageDecodeError(why, path=s.image_path)
                    changed = source_changed(s)
                    if changed:
                        raise InputError(changed, path=s.image_path)
                # Before any mask is allocated at the recorded size: it must be within the pixel ceiling
                # and equal the image file's; after decoding, label values that are no category are a loss.
                check_recorded_size(s)
                m = check_class_map(spec.materialize(s, src_meta), src_meta, pre)
            except (SegpipeError, MemoryError, RecursionError) as exc:
                # A sample too large to hold (a recorded size far beyond its file) or nested too deeply
                # fails as that sample, named, like an unreadable one.
                e = describe_failure(exc, path=s.image.file_name) or SegpipeError(str(exc))
                if on_error == "fail":
                    if e is exc:
                        raise
                    e.where = f"image {s.image.id}"
                    raise e from None
                problems.append(Problem("error", s.image.file_name, f"image {s.image.id}", str(e), "unreadable"))
                continue
            if s.image_path is None:  # counted for the images converted; a failed one is reported as failed
                pre.missing_images.append(s.image.file_name)
            _count_in(m, names, pre)
            current[0] = s
            yield mapper.apply(m) if mapper is not None else m

    current: list[Any] = [None]  # the sample the writer holds: named when writing it runs out of memory
    try:
        result = writer.write_shard(index, stream())
    except (MemoryError, RecursionError) as exc:
        s = current[0]
        e = describe_failure(exc, path=s.image.file_name if s is not None else None)
        if e is None:  # pragma: no cover - both types always map
            raise
        e.where = f"image {s.image.id}" if s is not None else None
        raise e from None
    result.losses.merge(pre)
    result.problems.extend(problems)
    result.n_samples = len(samples)
    if result.fragments:
        result.fragments = spill(list(result.fragments), os.path.join(spill_dir, f"shard_{index:07d}.pkl"))
    return result


def _task_key(job: Conversion, index: int) -> str:
    h = hashlib.sha1(f"{job.src.resolve()}|{job.to}|{job.dst.resolve()}|{index}".encode()).hexdigest()[:16]
    return f"convert-{h}-{index}"


def _plan_dst(job: Conversion) -> OutputPlan:
    """Checks the destination before anything is read or written (see :mod:`segpipe.storage.outputs`).

    A store target is replaced only if it is a segpipe store; any other target only if it holds the
    marker of an earlier ``convert``/``export``, and then only with ``--overwrite``.

    Raises:
        OutputError: DST overlaps an input, or is something this command may not replace.
    """
    command = "export" if job.from_ == "segpipe_zarr" else "convert"
    inputs = [*outputs.dataset_inputs(job.src, job.image_root), job.image_root,
              *outputs.dataset_inputs(job.gt, job.image_root), job.category_map]
    return outputs.check_output(job.dst, inputs, option="DST",
                                command=command, kind="store" if job.to == "segpipe_zarr" else "folder",
                                replace=job.overwrite, flag="--overwrite", accept=("convert", "export"))


#: A conversion's rough in-process seconds per image (decode, draw, encode a ~1 MP image), for
#: ClusterSpec.sized: only picks in-process or the embedded cluster.
CONVERT_IMAGE_S = 0.02

Progress = Callable[[int, int, int], None]


def convert(
    req: requests.ConvertRequest | requests.ExportRequest | Conversion,
    cluster: ClusterSpec | None = None,
    progress: Progress | None = None,
    client: Any = None,
) -> ConversionReport:
    """Converts a dataset (``segpipe convert``) or exports a store (``segpipe export``).

    Args:
        req: What was asked (:class:`~segpipe.pipeline.requests.ConvertRequest` or
            :class:`~segpipe.pipeline.requests.ExportRequest`), or an engine job.
        cluster: Where to run (default: in-process for a small job, else the embedded cluster).
        progress: ``update(done, total, failed)`` in images.
        client: An existing Dask client to run on.

    Returns:
        The conversion report, also written to ``DST/conversion_report.json`` (the same JSON).

    Raises:
        LossError: ``strict`` and something would be lost (nothing is written).
        SegpipeError: unreadable input, unsupported pair, bad category map (nothing is written).
    """
    if isinstance(req, requests.ExportRequest):  # the store or DST may be in object storage
        return export(req, cluster, progress, client)
    job = req if isinstance(req, Conversion) else conversion_of(req)
    return run_conversion(job, cluster, progress, client)


def export(req: requests.ExportRequest, cluster: ClusterSpec | None = None, progress: Progress | None = None,
           client: Any = None) -> ConversionReport:
    """Exports a store's pre-labels (``segpipe export``); see :func:`convert`.

    A store in object storage is read there; an ``out`` in object storage (``s3://`` …) is checked
    first, built in a local temporary folder, then uploaded (:func:`~segpipe.storage.outputs.upload_folder`).
    """
    job = conversion_of(req)
    loc = as_location(req.out)
    if not isinstance(loc, Location):
        return run_conversion(job, cluster, progress, client)
    earlier = outputs.check_folder_location(loc, [req.store], option="DST", command="export", replace=job.overwrite,
                                            flag="--overwrite", accept=("convert", "export"))
    with tempfile.TemporaryDirectory(prefix="segpipe-export-") as tmp:
        local = Path(tmp) / "out"
        report = run_conversion(dataclasses.replace(job, dst=local, overwrite=False, shown_dst=str(loc)),
                                cluster, progress, client)
        try:
            outputs.upload_folder(local, loc, earlier)
        except Exception as e:  # obstore's errors: the bucket went away, access was revoked
            raise OutputError(f"DST: the upload failed: {describe_storage_error(e)}", path=str(loc)) from None
    return report


@dataclass
class _Source:
    """The opened source of a conversion and what its categories become."""

    format: str
    reader: Any
    meta: DatasetMeta
    mapper: CategoryMapper | None
    out_meta: DatasetMeta


def _open_source(job: Conversion) -> _Source:
    """Detects and opens the source and reads the category map (nothing is written yet)."""
    src_format = detect_format(job.src) if job.from_ == "auto" else job.from_
    src_spec = get_format(src_format)
    if src_spec.materialize is None:
        raise UnsupportedError(f"format {src_format!r} cannot be converted from")
    reader = _open_reader(src_spec, job.src, job.image_root, job.gt, job.reader_options)
    meta: DatasetMeta = reader.meta
    mapper = None
    if job.category_map is not None:
        spec = load_category_map(job.category_map)
        # New ids share the label maps with void: the source's void value (255 unless it says otherwise).
        mapper = CategoryMapper.build(spec, meta.categories, source=str(job.category_map),
                                      void_value=meta.void_value if meta.void_value is not None else 255)
    return _Source(src_format, reader, meta, mapper, mapper.map_meta(meta) if mapper else meta)


def run_conversion(job: Conversion, cluster: ClusterSpec | None = None, progress: Progress | None = None,
                   client: Any = None) -> ConversionReport:
    """Runs an engine job: the output is built whole in a staging folder beside DST and swapped in when complete.

    An earlier conversion stays until then, and nothing of it survives next to the new files.
    """
    t0 = time.perf_counter()
    dst_spec = get_format(job.to)
    if dst_spec.writer is None:
        raise UnsupportedError(f"format {job.to!r} cannot be written")
    plan = _plan_dst(job)
    source = _open_source(job)
    staging = outputs.begin_staging(plan)
    spill_dir = staging / ".spill"
    spill_dir.mkdir()
    try:
        writer = dst_spec.writer(staging, source.out_meta,
                                 WriteOptions(copy_images=job.copy_images, strict=job.strict,
                                              extra=dict(job.writer_options)))
        writer.prepare()
        n = len(source.reader)
        if client is None:  # a small conversion runs here rather than wait for a cluster to start
            cluster = (cluster or ClusterSpec()).sized(n * CONVERT_IMAGE_S, threads=1)
        cluster = cluster or ClusterSpec()
        size = job.shard_size or max(1, min(500, math.ceil(n / max(1, _workers(cluster) * 8))))
        n_shards = math.ceil(n / size) if n else 0
        results = _run_shards(job, source, writer, spill_dir, cluster, client, progress, n, size, n_shards)
        losses, problems = _tally(job, source.reader, results)
        writer.finalize(results)
        shutil.rmtree(spill_dir, ignore_errors=True)
        report = _report(job, source, losses, problems, n, n_shards, cluster, t0)
        # The same JSON as the dict it was built from: the model only types it.
        write_json_atomic(staging / REPORT_NAME, report)
    except BaseException as e:
        outputs.discard(staging)
        # A writer's error names its folder, the staging one, which is gone now: name DST instead.
        if isinstance(e, SegpipeError) and e.path is not None:
            where = Path(e.path)
            if where == staging or staging in where.parents:
                e.path = str(Path(plan.given) / where.relative_to(staging))
        raise
    outputs.install(staging, plan)
    return ConversionReport.model_validate(report)


def _workers(cluster: ClusterSpec) -> int:
    """Workers a plan sizes its shards for (an external scheduler's are not known here: 4)."""
    return cluster.n_workers() if cluster.scheduler is None else 4


def _run_shards(job: Conversion, source: _Source, writer: Any, spill_dir: Path, cluster: ClusterSpec, client: Any,
                progress: Progress | None, n: int, size: int, n_shards: int) -> list[ShardResult]:
    """Streams shards of ``size`` samples to the workers; returns their results in shard order."""
    workers = _workers(cluster)
    done_images = 0

    def on_progress(done: int, total: int, failed: int) -> None:
        if progress:
            progress(min(done_images, n), n, failed)

    tasks = (
        (_task_key(job, i), (i, shard, source.format, source.meta, writer, source.mapper, job.on_error,
                             str(spill_dir), job.copy_images != "none"))
        for i, shard in enumerate(chunked(source.reader.samples(), size))
    )
    results: list[ShardResult] = []
    with use_client(cluster, client) as c:
        for _, result in run_tasks(c, convert_shard, tasks, total=n_shards, max_in_flight=max(2, 2 * workers),
                                   progress=on_progress):
            done_images += result.n_samples
            on_progress(0, 0, 0)
            results.append(result)
    return sorted(results, key=lambda r: r.index)


def _tally(job: Conversion, reader: Any, results: list[ShardResult]) -> tuple[LossCounter, list[Problem]]:
    """Every loss and problem of the run: the reader's own (what it did not consume) and the shards'.

    Raises:
        LossError: ``strict`` and something was lost (the staging folder is discarded: nothing is written).
    """
    losses = LossCounter()
    # What the reader did not consume (files, keys, shapes without area: yolo, labelme) is a loss too.
    read_losses = getattr(reader, "losses", None)
    if isinstance(read_losses, LossCounter):
        losses.merge(read_losses)
    problems: list[Problem] = list(getattr(reader, "problems", []))
    for r in results:
        losses.merge(r.losses)
        problems.extend(r.problems)
    if job.strict and (not losses.lossless or losses.missing_images):
        totals = losses.totals()
        if losses.missing_images:
            totals["missing_images"] = len(set(losses.missing_images))
        summary = ", ".join(f"{k}={v}" for k, v in totals.items())
        raise LossError(f"conversion to {job.to} would lose information: {summary}; nothing was written",
                        path=job.src, hint="run without --strict to convert and see the report")
    return losses, problems


def _report(job: Conversion, source: _Source, losses: LossCounter, problems: list[Problem], n: int, n_shards: int,
            cluster: ClusterSpec, t0: float) -> dict[str, Any]:
    """The conversion report as written (``schemas/conversion_report.schema.json``)."""
    failed = sum(1 for p in problems if p.code == "unreadable")
    return {
        "segpipe_version": __version__,
        "source": {"path": names_object_storage(job.src) or str(job.src), "format": source.format,
                   "images": n, "categories": len(source.meta.categories)},
        "target": {"path": job.shown_dst or str(job.dst), "format": job.to,
                   "categories": len(source.out_meta.categories)},
        "category_map": str(job.category_map) if job.category_map else None,
        "images": {"total": n, "converted": n - failed, "failed": failed,
                   "missing_files": len(set(losses.missing_images))},
        "losses": losses.to_dict(),
        "repairs": [r.to_dict() if hasattr(r, "to_dict") else r for r in getattr(source.reader, "repairs", [])],
        "problems": [p.to_dict() for p in problems],
        "shards": n_shards,
        "workers": "in-process" if cluster.workers == 0 and not cluster.scheduler
        else (cluster.scheduler or _workers(cluster)),
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
