"""``torch.export`` programs (``torch.export.save`` → ``.pt2``), run by torch as exported.

Detected by content: a torch zip archive holding an exported program (``*/models/*.json`` and
``*/archive_format``). The program is graph code torch runs, not a pickle of Python objects.

It is run as a semantic model, like TorchScript (:mod:`segpipe.models.sources.torchscript`): same
output adaptation and the same ``segpipe.json`` extra file (``torch.export.save(ep, f,
extra_files={"segpipe.json": ...})``). A program exported with static input sizes takes those sizes
only: smaller tiles are padded to them, and its tile size is that input size; with ``Dim`` dynamic
sizes it takes any. The class count is read from the program's output shape when it is static.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from segpipe.errors import CheckpointError
from segpipe.models.sources.base import LoadedModel, ModelSource, Probe, SourceOptions, build_meta, register_source
from segpipe.models.sources.torchscript import STRIDE, class_count, probe_classes, read_extra, semantic_only


def detect(pr: Probe) -> bool:
    """A torch zip archive with an exported program."""
    return (not pr.is_dir and pr.zip_names is not None and pr.zip_has("archive_format")
            and any("/models/" in n and n.endswith(".json") for n in pr.zip_names))


def _program(path: Path) -> Any:
    import torch  # lazy: torch costs seconds to import

    try:
        return torch.export.load(str(path))
    except Exception as e:  # a damaged archive, a newer schema: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load the exported program: {first}", path=path) from None


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) else None


def _shapes(ep: Any) -> tuple[list[int | None] | None, list[int | None] | None]:
    """The user input's and the first output's shapes (None for a dynamic dimension)."""
    user = set(ep.graph_signature.user_inputs)
    inp = out = None
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder" and node.name in user and inp is None and hasattr(val, "shape"):
            inp = [_static(d) for d in val.shape]
        if node.op == "output":
            first = node.args[0][0] if node.args and node.args[0] else None
            fval: Any = getattr(first, "meta", {}).get("val")
            if hasattr(fval, "shape"):
                out = [_static(d) for d in fval.shape]
    return inp, out


def _adapted(path: Path) -> tuple[Any, list[int | None] | None, list[int | None] | None]:
    from segpipe.models.adapters import SemanticAdapter  # lazy: torch costs seconds to import

    ep = _program(path)
    inp, out = _shapes(ep)
    fixed = (inp[2], inp[3]) if inp and len(inp) == 4 and inp[2] and inp[3] else None
    batch = inp[0] if inp and inp[0] else None
    # An exported module refuses eval() / train() (it is always in the mode it was exported in).
    model = SemanticAdapter(ep.module(), stride=STRIDE, fixed=fixed, fixed_batch=batch, propagate_mode=False)
    return model.eval(), inp, out


def _meta(path: Path, opts: SourceOptions, built: Callable[[], tuple[Any, Any, Any]]) -> Any:
    extra = read_extra(path)
    semantic_only("exported (torch.export)", path, opts.task if opts.task is not None else extra.get("task"))
    model, inp, out = built()
    fixed = [inp[2], inp[3]] if inp and len(inp) == 4 and inp[2] and inp[3] else None

    if out and len(out) == 4 and out[1]:  # the graph says it: one channel is binary (background, foreground)
        n = max(2, int(out[1]))
    else:
        n = class_count(path, opts, extra, lambda: probe_classes(model, path, side=fixed[0] if fixed else 128))
    return build_meta(f"export/{path.stem}", "semantic", n, path=path, extra=extra, tile=fixed)


def _read_meta(path: Path, opts: SourceOptions) -> Any:
    return _meta(path, opts, lambda: _adapted(path))


def _load(path: Path, opts: SourceOptions) -> LoadedModel:
    built = _adapted(path)
    return LoadedModel(built[0], _meta(path, opts, lambda: built))


SOURCE = register_source(ModelSource(
    "torch_export", "programs saved with torch.export.save (.pt2)", detect, _read_meta, _load,
))
