"""Shared machinery of the synthetic dataset generators: class tables, rendering and writing.

A generator paints a label map and an instance-id map with Pillow's drawing primitives (deterministic
for a seed); the photo is then rendered from the label map with a class colour, a class texture
(stripes of a class-specific frequency and orientation) and noise, so a small network learns it quickly.
Annotations are derived from the instance-id map, so each matches its mask in the label map exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from segpipe.registry import Registry


@dataclass(frozen=True)
class SynthClass:
    """One class: label index = position in :attr:`SynthKind.classes`."""

    name: str
    color: tuple[int, int, int]
    isthing: bool = False


@dataclass
class Sample:
    """One generated image before rendering.

    Attributes:
        labels: ``(H, W) uint8`` class indices.
        instances: ``(H, W) int32`` instance ids (0 = none); thing pixels only.
        keypoints: Per instance id, flat ``[x, y, v, ...]`` (landmark kinds).
        gray: Render as grayscale (medical).
    """

    labels: np.ndarray
    instances: np.ndarray
    keypoints: dict[int, list[float]] = field(default_factory=dict)
    gray: bool = False


@dataclass(frozen=True)
class SynthKind:
    """A kind of synthetic dataset."""

    name: str
    classes: tuple[SynthClass, ...]
    default_size: tuple[int, int]
    generate: Callable[[np.random.Generator, int, int], Sample]
    description: str
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()


KINDS: Registry[SynthKind] = Registry("synth")


class Canvas:
    """Label and instance maps drawn with Pillow (``L`` labels, ``I`` instance ids)."""

    def __init__(self, h: int, w: int, fill: int = 0) -> None:
        self.h, self.w = h, w
        self.lab = Image.new("L", (w, h), fill)
        self.ins = Image.new("I", (w, h), 0)
        self.dl = ImageDraw.Draw(self.lab)
        self.di = ImageDraw.Draw(self.ins)
        self.boxes: list[tuple[float, float, float, float]] = []
        self.next_id = 1

    def stuff_polygon(self, pts: list[tuple[float, float]], label: int) -> None:
        """Paints stuff (no instance)."""
        self.dl.polygon(pts, fill=label)

    def stuff_rect(self, box: tuple[float, float, float, float], label: int) -> None:
        """Paints a stuff rectangle ``(x0, y0, x1, y1)`` (inclusive)."""
        self.dl.rectangle(box, fill=label)

    def stuff_ellipse(self, box: tuple[float, float, float, float], label: int) -> None:
        """Paints a stuff ellipse in its bounding box."""
        self.dl.ellipse(box, fill=label)

    def stuff_line(self, pts: list[tuple[float, float]], label: int, width: int) -> None:
        """Paints a thick stuff polyline."""
        self.dl.line(pts, fill=label, width=width)

    def free(self, box: tuple[float, float, float, float], margin: float = 2.0) -> bool:
        """True when ``box`` lies inside the image and clear of every thing placed so far."""
        x0, y0, x1, y1 = box
        if x0 < 1 or y0 < 1 or x1 > self.w - 2 or y1 > self.h - 2:
            return False
        return all(
            x0 - margin > b[2] or x1 + margin < b[0] or y0 - margin > b[3] or y1 + margin < b[1] for b in self.boxes
        )

    def thing(self, parts: list[tuple[str, object]], label: int, box: tuple[float, float, float, float]) -> int:
        """Paints one thing made of overlapping parts (``("rect"|"ellipse"|"polygon", geometry)``).

        Things never overlap each other (the caller checks :meth:`free`), lie inside the image and are
        unions of overlapping convex parts, so each is one connected object.

        Returns:
            Its instance id.
        """
        iid = self.next_id
        self.next_id += 1
        for kind, geom in parts:
            for d, v in ((self.dl, label), (self.di, iid)):
                getattr(d, {"rect": "rectangle", "ellipse": "ellipse", "polygon": "polygon"}[kind])(geom, fill=v)
        self.boxes.append(box)
        return iid

    def sample(self, keypoints: dict[int, list[float]] | None = None, gray: bool = False) -> Sample:
        """The painted maps as a :class:`Sample`."""
        return Sample(
            np.asarray(self.lab, dtype=np.uint8).copy(),
            np.asarray(self.ins, dtype=np.int32).copy(),
            keypoints or {},
            gray,
        )


def render(sample: Sample, classes: tuple[SynthClass, ...], rng: np.random.Generator) -> np.ndarray:
    """Renders the photo of a sample: class colour + class texture + noise.

    Returns:
        ``(H, W, 3) uint8``.
    """
    h, w = sample.labels.shape
    colors = np.array([c.color for c in classes], dtype=np.float32)
    img = colors[sample.labels]  # (H, W, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = np.zeros((h, w), dtype=np.float32)
    for k in range(len(classes)):
        m = sample.labels == k
        if not m.any():
            continue
        # A class-specific stripe texture (fixed per class, random phase per image).
        ang = 0.7 * k
        freq = 0.15 + 0.06 * (k % 5)
        phase = rng.uniform(0, 2 * np.pi)
        tex[m] = np.sin(freq * (np.cos(ang) * xx[m] + np.sin(ang) * yy[m]) + phase) * 18.0
    img = img + tex[..., None]
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0.0, 10.0, size=img.shape).astype(np.float32)
    if sample.gray:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
