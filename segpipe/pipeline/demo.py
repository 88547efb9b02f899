"""``segpipe demo``: the README's first command, end to end on generated data.

Today it synthesises a street-view collection with exact ground truth, converts its COCO annotations to
Pascal VOC and back on the embedded Dask cluster, validates every result, and prints where everything
is with the headline figures. It grows as the pipeline does (train → pre-label → export → evaluate).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segpipe.execution.cluster import ClusterSpec
from segpipe.pipeline.convert import ConvertRequest, convert
from segpipe.pipeline.validate import validate_path


@dataclass
class DemoResult:
    """Where the demo put things, and its headline figures."""

    out: Path
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, path, summary)
    figures: dict[str, Any] = field(default_factory=dict)


def run_demo(
    out: Path,
    *,
    n: int = 24,
    seed: int = 0,
    cluster: ClusterSpec | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Runs the demo into ``out`` (replaced if it holds an earlier demo)."""
    from segpipe.synth import synth

    cluster = cluster or ClusterSpec(workers=2)
    if out.exists():
        if not (out / ".segpipe-demo").exists():
            from segpipe.errors import InputError

            raise InputError("folder exists and was not made by `segpipe demo`", path=out,
                             hint="choose another --out or remove it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".segpipe-demo").write_text("made by segpipe demo\n")
    res = DemoResult(out)
    t0 = time.perf_counter()

    log(f"1/4 synthesising {n} street-view images with exact ground truth")
    data = out / "data"
    synth("streetview", data, n=n, seed=seed)
    res.steps.append(("synth", str(data), f"{n} images, COCO + label maps"))

    log("2/4 converting COCO → Pascal VOC on the local Dask cluster")
    voc = out / "voc"
    rep = convert(ConvertRequest(src=data / "annotations.json", dst=voc, to="voc", image_root=data / "images"),
                  cluster)
    res.steps.append(("convert → voc", str(voc), _loss_summary(rep)))
    res.figures["voc_losses"] = rep["losses"]["totals"]

    log("3/4 converting Pascal VOC → COCO (ids restored from the sidecar)")
    back = out / "coco"
    rep2 = convert(ConvertRequest(src=voc, dst=back, to="coco"), cluster)
    res.steps.append(("convert → coco", str(back), _loss_summary(rep2)))

    log("4/4 validating every dataset")
    for name, path in (("synth", data / "annotations.json"), ("voc", voc), ("coco", back / "annotations.json")):
        fmt, problems = validate_path(path)
        errors = sum(p.severity == "error" for p in problems)
        res.steps.append((f"validate {name}", str(path), f"{fmt}: {errors} errors, {len(problems) - errors} warnings"))
        res.figures[f"validate_{name}_errors"] = errors
    res.figures["annotations_in"] = sum(rep["losses"]["counts_in"].values())
    res.figures["annotations_back"] = sum(rep2["losses"]["counts_out"].values())
    res.figures["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return res


def _loss_summary(rep: dict[str, Any]) -> str:
    totals = rep["losses"]["totals"]
    if not totals:
        return f"{rep['images']['converted']} images, lossless"
    return f"{rep['images']['converted']} images; losses: " + ", ".join(f"{k}={v}" for k, v in totals.items())
