"""Loads a dataset with Datumaro's own importer and prints what it loaded, as JSON (run in ``.venv-peers``).

Usage: ``python _layout_peer.py FORMAT DATASET`` with FORMAT a Datumaro importer name (``voc``,
``coco_instances``, ``cityscapes``).

Output ``{"images": {stem: {"subset", "size": [h, w], "classes": [name per pixel, row-major, "" where no
mask], "masks": [{"label": name, "pixels": [flat index, ...]}]}}}``. Not a test module: pytest does not
collect it, and it imports nothing from segpipe (the peers' venv has no segpipe).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path, fmt: str) -> dict:
    """Imports ``path`` as ``fmt`` and flattens every item's masks (see the module docstring)."""
    import datumaro as dm
    import numpy as np

    ds = dm.Dataset.import_from(str(path), fmt)
    labels = ds.categories()[dm.AnnotationType.label]
    names = [c.name for c in labels.items]
    out: dict = {"names": names, "images": {}}
    for item in ds:
        h, w = item.media.size
        classes = np.full((h, w), "", dtype=object)
        masks = []
        for a in item.annotations:
            if a.type not in (dm.AnnotationType.mask, dm.AnnotationType.polygon):
                continue
            m = a.image if a.type == dm.AnnotationType.mask else a.as_mask(w, h) if hasattr(a, "as_mask") else None
            if m is None:
                continue
            m = np.asarray(m, dtype=bool)
            name = names[a.label] if a.label is not None else ""
            classes[m] = name
            masks.append({"label": name, "pixels": np.flatnonzero(m).tolist()})
        out["images"][Path(item.id).name] = {"subset": item.subset, "size": [h, w],
                                             "classes": classes.ravel().tolist(), "masks": masks}
    return out


def main() -> None:
    fmt, path = sys.argv[1], Path(sys.argv[2])
    print("RESULT " + json.dumps(load(path, fmt)))


if __name__ == "__main__":
    main()
