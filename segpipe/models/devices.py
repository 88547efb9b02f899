"""Torch devices as the command line names them, and what runs differently on a CUDA device.

Everything a GPU changes about a forward pass is decided here, on the resolved device, so that the
choices are made (and tested) on any machine:

* :func:`autocast_dtype`: ``--precision auto|fp32|bf16`` → the autocast dtype (None: float32).
* :class:`HostStaging`: host → device copies of input batches, from a reused pinned buffer and
  non-blocking on CUDA; a no-op on the CPU.
* :func:`gpu_decode_enabled` and :func:`decode_jpegs`: JPEG batches decoded on the GPU
  (``--gpu-decode auto|on|off``).

torch is imported inside the functions: the CLI imports this module to count devices.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from segpipe.errors import ConfigError

#: ``--precision``: ``auto`` is bf16 autocast on a CUDA device that supports it, float32 elsewhere.
Precision = Literal["auto", "fp32", "bf16"]
#: ``--gpu-decode``: ``auto`` decodes JPEGs on the GPU when the device is CUDA; ``on`` also
#: (and says why not where it cannot); ``off`` never.
GpuDecode = Literal["auto", "on", "off"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
GPU_DECODES: tuple[str, ...] = ("auto", "on", "off")


def cuda_device_count() -> int:
    """The number of CUDA devices torch sees here (0 without CUDA).

    Imports torch (about 2 s), so callers ask only for a ``cuda`` or ``cuda:N`` device.
    """
    import torch  # lazy: torch takes seconds to import; only a cuda device name needs it

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def autocast_dtype(precision: str, device: Any) -> Any:
    """The dtype the forward passes autocast to on ``device``, or None for plain float32.

    Args:
        precision: ``auto`` (bf16 on a CUDA device with bf16 support, float32 elsewhere, the CPU
            included: CPU bf16 is slower than float32 without AMX), ``fp32`` or ``bf16`` (on any
            device: torch autocasts on the CPU too).
        device: The resolved ``torch.device``.

    Returns:
        ``torch.bfloat16`` or None.

    Raises:
        ConfigError: an unknown precision.
    """
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def gpu_decode_enabled(option: str, device: Any) -> bool:
    """Whether JPEGs are decoded on ``device`` (``--gpu-decode``).

    Args:
        option: ``auto`` or ``on``: on a CUDA device whose torchvision has the GPU decoder (else the
            CPU decoder, ``on`` included: the option allows, never forces, a device it lacks);
            ``off``: never.
        device: The resolved ``torch.device``.

    Raises:
        ConfigError: an unknown option.
    """
    if option not in GPU_DECODES:
        raise ConfigError(f"--gpu-decode {option!r} is not one of {', '.join(GPU_DECODES)}")
    if option == "off" or device.type != "cuda":
        return False
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    return hasattr(torch.ops.image, "decode_jpegs_cuda")


def decode_jpegs(datas: Sequence[bytes], device: Any) -> list[Any]:
    """Decodes JPEG files' bytes on ``device`` in one call (nvJPEG's batched decoder on CUDA).

    Args:
        datas: Whole JPEG files.
        device: Where to decode (``cuda``; the CPU decodes with libjpeg-turbo, as tests do).

    Returns:
        One ``(H, W, 3)`` uint8 tensor per file on ``device`` (an HWC view of torchvision's CHW
        output: the layout the predictors take).

    Raises:
        RuntimeError: a file the decoder refuses (the caller decodes it on the CPU instead).
    """
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors
    from torchvision.io import ImageReadMode, decode_jpeg  # lazy: as torch

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for torchcodec's; torchcodec is not a dependency
        warnings.simplefilter("ignore", DeprecationWarning)
        out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return [t.permute(1, 2, 0) for t in out]


class HostStaging:
    """Host → device copies of ``(N, h, w, 3)`` uint8 input batches.

    On CUDA a batch is copied into a pinned host buffer (allocated once per shape and reused: pinning
    costs more than the copy) and sent with ``non_blocking=True``; the next batch waits for that copy
    before it overwrites the buffer. A worker's threads share the predictor, so a lock keeps one
    batch at a time in the buffer. On the CPU a batch is returned as it is.

    Args:
        device: The resolved ``torch.device``.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._buf: Any = None
        self._sent: Any = None  # CUDA event: the last copy out of the buffer finished
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Only the device travels (a copy allocates its own buffer)."""
        return {"device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["device"])  # type: ignore[misc]

    def to_device(self, batch: Any) -> Any:
        """``batch`` (a CPU tensor) on the device."""
        if batch.device == self.device or (not self.cuda and batch.device.type == "cpu"):
            return batch
        if not self.cuda or batch.device.type != "cpu":
            return batch.to(self.device)
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        with self._lock:
            if self._sent is not None:  # the previous batch has left the buffer
                self._sent.synchronize()
            if self._buf is None or self._buf.shape != batch.shape or self._buf.dtype != batch.dtype:
                self._buf = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)
            self._buf.copy_(batch)
            out = self._buf.to(self.device, non_blocking=True)
            self._sent = torch.cuda.Event()
            self._sent.record()
        return out
