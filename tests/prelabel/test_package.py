"""``segpipe.pipeline.prelabel`` loads a public name's module on first use: a command loads what it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import segpipe.pipeline.prelabel as package

#: Prints the loaded modules of interest after the import statement given as argv[1].
PROBE = (
    "import json, sys\n"
    "exec(sys.argv[1])\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'distributed', 'dask', 'zarr')\n"
    "                        or m.startswith(('segpipe.kernels', 'segpipe.pipeline.prelabel', 'segpipe.execution',\n"
    "                                         'segpipe.models.predict')))))\n"
)


def _loaded(statement: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, statement], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_every_public_name_resolves() -> None:
    assert sorted(package.__all__) == sorted(package._LAZY)
    assert all(getattr(package, name) is not None for name in package.__all__)


def test_fsck_loads_neither_the_driver_nor_the_kernels() -> None:
    assert _loaded("from segpipe.pipeline.prelabel import PrelabelRequest, fsck") == [
        "segpipe.pipeline.prelabel", "segpipe.pipeline.prelabel.fsck", "segpipe.pipeline.prelabel.report",
        "segpipe.pipeline.prelabel.request",
    ]


def test_the_driver_loads_no_torch_dask_or_predictor() -> None:
    loaded = _loaded("from segpipe.pipeline.prelabel import prelabel")
    assert "segpipe.pipeline.prelabel.driver" in loaded and "segpipe.kernels.prelabel.batch" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "distributed", "dask", "zarr")], loaded
    assert "segpipe.models.predict" not in loaded
