"""Test-time augmentation and ensembles of semantic models, as one model every predictor runs unchanged.

:func:`averaged_model` wraps one or more semantic models in a module that, for a batch of normalised
tiles ``(N, 3, h, w)``, runs each model on each augmented view (flips ``h``, ``v``, ``hv``; scales such
as 0.75 and 1.25, resized bilinearly), undoes the view on the output (flip back, resize back to
``(h, w)``), takes the softmax, averages the probabilities of every (model, view) pass with equal
weight, and returns ``log p``. Since ``softmax(log p) = p`` (``p`` sums to 1), the tiler's blending,
the single-tile path, the label map (``argmax log p = argmax p``) and the stored probabilities are
those of the averaged probabilities, with no change downstream.

Ensemble members must predict the same classes (count, ids and names: :func:`check_members`); each
member gets its input in its own normalisation (the predictor normalises with the first model's mean
and std; a member with other values sees ``x · s0/si + (m0 − mi)/si``). The first model's tile size and
overlap apply to all. Only semantic 2-D models are averaged: an instance model's detections have no
per-pixel distribution to average (matching and fusing boxes across views is another algorithm), so
``--tta`` and ``--ensemble`` refuse instance, panoptic, landmark and 3-D models with one line.

torch is imported inside the functions: the driver imports this module to check options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segpipe.errors import ConfigError

if TYPE_CHECKING:
    from segpipe.models.predict import Predictor
    from segpipe.models.ref import ModelRef

#: ``--tta`` values.
TTA_MODES = ("none", "flip", "flip+scale")
#: ``--tta-scales`` when ``--tta flip+scale`` names none.
DEFAULT_SCALES = (0.75, 1.0, 1.25)
#: The range of a scale: a quarter to four times the tile side.
SCALE_RANGE = (0.25, 4.0)
#: The flips of ``--tta flip``, as the tensor dims each reverses: none, h (width), v (height), hv.
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@dataclass(frozen=True)
class TTASpec:
    """The views each model runs on.

    Attributes:
        flips: Average the four flips (none, h, v, hv) of every scale.
        scales: Input scales (1.0 is the image as it is).
    """

    flips: bool = False
    scales: tuple[float, ...] = (1.0,)

    def views(self) -> list[tuple[tuple[int, ...], float]]:
        """``(dims to flip, scale)`` of every pass, in a fixed order (the sum's order is part of the result)."""
        flips = FLIPS if self.flips else ((),)
        return [(f, s) for s in self.scales for f in flips]

    def to_config(self) -> dict[str, Any]:
        """What a store's config records (hashed into every task key)."""
        return {"flips": [["", "h", "v", "hv"][FLIPS.index(f)] for f in (FLIPS if self.flips else ((),))],
                "scales": list(self.scales)}


def tta_spec(mode: str, scales: Sequence[float] | None) -> TTASpec | None:
    """The :class:`TTASpec` of ``--tta`` and ``--tta-scales`` (None for ``none``).

    Raises:
        ConfigError: an unknown mode, scales without ``flip+scale``, or a scale that is not a finite
            number in :data:`SCALE_RANGE` (each message names the option).
    """
    if mode not in TTA_MODES:
        raise ConfigError(f"--tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    if scales is not None and mode != "flip+scale":
        raise ConfigError(f"--tta-scales applies to --tta flip+scale, not --tta {mode}",
                          hint="add --tta flip+scale, or leave --tta-scales out")
    if mode == "none":
        return None
    if mode == "flip":
        return TTASpec(flips=True)
    chosen = tuple(float(s) for s in (scales if scales is not None else DEFAULT_SCALES))
    lo, hi = SCALE_RANGE
    if not chosen:
        raise ConfigError("--tta-scales names no scale", hint="e.g. --tta-scales 0.75,1,1.25")
    for s in chosen:
        if not (math.isfinite(s) and lo <= s <= hi):
            raise ConfigError(f"--tta-scales {s} is not a scale in [{lo}, {hi}]", hint="e.g. --tta-scales 0.75,1,1.25")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--tta-scales {','.join(f'{s:g}' for s in chosen)} names a scale twice")
    return TTASpec(flips=True, scales=chosen)


def _classes(meta: Any) -> list[tuple[int, str]]:
    return [(int(c.get("id", i)), str(c.get("name", f"class_{i}"))) for i, c in enumerate(meta.categories)]


def check_members(metas: Sequence[Any], specs: Sequence[str], *, averaging: str) -> None:
    """Checks that models can be averaged: semantic, 2-D, and the same classes as the first.

    Args:
        metas: The models' :class:`~segpipe.models.checkpoint.CheckpointMeta`, ``--model``'s first.
        specs: Their model files (or ``ARCH:WEIGHTS``), for the messages.
        averaging: The option that asks for it (``--tta``, ``--ensemble``), for the messages.

    Raises:
        ConfigError: one line naming the model and what differs.
    """
    from segpipe.models.registry import arch_dims  # lazy: the registry's names, no torch

    first = metas[0]
    for meta, spec in zip(metas, specs, strict=True):
        if meta.task != "semantic":
            article = "an" if meta.task[:1] in "aeiou" else "a"
            raise ConfigError(f"{averaging} averages class probabilities of semantic models; {spec} is {article} "
                              f"{meta.task} model", hint=f"leave {averaging} out for this model")
        if arch_dims(meta.arch) != 2:
            raise ConfigError(f"{averaging} averages 2-D models; {spec} ({meta.arch}) is a 3-D model",
                              hint=f"leave {averaging} out for this model")
        if meta is first:
            continue
        if meta.num_classes != first.num_classes or _classes(meta) != _classes(first):
            mine = ", ".join(n for _, n in _classes(meta)[:6])
            theirs = ", ".join(n for _, n in _classes(first)[:6])
            raise ConfigError(
                f"--ensemble {spec} predicts {meta.num_classes} classes ({mine}...) but --model {specs[0]} "
                f"predicts {first.num_classes} ({theirs}...): ensemble members must have the same classes",
                hint="pass --classes to name both models' classes alike, or ensemble models of one label set")


def averaged_model(models: Sequence[Any], metas: Sequence[Any], spec: TTASpec | None) -> Any:
    """One ``nn.Module`` returning the log of the averaged softmax of ``models`` over ``spec``'s views.

    Args:
        models: Semantic models (``(N, 3, h, w)`` normalised input → ``(N, C, h', w')`` logits, or a
            dict with ``"out"``, torchvision's form).
        metas: Their metadata (the input normalisation of each), the first's being the predictor's.
        spec: The views (None: the image as it is).

    Returns:
        The module: ``(N, 3, h, w)`` → ``(N, C, h, w)`` float32 ``log p``.
    """
    import torch  # lazy: torch loads on the workers, not in the driver that checks options

    spec = spec or TTASpec()
    m0, s0 = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (metas[0].mean, metas[0].std))
    affine = []
    for meta in metas:
        mi, si = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (meta.mean, meta.std))
        affine.append((s0 / si, (m0 - mi) / si))
    return _module_class()(list(models), affine, spec.views())


