"""Box prompts to instance masks with a SAM model: one image embedding per image, boxes decoded in batches.

SAM splits into a heavy image encoder (a ViT, or SAM 2's Hiera, over the whole image) and a light
prompt decoder. The encoder runs once per image (:meth:`PromptedPredictor.embed`); every box of that
image then goes through the decoder against the same embedding (:meth:`PromptedPredictor.segment`).

* :class:`PromptedPredictor` (a transformers SAM or SAM 2 folder): :data:`BOX_BATCH` boxes per decoder
  pass. Pre- and post-processing are the folder's own processor's (resize, padding, box rescaling,
  mask upsampling and the threshold at 0), so the masks are the ones ``SamModel`` / ``Sam2Model``
  ``(pixel_values, input_boxes)`` gives for the same boxes.
* :class:`OnnxPromptedPredictor` (an ONNX encoder/decoder pair, segment-anything's export layout): run
  by onnxruntime; one box per decoder run (that layout's prompt batch is 1). Its pre-processing is
  segment-anything's (``ResizeLongestSide``: the longest side to the encoder's, bilinear; ImageNet
  mean and std on 0..255 pixels; zeros padded right and below), as is its box mapping; the decoder
  upsamples the masks to the image itself, thresholded at 0.

:func:`load_prompted` picks the predictor for a folder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.core import rle as rle_ops
from segpipe.models.predictors.base import select_device
from segpipe.models.sources.onnx import make_session
from segpipe.models.sources.sam import SamInfo, load_sam, read_sam

#: Boxes per decoder pass: a pass upsamples ``BOX_BATCH`` masks to the image's size (``BOX_BATCH × H × W``
#: booleans), so this bounds its memory on large images.
BOX_BATCH = 16


@dataclass
class Embedding:
    """One image's SAM embedding and the sizes the processor needs to map boxes and masks.

    Attributes:
        features: ``(1, C, h, w)`` float tensor: the vision encoder's output (SAM 2: a list of its feature
            levels, the last ``(1, C, h, w)``; ONNX: a float32 array).
        original_size: ``(1, 2)`` tensor ``[H, W]`` of the image.
        reshaped_size: ``(1, 2)`` tensor ``[h', w']`` of the resized (unpadded) image (None for SAM 2,
            which resizes to the square side).
        image: The ``(H, W, 3)`` uint8 image (the processor rescales boxes relative to it).
    """

    features: Any
    original_size: Any
    reshaped_size: Any
    image: np.ndarray


class BoxSegmenter:
    """What both predictors share: encoder passes counted per thread, boxes decoded in batches.

    Attributes:
        box_batch: Boxes per decoder pass.
    """

    task = "instance"
    box_batch = BOX_BATCH

    def __init__(self) -> None:
        self._passes = threading.local()

    def _count(self, *_: Any) -> None:
        self._passes.n = self.encoder_passes + 1

    @property
    def encoder_passes(self) -> int:
        """The image encoder's runs made by this thread."""
        return int(getattr(self._passes, "n", 0))

    def embed(self, image: np.ndarray) -> Embedding:
        """Runs the image encoder once on ``image`` ``(H, W, 3)`` uint8."""
        raise NotImplementedError

    def _decode(self, emb: Embedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(masks (k, H, W) bool, iou (k,) float32)`` of at most :attr:`box_batch` boxes."""
        raise NotImplementedError

    def segment(self, emb: Embedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of ``boxes`` against one embedding, :attr:`box_batch` boxes per decoder pass.

        Args:
            emb: The image's embedding (:meth:`embed`).
            boxes: ``(K, 4)`` xyxy pixel boxes in the image.

        Returns:
            ``(masks (K, H, W) bool, iou (K,) float32)``: the masks (logits above 0) and the decoder's
            predicted IoU of each.
        """
        h, w = emb.image.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        masks, ious = [], []
        for i in range(0, len(boxes), self.box_batch):
            m, q = self._decode(emb, boxes[i : i + self.box_batch])
            masks.append(m)
            ious.append(q)
        return np.concatenate(masks), np.concatenate(ious)

    def segment_rles(self, emb: Embedding, boxes: np.ndarray) -> list[dict[str, Any]]:
        """:meth:`segment`'s masks as COCO RLEs, encoded batch by batch (never ``K × H × W`` at once)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(boxes), self.box_batch):
            masks, _ = self._decode(emb, boxes[i : i + self.box_batch])
            out.extend(rle_ops.encode(m) for m in masks)
        return out


def load_prompted(path: str | Path, device: str = "cpu", threads: int | None = None) -> BoxSegmenter:
    """The predictor of a SAM folder: transformers (SAM, SAM 2) or an ONNX encoder/decoder pair.

    Raises:
        CheckpointError: not a SAM folder segpipe runs (one line).
    """
    info = read_sam(path)
    if info.model_type == "onnx":
        return OnnxPromptedPredictor(info, device=device, threads=threads)
    return PromptedPredictor(path, device=device, threads=threads)


class PromptedPredictor(BoxSegmenter):
    """A transformers SAM or SAM 2 model that turns boxes into masks, counting its encoder passes.

    Args:
        path: The SAM folder (:func:`segpipe.models.sources.sam.load_sam`).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        threads: torch threads on the CPU (None: leave torch's setting).

    Attributes:
        encoder_passes: How many times the vision encoder ran in the calling thread (a forward hook on
            it counts every call): one per :meth:`embed`. Per thread, because a worker's threads share
            the model, and a task asks how many passes its own image cost.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import torch  # lazy: torch costs seconds to import; predictors run on workers

        super().__init__()
        if threads is not None:
            torch.set_num_threads(threads)
        self.model, self.processor = load_sam(path)
        self.sam2 = type(self.model).__name__ == "Sam2Model"
        self.device = select_device(device)
        self.model.to(self.device)
        self.model.vision_encoder.register_forward_hook(self._count)

    def embed(self, image: np.ndarray) -> Embedding:
        """Runs the vision encoder once on ``image`` ``(H, W, 3)`` uint8."""
        import torch  # lazy: as above

        inputs = self.processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            feats = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
        return Embedding(feats, inputs["original_sizes"], inputs.get("reshaped_input_sizes"), image)

    def _decode(self, emb: Embedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch  # lazy: as above

        if self.sam2:
            # SAM 2's processor maps boxes to its square input itself, from the image's size alone
            scaled = self.processor(original_sizes=emb.original_size, input_boxes=[boxes.tolist()],
                                    return_tensors="pt")["input_boxes"]
        else:
            # The processor rescales boxes to the resized image as it does with the image itself; only the
            # boxes of its output are used (the pixels were encoded once, in embed).
            scaled = self._scale_boxes(emb, boxes)
        with torch.inference_mode():
            out = self.model(image_embeddings=emb.features, input_boxes=scaled.to(self.device), multimask_output=False)
        if self.sam2:
            masks = self.processor.post_process_masks(out.pred_masks.cpu(), emb.original_size)[0]
        else:
            masks = self.processor.post_process_masks(out.pred_masks.cpu(), emb.original_size, emb.reshaped_size)[0]
        return masks[:, 0].numpy().astype(bool), out.iou_scores[0, :, 0].float().cpu().numpy()

    def _scale_boxes(self, emb: Embedding, boxes: np.ndarray) -> Any:
        """``(1, K, 4)`` boxes in the resized image's pixels, as the processor maps them."""
        import torch  # lazy: as above

        h, w = (int(v) for v in emb.original_size[0])
        nh, nw = (int(v) for v in emb.reshaped_size[0])
        # float32 first, then float64 arithmetic: the processor's own steps, so the model sees equal boxes
        b = boxes.astype(np.float32).astype(np.float64)
        b[:, [0, 2]] *= nw / w
        b[:, [1, 3]] *= nh / h
        return torch.from_numpy(b)[None]


#: segment-anything's pixel mean and std (ImageNet's on 0..255 pixels).
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)


class OnnxPromptedPredictor(BoxSegmenter):
    """An ONNX SAM encoder/decoder pair run by onnxruntime (CPU; the CUDA provider first when present).

    Args:
        info: The checked pair (:func:`segpipe.models.sources.sam.read_sam`).
        device: ``cpu`` runs on the CPU; anything else puts the CUDA provider first when onnxruntime has it.
        threads: Intra-op threads of each session (None: 1).
    """

    box_batch = 1  # segment-anything's export fixes the prompt batch at 1

    def __init__(self, info: SamInfo, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        assert info.encoder is not None and info.decoder is not None
        cuda = device != "cpu"
        self.side = info.image_size
        self.encoder = make_session(str(info.encoder), cuda=cuda, threads=threads or 1)
        self.decoder = make_session(str(info.decoder), cuda=cuda, threads=threads or 1)
        self._image_input = self.encoder.get_inputs()[0].name
        self._outputs = [o.name for o in self.decoder.get_outputs()]
        mask_shape = next(i.shape for i in self.decoder.get_inputs() if i.name == "mask_input")
        self._mask_side = mask_shape[2:] if all(isinstance(d, int) for d in mask_shape[2:]) else None

    def resized(self, h: int, w: int) -> tuple[int, int]:
        """The image's size with its longest side the encoder's (segment-anything's ``get_preprocess_shape``)."""
        scale = self.side / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def embed(self, image: np.ndarray) -> Embedding:
        """Runs the encoder once on ``image`` ``(H, W, 3)`` uint8: resized, normalised, padded to ``S × S``."""
        from PIL import Image  # lazy: PIL is needed only where images are encoded

        h, w = image.shape[:2]
        nh, nw = self.resized(h, w)
        rgb = Image.fromarray(np.ascontiguousarray(image[..., :3]))
        pixels = np.asarray(rgb.resize((nw, nh), Image.Resampling.BILINEAR))
        x = np.zeros((1, 3, self.side, self.side), np.float32)
        x[0, :, :nh, :nw] = ((pixels.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
        feats = self.encoder.run(None, {self._image_input: x})[0]
        self._count()
        return Embedding(np.asarray(feats, np.float32), np.array([[h, w]]), np.array([[nh, nw]]), image)

    def _decode(self, emb: Embedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = (int(v) for v in emb.original_size[0])
        nh, nw = (int(v) for v in emb.reshaped_size[0])
        eh, ew = emb.features.shape[2:]
        mh, mw = self._mask_side or (4 * eh, 4 * ew)
        masks, ious = [], []
        for box in boxes:
            # a box is its two corners, labelled 2 (top-left) and 3 (bottom-right), in the resized image
            coords = (np.asarray(box, np.float64).reshape(2, 2) * [nw / w, nh / h]).astype(np.float32)[None]
            out = dict(zip(self._outputs, self.decoder.run(None, {
                "image_embeddings": emb.features, "point_coords": coords,
                "point_labels": np.array([[2, 3]], np.float32),
                "mask_input": np.zeros((1, 1, mh, mw), np.float32), "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array([h, w], np.float32)}), strict=True))
            logits, iou = np.asarray(out["masks"])[0], np.asarray(out["iou_predictions"], np.float32).reshape(-1)
            best = int(iou.argmax())  # an export with several masks per prompt: the one it rates best
            masks.append(logits[best] > 0.0)
            ious.append(iou[best])
        return np.stack(masks), np.array(ious, np.float32)
