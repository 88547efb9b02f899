"""The output folder of a training run: checked before anything is trained (house rule 1, never destroy)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec

from segpipe.models.training.result import TrainResult
from segpipe.storage import outputs

#: What ``train`` writes into its output folder (the marker's entries: anything else is not replaced).
TRAIN_ENTRIES = ("epoch_*.ckpt", "best.ckpt", "metrics.jsonl")

P = ParamSpec("P")


def checked_output(run: Callable[P, TrainResult]) -> Callable[P, TrainResult]:
    """``run`` (a training run that writes into ``out_dir`` as it is) behind the output checks of ``train``.

    ``out_dir`` may not overlap the inputs (``dataset_dir``, ``val_dir``); unless ``resume``, it must be a
    new or empty folder or (with ``overwrite``) an earlier ``train`` output, which is replaced whole when
    the new run completes. A new folder is trained in place, marked first, so that a killed run leaves
    epochs that ``resume`` continues; a run that fails before writing anything leaves no trace.
    """
    sig = inspect.signature(run)
    call: Callable[..., TrainResult] = run  # called with the bound arguments, by name

    @functools.wraps(run)
    def checked(*a: P.args, **kw: P.kwargs) -> TrainResult:
        bound = sig.bind(*a, **kw)
        bound.apply_defaults()
        args = dict(bound.arguments)  # every argument as given, forwarded to run
        out_dir = args["out_dir"]
        inputs = [args["dataset_dir"], args["val_dir"]]
        if args["resume"]:  # continues the checkpoints already there: nothing is replaced, so only overlaps are refused
            outputs.check_not_input(out_dir, inputs, option="--out")
            return call(**args)
        plan = outputs.check_output(out_dir, inputs, option="--out", command="train", replace=args["overwrite"],
                                    flag="--overwrite")
        if plan.replaces:  # a new run over an earlier one: built beside it, swapped in when complete
            with outputs.staged(plan, entries=TRAIN_ENTRIES) as tmp:
                res = call(**{**args, "out_dir": tmp})
            best = plan.given / res.best_path.name if res.best_path is not None else None
            return dataclasses.replace(res, out_dir=plan.given, best_path=best)
        return _in_place(plan, call, args)

    return checked


def _in_place(plan: outputs.OutputPlan, call: Callable[..., TrainResult], args: dict[str, Any]) -> TrainResult:
    """Runs ``call`` into a new (or empty) folder, marked first; removes the marker if nothing was trained."""
    existed = plan.final.exists()
    outputs.start_in_place(plan, entries=TRAIN_ENTRIES)
    try:
        return call(**args)
    except BaseException:
        if [p.name for p in plan.final.iterdir()] == [outputs.MARKER]:  # nothing trained: leave no trace
            (plan.final / outputs.MARKER).unlink()
            if not existed:
                plan.final.rmdir()
        raise
