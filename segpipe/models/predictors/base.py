"""What every predictor shares: the model on its device, input normalisation, the forward pass, and
the factory that picks the predictor of a model's task.

``Predictor(model, meta, ...)`` and :meth:`Predictor.from_checkpoint` build the predictor registered
for ``meta.task`` (:func:`register_predictor`), so callers keep one entry point while each task's
logic lives in its own class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from segpipe.errors import ConfigError
from segpipe.models.checkpoint import CheckpointMeta
from segpipe.models.devices import HostStaging, autocast_dtype
from segpipe.models.predictors.tiler import Tiler
from segpipe.models.registry import arch_dims, build_model
from segpipe.models.sources import SourceOptions, detect_source

if TYPE_CHECKING:
    from typing import Self

_P = TypeVar("_P", bound="type[Predictor]")

#: task → its predictor class; filled by :func:`register_predictor` as the task modules load.
_BY_TASK: dict[str, type[Predictor]] = {}


def register_predictor(task: str) -> Callable[[_P], _P]:
    """Class decorator: the predictor of ``task`` (a second one for the same task raises)."""

    def deco(cls: _P) -> _P:
        if task in _BY_TASK:
            raise ValueError(f"task {task!r} already has a predictor: {_BY_TASK[task].__name__}")
        cls.task_name = task
        _BY_TASK[task] = cls
        return cls

    return deco


def predictor_class(meta: CheckpointMeta) -> type[Predictor]:
    """The predictor class for a model's metadata (its task, then any variant by architecture).

    Raises:
        ConfigError: No predictor is registered for ``meta.task``.
    """
    cls = _BY_TASK.get(meta.task)
    if cls is None:
        raise ConfigError(f"no predictor for task {meta.task!r}; known: {', '.join(sorted(_BY_TASK))}")
    return cls.variant(meta)


def select_device(device: str = "auto") -> Any:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else is passed to ``torch.device``."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_threads(threads: int | None) -> None:
    """Sets torch's CPU threads: ``threads``, or at most the cores this process may run on."""
    import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

    if threads is not None:
        torch.set_num_threads(max(1, threads))
        return
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        avail = os.cpu_count() or 1
    # Oversubscription (torch's default counts all host cores, not this process's share) slows
    # everything down; never use more threads than cores we may run on.
    if torch.get_num_threads() > avail:
        torch.set_num_threads(avail)


def model_dims(arch: str) -> int:
    """Spatial dimensions of a registered architecture (2 for names the registry does not know)."""
    return arch_dims(arch)


