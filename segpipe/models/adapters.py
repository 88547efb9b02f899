"""Modules that give models of other forms segpipe's forward convention (worker side; imports torch).

The semantic convention (see :mod:`segpipe.models.registry`): ``forward((N, 3, H, W) normalised
float) -> (N, C, H, W) logits`` at input resolution. :class:`SemanticAdapter` wraps any network that
is close to it (a dict, a tuple or a Hugging Face output instead of a tensor; a lower output
resolution; an input side that must be a multiple of a stride, or a fixed input size; one output
channel for a binary model).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def first_tensor(out: Any) -> torch.Tensor:
    """The logits in a model's output: a tensor, ``out["out"]`` / ``out["logits"]`` (torchvision,
    dict outputs), ``out.logits`` (Hugging Face), or the first item of a tuple or list (smp with a
    classification head, TorchScript tuples).

    Raises:
        TypeError: nothing that looks like logits.
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        for key in ("out", "logits"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    raise TypeError(f"the model returned {type(out).__name__}, not a (N, C, H, W) tensor of logits")


class SemanticAdapter(nn.Module):
    """Gives a semantic network the predictor's convention: ``(N, 3, H, W) → (N, C, H, W)`` logits.

    Args:
        net: The network: an ``nn.Module``, a ScriptModule, an exported program's module, or any callable
            taking and returning tensors (:class:`~segpipe.models.sources.onnx.OnnxRunner`).
        stride: Input sides are padded (replicate) to a multiple of this; the output is cropped back.
        fixed: ``(h, w)`` when the network takes exactly one input size: smaller inputs are padded to it.
        fixed_batch: The network's fixed batch size (1 for most static exports), else None.
        call: ``"positional"`` (``net(x)``) or ``"pixel_values"`` (``net(pixel_values=x)``, Hugging Face).
        propagate_mode: Whether ``eval()`` / ``train()`` reach ``net`` (a ``torch.export`` module refuses them).
    """

    def __init__(self, net: Any, *, stride: int = 1, fixed: tuple[int, int] | None = None,
                 fixed_batch: int | None = None, call: str = "positional", propagate_mode: bool = True) -> None:
        super().__init__()
        self.net = net
        self.stride = max(1, int(stride))
        self.fixed = fixed
        self.fixed_batch = fixed_batch
        self.call = call
        self.propagate_mode = propagate_mode

    def train(self, mode: bool = True) -> SemanticAdapter:
        """Sets the mode; reaches ``net`` only when it accepts it (see ``propagate_mode``)."""
        self.training = mode
        if self.propagate_mode and isinstance(self.net, nn.Module):
            self.net.train(mode)
        return self

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.fixed is not None:
            th, tw = self.fixed
            if h > th or w > tw:
                raise ValueError(f"the model takes {th}x{tw} inputs only; got a {h}x{w} tile "
                                 f"(pass --tile {min(th, tw)})")
        else:
            th, tw = h + (-h) % self.stride, w + (-w) % self.stride
        if (th, tw) == (h, w):
            return x
        # Replicate padding keeps border statistics close to the image (zeros would be a fake edge).
        mode = "replicate" if h > 1 and w > 1 else "constant"
        return F.pad(x, (0, tw - w, 0, th - h), mode=mode)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=x) if self.call == "pixel_values" else self.net(x)
        return first_tensor(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)`` normalised. Returns: ``(N, C, H, W)`` float logits (``C >= 2``)."""
        h, w = x.shape[-2:]
        xp = self._pad(x)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            # A static batch: run it in chunks of that size, the last one filled with copies of its last item.
            b = self.fixed_batch
            parts = []
            for i in range(0, xp.shape[0], b):
                chunk = xp[i : i + b]
                if chunk.shape[0] < b:
                    chunk = torch.cat([chunk, chunk[-1:].expand(b - chunk.shape[0], *chunk.shape[1:])])
                parts.append(self._run(chunk)[: min(b, xp.shape[0] - i)])
            out = torch.cat(parts)
        else:
            out = self._run(xp)
        if out.dim() == 3:  # (N, H, W): one channel without its axis
            out = out[:, None]
        if out.shape[-2:] != xp.shape[-2:]:
            out = F.interpolate(out.float(), size=xp.shape[-2:], mode="bilinear", align_corners=False)
        out = out[..., :h, :w]
        if out.shape[1] == 1:
            # A binary model's one logit x: softmax over (0, x) is (1 − sigmoid(x), sigmoid(x)).
            out = torch.cat([torch.zeros_like(out), out], dim=1)
        return out


class _Universal(nn.Module):
    """A universal segmentation model (Mask2Former, MaskFormer) and its image processor.

    Args:
        net: The transformers model (``pixel_values`` in, class and mask queries out).
        processor: Its image processor, whose ``post_process_*`` turn the queries into results.
    """

    def __init__(self, net: Any, processor: Any) -> None:
        super().__init__()
        self.net = net
        self.processor = processor
        self.stuff: set[int] = set()

    def set_categories(self, categories: list[dict[str, Any]]) -> None:
        """Learns the final categories: the classes that are stuff (``isthing`` false) are fused."""
        self.stuff = {int(c.get("index", i)) for i, c in enumerate(categories) if not c.get("isthing", True)}

    def queries(self, x: torch.Tensor) -> Any:
        """The model's output for a ``(N, 3, H, W)`` normalised batch."""
        return self.net(pixel_values=x)