def _module_class() -> type:
    """The wrapper module's class, defined once torch is loaded."""
    global _AVERAGED
    if _AVERAGED is None:
        _AVERAGED = _define()
    return _AVERAGED


_AVERAGED: type | None = None


def _define() -> type:
    import torch  # lazy: torch loads on the workers, not in the driver that checks options
    import torch.nn.functional as F  # noqa: N812 (torch's own convention)

    class Averaged(torch.nn.Module):
        """Averaged softmax over models × views, returned as ``log p`` (see the module docstring)."""

        def __init__(self, models: list[Any], affine: list[tuple[Any, Any]],
                     views: list[tuple[tuple[int, ...], float]]) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(models)
            self.views = views
            for i, (scale, bias) in enumerate(affine):
                self.register_buffer(f"scale{i}", scale)
                self.register_buffer(f"bias{i}", bias)
            self.identity = [bool(torch.all(s == 1) and torch.all(b == 0)) for s, b in affine]

        def forward(self, x: Any) -> Any:
            h, w = x.shape[-2:]
            total = None
            for i, model in enumerate(self.members):
                xi = x if self.identity[i] else x * getattr(self, f"scale{i}") + getattr(self, f"bias{i}")
                for dims, s in self.views:
                    v = xi
                    if s != 1.0:
                        size = (max(1, round(h * s)), max(1, round(w * s)))
                        v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
                    if dims:
                        v = v.flip(dims)
                    y = model(v)
                    if isinstance(y, dict):  # torchvision's segmentation models
                        y = y["out"]
                    y = y.float()
                    if dims:
                        y = y.flip(dims)
                    if tuple(y.shape[-2:]) != (h, w):
                        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
                    p = torch.softmax(y, dim=1)
                    total = p if total is None else total + p
            assert total is not None  # at least one model and one view
            avg = total / float(len(self.members) * len(self.views))
            # log 0 would be -inf, and a logit blend weighs logits by 0 at tile borders (0 · -inf = NaN)
            return torch.log(avg.clamp_min(torch.finfo(torch.float32).tiny))

    return Averaged


def averaged_predictor(refs: Sequence[ModelRef], spec: TTASpec | None, **kw: Any) -> Predictor:
    """A predictor of ``refs``' averaged probabilities over ``spec``'s views (on a worker).

    Args:
        refs: The models, ``--model``'s first (its tile, overlap and normalisation are the predictor's).
        spec: The views, or None (an ensemble without augmentation).
        **kw: Predictor options.

    Raises:
        ConfigError: a model that is not semantic 2-D, or members whose classes differ.
    """
    from segpipe.models.predict import Predictor  # lazy: predictors run on workers

    loaded = [ref.load() for ref in refs]
    metas = [meta for _, meta in loaded]
    check_members(metas, [r.spec for r in refs], averaging="--ensemble" if len(refs) > 1 else "--tta")
    model = averaged_model([m for m, _ in loaded], metas, spec)
    return Predictor(model, metas[0], **kw)
