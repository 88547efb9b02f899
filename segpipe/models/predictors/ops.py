"""Tensor kernels the predictors share: softmax, argmax, normalise-and-convert.

Each is written for the layout the tiler hands over (planar ``(C, h, w)`` or HWC-backed, channels
innermost) because the obvious torch or numpy call is a strided reduction there, which was the
largest cost of tiled CPU inference (bench/RESULTS_models.md). torch is imported inside the
functions: importing the predictors must not load torch before a worker needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def exp_shifted(x: Any) -> tuple[Any, Any]:
    """An unnormalised softmax over dim 1, in place: ``(exp(x − max), Σ exp(x − max))``.

    softmax = the first / the second; callers fold the division into their blend weight, so no
    normalised-probability pass is made.

    Args:
        x: ``(N, C, ...)`` float tensor of logits; overwritten.

    Returns:
        ``x`` itself holding ``exp(x − max)``, and its ``(N, ...)`` sums over dim 1.
    """
    x.sub_(x.amax(1, keepdim=True))
    x.exp_()
    return x, x.sum(1)


def softmax_channels(logits: Any) -> Any:
    """Softmax over dim 1 of ``(N, C, h, w)`` in float32.

    torch's CPU ``softmax(1)`` on NCHW is a strided reduction and was the largest cost of tiled
    inference (bench/RESULTS_models.md); max / exp / sum as element-wise ops are vectorised.
    """
    x = logits.float()
    x = x - x.amax(1, keepdim=True)
    x.exp_()
    x /= x.sum(1, keepdim=True)
    return x


def labels_and_quantised_probs(logits: Any, probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One tile's outputs from its logits: ``(labels (h, w), probs (C, h, w) uint8 | None)``.

    Labels are the argmax of the logits, which is the argmax of their softmax without the ties that
    float rounding makes there, so ``--probs`` and ``--no-probs`` give the same label maps.
    Probabilities are ``round(255 · softmax)``. On the CPU both reductions run along the axis the
    model's output keeps contiguous: for channels-last logits of 21 × 512² that is 11 + 10 ms,
    against 44 ms for the argmax of the probabilities and 18 ms for a strided softmax (bench/RESULTS.md,
    session 5).

    Args:
        logits: ``(C, h, w)`` float tensor, planar or channels-last, on any device.
        probs: Also return the quantised probabilities.

    Returns:
        ``labels (h, w)`` uint8 (uint16 above 256 classes) class indices, and ``(C, h, w)`` uint8
        probabilities, C-contiguous, or None.
    """
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    if logits.device.type != "cpu":  # reductions are cheap on an accelerator: copy back the results only
        dt = np.uint8 if logits.shape[0] <= 256 else np.uint16
        labels = logits.argmax(0).to(torch.int32).cpu().numpy().astype(dt)
        qa = (torch.softmax(logits, 0).mul_(255.0).round_().to(torch.uint8).contiguous().cpu().numpy()
              if probs else None)
        return labels, qa
    labels = argmax_channels(logits)
    if not probs:
        return labels, None
    if logits.shape[0] > 1 and logits.stride(0) == 1:  # channels-last: the channels are innermost
        p = torch.softmax(logits.permute(1, 2, 0), -1)
        qt = p.mul_(255.0).round_().to(torch.uint8).permute(2, 0, 1).contiguous()
    else:
        qt = torch.softmax(logits, 0).mul_(255.0).round_().to(torch.uint8)
    return labels, qt.numpy()


def argmax_channels(a: Any) -> np.ndarray:
    """``(C, h, w)`` → ``(h, w)`` uint8/uint16 indices of the maximum (the first one on ties).

    An HWC-backed torch tensor (channels innermost) is reduced by torch along its contiguous axis.
    Planar data get a pass per channel over contiguous planes with preallocated masks: several times
    faster than numpy's strided reduction over axis 0 or torch's ``argmax(0)`` for such bands.

    Args:
        a: ``(C, ...)`` numpy array or CPU torch tensor (3-D volumes ``(C, Z, H, W)`` work too).

    Returns:
        ``(...)`` uint8 indices (uint16 above 256 channels).
    """
    dt = np.uint8 if a.shape[0] <= 256 else np.uint16
    if not isinstance(a, np.ndarray):
        if a.shape[0] > 1 and a.stride(0) == 1:
            # ``max(0).indices``: the first maximum, as argmax, and 25% faster than torch's argmax.
            return a.max(0).indices.numpy().astype(dt)  # type: ignore[no-any-return]
        a = a.contiguous().numpy()
    best = a[0].copy()
    idx = np.zeros(best.shape, dtype=dt)
    better = np.empty(best.shape, dtype=bool)
    for c in range(1, a.shape[0]):
        np.greater(a[c], best, out=better)
        np.maximum(best, a[c], out=best)
        np.copyto(idx, dt(c), where=better)
    if a.dtype.kind == "f":
        # A NaN wins, as in np.argmax and torch's max (the HWC path): ``best`` is NaN exactly where a
        # channel was, and those few pixels take np.argmax's answer.
        nan = np.isnan(best)
        if nan.any():
            idx[nan] = np.argmax(a[:, nan], axis=0)
    return idx


def div_into(acc: Any, wsum: Any, out: Any) -> None:
    """``out (C, h, w) = acc / wsum`` in ``out``'s dtype and layout.

    When ``acc`` is HWC-backed and ``out`` planar, the division is also a transposition: done in
    blocks of rows of about 1 MiB, which stay in cache, it is 5x faster than one strided pass.

    Args:
        acc: ``(C, h, w)`` float32 tensor, planar or HWC-backed.
        wsum: ``(h, w)`` float32 tensor.
        out: ``(C, h, w)`` tensor written in place (float16 for stored probabilities).
    """
    c, h, w = acc.shape
    if acc.stride(0) != 1 or c == 1:
        _torch_div(acc, wsum, out)
        return
    rows = max(1, (1 << 20) // max(1, w * c * 4))
    for r in range(0, h, rows):
        _torch_div(acc[:, r : r + rows], wsum[r : r + rows], out[:, r : r + rows])


def _torch_div(a: Any, b: Any, out: Any) -> None:
    """``torch.div(a, b, out=out)`` (a separate name keeps profiles readable)."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    torch.div(a, b, out=out)


def to_float16(a: np.ndarray) -> np.ndarray:
    """float32 → float16 via torch (multi-threaded and faster than ``ndarray.astype``)."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).numpy()
