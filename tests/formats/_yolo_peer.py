"""Runs a peer's own YOLO loader on a dataset and prints what it loaded, as JSON (run in ``.venv-peers``).

Usage: ``python _yolo_peer.py ultralytics|datumaro DATASET TASK`` (TASK: ``detect`` or ``segment``), or
``python _yolo_peer.py datumaro-export SRC_COCO_FOLDER OUT`` (Datumaro converts its COCO to yolo_ultralytics).

Output ``{"images": {stem: {"split", "size": [h, w], "objects": [{"cls", "box": [x, y, w, h] px,
"mask": [[row, col], ...] run-free pixel list only for segment}]}}}``. Not a test module: pytest does not
collect it, and it imports nothing from segpipe (the peers' venv has no segpipe).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _ultralytics(root: Path, task: str) -> dict:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import numpy as np
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset, polygon2mask

    data = check_det_dataset(str(root / "data.yaml"))
    out: dict = {"names": {int(k): v for k, v in data["names"].items()}, "images": {}}
    for split in ("train", "val", "test"):
        if not data.get(split) or (split == "val" and data["val"] == data["train"]):
            continue
        ds = YOLODataset(img_path=data[split], data=data, task=task, augment=False, imgsz=64, cache=False,
                         prefix=f"{split}: ")
        for lb in ds.labels:
            h, w = (int(v) for v in lb["shape"])
            objs = []
            for k in range(len(lb["cls"])):
                cx, cy, bw, bh = (float(v) for v in lb["bboxes"][k])
                o = {"cls": int(lb["cls"][k][0]), "box": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]}
                if task == "segment":
                    seg = np.asarray(lb["segments"][k], dtype=np.float64) * [w, h]
                    m = polygon2mask((h, w), [seg.reshape(-1)], color=1, downsample_ratio=1)
                    o["mask"] = np.argwhere(m > 0).tolist()
                objs.append(o)
            out["images"][Path(lb["im_file"]).stem] = {"split": split, "size": [h, w], "objects": objs}
    return out


def _datumaro(root: Path) -> dict:
    import datumaro as dm

    ds = dm.Dataset.import_from(str(root), "yolo")  # Datumaro picks yolo_ultralytics for a data.yaml
    labels = ds.categories()[dm.AnnotationType.label]
    out: dict = {"names": {i: c.name for i, c in enumerate(labels.items)}, "images": {}}
    for item in ds:
        h, w = item.media.size
        objs = [{"cls": int(a.label), "box": list(a.get_bbox())} for a in item.annotations
                if a.type == dm.AnnotationType.bbox]
        out["images"][Path(item.id).name] = {"split": item.subset, "size": [h, w], "objects": objs}
    return out


def _datumaro_export(src: Path, dst: Path) -> dict:
    import datumaro as dm

    ds = dm.Dataset.import_from(str(src), "coco_instances")
    ds.export(str(dst), "yolo_ultralytics", save_media=True)
    return {"exported": str(dst)}


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    if mode == "ultralytics":
        res = _ultralytics(path, sys.argv[3])
    elif mode == "datumaro":
        res = _datumaro(path)
    else:
        res = _datumaro_export(path, Path(sys.argv[3]))
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
