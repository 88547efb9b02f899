"""``--classes``: class names (and colours, ids, thing/stuff) for any model, from a file or a named table.

Forms of ``--classes``:

* ``labelmap.txt`` (any ``.txt``): a Datumaro/CVAT label map, one ``name[:r,g,b]`` per line in class
  order (:func:`segpipe.core.labelmap.parse_labelmap_txt`); a file of bare names is one too.
* ``names.yaml`` / ``.yml`` / ``.json``: a list of names (``[background, cat, dog]``); a mapping from
  class index to name (``{0: background, 1: cat}``, YOLO's form); either under a ``names:`` key; or a
  list of mappings ``{name, color: [r, g, b], id, isthing}`` (``id`` is the category id stored in label
  maps and exports; it defaults to the class index).
* ``VOC``, ``COCO``, ``Cityscapes`` (any case): the dataset's classes, in the order models trained on it
  use. A table has one variant per class count, and the model's count picks it: VOC 21 (background
  first) or 20; COCO 80 (things, official ids 1..90), 81 (background + 80), 91 (torchvision's
  detection indices, index = COCO id; the 11 unused indices are named ``N/A <index>``) or 133 (COCO
  panoptic: 80 things + 53 stuff, official ids); Cityscapes 19 (the train ids, official colours).

Class ``i`` of the model gets entry ``i``. The number of entries must equal the model's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segpipe.core.labelmap import VOC_CLASSES, parse_labelmap_txt, voc_colormap
from segpipe.errors import ConfigError, SegpipeError

OPTION = "--classes"

#: COCO's 80 thing classes with their official category ids (instances_*.json of COCO 2017).
COCO_THINGS: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)

#: COCO panoptic's 53 stuff classes with their official ids (panoptic_coco_categories.json).
COCO_STUFF: tuple[tuple[int, str], ...] = (
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"), (107, "counter"), (109, "curtain"),
    (112, "door-stuff"), (118, "floor-wood"), (119, "flower"), (122, "fruit"), (125, "gravel"), (128, "house"),
    (130, "light"), (133, "mirror-stuff"), (138, "net"), (141, "pillow"), (144, "platform"),
    (145, "playingfield"), (147, "railroad"), (148, "river"), (149, "road"), (151, "roof"), (154, "sand"),
    (155, "sea"), (156, "shelf"), (159, "snow"), (161, "stairs"), (166, "tent"), (168, "towel"),
    (171, "wall-brick"), (175, "wall-stone"), (176, "wall-tile"), (177, "wall-wood"), (178, "water-other"),
    (180, "window-blind"), (181, "window-other"), (184, "tree-merged"), (185, "fence-merged"),
    (186, "ceiling-merged"), (187, "sky-other-merged"), (188, "cabinet-merged"), (189, "table-merged"),
    (190, "floor-other-merged"), (191, "pavement-merged"), (192, "mountain-merged"), (193, "grass-merged"),
    (194, "dirt-merged"), (195, "paper-merged"), (196, "food-other-merged"), (197, "building-other-merged"),
    (198, "rock-merged"), (199, "wall-other-merged"), (200, "rug-merged"),
)

#: The 19 Cityscapes classes models are trained on, by train id: name, official colour, has instances
#: (cityscapesScripts' ``labels.py``; tests check it against :mod:`segpipe.formats.cityscapes.labels`).
CITYSCAPES_TRAIN: tuple[tuple[str, tuple[int, int, int], bool], ...] = (
    ("road", (128, 64, 128), False), ("sidewalk", (244, 35, 232), False), ("building", (70, 70, 70), False),
    ("wall", (102, 102, 156), False), ("fence", (190, 153, 153), False), ("pole", (153, 153, 153), False),
    ("traffic light", (250, 170, 30), False), ("traffic sign", (220, 220, 0), False),
    ("vegetation", (107, 142, 35), False), ("terrain", (152, 251, 152), False), ("sky", (70, 130, 180), False),
    ("person", (220, 20, 60), True), ("rider", (255, 0, 0), True), ("car", (0, 0, 142), True),
    ("truck", (0, 0, 70), True), ("bus", (0, 60, 100), True), ("train", (0, 80, 100), True),
    ("motorcycle", (0, 0, 230), True), ("bicycle", (119, 11, 32), True),
)


def _cat(index: int, name: str, *, id: int | None = None, color: Any = None, isthing: bool = True) -> dict[str, Any]:
    return {"index": index, "id": index if id is None else id, "name": name,
            "color": list(color) if color is not None else None, "isthing": isthing}


def _voc(n: int) -> list[dict[str, Any]]:
    cmap = voc_colormap(len(VOC_CLASSES))
    rows = list(enumerate(VOC_CLASSES)) if n == 21 else list(enumerate(VOC_CLASSES))[1:]
    return [_cat(i, name, id=vid, color=[int(v) for v in cmap[vid]], isthing=vid > 0)
            for i, (vid, name) in enumerate(rows)]


def _coco(n: int) -> list[dict[str, Any]]:
    if n == 80:
        return [_cat(i, name, id=cid) for i, (cid, name) in enumerate(COCO_THINGS)]
    if n == 81:
        return [_cat(0, "background", isthing=False),
                *(_cat(i + 1, name, id=cid) for i, (cid, name) in enumerate(COCO_THINGS))]
    if n == 91:
        names = dict(COCO_THINGS)
        return [_cat(0, "background", isthing=False),
                *(_cat(i, names.get(i, f"N/A {i}"), isthing=i in names) for i in range(1, 91))]
    return [*(_cat(i, name, id=cid) for i, (cid, name) in enumerate(COCO_THINGS)),
            *(_cat(80 + i, name, id=cid, isthing=False) for i, (cid, name) in enumerate(COCO_STUFF))]


def _cityscapes(n: int) -> list[dict[str, Any]]:
    return [_cat(i, name, color=color, isthing=thing) for i, (name, color, thing) in enumerate(CITYSCAPES_TRAIN)]


#: Named tables: lower-case name → (class counts it has a variant for, builder of that variant).
TABLES: dict[str, tuple[tuple[int, ...], Any]] = {
    "voc": ((21, 20), _voc),
    "coco": ((80, 81, 91, 133), _coco),
    "cityscapes": ((19,), _cityscapes),
}


def is_table(spec: str) -> bool:
    """Whether ``spec`` names a built-in table (and no file of that name exists)."""
    return spec.lower() in TABLES and not Path(spec).exists()


def table_counts(spec: str) -> tuple[int, ...]:
    """The class counts a named table has variants for (empty for a file)."""
    return TABLES[spec.lower()][0] if is_table(spec) else ()


def read_class_file(spec: str) -> list[dict[str, Any]]:
    """The categories a ``--classes`` file lists, in class order.

    Raises:
        ConfigError: the file is missing, unreadable, malformed, or repeats a name; one line naming the
            file and the entry.
    """
    path = Path(spec)
    if not path.is_file():
        known = ", ".join(t.upper() if t != "cityscapes" else "Cityscapes" for t in TABLES)
        raise ConfigError(f"{OPTION} {spec}: no such file, and not a named table ({known})")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {OPTION} file: {e}", path=path) from None
    if suffix == ".txt":
        try:
            entries = parse_labelmap_txt(text, source=path)
        except SegpipeError as e:
            raise ConfigError(e.message, path=path, where=e.where) from None
        cats = [_cat(i, e.name, color=e.color) for i, e in enumerate(entries)]
    elif suffix in (".yaml", ".yml", ".json"):
        cats = _from_document(_load_yaml(text, path), path)
    else:
        raise ConfigError(f"{OPTION} takes a labelmap .txt, a .yaml/.json of names, or VOC, COCO, Cityscapes",
                          path=path)
    if not cats:
        raise ConfigError("lists no classes", path=path)
    seen: dict[str, int] = {}
    for c in cats:
        if c["name"] in seen:
            raise ConfigError(f"{c['name']!r} repeats the name of class {seen[c['name']]}", path=path,
                              where=f"class {c['index']}")
        seen[c["name"]] = c["index"]
    return cats


def _load_yaml(text: str, path: Path) -> Any:
    import yaml  # lazy: pyyaml is only needed for a --classes YAML file

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise ConfigError(f"not valid YAML/JSON: {getattr(e, 'problem', None) or e}", path=path, where=where) from None


def _from_document(doc: Any, path: Path) -> list[dict[str, Any]]:
    """Categories of a YAML/JSON document (see the module docstring for the forms)."""
    if isinstance(doc, dict) and "names" in doc:
        doc = doc["names"]
    if isinstance(doc, dict):
        try:
            keys = sorted(int(k) for k in doc)
        except (TypeError, ValueError):
            raise ConfigError("a mapping of classes needs integer keys (class index: name)", path=path) from None
        if keys != list(range(len(keys))):
            raise ConfigError(f"class indices must be 0..{len(keys) - 1} without gaps", path=path)
        by_int = {int(k): v for k, v in doc.items()}
        doc = [by_int[i] for i in keys]
    if not isinstance(doc, list):
        raise ConfigError(f"expected a list of class names, got {type(doc).__name__}", path=path)
    return [_entry(i, item, path) for i, item in enumerate(doc)]


def _entry(i: int, item: Any, path: Path) -> dict[str, Any]:
    where = f"[{i}]"
    if isinstance(item, (str, int, float)) and not isinstance(item, bool) and str(item).strip():
        return _cat(i, str(item).strip())
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise ConfigError("needs a class name (a string, or a mapping with name:)", path=path, where=where)
    cid = item.get("id", i)
    if type(cid) is not int or not 0 <= cid <= 65534:
        raise ConfigError(f"{cid!r} is not a category id in 0..65534", path=path, where=f"{where}.id")
    color = item.get("color")
    if color is not None and not (isinstance(color, list) and len(color) == 3
                                  and all(type(v) is int and 0 <= v <= 255 for v in color)):
        raise ConfigError(f"{color!r} is not [r, g, b] with values 0..255", path=path, where=f"{where}.color")
    isthing = item.get("isthing", True)
    if not isinstance(isthing, bool):
        raise ConfigError(f"{isthing!r} is not true or false", path=path, where=f"{where}.isthing")
    return _cat(i, item["name"].strip(), id=cid, color=color, isthing=isthing)


def file_count(spec: str) -> int | None:
    """How many classes a ``--classes`` file lists (None for a named table: its variants differ)."""
    return None if is_table(spec) else len(read_class_file(spec))


def resolve_classes(spec: str, num_classes: int) -> list[dict[str, Any]]:
    """The categories ``--classes SPEC`` gives a model of ``num_classes`` classes.

    Raises:
        ConfigError: an unreadable or malformed file, or a count that is not the model's (one line
            naming the option or the file).
    """
    if is_table(spec):
        counts, build = TABLES[spec.lower()]
        if num_classes not in counts:
            raise ConfigError(f"{OPTION} {spec} has tables of {' or '.join(map(str, counts))} classes; the model has "
                              f"{num_classes}", hint="pass a labelmap.txt or names.yaml with its classes")
        cats: list[dict[str, Any]] = build(num_classes)
        return cats
    cats = read_class_file(spec)
    if len(cats) != num_classes:
        raise ConfigError(f"lists {len(cats)} classes; the model has {num_classes}", path=spec,
                          hint="one name per model class, in class order (background included if the model has it)")
    return cats
