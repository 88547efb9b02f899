"""The segpipe Zarr store as a source format: ``segpipe export`` and ``segpipe evaluate`` read stores
through the same reader → materialize path as every other format, so exports are sharded on Dask and
report their losses like any conversion.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.problems import Problem
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    InstanceMask,
    Materialized,
    PanopticSegment,
    Sample,
    Segmentation,
)
from segpipe.errors import FormatError, InputError, SegpipeError
from segpipe.formats.base import FormatSpec, ShardResult, WriteOptions
from segpipe.formats.derive import derive_class_map
from segpipe.formats.registry import register_format
from segpipe.storage.ledger import ObjectLedger
from segpipe.storage.location import Location, as_location
from segpipe.storage.stacks import STACKS, shard_key
from segpipe.storage.verify import (
    ImageCheck,
    StoreChecks,
    check_metadata,
    describe_failure,
    plan_checks,
    plan_object_checks,
    shard_file,
)
from segpipe.storage.verify import matches as _matches
from segpipe.storage.verify import verify_array as _verify_array
from segpipe.storage.volume import parse_window, slice_image_name, slice_ref
from segpipe.storage.zarrstore import READABLE_LAYOUTS, ZarrStore, digest_matches


def detect(path: Path) -> bool:
    """A folder with ``zarr.json`` whose attributes carry a segpipe layout."""
    if not (path.is_dir() and (path / "zarr.json").exists()):
        return False

    try:
        doc = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError) as e:
        # A folder with zarr.json is meant as a store: name the file, not "cannot tell the format".
        raise FormatError(f"not valid JSON ({e})", path=path / "zarr.json") from None
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else {}
    return isinstance(attrs, dict) and "segpipe" in attrs


def categories_from_attrs(cats: list[dict[str, Any]]) -> tuple[Category, ...]:
    """Categories as the store records them."""
    return tuple(
        Category(
            id=int(c["id"]), name=str(c["name"]), supercategory=str(c.get("supercategory", "")),
            isthing=bool(c.get("isthing", True)), color=tuple(c["color"]) if c.get("color") else None,  # type: ignore[arg-type]
            keypoints=tuple(c.get("keypoints", ())),
            skeleton=tuple(tuple(p) for p in c.get("skeleton", ())),  # type: ignore[misc]
        )
        for c in cats
    )


@dataclass(frozen=True, slots=True)
class StoreSample(Sample):
    """A sample of a store with what its receipt promises (:func:`materialize` verifies it).

    Attributes:
        check: The image's check (None for a store without receipts, e.g. one ``convert`` wrote).
        doubt: The doubt its receipt records, or None.
    """

    check: ImageCheck | None = None
    doubt: dict[str, Any] | None = None

    @property
    def size_measured(self) -> bool:
        """A prelabel store records the size of the image its worker decoded (receipts vouch for it)."""
        return self.check is not None


class StoreReader:
    """Streams the images of a store as samples (no pixel data read on the driver).

    A store made by ``segpipe prelabel`` lists every image that has a receipt, a stack slot or a
    group; each sample carries its :class:`~segpipe.storage.verify.ImageCheck`, so that an image whose
    outputs are missing, unwritten or damaged fails alone (a per-image problem) instead of reading
    as background.
    """

    format_name = "segpipe_zarr"

    def __init__(self, path: str | Path, *, min_score: float = 0.0) -> None:
        if not isinstance(as_location(path), Location):
            check_metadata(Path(path))  # a corrupt zarr.json of the root or a stack: one line naming it
        self.store = ZarrStore.open(path)
        attrs = self.store.attrs()
        cats = [dict(c) for c in attrs.get("categories", [])]
        if attrs.get("task") == "landmarks" and attrs.get("keypoints") and cats and not cats[0].get("keypoints"):
            # A landmark model's keypoint names belong to its (first) category, as in COCO keypoints.
            cats[0]["keypoints"] = list(attrs["keypoints"])
        self.meta = DatasetMeta(
            format="segpipe_zarr",
            categories=categories_from_attrs(cats),
            info={"description": "segpipe pre-labels", "model": attrs.get("model"), "run": attrs.get("run")},
            void_value=255,
            # The token names this reading: workers keep one store handle (and its index of stacked
            # images) per token, not one per image, and never reuse one across readings.
            extra={"task": attrs.get("task"), "min_score": min_score, "store": str(self.store.target),
                   "store_token": uuid.uuid4().hex},
        )
        self.problems: list[Problem] = []
        # Receipts vouch for a prelabel run's outputs; a store written by `convert` has none.
        self.checks: StoreChecks | None = None
        if attrs.get("config_hash") and self.store.location is not None:
            ledger = self.store.ledger()
            assert isinstance(ledger, ObjectLedger)  # a store in object storage keeps its receipts there
            # attrs: the slot's attributes name the image's masks (swapped ones would misname them)
            self.checks = plan_object_checks(self.store.location, ledger.read_all(), attrs=True)
            self._ids = sorted(self.checks.images)
            self.problems.extend(Problem("error", f, "receipt", why, "store.receipt")
                                 for f, why in self.checks.unreadable)
        elif attrs.get("config_hash"):
            self.checks = plan_checks(self.store.path, self.store.private / "ledger", attrs=True)
            self._ids = sorted(self.checks.images)
            self.problems.extend(Problem("error", f, "receipt", why, "store.receipt")
                                 for f, why in self.checks.unreadable)
        else:
            try:
                self._ids = self.store.image_ids()
            except Exception as e:  # a damaged stack: name its file
                raise _read_error(_root(self.store) / "stacks", e) from None
        window = (attrs.get("config") or {}).get("window")
        try:
            self._window = parse_window(window) if isinstance(window, str) else None
        except SegpipeError:  # only slice images depend on it: they then use the volume's own window
            self._window = None

    def __len__(self) -> int:
        return len(self._ids)

    def samples(self) -> Iterator[Sample]:
        """Streams one sample per stored image, sorted by id."""
        for image_id in self._ids:
            check = self.checks.images.get(image_id) if self.checks is not None else None
            if check is not None and check.problem:
                yield self._failed(image_id, check)
                continue
            try:
                g = self.store.group(image_id, check.hint if check is not None else None)
                a = dict(g.attrs)
            except Exception as e:  # damaged attributes fail this image alone, named
                p, why = _failure(_root(self.store), image_id, check, "attrs", e)
                yield self._failed(image_id, ImageCheck(f"attributes: {why}", str(p)))
                continue
            name = str(a.get("file", f"{image_id}.png"))
            path = a.get("path")
            image_path = path if path and Path(path).exists() else None
            if "volume" in a and "z" in a:
                # A slice of a volume has no file of its own: exports name it <volume>_z<z>.png and, when
                # asked to copy images, render it from the volume with the run's window.
                name = slice_image_name(str(a["volume"]), int(a["z"]))
                src = a.get("source") or path
                image_path = slice_ref(src, int(a["z"]), self._window) if src and Path(src).exists() else None
            yield StoreSample(
                image=ImageInfo(image_id, name, int(a.get("width", 0)), int(a.get("height", 0)),
                                attributes={"sha256": a.get("sha256", ""), "file": a.get("file")}),
                image_path=image_path,
                check=check,
                doubt=(self.checks.doubt.get(image_id) if self.checks is not None else None) or a.get("doubt"),
            )

    def _failed(self, image_id: int, check: ImageCheck) -> StoreSample:
        """A sample that :func:`materialize` fails with ``check.problem`` (named from its receipt)."""
        info = self.checks.info.get(image_id, {}) if self.checks is not None else {}
        w, h = info.get("width"), info.get("height")
        return StoreSample(
            image=ImageInfo(image_id, str(info.get("file") or f"{image_id}.png"),
                            int(w) if isinstance(w, int) else 0, int(h) if isinstance(h, int) else 0,
                            attributes={"sha256": info.get("sha256") or "", "file": info.get("file")}),
            check=check,
        )


def _short(exc: BaseException, limit: int = 80) -> str:
    """``Type: message`` of an exception, cut to ``limit`` characters (zarr's may quote raw bytes)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root(store: ZarrStore) -> Path | _Url:
    """Where a store's files are named from: its folder, or its URL (object storage)."""
    return _Url(str(store.location)) if store.location is not None else store.path


class _Url(str):
    """A store's URL, joined with ``/`` as a :class:`~pathlib.Path` is (names objects in messages)."""

    def __truediv__(self, key: str) -> _Url:
        return _Url(f"{self}/{key}")


def _read_error(path: Path | _Url, exc: BaseException) -> InputError:
    """An :class:`InputError` naming the file behind a failed read below ``path``."""
    if isinstance(path, _Url):
        return InputError(f"cannot be read ({_short(exc)})", path=str(path))
    p, why = describe_failure(path, exc)
    return InputError(why, path=p)


def _failure(root: Path | _Url, image_id: int, check: ImageCheck | None, name: str,
             exc: BaseException) -> tuple[Path | str, str]:
    """The file behind a failed read of array ``name`` of an image, and why."""
    if isinstance(root, _Url):  # object storage: no files to inspect, the array (or shard object) is named
        if check is not None and check.hint is not None:
            where = root / (shard_key(*check.hint, name) if name in ("labels", "probs")
                            else f"{STACKS}/{check.hint[0]}/{name or 'attrs'}")
        else:
            where = root / "images" / str(image_id) / name if name and name != "attrs" \
                else root / "images" / str(image_id)
        return str(where), f"cannot be read ({_short(exc)})"
    if check is not None and check.hint is not None:
        stack, slot = check.hint
        if name in ("labels", "probs"):
            p = shard_file(root, stack, slot, name)
            return p, ("the shard file is missing" if not p.exists() else f"damaged shard file ({_short(exc)})")
        return describe_failure(root / "stacks" / stack / name, exc)
    folder = root / "images" / str(image_id)
    return describe_failure(folder / name if (folder / name).is_dir() else folder, exc)


class _Outputs:
    """One image's arrays as read by :func:`materialize`, each checked against its receipt's digest.

    Args:
        store: The store.
        image_id: The image.
        check: What its receipt promises (None: nothing to verify).
    """

    def __init__(self, store: ZarrStore, image_id: int, check: ImageCheck | None) -> None:
        self.store, self.image_id, self.check = store, image_id, check
        if check is not None and check.problem:
            raise InputError(check.problem, path=check.path)
        try:
            self.group = store.group(image_id, check.hint if check is not None else None)
            self.names = set(self.group.array_keys())
            self.groups = set(self.group.group_keys())
            self.attrs = dict(self.group.attrs)
        except Exception as e:
            p, why = _failure(_root(store), image_id, check, "", e)
            raise InputError(why, path=p) from None

    def read(self, name: str) -> np.ndarray:
        """Array ``name`` (``labels``, ``instances/rle`` ...) read whole and verified.

        Raises:
            InputError: It cannot be read, or differs from what its receipt recorded (a missing chunk
                reads as fill value: background).
        """
        try:
            node = self.group
            for part in name.split("/"):
                node = node[part]
            arr = np.asarray(node[...])
        except Exception as e:
            p, why = _failure(_root(self.store), self.image_id, self.check, name, e)
            raise InputError(f"{name}: {why}", path=p) from None
        if self.check is None:
            return arr
        digest = self.check.digests.get(name)
        if digest and not _matches(arr, digest):  # the file is named (a path built) only on a mismatch
            where = self._file(name)
            if isinstance(where, _Url):  # object storage: no file to look for
                raise InputError(f"{name}: does not match its receipt (a missing or damaged object; not read as "
                                 "background)", path=str(where))
            _verify_array(arr, digest, where, name)
        if name == "labels" and self.check.windows:
            self._verify_blocks(arr)
        return arr

    def _file(self, name: str) -> Path | _Url:
        root = _root(self.store)
        if self.check is not None and self.check.hint is not None:
            if isinstance(root, _Url):
                return root / shard_key(*self.check.hint, name)
            return shard_file(root, *self.check.hint, name)
        return root / "images" / str(self.image_id) / name

    def _verify_blocks(self, labels: np.ndarray) -> None:
        """Each finished block of a scene against its receipt (a block's digest covers its core)."""
        for (y0, y1, x0, x1), digest in self.check.windows if self.check is not None else ():
            if digest and not digest_matches(labels[y0:y1, x0:x1], digest):
                folder = str(self._file("labels"))
                raise InputError(f"labels of block [{y0}:{y1}, {x0}:{x1}] do not match its receipt: a missing or "
                                 "damaged chunk (not read as background)", path=folder)


@functools.lru_cache(maxsize=4)
def _store(path: str, token: str | None) -> ZarrStore:
    return ZarrStore(path)


def materialize(sample: Sample, meta: DatasetMeta) -> Materialized:
    """Reads one image's predictions (worker side)."""
    token = meta.extra.get("store_token")
    store = _store(meta.extra["store"], token) if token else ZarrStore(meta.extra["store"])
    out = _Outputs(store, sample.image.id, getattr(sample, "check", None))
    names, groups = out.names, out.groups
    class_map = out.read("labels") if "labels" in names else None
    panoptic = None
    if "panoptic" in names:
        segs = [PanopticSegment(int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", False)),
                                s.get("area"), attributes={"score": s.get("score")} if "score" in s else {})
                for s in out.attrs.get("segments", [])]
        panoptic = (out.read("panoptic").astype(np.int32), segs)
    instances: list[InstanceMask] = []
    if "instances" in groups:
        try:
            has_rle = "rle" in out.group["instances"].array_keys()
        except Exception as e:
            raise _read_error(_root(store) / "images" / str(sample.image.id) / "instances", e) from None
        rles = out.read("instances/rle") if has_rle else np.array([], dtype=str)
        boxes = out.read("instances/boxes")
        scores = out.read("instances/scores")
        labels = out.read("instances/labels")
        min_score = float(meta.extra.get("min_score", 0.0))
        h, w = sample.image.height, sample.image.width
        for k in range(len(scores)):
            if scores[k] < min_score:
                continue
            r = {"size": [h, w], "counts": str(rles[k])} if len(rles) > k and str(rles[k]) else None
            inst = Instance(
                id=k + 1, image_id=sample.image.id, category_id=int(labels[k]),
                segmentation=Segmentation.from_rle(r) if r else None,
                bbox=tuple(float(v) for v in boxes[k]),  # type: ignore[arg-type]
                area=float(rle_ops.area(r)) if r else float(boxes[k][2] * boxes[k][3]),
                score=float(scores[k]),
            )
            instances.append(InstanceMask(inst, r))
    if "keypoints" in names:
        instances.extend(_keypoint_instances(out.read("keypoints"), sample.image.id, meta))
    sample = sample.with_instances(tuple(im.instance for im in instances))
    # A scene records the label value written where it had no data (65535 for uint16 label maps).
    geo = out.attrs.get("geo")
    void = int(geo["nodata"]) if isinstance(geo, dict) and geo.get("nodata") is not None else 255
    confidence = _class_scores(out, class_map) if class_map is not None and "probs" in names else {}
    return Materialized(sample, tuple(instances), class_map=class_map, panoptic=panoptic, void_value=void,
                        class_scores=confidence, doubt=getattr(sample, "doubt", None) or out.attrs.get("doubt"))


#: Largest ``probs`` array (C x H x W bytes) read for class scores: a scene's would not fit in memory.
MAX_SCORE_PROBS = 1 << 28


def _class_scores(out: _Outputs, class_map: np.ndarray) -> dict[int, float]:
    """``{label value: mean over its pixels of the highest class probability}`` (empty for too large an image).

    The label map is the argmax of the probabilities, so this is the mean confidence of each class's pixels:
    a semantic pre-label's per-region score, which annotators sort tasks by.
    """
    node = out.group["probs"]
    if int(np.prod(node.shape)) > MAX_SCORE_PROBS:
        return {}
    maxp = out.read("probs").max(axis=0).astype(np.float64) / 255.0  # quantised: p ~= value / 255
    labels = np.asarray(class_map).ravel().astype(np.int64)
    counts = np.bincount(labels)
    sums = np.bincount(labels, weights=maxp.ravel(), minlength=counts.size)
    return {int(v): float(sums[v] / counts[v]) for v in np.flatnonzero(counts)}


def _keypoint_instances(kps: np.ndarray, image_id: int, meta: DatasetMeta) -> list[InstanceMask]:
    """Landmark predictions ``(N, K, 3)`` (x, y, confidence) → keypoint detections.

    Each row is one detection of the store's keypoint category (the first category that names
    keypoints, else the first category): keypoints flat ``(x, y, 2, ...)`` (every landmark is
    located), score = mean confidence, box = the keypoints' extent, as COCO keypoint results are.
    """
    if kps.ndim != 3 or kps.shape[-1] != 3 or not len(meta.categories):
        return []
    cat = next((c for c in meta.categories if c.keypoints), meta.categories[0])
    out: list[InstanceMask] = []
    for n, row in enumerate(kps.astype(np.float64)):
        xs, ys, conf = row[:, 0], row[:, 1], row[:, 2]
        x0, y0 = float(xs.min()), float(ys.min())
        w, h = float(xs.max()) - x0, float(ys.max()) - y0
        flat = np.stack([xs, ys, np.full_like(xs, 2.0)], 1).ravel()
        inst = Instance(
            id=n + 1, image_id=image_id, category_id=cat.id, bbox=(x0, y0, w, h), area=w * h,
            score=float(np.mean(conf)), keypoints=tuple(float(v) for v in flat), num_keypoints=len(xs),
        )
        out.append(InstanceMask(inst, None))
    return out


def validate_store(path: str | Path) -> Iterator[Problem]:
    """Structural checks of a segpipe store: layout, categories, each image's arrays and attributes.

    Receipts and checksums are checked by ``segpipe fsck``; this reports one problem per bad field.
    """
    p = Path(path)
    root_meta = p / "zarr.json"
    try:
        attrs = json.loads(root_meta.read_text(encoding="utf-8")).get("attributes", {}).get("segpipe")
    except (OSError, ValueError) as e:
        yield Problem("error", str(root_meta), "", f"cannot read the store's root metadata: {e}", "store.root")
        return
    if not isinstance(attrs, dict) or attrs.get("layout") not in READABLE_LAYOUTS:
        yield Problem("error", str(root_meta), "attributes.segpipe.layout",
                      f"not a segpipe store of layout {' or '.join(map(str, READABLE_LAYOUTS))}", "store.layout")
        return
    cat_ids = {int(c["id"]) for c in attrs.get("categories", []) if isinstance(c, dict) and "id" in c}
    void = attrs.get("void_value", 255)
    store = ZarrStore(p)
    for image_id, g in store.iter_groups():
        where = f"images/{image_id}"
        a = dict(g.attrs)
        for key in ("width", "height"):
            if not isinstance(a.get(key), int) or a[key] <= 0:
                yield Problem("error", str(p), f"{where}.attrs.{key}", f"missing or invalid {key}", "store.size")
        names = set(g.array_keys())
        if "labels" in names:
            arr = g["labels"]
            if tuple(arr.shape) != (a.get("height"), a.get("width")):
                yield Problem("error", str(p), f"{where}/labels", f"shape {tuple(arr.shape)} differs from the "
                              f"image size {a.get('height')}x{a.get('width')}", "store.shape")
            elif cat_ids and arr.shape[0] * arr.shape[1] <= 64 * 2**20:
                values = set(np.unique(np.asarray(arr[...])).tolist()) - cat_ids - {0, void}
                if values:
                    yield Problem("error", str(p), f"{where}/labels", f"values {sorted(values)[:10]} are not "
                                  "category ids", "store.values")


class StoreWriter:
    """Writes any dataset into a segpipe store (e.g. ground truth decoded once for repeated evaluation).

    Label maps hold category ids (as the pre-labeling writes them); instances keep their scores
    (1.0 for ground truth); panoptic maps keep their segments.
    """

    format_name = "segpipe_zarr"

    def __init__(self, out: Path, meta: DatasetMeta, options: WriteOptions) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options

    def prepare(self) -> None:
        """Creates the store with the categories."""
        cats = [{"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": c.isthing,
                 "color": list(c.color) if c.color else None, "keypoints": list(c.keypoints)}
                for c in self.meta.categories]
        ZarrStore.create(self.out, {"task": "dataset", "categories": cats, "source_format": self.meta.format,
                                    "labels": "category id per pixel", "void_value": self.meta.void_value})

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Writes each sample's class map, instances and panoptic map into its own group (worker)."""
        result = ShardResult(index)
        store = ZarrStore(self.out)
        names = {c.id: c.name for c in self.meta.categories}
        for m in samples:
            img = m.sample.image
            g = store.image_group(img.id, {"id": img.id, "file": img.file_name, "width": img.width,
                                           "height": img.height, "path": m.sample.image_path})
            class_map, losses = derive_class_map(m, self.meta)
            result.losses.merge(losses)
            if class_map is not None:
                store.write_array(g, "labels", np.asarray(class_map))
            if m.panoptic is not None:
                ids, segments = m.panoptic
                store.write_array(g, "panoptic", np.asarray(ids, dtype=np.int32))
                g.attrs["segments"] = [{"id": s.id, "category_id": s.category_id, "iscrowd": s.iscrowd,
                                        "area": s.area} for s in segments]
            if m.instances:
                ig = g.require_group("instances")
                rles = [im.rle["counts"] if im.rle else "" for im in m.instances]
                boxes = np.array([im.instance.bbox or (0, 0, 0, 0) for im in m.instances], dtype=np.float32)
                scores = np.array([1.0 if im.instance.score is None else im.instance.score for im in m.instances],
                                  dtype=np.float32)
                labels = np.array([im.instance.category_id for im in m.instances], dtype=np.int32)
                store.write_array(ig, "rle", np.array(rles, dtype=str))
                store.write_array(ig, "boxes", boxes.reshape(-1, 4))
                store.write_array(ig, "scores", scores)
                store.write_array(ig, "labels", labels)
                for im in m.instances:
                    result.losses.counts_out[names.get(im.instance.category_id, str(im.instance.category_id))] += 1
                crowd = sum(im.instance.iscrowd for im in m.instances)
                result.losses.lose("crowd_flag_dropped", crowd, note="the store keeps no crowd flag: crowd regions "
                                   "become ordinary instances")
                kp = sum(im.instance.keypoints is not None for im in m.instances)
                result.losses.lose("keypoints_dropped", kp, note="instance keypoints are not stored")
            result.n_samples += 1
        return result

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Nothing to index: each image's group is complete."""
        for _ in results:
            pass
        return [self.out]


register_format(
    FormatSpec(
        name="segpipe_zarr",
        description="segpipe Zarr store: pre-labels (`segpipe prelabel`) or any dataset decoded once",
        detect=detect,
        reader=StoreReader,
        materialize=materialize,
        writer=StoreWriter,
        validate=validate_store,
        holds=frozenset({"instances", "boxes", "semantic", "panoptic", "scores", "keypoints", "overlaps"}),
    )
)
