"""Torch devices as the command line names them: how many CUDA devices this machine has."""

from __future__ import annotations


def cuda_device_count() -> int:
    """The number of CUDA devices torch sees here (0 without CUDA).

    Imports torch (about 2 s), so callers ask only for a ``cuda`` or ``cuda:N`` device.
    """
    import torch  # lazy: torch takes seconds to import; only a cuda device name needs it

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
