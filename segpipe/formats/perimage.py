"""What the per-image-file formats (``yolo``, ``labelme``) share: one label file per image, named by its stem.

* :func:`polygon_rle` — reading: an object's polygons rasterised at the image size, each checked first.
* :func:`check_unique_names` — name-keyed targets (CVAT, Label Studio, LabelMe) refuse two classes of one name.
* :func:`background_id` — the category of a label-map source that means "no object" (implicit in both).
* :func:`keep_instance` / :func:`kept_segments` — the objects a writer keeps, counting the ones it drops
  (unknown category, crowd) and what it drops of the ones it keeps (visible keypoints, scores).
* :func:`write_claimed` — writes a label file unless another image holds its name. Two images whose
  files share a stem cannot both have one (``image_name_collision``); the first image to claim the name
  keeps it. A claim
  records its image, so a shard that Dask runs again (its worker was killed) finds its own claims and
  writes its files again: only another image's claim is a collision, however often a shard runs.
  Claims live in :data:`CLAIMS` under the output until :func:`release_claims` (``finalize``).
* :func:`copy_image` — the image file beside its labels (copy, link or none; a missing one counted).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from hashlib import sha1
from pathlib import Path
from typing import Any

from segpipe.core import rle as rle_ops
from segpipe.core.losses import LossCounter
from segpipe.core.panoptic import panoptic_to_instances
from segpipe.core.records import Category, DatasetMeta, ImageInfo, Instance, InstanceMask, Materialized, Sample
from segpipe.errors import FormatError, UnsupportedError
from segpipe.storage.atomic import PARTIAL_SUFFIX, copy_or_link, source_exists
from segpipe.storage.paths import ensure_inside

#: The folder of claims under the output (removed by :func:`release_claims`).
CLAIMS = ".segpipe-claims"

#: ``lose(kind, n, category)``: counts a loss with the writer's note for ``kind``.
Lose = Callable[[str, int, str], None]


def polygon_rle(inst: Instance, polygons: Sequence[Sequence[float]], img: ImageInfo) -> rle_ops.RLE:
    """The RLE of an object's polygons (pycocotools, as COCO polygons) at the image's size.

    Raises:
        FormatError: a malformed polygon (named by the image file and the annotation id).
    """
    for poly in polygons:
        why = rle_ops.check_polygon(list(poly))
        if why:
            raise FormatError(why, path=img.file_name, where=f"annotation {inst.id}")
    return rle_ops.polygons_to_rle(polygons, img.height, img.width)


def materialize_shapes(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Worker side of the shape-based readers (CVAT, LabelMe, Label Studio): polygon objects rasterised
    with pycocotools as COCO polygons (:func:`polygon_rle`); masks and brushes are already RLE at the
    image size; boxes and keypoints have no mask.
    """
    img = sample.image
    out = []
    for inst in sample.instances:
        seg = inst.segmentation
        r = None
        if seg is not None and seg.kind == "polygons":
            r = polygon_rle(inst, seg.polygons or (), img)
        elif seg is not None:
            r = rle_ops.to_rle(seg, img.height, img.width)
        out.append(InstanceMask(inst, r))
    return Materialized(sample=sample, instances=tuple(out))


def check_unique_names(categories: Iterable[Category], target: str) -> None:
    """Refuses classes that share a name, for a target that tells classes apart by name only.

    CVAT labels, Label Studio labels and LabelMe shape labels are names: two classes of one name would merge
    into one class in the output with no count of it (COCO allows the same name under two ids).

    Args:
        categories: The classes the target writes.
        target: The format, for the message.

    Raises:
        UnsupportedError: naming both ids and the name (before anything is written).
    """
    first: dict[str, int] = {}
    for c in categories:
        if c.name in first:
            raise UnsupportedError(f"categories {first[c.name]} and {c.id} are both named {c.name!r}: {target} tells "
                                   "classes apart by name, so their objects would become one class",
                                   hint="rename one with --categories MAP.yaml")
        first[c.name] = c.id


