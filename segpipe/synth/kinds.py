"""The synthetic dataset kinds: streetview, satellite, medical, landmarks."""

from __future__ import annotations

import math

import numpy as np

from segpipe.synth.base import KINDS, Canvas, Sample, SynthClass, SynthKind

# -- streetview -----------------------------------------------------------------------------------

STREET = (
    SynthClass("background", (0, 0, 0)),
    SynthClass("sky", (110, 170, 235)),
    SynthClass("road", (90, 90, 95)),
    SynthClass("sidewalk", (200, 170, 160)),
    SynthClass("building", (150, 70, 40)),
    SynthClass("vegetation", (40, 140, 40)),
    SynthClass("car", (230, 30, 60), True),
    SynthClass("person", (250, 220, 0), True),
)


def _streetview(rng: np.random.Generator, h: int, w: int) -> Sample:
    c = Canvas(h, w, fill=3)  # sidewalk everywhere below the horizon, then the rest on top
    hz = int(h * rng.uniform(0.38, 0.5))
    c.stuff_rect((0, 0, w - 1, hz), 1)
    x = 0.0
    while x < w:  # a skyline of buildings, some gaps showing sky
        bw = rng.uniform(0.08, 0.25) * w
        if rng.random() < 0.8:
            top = hz - rng.uniform(0.15, 0.9) * hz
            c.stuff_rect((x, top, x + bw, hz), 4)
        x += bw + rng.uniform(0, 0.05) * w
    for _ in range(int(rng.integers(1, 5))):  # trees
        cx, r = rng.uniform(0, w), rng.uniform(0.04, 0.1) * w
        c.stuff_ellipse((cx - r, hz - 2.2 * r, cx + r, hz + 0.2 * r), 5)
    vx = w * rng.uniform(0.35, 0.65)
    left, right = w * rng.uniform(-0.3, 0.15), w * rng.uniform(0.85, 1.3)
    c.stuff_polygon([(vx - 0.02 * w, hz), (vx + 0.02 * w, hz), (right, h), (left, h)], 2)
    for _ in range(int(rng.integers(1, 6))):  # cars on the road, larger when nearer
        for _try in range(20):
            y1 = rng.uniform(hz + 0.2 * (h - hz), h - 3)
            s = (y1 - hz) / (h - hz)
            cw, ch = s * w * rng.uniform(0.18, 0.28), s * h * rng.uniform(0.13, 0.2)
            t = (y1 - hz) / (h - hz)
            lo = vx + (left - vx) * t
            hi = vx + (right - vx) * t
            if hi - lo < cw + 4 or ch < 6:
                continue
            x0 = rng.uniform(lo, hi - cw)
            box = (x0, y1 - ch, x0 + cw, y1)
            if not c.free(box):
                continue
            roof = (x0 + 0.2 * cw, y1 - ch, x0 + 0.8 * cw, y1 - 0.55 * ch)
            body = (x0, y1 - 0.6 * ch, x0 + cw, y1 - 0.15 * ch)
            r = 0.17 * ch
            wheels = [(x0 + f * cw - r, y1 - 2 * r, x0 + f * cw + r, y1) for f in (0.22, 0.78)]
            c.thing([("rect", roof), ("rect", body), ("ellipse", wheels[0]), ("ellipse", wheels[1])], 6, box)
            break
    for _ in range(int(rng.integers(0, 5))):  # people, mostly on the sidewalks
        for _try in range(20):
            y1 = rng.uniform(hz + 0.15 * (h - hz), h - 3)
            s = (y1 - hz) / (h - hz)
            ph = s * h * rng.uniform(0.3, 0.45)
            pw = ph * 0.35
            if ph < 10:
                continue
            x0 = rng.uniform(1, w - pw - 2)
            box = (x0, y1 - ph, x0 + pw, y1)
            if not c.free(box):
                continue
            head = (x0 + 0.2 * pw, y1 - ph, x0 + 0.8 * pw, y1 - ph + 0.6 * pw)
            torso = (x0, y1 - ph + 0.5 * pw, x0 + pw, y1)
            c.thing([("ellipse", head), ("rect", torso)], 7, box)
            break
    return c.sample()


