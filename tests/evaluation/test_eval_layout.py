"""The evaluate workflow's house rules, checked on its code: local imports say why, workers import little.

* A function-local import in the evaluation modules keeps start-up light and says so (``# lazy:``), as
  ``tests/test_lazy_imports.py`` checks for the packages listed there.
* A worker that unpickles an evaluation kernel imports the kernel and the engines it runs, not the
  workflow: no pydantic (the typed report), no plotting, nothing of ``segpipe.pipeline``, no Dask.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_lazy_imports import unexplained_local_imports

ROOT = Path(__file__).resolve().parents[2] / "segpipe"
FILES = sorted([
    *(ROOT / "pipeline" / "evaluate").glob("*.py"),
    *(ROOT / "kernels" / "evaluate").glob("*.py"),
    ROOT / "pipeline" / "checkpoints.py",
    ROOT / "pipeline" / "eval_specs.py",
    *(ROOT / "evaluation" / f"{name}.py" for name in ("cocoeval", "cocoref", "keypoints", "panoptic", "semantic",
                                                       "shards", "worst")),
])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_imports_say_why(path: Path) -> None:
    assert unexplained_local_imports(path) == [], f"{path}: a local import without '# lazy: <reason>'"


def test_a_worker_imports_the_kernels_not_the_workflow() -> None:
    code = (
        "import json, sys\n"
        "import segpipe.kernels.evaluate.semantic, segpipe.kernels.evaluate.panoptic, segpipe.kernels.evaluate.coco\n"
        "import segpipe.evaluation.cocoref, segpipe.evaluation.cocofast\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'matplotlib', 'distributed', 'dask', 'torch') or m.startswith('segpipe.pipeline'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent).stdout
    assert json.loads(out) == []
