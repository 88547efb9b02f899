"""Validation of COCO datasets, COCO panoptic datasets and COCO results lists.

:func:`validate_coco` yields one :class:`Problem` per issue, naming the file and the JSON path, e.g.
``error: data.json: annotations[17].segmentation[0]: polygon needs >= 6 finite coordinates, got 4``.
It never raises on bad content; only a file that cannot be read or parsed at all raises
(:class:`InputError` / :class:`FormatError`). pycocotools only ever sees data that passed
:func:`check_polygon` / :func:`check_rle`.

Severities: errors make the dataset wrong for COCO tools (they crash or silently mis-read it);
warnings are suspicious but usable (a box off by more than :data:`BBOX_TOLERANCE` pixels from the mask,
polygon vertices more than a pixel outside the image, a missing image file).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.panoptic import rgb2id
from segpipe.core.problems import Problem
from segpipe.errors import FormatError, SegpipeError, UnsafePathError
from segpipe.formats.coco.convert import parse_category
from segpipe.formats.coco.reader import (
    _pick_root,
    find_files,
    image_root_candidates,
    stuff_object_problems,
    unread_task_files,
)
from segpipe.storage.images import read_rgb_png
from segpipe.storage.jsonio import read_json
from segpipe.storage.paths import check_relative_name, safe_join

#: Pixels of slack between a stated box and the mask's tight box before a warning.
BBOX_TOLERANCE = 2.0


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Collects problems for one JSON file."""

    def __init__(
        self, file: Path, image_root: str | Path | None, split: str | None, *, check_files: bool = True
    ):
        self.file = file
        self.image_root = image_root
        self.split = split
        self.check_files = check_files
        self.problems: list[Problem] = []
        self.images: dict[int, dict[str, Any]] = {}
        self.cats: dict[int, dict[str, Any]] = {}

    def err(self, where: str, message: str, code: str) -> None:
        self.problems.append(Problem("error", str(self.file), where, message, code))

    def warn(self, where: str, message: str, code: str) -> None:
        self.problems.append(Problem("warning", str(self.file), where, message, code))

    # ----------------------------------------------------------------------------- shared parts

    def categories(self, data: dict[str, Any]) -> None:
        cats = data.get("categories")
        if cats is None:
            self.err("$", "missing required key 'categories'", "categories.missing")
            return
        if not isinstance(cats, list):
            self.err("categories", "categories must be a list", "categories.type")
            return
        first: dict[int, int] = {}
        for i, c in enumerate(cats):
            w = f"categories[{i}]"
            if not isinstance(c, dict):
                self.err(w, "category must be an object", "category.type")
                continue
            cid = c.get("id")
            if not _is_int(cid):
                self.err(f"{w}.id", f"category id must be an integer, got {cid!r}", "category.id")
                continue
            if cid in first:
                self.err(
                    f"{w}.id",
                    f"duplicate category id {cid} (also categories[{first[cid]}])",
                    "category.duplicate_id",
                )
                continue
            first[cid] = i
            # The reader's own parser: a category validates exactly when convert accepts it, with the
            # same message (hex colours and a null supercategory are accepted by both).
            try:
                parse_category(c, source=self.file, where=w)
            except FormatError as e:
                field = (e.where or w)[len(w) + 1:]
                self.err(e.where or w, e.message, f"category.{field or 'invalid'}")
            self.cats[cid] = c

    def images_(self, data: dict[str, Any]) -> None:
        imgs = data.get("images")
        if not isinstance(imgs, list):
            self.err(
                "images" if imgs is not None else "$",
                "images must be a list" if imgs is not None else "missing required key 'images'",
                "images.missing",
            )
            return
        first: dict[int, int] = {}
        names: list[tuple[int, str]] = []
        for i, im in enumerate(imgs):
            w = f"images[{i}]"
            if not isinstance(im, dict):
                self.err(w, "image must be an object", "image.type")
                continue
            iid = im.get("id")
            if not _is_int(iid):
                self.err(f"{w}.id", f"image id must be an integer, got {iid!r}", "image.id")
                continue
            if iid in first:
                self.err(
                    f"{w}.id", f"duplicate image id {iid} (also images[{first[iid]}])", "image.duplicate_id"
                )
                continue
            first[iid] = i
            ok = True
            for key in ("width", "height"):
                v = im.get(key)
                if not _is_int(v):
                    self.err(f"{w}.{key}", f"{key} must be an integer, got {v!r}", "image.size")
                    ok = False
                elif v <= 0:
                    self.err(f"{w}.{key}", f"{key} must be positive, got {v}", "image.size")
                    ok = False
            name = im.get("file_name")
            try:
                # A non-string name is passed as "" so that it is refused as "empty or not a string".
                rel = check_relative_name(
                    name if isinstance(name, str) else "", source=self.file, where=f"{w}.file_name"
                )
                names.append((i, rel))
            except UnsafePathError as e:
                self.err(f"{w}.file_name", e.message, "image.unsafe_name")
            if ok:
                self.images[iid] = im
        if not self.check_files or not names:
            return
        root = _pick_root(
            image_root_candidates(self.file, self.split, self.image_root), [n for _, n in names]
        )
        for i, name in names:
            try:
                p = safe_join(root, name, source=self.file, where=f"images[{i}].file_name")
            except UnsafePathError as e:
                self.err(f"images[{i}].file_name", e.message, "image.unsafe_name")
                continue
            if not p.is_file():
                self.warn(
                    f"images[{i}].file_name",
                    f"image file not found: {name} (looked in {root})",
                    "image.missing",
                )

    # ----------------------------------------------------------------------------- annotations

    def segmentation(self, seg: Any, w: str, img: dict[str, Any] | None) -> Any:
        """Checks a segmentation; returns a validated RLE or polygon list for box checks, else None."""
        h = img.get("height") if img else None
        wd = img.get("width") if img else None
        if isinstance(seg, list):
            if not seg:
                return None
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seg):
                self.err(
                    w, "segmentation must be a list of polygons, got one flat list of numbers", "polygon.flat"
                )
                return None
            ok = True
            for j, poly in enumerate(seg):
                why = rle_ops.check_polygon(poly)
                if why:
                    code = (
                        "polygon.too_short"
                        if "needs >=" in why
                        else (
                            "polygon.odd_length"
                            if "even" in why
                            else ("polygon.out_of_range" if "out of range" in why else "polygon.invalid")
                        )
                    )
                    self.err(f"{w}[{j}]", why, code)
                    ok = False
                    continue
                if h is not None and wd is not None:
                    xs, ys = poly[0::2], poly[1::2]
                    if min(xs) < -1 or min(ys) < -1 or max(xs) > wd + 1 or max(ys) > h + 1:
                        self.warn(
                            f"{w}[{j}]",
                            f"polygon extends outside the {wd}x{h} image "
                            f"(x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g})",
                            "polygon.outside",
                        )
            return seg if ok else None
        if isinstance(seg, dict):
            why = rle_ops.check_rle(seg, h, wd)
            if why:
                code = (
                    "rle.size_mismatch"
                    if "differs from the image size" in why
                    else ("rle.bad_sum" if "sum to" in why else "rle.invalid")
                )
                self.err(w, why, code)
                return None
            return seg
        self.err(
            w,
            f"segmentation must be a list of polygons or an RLE object, got {type(seg).__name__}",
            "segmentation.type",
        )
        return None

    def bbox(self, b: Any, w: str, mask_box: tuple[float, float, float, float] | None) -> None:
        if not isinstance(b, list) or len(b) != 4 or not all(_is_num(v) for v in b):
            self.err(w, f"bbox must be 4 finite numbers [x, y, w, h], got {b!r}"[:200], "bbox.invalid")
            return
        if b[2] < 0 or b[3] < 0:
            self.err(w, f"bbox width and height must be >= 0, got {b[2]:g}x{b[3]:g}", "bbox.negative")
            return
        if b[2] == 0 or b[3] == 0:
            self.warn(w, f"bbox is empty ({b[2]:g}x{b[3]:g})", "bbox.empty")
        if mask_box is not None and mask_box[2] > 0:
            diff = max(abs(float(x) - y) for x, y in zip(b, mask_box, strict=True))
            if diff > BBOX_TOLERANCE:
                self.warn(
                    w,
                    f"bbox {[round(float(v), 2) for v in b]} differs from the mask's box "
                    f"{[round(v, 2) for v in mask_box]} by {diff:.1f} px",
                    "bbox.mismatch",
                )

    def keypoints(self, a: dict[str, Any], w: str) -> None:
        kps = a.get("keypoints")
        if kps is None:
            return
        if not isinstance(kps, list) or not all(_is_num(v) for v in kps):
            self.err(f"{w}.keypoints", "keypoints must be a list of finite numbers", "keypoints.invalid")
            return
        cat = self.cats.get(a.get("category_id"))  # type: ignore[arg-type]
        names = cat.get("keypoints") if cat else None
        if isinstance(names, list) and names and len(kps) != 3 * len(names):
            self.err(
                f"{w}.keypoints",
                f"keypoints has {len(kps)} values, expected 3 x {len(names)} = {3 * len(names)}",
                "keypoints.length",
            )
            return
        if len(kps) % 3:
            self.err(
                f"{w}.keypoints",
                f"keypoints length must be a multiple of 3, got {len(kps)}",
                "keypoints.length",
            )
            return
        vs = kps[2::3]
        for k, v in enumerate(vs):
            if v not in (0, 1, 2):
                self.err(
                    f"{w}.keypoints[{3 * k + 2}]",
                    f"visibility must be 0, 1 or 2, got {v!r}",
                    "keypoints.visibility",
                )
                return
        nk = a.get("num_keypoints")
        if nk is not None:
            labelled = sum(1 for v in vs if v > 0)
            if not _is_int(nk):
                self.err(
                    f"{w}.num_keypoints", f"num_keypoints must be an integer, got {nk!r}", "keypoints.num"
                )
            elif nk != labelled:
                self.warn(
                    f"{w}.num_keypoints",
                    f"num_keypoints is {nk}, but {labelled} keypoints are labelled",
                    "keypoints.num",
                )

    def annotation(self, a: Any, w: str, *, results: bool, know_images: bool) -> None:
        if not isinstance(a, dict):
            self.err(w, "annotation must be an object", "annotation.type")
            return
        img = self._references(a, w, know_images)
        mask_box = None
        if a.get("segmentation") is not None:
            checked = self.segmentation(a["segmentation"], f"{w}.segmentation", img)
            if isinstance(checked, dict):
                mask_box = rle_ops.to_bbox(checked)
            elif isinstance(checked, list):
                mask_box = rle_ops.polygons_bbox(checked)
        if a.get("bbox") is not None:
            self.bbox(a["bbox"], f"{w}.bbox", mask_box)
        if "area" in a and not (_is_num(a["area"]) and a["area"] >= 0):
            self.err(f"{w}.area", f"area must be a finite number >= 0, got {a['area']!r}", "annotation.area")
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            self.err(f"{w}.iscrowd", f"iscrowd must be 0 or 1, got {crowd!r}", "annotation.iscrowd")
        self.keypoints(a, w)
        if results:
            self._result_fields(a, w)

    def _references(self, a: dict[str, Any], w: str, know_images: bool) -> dict[str, Any] | None:
        """Checks an annotation's ``image_id`` and ``category_id``; returns its image when known."""
        iid = a.get("image_id")
        img = None
        if not _is_int(iid):
            self.err(f"{w}.image_id", f"image_id must be an integer, got {iid!r}", "annotation.image_id")
        elif know_images:
            img = self.images.get(iid)
            if img is None:
                self.err(f"{w}.image_id", f"image_id {iid} is not in images", "annotation.dangling_image")
        cid = a.get("category_id")
        if not _is_int(cid):
            self.err(
                f"{w}.category_id", f"category_id must be an integer, got {cid!r}", "annotation.category_id"
            )
        elif self.cats and cid not in self.cats:
            self.err(
                f"{w}.category_id", f"category_id {cid} is not in categories", "annotation.dangling_category"
            )
        return img

    def _result_fields(self, a: dict[str, Any], w: str) -> None:
        """A result's own fields: a finite score (a warning when missing) and some geometry."""
        s = a.get("score")
        if s is None:
            self.warn(w, "result has no score", "result.score")
        elif not _is_num(s):
            self.err(f"{w}.score", f"score must be a finite number, got {s!r}", "result.score")
        if all(a.get(k) is None for k in ("segmentation", "bbox", "keypoints")):
            self.err(w, "result has no segmentation, bbox or keypoints", "result.empty")

    def annotations(self, data: dict[str, Any]) -> None:
        anns = data.get("annotations")
        if anns is None:
            self.err("$", "missing required key 'annotations'", "annotations.missing")
            return
        if not isinstance(anns, list):
            self.err("annotations", "annotations must be a list", "annotations.type")
            return
        first: dict[int, int] = {}
        for i, a in enumerate(anns):
            w = f"annotations[{i}]"
            if isinstance(a, dict):
                aid = a.get("id")
                if not _is_int(aid):
                    self.err(f"{w}.id", f"annotation id must be an integer, got {aid!r}", "annotation.id")
                elif aid in first:
                    self.err(
                        f"{w}.id",
                        f"duplicate annotation id {aid} (also annotations[{first[aid]}])",
                        "annotation.duplicate_id",
                    )
                else:
                    first[aid] = i
            self.annotation(a, w, results=False, know_images=True)

    # ------------------------------------------------------------------------------------ panoptic

    def panoptic(self, data: dict[str, Any]) -> None:
        anns = data.get("annotations")
        if not isinstance(anns, list):
            self.err("annotations", "annotations must be a list", "annotations.type")
            return
        png_dir = self.file.with_suffix("")
        seen: dict[int, int] = {}
        for i, a in enumerate(anns):
            w = f"annotations[{i}]"
            if not isinstance(a, dict):
                self.err(w, "annotation must be an object", "annotation.type")
                continue
            iid = a.get("image_id")
            img = self.images.get(iid) if _is_int(iid) else None
            if img is None:
                self.err(f"{w}.image_id", f"image_id {iid!r} is not in images", "annotation.dangling_image")
            elif _is_int(iid) and iid in seen:
                self.err(
                    f"{w}.image_id",
                    f"image {iid} already has a panoptic annotation (annotations[{seen[iid]}])",
                    "panoptic.duplicate_image",
                )
                continue
            elif _is_int(iid):
                seen[iid] = i
            segs = a.get("segments_info")
            if not isinstance(segs, list):
                self.err(f"{w}.segments_info", "segments_info must be a list", "panoptic.segments")
                continue
            listed = self._panoptic_segments(segs, w)
            ids = self._panoptic_png(a, w, png_dir, img)
            if ids is None:
                continue
            self._panoptic_pixels(ids, listed, w)
        for iid in self.images:
            if iid not in seen:
                self.warn(
                    "annotations", f"image {iid} has no panoptic annotation", "panoptic.unannotated_image"
                )

    def _panoptic_segments(self, segs: list[Any], w: str) -> dict[int, tuple[int, dict[str, Any]]]:
        """Checks one annotation's ``segments_info``; returns ``{segment id: (index, segment)}`` of the
        segments with a valid, unique id.
        """
        listed: dict[int, tuple[int, dict[str, Any]]] = {}
        for j, s in enumerate(segs):
            sw = f"{w}.segments_info[{j}]"
            if not isinstance(s, dict) or not _is_int(s.get("id")):
                self.err(sw, "segment must be an object with an integer id", "panoptic.segment")
                continue
            sid = s["id"]
            if not 0 < sid < 256**3:
                self.err(f"{sw}.id", f"segment id must be in 1..{256**3 - 1}, got {sid}", "panoptic.segment_id")
                continue
            if sid in listed:
                self.err(f"{sw}.id", f"duplicate segment id {sid}", "panoptic.duplicate_segment")
                continue
            listed[sid] = (j, s)
            cid = s.get("category_id")
            if not _is_int(cid) or cid not in self.cats:
                self.err(
                    f"{sw}.category_id",
                    f"category_id {cid!r} is not in categories",
                    "annotation.dangling_category",
                )
            crowd = s.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, float):
                self.err(f"{sw}.iscrowd", f"iscrowd must be 0 or 1, got {crowd!r}", "annotation.iscrowd")
        return listed

    def _panoptic_png(self, a: dict[str, Any], w: str, png_dir: Path, img: dict[str, Any] | None) -> np.ndarray | None:
        """The ``(H, W)`` segment ids of an annotation's PNG; None (with the error) when its name is
        unsafe, or it is missing, unreadable or not the image's size.
        """
        name = a.get("file_name")
        try:
            png = safe_join(png_dir, name if isinstance(name, str) else "", source=self.file, where=f"{w}.file_name")
        except UnsafePathError as e:
            self.err(f"{w}.file_name", e.message, "panoptic.unsafe_name")
            return None
        if not png.is_file():
            self.err(
                f"{w}.file_name",
                f"panoptic PNG not found: {name} (looked in {png_dir})",
                "panoptic.png_missing",
            )
            return None
        try:
            ids = rgb2id(read_rgb_png(png))
        except SegpipeError as e:
            self.err(f"{w}.file_name", f"cannot read panoptic PNG: {e.message}", "panoptic.png_unreadable")
            return None
        if img is not None and ids.shape != (img["height"], img["width"]):
            self.err(
                f"{w}.file_name",
                f"panoptic PNG is {ids.shape[1]}x{ids.shape[0]}, image is {img['width']}x{img['height']}",
                "panoptic.size_mismatch",
            )
            return None
        return ids

    def _panoptic_pixels(
        self, ids: np.ndarray, listed: dict[int, tuple[int, dict[str, Any]]], w: str
    ) -> None:
        present, counts = np.unique(ids, return_counts=True)
        px = dict(zip(present.tolist(), counts.tolist(), strict=True))
        for sid, (j, s) in listed.items():
            sw = f"{w}.segments_info[{j}]"
            n = px.get(sid, 0)
            if n == 0:
                self.err(f"{sw}.id", f"segment id {sid} does not occur in the PNG", "panoptic.segment_absent")
                continue
            area = s.get("area")
            if area is not None and (not _is_num(area) or int(area) != n):
                self.warn(
                    f"{sw}.area",
                    f"area is {area!r}, the PNG has {n} pixels of segment {sid}",
                    "panoptic.area",
                )
            b = s.get("bbox")
            if b is not None:
                ys, xs = np.nonzero(ids == sid)
                box = (
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                )
                self.bbox(b, f"{sw}.bbox", box)
        for sid in sorted(px):
            if sid != 0 and sid not in listed:
                self.err(
                    f"{w}.segments_info",
                    f"PNG segment id {sid} ({px[sid]} pixels) is not listed",
                    "panoptic.segment_unlisted",
                )