class UniversalSemantic(_Universal):
    """Semantic output of a universal model: ``(N, 3, H, W) → (N, C, H, W)`` log class scores.

    The scores are the processor's ``post_process_semantic_segmentation`` ones (class probabilities
    times mask probabilities, summed over queries, resized to the input); their log goes out as
    logits, so the predictor's softmax gives the scores normalised per pixel and its argmax the
    processor's segmentation map.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: ``(N, C, H, W)`` float log scores."""
        h, w = x.shape[-2:]
        res = self.processor.post_process_semantic_segmentation(
            self.queries(x), target_sizes=[(h, w)] * x.shape[0], return_segmentation_scores=True)
        scores = torch.stack([r["segmentation_scores"] for r in res]).float()
        return scores.clamp_min(1e-30).log()


def boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """``(K, H, W)`` boolean masks → ``(K, 4)`` xyxy boxes (exclusive max), zeros for an empty mask."""
    k = masks.shape[0]
    out = torch.zeros((k, 4), dtype=torch.float32, device=masks.device)
    for i in range(k):
        ys, xs = torch.nonzero(masks[i], as_tuple=True)
        if ys.numel():
            out[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return out


class UniversalInstance(_Universal):
    """Instance output of a universal model, as torchvision detectors give it.

    ``forward(list[(3, h, w)])`` returns one dict per image: ``masks (K, 1, h, w)`` (the processor's
    binary masks), ``labels (K,)`` class indices, ``scores (K,)``, ``boxes (K, 4)`` xyxy. All queries
    with a mask are returned (threshold 0): the predictor keeps those above its score threshold,
    exactly as the processor's ``threshold`` would.
    """

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Args: images: ``(3, h, w)`` normalised. Returns: one detection dict per image."""
        out = []
        for im in images:
            h, w = im.shape[-2:]
            r = self.processor.post_process_instance_segmentation(
                self.queries(im[None]), threshold=0.0, target_sizes=[(h, w)], return_binary_maps=True)[0]
            info = r["segments_info"]
            if not info:
                masks = torch.zeros((0, 1, h, w), device=im.device)
            else:
                masks = r["segmentation"].to(im.device).float().reshape(len(info), 1, h, w)
            out.append({
                "masks": masks,
                "labels": torch.tensor([s["label_id"] for s in info], dtype=torch.int64, device=im.device),
                "scores": torch.tensor([s["score"] for s in info], dtype=torch.float32, device=im.device),
                "boxes": boxes_of(masks[:, 0] > 0.5),
            })
        return out


class UniversalPanoptic(_Universal):
    """Panoptic output of a universal model, with the ``fuse`` step the panoptic predictor calls.

    ``forward(x)`` runs the model per image and keeps its raw output; ``fuse(out, score_thresh)``
    applies the processor's ``post_process_panoptic_segmentation`` (``threshold`` = the score
    threshold; the stuff classes of :meth:`set_categories` fused) and returns segpipe's ids and segments.
    """

    def forward(self, x: torch.Tensor) -> list[tuple[Any, tuple[int, int]]]:
        """Args: x: ``(N, 3, H, W)``. Returns: per image, the model's output and the image size."""
        h, w = x.shape[-2:]
        return [(self.queries(x[i : i + 1]), (h, w)) for i in range(x.shape[0])]

    def fuse(self, out: tuple[Any, tuple[int, int]], score_thresh: float = 0.5) -> tuple[torch.Tensor, list[Any]]:
        """One image's panoptic result.

        Returns:
            ``(ids (H, W) int32, segments)``: each segment ``{"id", "category_id" (class index),
            "isthing", "score", "area", "bbox" [x, y, w, h]}``; id 0 is void.
        """
        queries, size = out
        r = self.processor.post_process_panoptic_segmentation(
            queries, threshold=score_thresh, label_ids_to_fuse=set(self.stuff), target_sizes=[size])[0]
        ids = r["segmentation"].to(torch.int32).clamp_min(0)
        segments: dict[int, dict[str, Any]] = {}
        for s in r["segments_info"]:
            sid = int(s["id"])
            if sid in segments:  # a fused stuff class lists its one segment once per query
                continue
            m = ids == sid
            area = int(m.sum())
            if not area:
                continue
            box = boxes_of(m[None])[0].tolist()
            segments[sid] = {"id": sid, "category_id": int(s["label_id"]),
                             "isthing": int(s["label_id"]) not in self.stuff, "score": float(s["score"]),
                             "area": area, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
        return ids, list(segments.values())
