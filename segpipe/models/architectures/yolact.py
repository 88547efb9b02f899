"""A YOLACT-style single-stage instance segmenter (Bolya et al. 2019), small but complete.

An FPN on a ResNet gives P3-P5; a prototype branch on P3 predicts ``k`` prototype masks at stride 4;
a shared head predicts, per anchor, class logits, box deltas and ``k`` mask coefficients (tanh).
An instance mask is ``sigmoid(prototypes · coefficients)`` cropped to its box. Training matches anchors
to ground truth by IoU, uses OHEM (3 negatives per positive) for the classes, smooth-L1 for boxes and
box-cropped, area-normalised BCE for masks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.architectures._common import resnet_backbone, resnet_channels, resnet_features
from segpipe.models.registry import ModelSpec, register_model

_RATIOS = (1.0, 0.5, 2.0)


class Yolact(nn.Module):
    """YOLACT-style model with torchvision-compatible inputs and outputs.

    Args:
        num_classes: Classes including background (label 0).
        backbone: torchvision ResNet name.
        num_protos: Number of prototype masks ``k``.
        fpn_channels: FPN width.
        pretrained_backbone: Load the backbone's ImageNet weights from the local cache.
        score_thresh: Minimum class score kept at inference.
        nms_thresh: IoU threshold of the per-class NMS.
        detections_per_img: Detections kept per image.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        num_protos: int = 16,
        fpn_channels: int = 128,
        pretrained_backbone: bool = False,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        # lazy: torchvision costs seconds to import; only models built on it need it
        from torchvision.models.detection._utils import BoxCoder, Matcher
        from torchvision.ops import FeaturePyramidNetwork

        self.num_classes = num_classes
        self.k = num_protos
        self.backbone = resnet_backbone(backbone, pretrained_backbone)
        chans = resnet_channels(backbone)
        self.fpn = FeaturePyramidNetwork(list(chans[1:]), fpn_channels)
        c = fpn_channels
        self.proto = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_protos, 1),
            nn.ReLU(inplace=True),
        )
        a = len(_RATIOS)
        self.tower = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(c, a * num_classes, 3, padding=1)
        self.box = nn.Conv2d(c, a * 4, 3, padding=1)
        self.coef = nn.Conv2d(c, a * num_protos, 3, padding=1)
        # Start with a background prior (as RetinaNet) so early training is not swamped by negatives.
        with torch.no_grad():
            self.cls.bias.view(a, num_classes)[:, 0].fill_(math.log(0.99 / 0.01 * max(num_classes - 1, 1)))  # type: ignore[union-attr]
        self.strides = (8, 16, 32)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    # -- shared parts -----------------------------------------------------------------------------

    def _anchors(self, sizes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
        """Anchors ``(A_total, 4) xyxy`` in the order of the flattened head outputs."""
        out = []
        for (h, w), s in zip(sizes, self.strides, strict=True):
            ys, xs = torch.meshgrid(
                (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s,
                (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s,
                indexing="ij",
            )
            scale = 4.0 * s
            wh = torch.tensor([[scale * math.sqrt(r), scale / math.sqrt(r)] for r in _RATIOS], device=device)  # (A, 2)
            ctr = torch.stack([xs, ys], dim=-1).reshape(h, w, 1, 2)
            half = wh.reshape(1, 1, -1, 2) / 2
            out.append(torch.cat([ctr - half, ctr + half], dim=-1).reshape(-1, 4))
        return torch.cat(out)

    def _batch(self, images: list[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        hmax = -(-max(s[0] for s in sizes) // 32) * 32
        wmax = -(-max(s[1] for s in sizes) // 32) * 32
        batch = images[0].new_zeros((len(images), 3, hmax, wmax))
        for i, im in enumerate(images):
            batch[i, :, : im.shape[-2], : im.shape[-1]] = im
        return batch, sizes

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = resnet_features(self.backbone, x)
        p = list(self.fpn({"c3": feats[1], "c4": feats[2], "c5": feats[3]}).values())
        protos = self.proto(p[0])  # (N, k, H/4, W/4)
        cls, box, coef, sizes = [], [], [], []
        n = x.shape[0]
        for f in p:
            t = self.tower(f)
            sizes.append((int(f.shape[-2]), int(f.shape[-1])))
            cls.append(self.cls(t).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes))
            box.append(self.box(t).permute(0, 2, 3, 1).reshape(n, -1, 4))
            coef.append(torch.tanh(self.coef(t).permute(0, 2, 3, 1).reshape(n, -1, self.k)))
        anchors = self._anchors(sizes, x.device)
        return torch.cat(cls, 1), torch.cat(box, 1), torch.cat(coef, 1), protos, anchors

    def forward(
        self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
    ) -> Any:
        """Runs the model.

        Args:
            images: ``list[(3, H_i, W_i)]`` or ``(N, 3, H, W)``, normalised.
            targets: In training, one dict per image: ``boxes (M, 4) xyxy``, ``labels (M,) int64``,
                ``masks (M, H_i, W_i) uint8``.

        Returns:
            Training: ``{"loss_classifier", "loss_box_reg", "loss_mask"}``. Eval: one dict per image
            with ``boxes (K, 4)``, ``labels (K,)``, ``scores (K,)``, ``masks (K, 1, H_i, W_i)`` in [0, 1].
        """
        batch, sizes = self._batch(images)
        cls, box, coef, protos, anchors = self._heads(batch)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            return self._loss(cls, box, coef, protos, anchors, targets, batch.shape[-2:])
        return [self._detect(cls[i], box[i], coef[i], protos[i], anchors, sizes[i]) for i in range(len(sizes))]

    # -- training ---------------------------------------------------------------------------------

    def _loss(
        self,
        cls: torch.Tensor,
        box: torch.Tensor,
        coef: torch.Tensor,
        protos: torch.Tensor,
        anchors: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        padded: torch.Size,
    ) -> dict[str, torch.Tensor]:
        # lazy: torchvision costs seconds to import; only models built on it need it
        from torchvision.ops import box_iou

        l_cls, l_box, l_mask = [], [], []
        hp, wp = protos.shape[-2:]
        for i, t in enumerate(targets):
            gt_boxes = t["boxes"].to(anchors)
            gt_labels = t["labels"].to(torch.int64)
            if gt_boxes.numel() == 0:
                tgt = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
                ce = F.cross_entropy(cls[i], tgt, reduction="none")
                l_cls.append(ce.topk(min(64, ce.numel())).values.mean())
                continue
            matched = self.matcher(box_iou(gt_boxes, anchors))
            pos = matched >= 0
            tgt = torch.zeros_like(matched)
            tgt[pos] = gt_labels[matched[pos]]
            ce = F.cross_entropy(cls[i], tgt, reduction="none")
            neg = matched == -1  # Matcher.BELOW_LOW_THRESHOLD; -2 (between thresholds) is ignored
            n_pos = int(pos.sum())
            n_neg = min(int(neg.sum()), max(3 * n_pos, 16))
            neg_loss = ce.masked_fill(~neg, float("-inf")).topk(n_neg).values if n_neg else ce[:0]
            l_cls.append((ce[pos].sum() + neg_loss.sum()) / max(n_pos, 1))
            if n_pos == 0:
                continue
            idx = matched[pos]
            codes = self.box_coder.encode_single(gt_boxes[idx], anchors[pos])
            l_box.append(F.smooth_l1_loss(box[i][pos], codes, beta=1.0 / 9, reduction="sum") / n_pos)
            # Mask loss on at most 100 positives (memory), against GT masks resized to the prototypes.
            sel = torch.nonzero(pos).squeeze(1)[:100]
            gidx = matched[sel]
            masks = t["masks"].to(protos.dtype)
            h, w = masks.shape[-2:]
            full = masks.new_zeros((masks.shape[0], padded[0], padded[1]))
            full[:, :h, :w] = masks
            gt_m = F.interpolate(full[None], size=(hp, wp), mode="bilinear", align_corners=False)[0]
            gt_m = (gt_m[gidx] > 0.5).to(protos.dtype)
            logits = torch.einsum("khw,pk->phw", protos[i], coef[i][sel])
            bce = F.binary_cross_entropy_with_logits(logits, gt_m, reduction="none")
            crop = _box_mask(
                gt_boxes[gidx] * torch.tensor([wp / padded[1], hp / padded[0]] * 2, device=anchors.device), hp, wp
            )
            area = crop.flatten(1).sum(1).clamp(min=1)
            l_mask.append(((bce * crop).flatten(1).sum(1) / area).mean())
        zero = cls.sum() * 0
        return {
            "loss_classifier": torch.stack(l_cls).mean(),
            "loss_box_reg": torch.stack(l_box).mean() if l_box else zero,
            "loss_mask": torch.stack(l_mask).mean() if l_mask else zero,
        }

    # -- inference --------------------------------------------------------------------------------

    def _detect(
        self,
        cls: torch.Tensor,
        box: torch.Tensor,
        coef: torch.Tensor,
        protos: torch.Tensor,
        anchors: torch.Tensor,
        size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        # lazy: torchvision costs seconds to import; only models built on it need it
        from torchvision.ops import batched_nms, clip_boxes_to_image

        scores = cls.float().softmax(-1)[:, 1:]  # (A, C-1)
        flat = scores.flatten()
        keep = torch.nonzero(flat > self.score_thresh).squeeze(1)
        if keep.numel() > 1000:
            keep = keep[flat[keep].topk(1000).indices]
        a_idx = keep // (self.num_classes - 1)
        labels = keep % (self.num_classes - 1) + 1
        sc = flat[keep]
        boxes = self.box_coder.decode_single(box[a_idx].float(), anchors[a_idx])
        boxes = clip_boxes_to_image(boxes, size)
        k = batched_nms(boxes, sc, labels, self.nms_thresh)[: self.detections_per_img]
        boxes, sc, labels, a_idx = boxes[k], sc[k], labels[k], a_idx[k]
        h, w = size
        if k.numel():
            m = torch.einsum("khw,pk->phw", protos.float(), coef[a_idx].float())
            up_h, up_w = protos.shape[-2] * 4, protos.shape[-1] * 4
            m = F.interpolate(m[None], size=(up_h, up_w), mode="bilinear", align_corners=False)[0][:, :h, :w]
            m = m.sigmoid() * _box_mask(boxes, h, w)
        else:
            m = boxes.new_zeros((0, h, w))
        return {"boxes": boxes, "labels": labels, "scores": sc, "masks": m[:, None]}


def _box_mask(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(K, h, w)`` float: 1 inside each ``xyxy`` box (pixel centres), 0 outside."""
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5
    inx = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    iny = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    return (iny[:, :, None] & inx[:, None, :]).to(boxes.dtype)


def build_yolact(num_classes: int, pretrained_backbone: bool = False, **kw: Any) -> nn.Module:
    """Builds the YOLACT-style model (``backbone=`` resnet18 default, ``num_protos=`` 16)."""
    return Yolact(num_classes, pretrained_backbone=pretrained_backbone, **kw)


register_model(
    ModelSpec(
        "yolact",
        "instance",
        build_yolact,
        (512, 512),
        "YOLACT-style: prototypes × per-detection coefficients on ResNet-18-FPN",
        stride=32,
    )
)
