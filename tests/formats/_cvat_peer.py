"""Runs Datumaro's own CVAT importer / exporter and prints what it loaded, as JSON (run in ``.venv-peers``).

Usage: ``python _cvat_peer.py load DATASET`` (Datumaro's ``cvat`` importer), or
``python _cvat_peer.py export SRC_COCO_FOLDER OUT`` (Datumaro converts its COCO import to ``cvat``, with images).

``load`` prints ``{"labels": [...], "items": {"<subset>/<id>": {"size": [h, w], "annotations": [{"type",
"label", "points" (polygon, points), "bbox" [x, y, w, h] (box), "mask" [[row, col], ...] (mask), "z_order",
"group", "attributes"}]}}}``. Not a test module: pytest does not collect it, and it imports nothing from segpipe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(root: Path) -> dict:
    import datumaro as dm
    import numpy as np

    ds = dm.Dataset.import_from(str(root), "cvat")
    labels = ds.categories()[dm.AnnotationType.label]
    out: dict = {"labels": [c.name for c in labels.items], "items": {}}
    for item in ds:
        anns = []
        for a in item.annotations:
            d: dict = {"type": a.type.name, "label": labels.items[a.label].name if a.label is not None else None,
                       "z_order": getattr(a, "z_order", 0), "group": a.group,
                       "attributes": {k: (v if isinstance(v, (bool, str)) else float(v))
                                      for k, v in a.attributes.items()}}
            if a.type in (dm.AnnotationType.polygon, dm.AnnotationType.points, dm.AnnotationType.polyline):
                d["points"] = [float(v) for v in a.points]
            elif a.type == dm.AnnotationType.bbox:
                d["bbox"] = [float(v) for v in a.get_bbox()]
            elif a.type == dm.AnnotationType.mask:
                d["mask"] = np.argwhere(np.asarray(a.image) > 0).tolist()
            anns.append(d)
        h, w = item.media.size
        out["items"][f"{item.subset}/{item.id}"] = {"size": [int(h), int(w)], "annotations": anns}
    return out


def _export(src: Path, dst: Path) -> dict:
    import datumaro as dm

    ds = dm.Dataset.import_from(str(src), "coco_instances")
    ds.export(str(dst), "cvat", save_media=True)
    return {"exported": str(dst)}


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    res = _load(path) if mode == "load" else _export(path, Path(sys.argv[3]))
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
