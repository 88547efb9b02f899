"""Writing CVAT for images 1.1 XML (what CVAT imports as "CVAT 1.1" and Datumaro's ``cvat`` importer reads).

Layout written::

    out/
      annotations.xml      <meta><task> without splits (CVAT's export_task); <meta><project> with one <task>
                           per split and each image's ``subset`` with splits (CVAT's export_project); images
                           without a split beside split ones form a task of subset ``default`` (read as no split)
      images/[<split>/]<file_name>    the images (copied or linked; ``--images none`` leaves them out)

Objects, in segpipe's z-order (each image's shapes get ``z_order`` = the objects' own ``z_order`` attributes when
they are all integers in order, else their position, so CVAT draws them as segpipe does):

* COCO polygons are written as ``<polygon>`` elements, vertex-exact (several parts share a ``group_id``).
* Any other mask is a ``<mask>`` with CVAT's RLE over its tight box (exact). With ``--polygons``
  (``WriteOptions.extra["polygons"]``) a mask without holes whose pixel-edge polygons rasterise back exactly
  is written as ``<polygon>`` elements instead; any other stays a ``<mask>`` (CVAT polygons hold no holes).
* A box-only object is a ``<box>``.
* Keypoints are a ``<skeleton>`` of ``<points>`` when the class names its keypoints (``outside`` for visibility
  0, ``occluded`` for 1), else one ``<points>`` of the visible keypoints. An object of several shapes (a mask
  and a skeleton) has them share a ``group_id``, which the ``cvat`` reader joins back into one object.
* ``occluded``, ``z_order``, ``group_id`` and ``source`` attributes are the shape's own fields; every other
  attribute is an ``<attribute>`` (true/false, numbers and text), declared on its label in the meta.
* Label-map (semantic) and panoptic sources: one ``<mask>`` per class (per segment), background implicit.

What CVAT XML cannot hold is counted (``--strict`` fails on it): ``crowd_dropped``, ``scores_dropped``,
``unknown_category_dropped``, ``empty_objects_dropped``, ``attributes_dropped`` (values that are lists or
mappings), ``invisible_points_dropped``, ``void_pixels_dropped``, ``semantic_pixels_dropped`` (label-map pixels
of an image that also has objects, not covered by any), ``image_name_collision`` (two images of one split with
one name: the later one is not written).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.core.contours import polygonize
from segpipe.core.losses import LossCounter
from segpipe.core.records import Category, DatasetMeta, Instance, Materialized
from segpipe.core.render import regions_from_class_map
from segpipe.formats import perimage
from segpipe.formats.base import ShardResult, WriteOptions
from segpipe.formats.cvat.layout import IMAGES_DIR
from segpipe.formats.cvat.reader import BUILTIN_ATTRS, LABELS_KEY
from segpipe.formats.cvat.shapes import encode_mask, format_number, format_points, skeleton_svg
from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.paths import check_relative_name, ensure_inside

ANNOTATIONS = "annotations.xml"
NO_SPLIT = ("", "default")
NOTES = {
    "crowd_dropped": "crowd regions have no CVAT form and are not written",
    "scores_dropped": "CVAT XML holds no confidence scores",
    "unknown_category_dropped": "objects whose category is not in the dataset's categories are not written",
    "empty_objects_dropped": "objects with an empty mask, no box and no keypoints hold nothing to write",
    "attributes_dropped": "attribute values that are lists or mappings have no CVAT form (CVAT attributes are text)",
    "invisible_points_dropped": "keypoints with visibility 0 of classes without keypoint names (a CVAT <points> "
    "holds no visibility)",
    "void_pixels_dropped": "void / ignore pixels of label maps are not written (they read back as unlabelled)",
    "semantic_pixels_dropped": "label-map pixels of images that also have objects, not covered by any object",
    "image_name_collision": "two images of one split share a name: the later one is not written",
}
#: Colours of classes that have none (CVAT's meta wants one per label).
_PALETTE = ((250, 50, 83), (51, 221, 255), (52, 209, 183), (255, 204, 51), (184, 61, 245), (36, 179, 83),
            (255, 106, 77), (102, 255, 102), (250, 250, 55), (61, 61, 245))


def _lose(losses: LossCounter, kind: str, n: int = 1, category: str = "") -> None:
    losses.lose(kind, n, category, NOTES[kind])


def _element(tag: str, fields: list[tuple[str, str]], attributes: list[tuple[str, str]], children: list[str],
             indent: str) -> str:
    head = f"{indent}<{tag}" + "".join(f" {k}={quoteattr(v)}" for k, v in fields)
    inner = [f"{indent}  <attribute name={quoteattr(k)}>{escape(v)}</attribute>" for k, v in attributes] + children
    if not inner:
        return head + f"></{tag}>"
    return head + ">\n" + "\n".join(inner) + f"\n{indent}</{tag}>"


def _attr_text(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return format_number(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))
    if isinstance(v, str):
        return v
    return None


def _is_set(v: Any) -> bool:
    return v is True or (isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0) or \
        (isinstance(v, str) and v.strip().lower() in ("1", "true", "yes"))


def _hex(c: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{int(v) & 255:02x}" for v in c)


class CvatWriter:
    """Writes CVAT for images 1.1 XML and the images (see the module docstring)."""

    format_name: ClassVar[str] = "cvat"

    def __init__(self, out: str | Path, meta: DatasetMeta, options: WriteOptions | None = None) -> None:
        self.out = Path(out)
        self.meta = meta
        self.options = options or WriteOptions()
        self.polygons = bool(self.options.extra.get("polygons"))
        self.background = perimage.background_id(meta)
        self.classes = [c for c in meta.categories if c.id != self.background]
        # CVAT, like segpipe's reader, also refuses a meta that lists a label twice.
        perimage.check_unique_names(self.classes, "CVAT")
        self.known = {c.id for c in self.classes}
        self.names = {c.id: c.name for c in meta.categories}
        self.keypoints = {c.id: c.keypoints for c in self.classes}

    def prepare(self) -> None:
        """Creates the output folder."""
        self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ objects

    def _parts(self, inst: Instance, r: Any, name: str, losses: LossCounter) -> list[tuple[str, list[tuple[str, str]],
                                                                                          list[str]]]:
        """``(tag, geometry fields, children)`` of each shape of one object."""
        parts: list[tuple[str, list[tuple[str, str]], list[str]]] = []
        seg = inst.segmentation
        if seg is not None and seg.kind == "polygons" and seg.polygons and \
                all(len(p) >= 6 and rle_ops.check_polygon(list(p)) is None for p in seg.polygons):
            parts += [("polygon", [("points", format_points(p))], []) for p in seg.polygons]
        elif r is not None and rle_ops.area(r) > 0:
            mask = rle_ops.decode(r).astype(bool)
            polys = None
            if self.polygons:
                res = polygonize(mask, holes="drop")
                polys = res.polygons if res.holes == 0 and res.exact and res.polygons else None
            if polys:
                parts += [("polygon", [("points", format_points(p))], []) for p in polys]
            else:
                text, left, top, w, h = encode_mask(mask)
                parts.append(("mask", [("rle", text), ("left", str(left)), ("top", str(top)), ("width", str(w)),
                                       ("height", str(h))], []))
        elif inst.bbox is not None and inst.bbox[2] > 0 and inst.bbox[3] > 0:
            bx, by, bw, bh = (float(v) for v in inst.bbox)
            parts.append(("box", [("xtl", format_number(bx)), ("ytl", format_number(by)),
                                  ("xbr", format_number(bx + bw)), ("ybr", format_number(by + bh))], []))
        kp = inst.keypoints
        if kp:
            names = self.keypoints.get(inst.category_id, ())
            if names and len(names) * 3 == len(kp):
                children = []
                for k, kname in enumerate(names):
                    x, y, v = kp[3 * k : 3 * k + 3]
                    fields = [("label", kname), ("source", "manual"), ("outside", "1" if v <= 0 else "0"),
                              ("occluded", "1" if 0 < v < 2 else "0"), ("points", format_points([x, y]))]
                    children.append(_element("points", fields, [], [], "      "))
                parts.append(("skeleton", [], children))
            else:
                vis = [kp[k : k + 2] for k in range(0, len(kp) - 2, 3) if kp[k + 2] > 0]
                _lose(losses, "invisible_points_dropped", (len(kp) // 3) - len(vis), name)
                if vis:
                    parts.append(("points", [("points", format_points([c for p in vis for c in p]))], []))
        return parts

    def _instance_xml(self, inst: Instance, r: Any, z: int, losses: LossCounter, next_group: Any,
                      declared: dict[str, set[str]]) -> list[str]:
        name = self.names.get(inst.category_id, str(inst.category_id))
        parts = self._parts(inst, r, name, losses)
        if not parts:
            _lose(losses, "empty_objects_dropped", 1, name)
            return []
        attrs = dict(inst.attributes)
        gid = attrs.get("group_id")
        group = int(gid) if isinstance(gid, int) and not isinstance(gid, bool) and gid > 0 else 0
        if len(parts) > 1 and not group:
            group = next_group()  # the reader joins the shapes of one group back into one object
        source = attrs.get("source") if isinstance(attrs.get("source"), str) else "manual"
        user: list[tuple[str, str]] = []
        dropped = 0
        for k, v in attrs.items():
            if k in BUILTIN_ATTRS:
                continue
            text = _attr_text(v)
            if text is None:
                dropped += 1
                continue
            user.append((str(k), text))
            declared.setdefault(name, set()).add(str(k))
        _lose(losses, "attributes_dropped", dropped, name)
        out = []
        for tag, geometry, children in parts:
            fields = [("label", name), ("source", str(source)), ("occluded", "1" if _is_set(attrs.get("occluded"))
                                                                              else "0")]
            fields += geometry
            fields.append(("z_order", str(z)))
            if group:
                fields.append(("group_id", str(group)))
            out.append(_element(tag, fields, user, children, "    "))
        return out

    def _z_orders(self, instances: list[Instance]) -> list[int]:
        zs = [i.attributes.get("z_order", 0) for i in instances]
        if all(isinstance(z, int) and not isinstance(z, bool) for z in zs) and \
                all(a <= b for a, b in zip(zs, zs[1:], strict=False)):
            return [int(z) for z in zs]
        return list(range(len(instances)))

    def _shapes(self, m: Materialized, losses: LossCounter, declared: dict[str, set[str]]) -> list[str]:
        """The shapes of one image in z-order; counts what is left out and the objects written."""
        gids = [g for im in m.instances for g in [im.instance.attributes.get("group_id")]
                if isinstance(g, int) and not isinstance(g, bool)]
        counter = [max(gids, default=0)]

        def next_group() -> int:
            counter[0] += 1
            return counter[0]

        if m.instances:
            return self._instance_shapes(m, losses, next_group, declared)
        out: list[str] = []
        for z, (cat, r, name) in enumerate(self._regions(m, losses)):
            inst = Instance(id=0, image_id=m.sample.image.id, category_id=cat)
            got = self._instance_xml(inst, r, z, losses, next_group, declared)
            if got:
                out += got
                losses.counts_out[name] += 1
        return out

    def _instance_shapes(self, m: Materialized, losses: LossCounter, next_group: Callable[[], int],
                         declared: dict[str, set[str]]) -> list[str]:
        """The shapes of an image's instances; label-map pixels no instance covers are counted as dropped."""
        lose = partial(_lose, losses)
        kept = []
        for im in m.instances:
            inst = im.instance
            name = self.names.get(inst.category_id, str(inst.category_id))
            if inst.category_id not in self.known:
                lose("unknown_category_dropped", 1, name)
            elif inst.iscrowd:
                lose("crowd_dropped", 1, name)
            else:
                if inst.score is not None:
                    lose("scores_dropped", 1, name)
                kept.append(im)
        zs = self._z_orders([im.instance for im in kept])
        cover = np.zeros((m.sample.image.height, m.sample.image.width), dtype=bool) \
            if m.class_map is not None else None
        out: list[str] = []
        for im, z in zip(kept, zs, strict=True):
            got = self._instance_xml(im.instance, im.rle, z, losses, next_group, declared)
            if got:
                out += got
                losses.counts_out[self.names.get(im.instance.category_id, "")] += 1
            if cover is not None and im.rle is not None:
                cover |= rle_ops.decode(im.rle).astype(bool)
        if cover is not None:
            cm = np.asarray(m.class_map)
            bg = self.background if self.background is not None else 0
            lose("semantic_pixels_dropped", int(np.count_nonzero((cm != m.void_value) & (cm != bg) & ~cover)))
        return out

    def _regions(self, m: Materialized, losses: LossCounter) -> list[tuple[int, Any, str]]:
        """``(category id, RLE, name)`` of the masks of an image without instances: its panoptic segments,
        else one per class of its label map.
        """
        lose = partial(_lose, losses)
        regions: list[tuple[int, Any, str]] = []
        if m.panoptic is not None:
            regions = list(perimage.kept_segments(m, self.known, self.names, lose))
        elif m.class_map is not None:
            cm = np.asarray(m.class_map)
            bg = self.background if self.background is not None else 0
            lose("void_pixels_dropped", int(np.count_nonzero(cm == m.void_value)))
            for cat, r in regions_from_class_map(cm, void_value=m.void_value, background=bg):
                name = self.names.get(int(cat), str(cat))
                if int(cat) not in self.known:
                    lose("unknown_category_dropped", 1, name)
                else:
                    regions.append((int(cat), r, name))
            losses.notes.setdefault("semantic_classes_as_masks", "label maps were written as one <mask> per class")
        return regions

    # ------------------------------------------------------------------ files

    def write_shard(self, index: int, samples: Iterable[Materialized]) -> ShardResult:
        """Copies one shard's images; returns each image's ``<image>`` body as a fragment for :meth:`finalize`."""
        res = ShardResult(index)
        losses = res.losses
        for m in samples:
            res.n_samples += 1
            img = m.sample.image
            rel = check_relative_name(img.file_name or f"{img.id}.png", where="file_name")
            split = img.split if img.split and img.split not in NO_SPLIT else None
            sub = f"{IMAGES_DIR}/{check_relative_name(split, where='split')}/{rel}" if split else f"{IMAGES_DIR}/{rel}"
            # One image per name and split: a claim (an empty file under the claims folder) settles which image
            # is written when two share one; a re-run shard meets its own claims (see segpipe.formats.perimage).
            digest = hashlib.sha1(sub.encode("utf-8")).hexdigest()
            marker = ensure_inside(self.out, self.out / perimage.CLAIMS / f"img-{digest}")
            marker.parent.mkdir(parents=True, exist_ok=True)
            if not perimage.write_claimed(self.out, sub, marker, perimage.owner(m).encode(), perimage.owner(m)):
                _lose(losses, "image_name_collision")
                continue
            counted = LossCounter()
            declared: dict[str, set[str]] = {}
            body = self._shapes(m, counted, declared)
            losses.merge(counted)
            perimage.copy_image(self.out, self.options.copy_images, m.sample.image_path, sub, rel, losses)
            res.fragments.append({"split": split, "name": rel, "width": int(img.width), "height": int(img.height),
                                  "body": body, "attributes": {k: sorted(v) for k, v in declared.items()}})
        return res

    def _label_xml(self, c: Category, k: int, declared: dict[str, set[str]], specs: dict[str, Any]) -> list[str]:
        spec = specs.get(c.name) if isinstance(specs.get(c.name), dict) else {}
        assert isinstance(spec, dict)
        color = _hex(c.color) if c.color is not None else _hex(_PALETTE[k % len(_PALETTE)])
        kind = "skeleton" if c.keypoints else str(spec.get("type") or "any")
        if kind == "skeleton" and not c.keypoints:
            kind = "any"
        attrs = [a for a in spec.get("attributes", []) if isinstance(a, dict) and a.get("name")]
        have = {a["name"] for a in attrs}
        attrs += [{"name": n, "mutable": "False", "input_type": "text", "default_value": "", "values": ""}
                  for n in sorted(declared.get(c.name, set()) - have)]
        lines = ["      <label>", f"        <name>{escape(c.name)}</name>", f"        <color>{color}</color>",
                 f"        <type>{escape(kind)}</type>"]
        if attrs:
            lines.append("        <attributes>")
            for a in attrs:
                lines.append("          <attribute>")
                for key in ("name", "mutable", "input_type", "default_value", "values"):
                    lines.append(f"            <{key}>{escape(str(a.get(key, '')))}</{key}>")
                lines.append("          </attribute>")
            lines.append("        </attributes>")
        else:
            lines.append("        <attributes></attributes>")
        if c.keypoints:
            lines.append(f"        <svg>{escape(skeleton_svg(c.keypoints, c.skeleton))}</svg>")
        lines.append("      </label>")
        for kname in c.keypoints:  # CVAT lists a skeleton's points as labels of their own, naming their parent
            lines += ["      <label>", f"        <name>{escape(kname)}</name>", f"        <color>{color}</color>",
                      "        <type>points</type>", "        <attributes></attributes>",
                      f"        <parent>{escape(c.name)}</parent>", "      </label>"]
        return lines

    def finalize(self, results: Iterable[ShardResult]) -> list[Path]:
        """Writes ``annotations.xml`` from the fragments, in shard order."""
        frags = [f for r in results for f in r.fragments]
        perimage.release_claims(self.out)
        declared: dict[str, set[str]] = {}
        for f in frags:
            for k, v in f["attributes"].items():
                declared.setdefault(k, set()).update(v)
        splits: list[str] = []
        for f in frags:
            if f["split"] is not None and f["split"] not in splits:
                splits.append(f["split"])
        project = bool(splits)
        owner = "project" if project else "task"
        # Images without a split beside split ones: a task of their own, under Datumaro's "default" (read back as
        # no split); without it they would be left out of a project's XML.
        order: list[str | None] = list(splits) + ([None] if any(f["split"] is None for f in frags) else []) \
            if project else [None]
        subset_names = [s if s is not None else NO_SPLIT[1] for s in order]
        specs = self.meta.extra.get(LABELS_KEY)
        specs = specs if isinstance(specs, dict) else {}
        lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>",
                 f"    <{owner}>", "      <id>0</id>", "      <name>segpipe</name>", f"      <size>{len(frags)}</size>",
                 "      <mode>annotation</mode>", "      <overlap>0</overlap>"]
        if project:
            lines.append("      <tasks>")
            for k, (s, sname) in enumerate(zip(order, subset_names, strict=True)):
                n = sum(1 for f in frags if f["split"] == s)
                lines += ["        <task>", f"          <id>{k}</id>", f"          <name>{escape(sname)}</name>",
                          f"          <size>{n}</size>", "          <mode>annotation</mode>",
                          f"          <subset>{escape(sname)}</subset>", "          <start_frame>0</start_frame>",
                          f"          <stop_frame>{max(0, n - 1)}</stop_frame>", "        </task>"]
            lines.append("      </tasks>")
            lines.append(f"      <subsets>{escape(chr(10).join(subset_names))}</subsets>")
        else:
            lines += ["      <start_frame>0</start_frame>", f"      <stop_frame>{max(0, len(frags) - 1)}</stop_frame>",
                      "      <z_order>True</z_order>"]
        lines.append("      <labels>")
        for k, c in enumerate(self.classes):
            lines += ["  " + ln for ln in self._label_xml(c, k, declared, specs)]
        lines += ["      </labels>", f"    </{owner}>", "  </meta>"]
        for task_id, (subset, sname) in enumerate(zip(order, subset_names, strict=True)):
            frame = 0
            for f in frags:
                if f["split"] != subset and project:
                    continue
                fields = [("id", str(frame)), ("name", f["name"])]
                if project:
                    fields += [("subset", sname), ("task_id", str(task_id))]
                fields += [("width", str(f["width"])), ("height", str(f["height"]))]
                head = "  <image" + "".join(f" {k}={quoteattr(v)}" for k, v in fields)
                lines.append(head + (">\n" + "\n".join(f["body"]) + "\n  </image>" if f["body"] else "></image>"))
                frame += 1
            if not project:
                break
        lines.append("</annotations>")
        path = ensure_inside(self.out, self.out / ANNOTATIONS)
        write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return [path]