def background_id(meta: DatasetMeta) -> int | None:
    """The category of a label-map source that means "no object" (implicit in YOLO and LabelMe)."""
    bg = meta.extra.get("background_id")
    ids = {c.id for c in meta.categories}
    if isinstance(bg, int) and bg in ids:
        return bg
    for c in meta.categories:
        if c.id == 0 and c.name.lower() in ("background", "_background_", "bg"):
            return 0
    return None


def keep_instance(inst: Instance, known: Container[int], names: Mapping[int, str], lose: Lose) -> bool:
    """Whether an object is written; counts ``unknown_category_dropped`` and ``crowd_dropped`` (not written),
    ``keypoints_dropped`` (visible keypoints) and ``scores_dropped`` (written without them).
    """
    name = names.get(inst.category_id, str(inst.category_id))
    if inst.category_id not in known:
        lose("unknown_category_dropped", 1, name)
        return False
    if inst.iscrowd:
        lose("crowd_dropped", 1, name)
        return False
    if inst.keypoints and any(v > 0 for v in inst.keypoints[2::3]):
        lose("keypoints_dropped", 1, name)
    if inst.score is not None:
        lose("scores_dropped", 1, name)
    return True


def kept_segments(m: Materialized, known: Container[int], names: Mapping[int, str],
                  lose: Lose) -> Iterator[tuple[int, Any, str]]:
    """``(category id, rle, name)`` of each panoptic segment written; counts unknown and crowd segments."""
    assert m.panoptic is not None
    id_map, segments = m.panoptic
    for seg, r in panoptic_to_instances(id_map, list(segments)):
        name = names.get(seg.category_id, str(seg.category_id))
        if seg.category_id not in known:
            lose("unknown_category_dropped", 1, name)
        elif seg.iscrowd:
            lose("crowd_dropped", 1, name)
        else:
            yield seg.category_id, r, name


def owner(m: Materialized) -> str:
    """What a claim records: the image (its id and file name in this conversion)."""
    return f"{m.sample.image.id}\n{m.sample.image.file_name}"


def _claim(out: Path, key: str, who: str) -> tuple[Path, bool] | None:
    """``(claim file, fresh)`` when ``key`` is ``who``'s (fresh: claimed just now); None when another's.

    The claim file appears whole or not at all (written aside, then linked), so a worker killed while
    claiming leaves no half claim.
    """
    folder = out / CLAIMS
    folder.mkdir(exist_ok=True)
    path = folder / sha1(key.encode("utf-8")).hexdigest()
    data = f"{key}\n{who}".encode()
    tmp = folder / f"{path.name}{PARTIAL_SUFFIX}.{os.getpid()}"
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
        return path, True
    except FileExistsError:
        return (path, False) if path.read_bytes() == data else None
    finally:
        tmp.unlink()


def write_claimed(out: Path, key: str, target: Path, data: bytes, who: str) -> bool:
    """Writes ``data`` to ``target`` (``key``: its name relative to ``out``) unless another image holds it.

    Returns:
        True when written: the first image to claim ``key``, or the same image again (a shard run twice
        rewrites its file whole). False on a collision: another image claimed ``key``, or ``target``
        exists under another name (a case-insensitive file system); nothing is written then.
    """
    got = _claim(out, key, who)
    if got is None:
        return False
    path, fresh = got
    if not fresh:  # this image's own earlier attempt, perhaps cut short: replaced whole
        tmp = f"{target}{PARTIAL_SUFFIX}.{os.getpid()}"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        return True
    try:
        # Exclusive create: a file another name reaches (``A.txt`` for ``a.txt``) is not replaced.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        path.unlink()  # not this image's: a re-run finds the same collision
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def release_claims(out: Path) -> None:
    """Removes the claims (``finalize``: every shard has written)."""
    shutil.rmtree(out / CLAIMS, ignore_errors=True)


def copy_image(out: Path, mode: str, src: str | None, dst_rel: str, rel: str, losses: LossCounter) -> None:
    """Copies or links (``mode``) the image ``src`` to ``out/dst_rel``; a missing source is counted as ``rel``."""
    if mode == "none":
        return
    if src is None or not source_exists(src):
        losses.missing_images.append(rel)
        return
    dst = ensure_inside(out, out / dst_rel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    copy_or_link(src, dst, mode)
