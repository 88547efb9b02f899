"""The files of a synthetic dataset (photos, masks, COCO annotations, label map) and the folder they go to.

:func:`segpipe.synth.synth` writes ``png`` / ``jpg`` datasets here; :mod:`segpipe.synth.native` builds
its GeoTIFF and EXIF datasets on :func:`write_synth` and writes into :func:`synth_output` too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segpipe.errors import ConfigError
from segpipe.storage.atomic import atomic_open, write_json_atomic
from segpipe.storage.images import write_label_png
from segpipe.storage.outputs import check_output, staged
from segpipe.synth.base import KINDS, SynthKind, render


@dataclass(frozen=True)
class SynthResult:
    """Where :func:`synth` wrote things."""

    out: Path
    images: int
    annotations: int
    size: tuple[int, int]


def synth_photos(
    kind: str,
    out: str | Path,
    n: int = 16,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    image_format: str = "png",
    *,
    overwrite: bool = False,
) -> SynthResult:
    """:func:`segpipe.synth.synth` for ``png`` / ``jpg`` photos (the other formats: :mod:`segpipe.synth.native`).

    Raises:
        ConfigError: an unknown kind, or a negative ``n``.
        OutputError: ``out`` may not be written (see :func:`synth_output`).
    """
    KINDS.get(kind)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    with synth_output(out, overwrite=overwrite) as tmp:
        res = write_synth(kind, tmp, n=n, seed=seed, size=size, image_format=image_format)
    return replace(res, out=Path(out))


@contextmanager
def synth_output(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """The folder a synth run writes into: a staging folder swapped in for ``out`` when complete.

    Raises:
        OutputError: ``out`` is a non-empty folder that ``segpipe synth`` did not make, or an earlier
            ``synth`` output and not ``overwrite``.
    """
    with staged(check_output(out, option="OUT", command="synth", replace=overwrite, flag="--overwrite")) as tmp:
        yield tmp


def write_synth(
    kind: str,
    out: Path,
    n: int = 16,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    image_format: str = "png",
) -> SynthResult:
    """Writes the files of a ``png``/``jpg`` synthetic dataset into ``out`` (no output checks: see :func:`synth`)."""
    spec: SynthKind = KINDS.get(kind)
    h, w = size or spec.default_size
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    palette = np.array([c.color for c in spec.classes], dtype=np.uint8)
    palette[0] = (0, 0, 0)  # background shows black in viewers whatever its photo colour
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        sample = spec.generate(rng, h, w)
        photo = render(sample, spec.classes, rng)
        stem = f"{i:05d}"
        fname = f"{stem}.{image_format}"
        _write_photo(out / "images" / fname, photo, image_format)
        write_label_png(out / "masks" / f"{stem}.png", sample.labels, palette)
        images.append({"id": i + 1, "file_name": fname, "width": w, "height": h})
        for iid in np.unique(sample.instances):
            if iid == 0:
                continue
            m = sample.instances == iid
            cls = int(np.bincount(sample.labels[m]).argmax())
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            ann = {
                "id": len(anns) + 1,
                "image_id": i + 1,
                "category_id": cls,
                "segmentation": rle,
                "area": int(m.sum()),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
            if spec.keypoints:
                kp = sample.keypoints.get(int(iid), [])
                ann["keypoints"] = kp
                ann["num_keypoints"] = sum(1 for v in kp[2::3] if v > 0)
            anns.append(ann)
    categories = []
    for idx, c in enumerate(spec.classes):
        if idx == 0:
            continue
        cat = {"id": idx, "name": c.name, "supercategory": kind, "isthing": int(c.isthing), "color": list(c.color)}
        if spec.keypoints and c.isthing:
            cat["keypoints"] = list(spec.keypoints)
            cat["skeleton"] = [list(p) for p in spec.skeleton]
        categories.append(cat)
    coco = {
        "info": {"description": f"segpipe synthetic {kind}", "version": "1", "seed": seed},
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    write_json_atomic(out / "annotations.json", coco, indent=None)
    lines = [f"{c.name}:{','.join(str(int(v)) for v in palette[k])}::" for k, c in enumerate(spec.classes)]
    with atomic_open(out / "labelmap.txt", "w") as f:
        f.write("# label:color_rgb:parts:actions\n" + "\n".join(lines) + "\n")
    return SynthResult(out, n, len(anns), (h, w))


def _write_photo(path: Path, photo: np.ndarray, fmt: str) -> None:
    im = Image.fromarray(photo, mode="RGB")
    with atomic_open(path, "wb") as f:
        if fmt == "png":
            im.save(f, format="PNG", compress_level=1)
        else:
            im.save(f, format="JPEG", quality=95)