class Predictor:
    """A model plus everything needed to run it on images of any size.

    Constructing ``Predictor`` builds the subclass registered for ``meta.task``
    (:class:`~segpipe.models.predictors.semantic.SemanticPredictor` and so on); constructing a
    subclass checks that the model's task is its own. Every predictor takes the same options, so one
    option set serves any checkpoint; options of other tasks are ignored.

    Args:
        model: The ``nn.Module`` (eval mode is set here).
        meta: Its :class:`~segpipe.models.checkpoint.CheckpointMeta`.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        batch_size: Tiles per forward pass.
        tile: Tile ``(h, w)`` or side; the checkpoint's when None.
        overlap: A float is a fraction of the tile in [0, 1); an ``int`` is pixels (internal callers);
            the checkpoint's when None.
        blend: ``gaussian`` (default), ``linear`` or ``constant``.
        amp: Autocast as ``precision`` says; False runs float32 whatever ``precision`` says.
        precision: ``auto`` (bf16 autocast on a CUDA device with bf16 support, float32 elsewhere),
            ``fp32`` or ``bf16`` (on the CPU too): see :func:`~segpipe.models.devices.autocast_dtype`.
        threads: CPU threads (default: the cores this process may use).
        score_thresh: Instances (and panoptic segments, Keypoint R-CNN people) below this score are dropped.
        mask_thresh: Instance mask probability threshold.
        nms_iou: Mask IoU above which two same-class instance detections are duplicates.
        blend_logits: Semantic label maps without probabilities blend logits rather than
            probabilities (faster; see ``SemanticPredictor.predict_semantic``). Off by default.

    Raises:
        ConfigError: No predictor for the task, or a subclass built for another task's model.
    """

    #: The task this class predicts (set by :func:`register_predictor`).
    task_name: ClassVar[str] = ""
    #: CUDA only: run the model and its input channels-last (the dense per-pixel models).
    channels_last_input: ClassVar[bool] = False
    #: The model takes a list of ``(3, h, w)`` images (torchvision detection models), not a batch.
    list_input: ClassVar[bool] = False

    def __new__(cls, model: Any = None, meta: CheckpointMeta | None = None, **kw: Any) -> Self:
        """An instance of the class registered for ``meta.task`` (``__init__`` then runs on it)."""
        if meta is None:  # pickle and copy re-create the object of a known class without arguments
            return super().__new__(cls)
        target = predictor_class(meta)
        if not issubclass(target, cls):
            raise ConfigError(f"{cls.__name__} predicts {cls.task_name!r}; this model's task is {meta.task!r}")
        return super().__new__(target)

    @classmethod
    def variant(cls, meta: CheckpointMeta) -> type[Predictor]:
        """The class that handles ``meta`` among this task's predictors (this one unless overridden)."""
        return cls

    def __init__(
        self,
        model: Any,
        meta: CheckpointMeta,
        *,
        device: str = "auto",
        batch_size: int = 4,
        tile: int | tuple[int, int] | None = None,
        overlap: float | int | None = None,
        blend: str = "gaussian",
        amp: bool = True,
        threads: int | None = None,
        score_thresh: float = 0.5,
        mask_thresh: float = 0.5,
        nms_iou: float = 0.5,
        blend_logits: bool = False,
        precision: str = "auto",
    ) -> None:
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        self.meta = meta
        self.task: str = meta.task
        self.device = select_device(device)
        self.batch_size = max(1, batch_size)
        self.dims = model_dims(meta.arch)
        t = tile if tile is not None else tuple(meta.tile_size[-2:])
        self.tile: tuple[int, int] = (t, t) if isinstance(t, int) else (int(t[0]), int(t[1]))
        #: 3-D models: tile ``(depth, height, width)``; the depth comes from the checkpoint.
        depth = int(meta.tile_size[0]) if len(meta.tile_size) == 3 else self.tile[0]
        self.tile3: tuple[int, int, int] = (depth, *self.tile)
        # A float is a fraction of the tile; an int (internal callers only) is pixels: see overlap_pixels.
        self.overlap: float | int = (overlap if type(overlap) is int
                                     else float(meta.tile_overlap if overlap is None else overlap))
        self.blend = blend
        self.score_thresh = score_thresh
        self.mask_thresh = mask_thresh
        self.nms_iou = nms_iou
        self.blend_logits = blend_logits
        self.cuda = self.device.type == "cuda"
        if not self.cuda:
            cpu_threads(threads)
        self.model = model.eval().to(self.device)
        if self.cuda and self.channels_last_input:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = precision if amp else "fp32"
        self.amp_dtype = autocast_dtype(self.precision, self.device)
        self._staging = HostStaging(self.device)
        mean = torch.tensor(meta.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(meta.std, device=self.device).view(1, 3, 1, 1) * 255.0
        # (x − mean) / std as x · scale + bias: one fused pass in _to_tensor
        self._scale = 1.0 / std
        self._bias = -mean / std
        #: ``(num_classes,) int64``: model index → dataset category id.
        self.category_ids = np.array(
            [int(c.get("id", c.get("index", i))) for i, c in enumerate(meta.categories)] or range(meta.num_classes),
            dtype=np.int64,
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, arch: str | None = None, num_classes: int | None = None,
                        task: str | None = None, **kw: Any) -> Self:
        """Loads a model file or folder of any form :mod:`segpipe.models.sources` reads, and wraps it.

        Args:
            path: A segpipe checkpoint, a state dict (with ``arch``), TorchScript, ``.pt2``, ONNX, or a
                Hugging Face / smp folder.
            arch: Architecture of a plain state dict.
            num_classes: Classes of a model that does not say.
            task: The output of a universal model (``semantic``, ``instance``, ``panoptic``).
            **kw: Predictor options.
        """
        loaded = detect_source(path).load(Path(path), SourceOptions(arch=arch, num_classes=num_classes, task=task))
        if hasattr(loaded.model, "set_categories"):
            loaded.model.set_categories(loaded.meta.categories)
        return cls(loaded.model, loaded.meta, **kw)

    @property
    def tiler(self) -> Tiler:
        """The sliding window of the current settings (read on each call: callers may change them)."""
        return Tiler(self.tile, self.overlap, self.blend, self.batch_size)

    # -- the forward pass -------------------------------------------------------------------------

    def _to_tensor(self, tiles: Sequence[Any]) -> Any:
        """``list[(h, w, 3) uint8]`` → normalised ``(N, 3, h, w)`` float on the device.

        The tiles are numpy arrays, or ``(h, w, 3)`` tensors already on the device (images decoded
        there: :func:`~segpipe.models.devices.decode_jpegs`).
        """
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        if all(isinstance(t, torch.Tensor) for t in tiles):
            batch = torch.stack(list(tiles))
        else:
            batch = torch.from_numpy(np.stack([np.asarray(t) for t in tiles]))
        # CUDA: from a pinned buffer, non-blocking (devices.HostStaging); the CPU: as it is
        batch = self._staging.to_device(batch)
        # One fused pass uint8 → normalised float, ``x · (1/std) − mean/std`` (within 2.4e-7 of
        # ``(x − mean) / std``): half the time of convert-then-normalise, and the result keeps the
        # channels-last strides of the HWC view.
        x = torch.addcmul(self._bias, batch.permute(0, 3, 1, 2), self._scale)
        if x.dtype != torch.float32:  # float64 tiles from a library caller: the model takes float32
            x = x.float()
        if self.cuda and self.channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _run(self, x: Any) -> Any:
        """The model on a prepared ``(N, C, ...)`` batch, without autograd (autocast per ``precision``)."""
        import torch  # lazy: torch loads on the workers, not in the driver that imports predictors

        with torch.inference_mode():
            inp = list(x) if self.list_input else x
            if self.amp_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.amp_dtype):
                    return self.model(inp)
            return self.model(inp)

    def _forward(self, tiles: list[np.ndarray]) -> Any:
        """``list[(h, w, 3)]`` image tiles → the model's output for them."""
        return self._run(self._to_tensor(tiles))

    def _category_id(self, label: Any) -> Any:
        """Dataset category id of a model index (the index itself past the checkpoint's categories)."""
        return int(self.category_ids[label]) if label < len(self.category_ids) else label

    # -- public API -------------------------------------------------------------------------------

    def predict(self, image: Any, **kw: Any) -> Any:
        """Predicts one image ``(H, W, 3) uint8`` (any array-like supporting 2-D slicing)."""
        raise NotImplementedError

    def predict_batch(self, images: Sequence[Any]) -> list[Any]:
        """Predicts several images, one after another (the semantic predictor shares passes)."""
        return [self.predict(im) for im in images]


def predictor_for(arch: str, num_classes: int, *, model: Any = None, **kw: Any) -> Predictor:
    """A predictor for an architecture without a checkpoint (random weights unless ``model`` given)."""
    meta = CheckpointMeta.for_arch(arch, num_classes)
    if model is None:
        model = build_model(arch, num_classes)
    return Predictor(model, meta, **kw)
