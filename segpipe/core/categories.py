"""Category maps: rename, merge, drop and re-id classes, applied to metadata and to samples.

A category map is a small YAML/JSON document (its JSON Schema is ``schemas/category_map.schema.json``)::

    rename: {person: pedestrian}          # old name -> new name
    merge: {vehicle: [car, truck, bus]}   # new name <- several old names
    drop: [traffic light]                 # removed; their pixels become void in label maps
    ids: {pedestrian: 1, vehicle: 2}      # new ids (by new name); others keep their ids
    unlisted: keep                        # keep | drop: what happens to classes not named anywhere

Steps apply in the order drop → merge → rename → ids. A merged class takes the id, supercategory and
colour of its first member unless ``ids`` says otherwise. Original ids are kept unless the map
changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from segpipe.core.records import Category, DatasetMeta, InstanceMask, Materialized, PanopticSegment
from segpipe.errors import ConfigError

#: Largest category id a label map can hold: uint16, whose maximum (65535) is void. A larger id once
#: wrapped silently (70000 became 4464).
MAX_ID = 65534


def _known(by_name: Mapping[str, Category], name: Any, field: str, source: str) -> Category:
    """The source category named ``name``; a ConfigError naming ``field`` when there is none."""
    if not isinstance(name, str) or name not in by_name:
        raise ConfigError(f"unknown class {name!r}; known: {', '.join(sorted(by_name))}", path=source, where=field)
    return by_name[name]


def _new_names(
    spec: Mapping[str, Any], by_name: Mapping[str, Category], drop: set[int], source: str
) -> tuple[dict[int, str], dict[str, Category]]:
    """The ``merge`` and ``rename`` steps: ``({old id: new name}, {merged name: its first member})``.

    Raises:
        ConfigError: an empty merge, an unknown name, a class both dropped and merged or both merged
            and renamed.
    """
    new_name: dict[int, str] = {}
    merged_first: dict[str, Category] = {}
    for target, members in (spec.get("merge") or {}).items():
        if not isinstance(members, list) or not members:
            raise ConfigError("must be a non-empty list of class names", path=source, where=f"merge.{target}")
        for i, n in enumerate(members):
            c = _known(by_name, n, f"merge.{target}[{i}]", source)
            if c.id in drop:
                raise ConfigError(f"class {n!r} is both dropped and merged", path=source, where=f"merge.{target}")
            new_name[c.id] = str(target)
            merged_first.setdefault(str(target), c)
    for old, new in (spec.get("rename") or {}).items():
        c = _known(by_name, old, f"rename.{old}", source)
        if c.id in new_name:
            raise ConfigError(f"class {old!r} is both merged and renamed", path=source, where=f"rename.{old}")
        new_name[c.id] = str(new)
    return new_name, merged_first


def _new_id(name: str, new_id: Any, from_map: bool, source: str, void_value: int) -> int:
    """Checks the id class ``name`` gets: a non-negative integer; when the map sets it, one that fits
    the label maps and is not their void value.

    Raises:
        ConfigError: naming ``ids.<name>``.
    """
    if not isinstance(new_id, int) or isinstance(new_id, bool) or new_id < 0:
        raise ConfigError(f"id must be a non-negative integer, got {new_id!r}", path=source, where=f"ids.{name}")
    if from_map:
        if new_id > MAX_ID:
            raise ConfigError(f"{new_id} does not fit the uint8/uint16 label maps (ids 0..{MAX_ID}; "
                              "65535 is void)", path=source, where=f"ids.{name}")
        if new_id == void_value:
            raise ConfigError(f"{new_id} is the void value of the label maps: the class's pixels would "
                              "be written as void", path=source, where=f"ids.{name}", hint="choose another id")
    return new_id


def _check_unique_ids(categories: Iterable[Category], source: str) -> None:
    """Refuses two resulting classes with one id (a ConfigError naming ``ids``)."""
    seen: dict[int, str] = {}
    for cat in categories:
        if cat.id in seen:
            raise ConfigError(
                f"classes {seen[cat.id]!r} and {cat.name!r} would share id {cat.id}", path=source, where="ids"
            )
        seen[cat.id] = cat.name


@dataclass(frozen=True)
class CategoryMapper:
    """A resolved category map: old id → new id (or None for dropped).

    Attributes:
        id_map: ``{old_id: new_id | None}`` for every source category.
        categories: The resulting categories, in order.
    """

    id_map: Mapping[int, int | None]
    categories: tuple[Category, ...]

    @staticmethod
    def build(spec: Mapping[str, Any], categories: Sequence[Category], *, source: str = "",
              void_value: int = 255) -> CategoryMapper:
        """Resolves ``spec`` (see the module docstring) against ``categories``.

        Args:
            spec: The category map.
            categories: The source's categories.
            source: The map file, named in every error.
            void_value: The void value of the label maps the ids are written into (the source's,
                255 by default): a new id equal to it would turn the class into void, silently.

        Raises:
            ConfigError: unknown class names, a name both dropped and merged, duplicate resulting
                names or ids, an id outside ``0..MAX_ID`` or equal to ``void_value`` — naming the spec
                file and field.
        """
        by_name = {c.name: c for c in categories}
        allowed = {"rename", "merge", "drop", "ids", "unlisted"}
        extra = set(spec) - allowed
        if extra:
            raise ConfigError(f"unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}", path=source)
        drop = {_known(by_name, n, f"drop[{i}]", source).id for i, n in enumerate(spec.get("drop") or [])}
        unlisted = spec.get("unlisted", "keep")
        if unlisted not in ("keep", "drop"):
            raise ConfigError("must be 'keep' or 'drop'", path=source, where="unlisted")
        new_name, merged_first = _new_names(spec, by_name, drop, source)
        named = set(new_name) | drop
        id_map: dict[int, int | None] = {}
        out: dict[str, Category] = {}
        ids_spec = {str(k): v for k, v in (spec.get("ids") or {}).items()}
        for c in categories:
            if c.id in drop or (unlisted == "drop" and c.id not in named):
                id_map[c.id] = None
                continue
            name = new_name.get(c.id, c.name)
            if name in out:  # a merge member after the first
                id_map[c.id] = out[name].id
                continue
            base = merged_first.get(name, c)
            new_id = _new_id(name, ids_spec.get(name, base.id), name in ids_spec, source, void_value)
            out[name] = replace(base, id=new_id, name=name)
            id_map[c.id] = new_id
        for name in ids_spec:
            if name not in out:
                raise ConfigError(f"no resulting class named {name!r}", path=source, where=f"ids.{name}")
        _check_unique_ids(out.values(), source)
        return CategoryMapper(id_map, tuple(out.values()))

    def map_meta(self, meta: DatasetMeta) -> DatasetMeta:
        """The metadata with the resulting categories."""
        return replace(meta, categories=self.categories)

    def lut(self, size: int, void_value: int) -> np.ndarray:
        """A lookup table ``(size,)`` mapping label-map values; dropped classes → ``void_value``."""
        table = np.arange(size, dtype=np.int64)
        for old, new in self.id_map.items():
            if 0 <= old < size:
                table[old] = void_value if new is None else new
        return table

    def apply(self, m: Materialized) -> Materialized:
        """Maps a materialized sample: instances re-labelled or removed, label maps re-valued."""
        instances: list[InstanceMask] = []
        for im in m.instances:
            new = self.id_map.get(im.instance.category_id, im.instance.category_id)
            if new is None:
                continue
            instances.append(InstanceMask(replace(im.instance, category_id=new), im.rle))
        sample = m.sample.with_instances(tuple(im.instance for im in instances))
        class_map = m.class_map
        if class_map is not None:
            size = max(int(class_map.max()) + 1 if class_map.size else 1, m.void_value + 1)
            mapped = self.lut(size, m.void_value)[class_map]
            dtype = np.uint8 if int(mapped.max(initial=0)) <= 255 else np.uint16
            class_map = mapped.astype(dtype)
        panoptic = m.panoptic
        if panoptic is not None:
            id_map, segments = panoptic
            kept: list[PanopticSegment] = []
            dropped: list[int] = []
            for s in segments:
                new = self.id_map.get(s.category_id, s.category_id)
                if new is None:
                    dropped.append(s.id)
                else:
                    kept.append(replace(s, category_id=new))
            if dropped:
                id_map = np.where(np.isin(id_map, dropped), 0, id_map)
            panoptic = (id_map, kept)
        return replace(m, sample=sample, instances=tuple(instances), class_map=class_map, panoptic=panoptic)