# -- satellite ------------------------------------------------------------------------------------

SAT = (
    SynthClass("background", (170, 150, 110)),
    SynthClass("vegetation", (50, 120, 40)),
    SynthClass("water", (30, 70, 160)),
    SynthClass("road", (120, 120, 120)),
    SynthClass("building", (220, 200, 200), True),
)


def _rotated_rect(cx: float, cy: float, bw: float, bh: float, ang: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(ang), math.sin(ang)
    return [
        (cx + ca * dx - sa * dy, cy + sa * dx + ca * dy)
        for dx, dy in ((-bw / 2, -bh / 2), (bw / 2, -bh / 2), (bw / 2, bh / 2), (-bw / 2, bh / 2))
    ]


def _satellite(rng: np.random.Generator, h: int, w: int) -> Sample:
    c = Canvas(h, w, fill=0)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.05, 0.2) * w, rng.uniform(0.05, 0.2) * h
        c.stuff_ellipse((cx - rx, cy - ry, cx + rx, cy + ry), 1)
    if rng.random() < 0.7:  # a river
        pts = [
            (x, h * 0.5 + h * 0.25 * math.sin(x / w * 6.28 * rng.uniform(0.5, 1.5)) + rng.uniform(-0.2, 0.2) * h)
            for x in np.linspace(-10, w + 10, 8)
        ]
        c.stuff_line(pts, 2, int(rng.uniform(0.04, 0.1) * min(h, w)))
    else:
        cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.08, 0.18) * min(h, w)
        c.stuff_polygon(
            [
                (cx + r * math.cos(a) * rng.uniform(0.7, 1.3), cy + r * math.sin(a) * rng.uniform(0.7, 1.3))
                for a in np.linspace(0, 2 * math.pi, 10, endpoint=False)
            ],
            2,
        )
    roads = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            y = rng.uniform(0.1, 0.9) * h
            pts = [(-5.0, y), (w + 5.0, y + rng.uniform(-0.1, 0.1) * h)]
        else:
            x = rng.uniform(0.1, 0.9) * w
            pts = [(x, -5.0), (x + rng.uniform(-0.1, 0.1) * w, h + 5.0)]
        width = int(max(3, 0.025 * min(h, w)))
        c.stuff_line(pts, 3, width)
        roads.append(pts)
    lab = np.asarray(c.lab)
    for _ in range(int(rng.integers(3, 15))):
        for _try in range(20):
            bw, bh = rng.uniform(0.03, 0.09) * w, rng.uniform(0.03, 0.09) * h
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            ang = rng.uniform(-0.5, 0.5)
            pts = _rotated_rect(cx, cy, bw, bh, ang)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (min(xs), min(ys), max(xs), max(ys))
            if not c.free(box, margin=3):
                continue
            y0, y1, x0, x1 = int(box[1]), int(box[3]) + 1, int(box[0]), int(box[2]) + 1
            if np.isin(lab[y0:y1, x0:x1], (2, 3)).any():  # not on water or roads
                continue
            c.thing([("polygon", pts)], 4, box)
            break
    return c.sample()


# -- medical --------------------------------------------------------------------------------------

MED = (
    SynthClass("background", (10, 10, 10)),
    SynthClass("body", (95, 95, 95)),
    SynthClass("liver", (150, 150, 150), True),
    SynthClass("kidney", (200, 200, 200), True),
    SynthClass("lesion", (45, 45, 45), True),
)


