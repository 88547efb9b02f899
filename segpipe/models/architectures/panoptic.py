"""Panoptic segmentation: UPSNet's parameter-free panoptic head over a semantic and an instance model.

:func:`panoptic_fusion` follows UPSNet (Xiong et al. 2019): panoptic logits are the stuff channels of
the semantic logits, plus one channel per detected instance (the semantic logit of its class inside its
box + its own mask logit), plus an *unknown* channel ``max(thing semantic logits) − max(instance
logits, zero-padded outside their boxes)`` that wins where the semantic head sees a thing that no
instance explains. The argmax gives every pixel one segment; unknown and void pixels get id 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segpipe.models.registry import ModelSpec, build_model, register_model

_NEG = -1e4  # "outside the box": an instance cannot claim the pixel (finite, so fp16-safe)


@torch.no_grad()
def panoptic_fusion(
    semantic_logits: torch.Tensor,
    instances: dict[str, torch.Tensor],
    thing_classes: Sequence[int],
    *,
    void_class: int | None = 0,
    score_thresh: float = 0.5,
    masks_are_probabilities: bool = True,
    unknown: bool = True,
    min_area: int = 0,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Fuses semantic logits and instances into a panoptic id map (parameter-free).

    Args:
        semantic_logits: ``(C, H, W)`` logits over all classes.
        instances: ``boxes (K, 4) xyxy``, ``labels (K,)`` class indices into the semantic channels,
            ``scores (K,)``, ``masks (K, 1, H, W)`` probabilities (or logits if
            ``masks_are_probabilities`` is False).
        thing_classes: Semantic channel indices that are things; the others are stuff.
        void_class: A stuff class that means "no segment" (background), or None.
        score_thresh: Instances below this score are ignored.
        masks_are_probabilities: Convert masks to logits first.
        unknown: Add UPSNet's unknown channel.
        min_area: Segments smaller than this many pixels are dropped (set to 0).

    Returns:
        ``(ids (H, W) int32, segments_info)``: each segment ``{"id", "category_id" (class index),
        "isthing", "score" (None for stuff), "area", "bbox" [x, y, w, h]}``; id 0 is void/unknown.
    """
    c, h, w = semantic_logits.shape
    logits = semantic_logits.float()
    things = sorted(set(int(t) for t in thing_classes))
    stuff = [i for i in range(c) if i not in things]
    keep = instances["scores"] >= score_thresh
    boxes = instances["boxes"][keep].float()
    labels = instances["labels"][keep].long()
    scores = instances["scores"][keep].float()
    masks = instances["masks"][keep].float().reshape(-1, h, w)
    if masks_are_probabilities:
        masks = torch.logit(masks.clamp(1e-4, 1 - 1e-4))
    inst_logits = _instance_logits(logits, boxes, labels, masks)
    channels = [logits[stuff]] if stuff else []
    if inst_logits:
        inst = torch.stack(inst_logits)
        channels.append(inst)
        if unknown and things:
            # UPSNet zero-pads instance logits outside their boxes for this max; only the instance
            # channels themselves use a large negative there (an instance never claims outside its box).
            best = inst.amax(0)
            best = torch.where(best <= _NEG / 2, torch.zeros_like(best), best)
            channels.append((logits[things].amax(0) - best)[None])
    elif unknown and things:
        channels.append(logits[things].amax(0)[None])  # no instance: max over zero-padded logits is 0
    pan = torch.cat(channels).argmax(0)
    n_stuff, n_inst = len(stuff), len(inst_logits)
    ids = torch.zeros((h, w), dtype=torch.int32, device=logits.device)
    segments: list[dict[str, Any]] = []
    next_id = 1
    for ch in range(n_stuff + n_inst):
        region = pan == ch
        area = int(region.sum())
        if area == 0 or area < min_area:
            continue
        if ch < n_stuff:
            cls, isthing, score = stuff[ch], False, None
            if void_class is not None and cls == void_class:
                continue
        else:
            k = ch - n_stuff
            cls, isthing, score = int(labels[k]), True, float(scores[k])
        ids[region] = next_id
        yy, xx = torch.nonzero(region, as_tuple=True)
        bx = [int(xx.min()), int(yy.min()), int(xx.max() - xx.min() + 1), int(yy.max() - yy.min() + 1)]
        segments.append(
            {"id": next_id, "category_id": int(cls), "isthing": isthing, "score": score, "area": area, "bbox": bx}
        )
        next_id += 1
    return ids, segments


