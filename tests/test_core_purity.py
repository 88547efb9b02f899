"""The core is pure: importing every module of segpipe.core pulls in no torch, dask, typer or pydantic."""

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import segpipe.core as core
for m in pkgutil.iter_modules(core.__path__):
    importlib.import_module("segpipe.core." + m.name)
bad = sorted(n for n in ("torch", "dask", "distributed", "typer", "pydantic", "zarr") if n in sys.modules)
print(",".join(bad))
"""


def test_core_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"segpipe.core imported: {out.stdout.strip()}"


def test_library_never_imports_cli():
    code = "import segpipe.pipeline.convert, sys; print('segpipe.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