def _medical(rng: np.random.Generator, h: int, w: int) -> Sample:
    c = Canvas(h, w, fill=0)
    cx, cy = w / 2 + rng.uniform(-0.03, 0.03) * w, h / 2 + rng.uniform(-0.03, 0.03) * h
    rx, ry = rng.uniform(0.38, 0.46) * w, rng.uniform(0.3, 0.4) * h
    c.stuff_ellipse((cx - rx, cy - ry, cx + rx, cy + ry), 1)
    lx, ly = cx - 0.35 * rx, cy - 0.2 * ry
    lrx, lry = rng.uniform(0.35, 0.45) * rx, rng.uniform(0.4, 0.55) * ry
    lbox = (lx - lrx, ly - lry, lx + lrx, ly + lry)
    c.thing([("ellipse", lbox)], 2, lbox)
    for side in (-1, 1):
        kx, ky = cx + side * 0.45 * rx + 0.15 * rx, cy + 0.35 * ry
        krx, kry = rng.uniform(0.08, 0.12) * rx, rng.uniform(0.14, 0.2) * ry
        kbox = (kx - krx, ky - kry, kx + krx, ky + kry)
        if c.free(kbox):
            c.thing([("ellipse", kbox)], 3, kbox)
    for _ in range(int(rng.integers(0, 4))):  # lesions strictly inside the liver (it stays connected)
        r = rng.uniform(0.1, 0.2) * min(lrx, lry)
        a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.5)
        ex, ey = lx + d * (lrx - r - 4) * math.cos(a), ly + d * (lry - r - 4) * math.sin(a)
        ebox = (ex - r, ey - r, ex + r, ey + r)
        if r >= 2 and all(
            not (ebox[0] - 3 <= b[2] and ebox[2] + 3 >= b[0] and ebox[1] - 3 <= b[3] and ebox[3] + 3 >= b[1])
            for b in c.boxes[1:]
        ):  # clear of other lesions/kidneys (the liver is boxes[0])
            c.thing([("ellipse", ebox)], 4, ebox)
    # Lesions are painted after the liver in both maps, so the liver's mask has holes where they are.
    return c.sample(gray=True)


# -- landmarks ------------------------------------------------------------------------------------

LAND = (
    SynthClass("background", (60, 60, 70)),
    SynthClass("quad", (230, 160, 40), True),
)
QUAD_KEYPOINTS = ("top_left", "top_right", "bottom_right", "bottom_left")


def _landmarks(rng: np.random.Generator, h: int, w: int) -> Sample:
    c = Canvas(h, w, fill=0)
    kps: dict[int, list[float]] = {}
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(30):
            r = rng.uniform(0.1, 0.22) * min(h, w)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            rot = rng.uniform(-0.4, 0.4)
            # Corners near -135°, -45°, 45°, 135° (image y down): top-left, top-right, bottom-right,
            # bottom-left; the limited rotation keeps the naming unambiguous.
            pts = []
            for base in (-135, -45, 45, 135):
                a = math.radians(base) + rot + rng.uniform(-0.2, 0.2)
                rr = r * rng.uniform(0.8, 1.1)
                pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (min(xs), min(ys), max(xs), max(ys))
            if not c.free(box, margin=4):
                continue
            iid = c.thing([("polygon", pts)], 1, box)
            kps[iid] = [v for x, y in pts for v in (round(x, 2), round(y, 2), 2)]
            break
    return c.sample(keypoints=kps)


for _kind in (
    SynthKind("streetview", STREET, (256, 512), _streetview, "street scenes: sky, road, buildings, cars, people"),
    SynthKind("satellite", SAT, (512, 512), _satellite, "aerial tiles: buildings, roads, water, vegetation"),
    SynthKind("medical", MED, (256, 256), _medical, "grayscale slices: body, liver, kidneys, lesions"),
    SynthKind(
        "landmarks",
        LAND,
        (256, 256),
        _landmarks,
        "quadrilaterals with 4 corner keypoints",
        QUAD_KEYPOINTS,
        ((1, 2), (2, 3), (3, 4), (4, 1)),
    ),
):
    KINDS.add(_kind.name, _kind)
