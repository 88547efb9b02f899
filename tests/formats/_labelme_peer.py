"""Loads LabelMe JSON files with the ``labelme`` package's own code and prints what it loaded (run in ``.venv-peers``).

Usage: ``python _labelme_peer.py DATASET``. Every ``*.json`` under DATASET (segpipe's own ``conversion_report.json``
excepted) goes through ``LabelFile`` (LabelMe's loader: it opens the image by ``imagePath`` or ``imageData`` and
checks the recorded size) and each shape through ``shapes_to_label`` (LabelMe's rasteriser, masks included).

Output ``RESULT {"version": ..., "files": {rel: {"size": [h, w], "embedded": bool, "image_bytes": n,
"shapes": [{"label", "shape_type", "group_id", "pixels": [flat row-major indices]}]}}}``. Not a test module:
pytest does not collect it, and it imports nothing from segpipe (the peers' venv has no segpipe).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path


def _imports():  # labelme moved these modules between releases
    try:
        from labelme._label_file import LabelFile
    except ImportError:
        from labelme.label_file import LabelFile
    try:
        from labelme.utils import shapes_to_label
    except ImportError:
        from labelme._utils.shape import shapes_to_label
    return LabelFile, shapes_to_label


def main() -> None:
    import labelme
    import numpy as np
    import PIL.Image

    LabelFile, shapes_to_label = _imports()
    root = Path(sys.argv[1])
    out: dict = {"version": getattr(labelme, "__version__", "?"), "files": {}}
    for path in sorted(root.rglob("*.json")):
        if path.name == "conversion_report.json":
            continue
        lf = LabelFile(str(path))
        img = np.asarray(PIL.Image.open(io.BytesIO(lf.imageData)))
        h, w = img.shape[:2]
        raw = json.loads(path.read_text(encoding="utf-8"))
        shapes = []
        for s in lf.shapes:
            shape = dict(s)
            cls, _ = shapes_to_label((h, w), [shape], {s["label"]: 1})
            shapes.append({"label": s["label"], "shape_type": s["shape_type"], "group_id": s["group_id"],
                           "pixels": np.flatnonzero(cls.reshape(-1) > 0).tolist()})
        out["files"][path.relative_to(root).as_posix()] = {
            "size": [int(h), int(w)], "embedded": raw.get("imageData") is not None,
            "image_bytes": len(lf.imageData), "shapes": shapes,
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