def _validate_file(file: Path, split: str | None, image_root: str | Path | None) -> Iterator[Problem]:
    data = read_json(file)  # raises FormatError / InputError when the file cannot be parsed at all
    c = _Checker(file, image_root, split)
    if isinstance(data, list):
        for i, a in enumerate(data):
            c.annotation(a, f"[{i}]", results=True, know_images=False)
        return iter(c.problems)
    if not isinstance(data, dict):
        c.err(
            "$",
            f"top level must be a COCO object or a list of results, got {type(data).__name__}",
            "json.type",
        )
        return iter(c.problems)
    anns = data.get("annotations")
    is_panoptic = isinstance(anns, list) and any(isinstance(a, dict) and "segments_info" in a for a in anns)
    c.categories(data)
    c.images_(data)
    if is_panoptic:
        c.panoptic(data)
        c.problems.extend(stuff_object_problems(data, file))
    else:
        c.annotations(data)
    return iter(c.problems)


def validate_coco(
    path: str | Path, *, image_root: str | Path | None = None, kind: str | None = None
) -> Iterator[Problem]:
    """Checks a COCO dataset, panoptic dataset or results list (file or folder).

    Args:
        path: A JSON file, or a folder laid out as the readers accept.
        image_root: Folder holding the images, when not next to the JSON.
        kind: ``dataset``, ``panoptic`` or ``results``: the files the reader of that format reads (in a
            folder holding several COCO tasks); None tries panoptic, then dataset, then results.

    Yields:
        One problem per issue, naming the file and JSON path; a warning per task file the reader
        would not read (``coco.task_file_not_read``).

    Raises:
        InputError: the path does not exist or holds no COCO JSON.
        FormatError: a JSON file is not parseable JSON.
    """
    p = Path(path)
    if p.is_file():
        files: list[tuple[Path, str | None]] = [(p, None)]
    elif kind is not None:
        files = find_files(p, kind)
    else:
        files = []
        for k in ("panoptic", "dataset", "results"):
            try:
                files = find_files(p, k)
                break
            except SegpipeError:
                continue
        if not files:
            files = find_files(p, "dataset")  # raises the InputError with the layout hint
    for f in unread_task_files(p, files):
        yield Problem("warning", str(f), "", f"COCO task file not read (reading {', '.join(x.name for x, _ in files)})",
                      "coco.task_file_not_read")
    for file, split in files:
        yield from _validate_file(file, split, image_root)