def _instance_logits(
    logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor
) -> list[torch.Tensor]:
    """One ``(H, W)`` channel per instance: its class's semantic logit + its mask logit inside its box.

    Args:
        logits: ``(C, H, W)`` semantic logits.
        boxes: ``(K, 4)`` xyxy boxes in pixels.
        labels: ``(K,)`` class indices into ``logits``.
        masks: ``(K, H, W)`` mask logits.

    Returns:
        ``K`` maps, ``_NEG`` outside the boxes (an instance never claims a pixel outside its box).
    """
    _, h, w = logits.shape
    out = []
    for i in range(boxes.shape[0]):
        x0, y0 = max(int(boxes[i, 0].floor()), 0), max(int(boxes[i, 1].floor()), 0)
        x1, y1 = min(int(boxes[i, 2].ceil()), w), min(int(boxes[i, 3].ceil()), h)
        z = torch.full((h, w), _NEG, device=logits.device)
        if x1 > x0 and y1 > y0:
            z[y0:y1, x0:x1] = logits[labels[i], y0:y1, x0:x1] + masks[i, y0:y1, x0:x1]
        out.append(z)
    return out


class PanopticFPN(nn.Module):
    """A semantic model and an instance model run side by side; fusion happens in the predictor.

    Args:
        semantic: Returns ``(N, C, H, W)`` logits.
        instance: torchvision-style instance model whose labels index the same C classes.
        thing_classes: Class indices that are things.
    """

    def __init__(self, semantic: nn.Module, instance: nn.Module, thing_classes: Sequence[int]) -> None:
        super().__init__()
        self.semantic = semantic
        self.instance = instance
        self.thing_classes = [int(t) for t in thing_classes]

    def forward(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """Args: x: ``(N, 3, H, W)``. Returns: per image ``{"semantic": (C, H, W), "instances": dict}``."""
        sem = self.semantic(x)
        inst = self.instance(list(x))
        return [{"semantic": sem[i], "instances": inst[i]} for i in range(x.shape[0])]

    def fuse(self, out: dict[str, Any], **kw: Any) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Applies :func:`panoptic_fusion` to one image's output."""
        return panoptic_fusion(out["semantic"], out["instances"], self.thing_classes, **kw)


def build_panoptic_fpn(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds a panoptic model.

    Args:
        num_classes: Semantic classes including background; instance labels index the same classes.
        pretrained_backbone: Passed to both builders.
        **kw: The options below.

    Keyword Args:
        semantic_arch: Semantic architecture (default ``lraspp_mobilenet_v3_large``).
        instance_arch: Instance architecture (default ``maskrcnn_mobilenet_v3``).
        thing_classes: Thing class indices (default: every class but 0).
        semantic_kwargs, instance_kwargs: Passed to the two builders.
    """
    sem_arch = kw.pop("semantic_arch", "lraspp_mobilenet_v3_large")
    inst_arch = kw.pop("instance_arch", "maskrcnn_mobilenet_v3")
    things = kw.pop("thing_classes", list(range(1, num_classes)))
    sem = build_model(sem_arch, num_classes, pretrained_backbone, **kw.pop("semantic_kwargs", {}))
    inst = build_model(inst_arch, num_classes, pretrained_backbone, **kw.pop("instance_kwargs", {}))
    if kw:
        raise TypeError(f"unexpected panoptic_fpn options: {sorted(kw)}")
    return PanopticFPN(sem, inst, things)


register_model(
    ModelSpec(
        "panoptic_fpn",
        "panoptic",
        build_panoptic_fpn,
        (512, 512),
        "LR-ASPP + Mask R-CNN (MobileNetV3) fused by UPSNet's parameter-free panoptic head",
    )
)
