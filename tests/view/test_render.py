"""The rendering kernels: label-map colours kept, distinct colours otherwise, overlays that keep classes apart."""

from __future__ import annotations

import io
import itertools

import numpy as np
from PIL import Image

from segpipe.view import render
from segpipe.view.colors import DISTINCT, class_colors


def test_label_map_colours_are_kept_and_the_rest_stay_distinct():
    cats = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "sky", "color": [110, 170, 235]},
            {"id": 4, "name": "building", "color": None}, {"id": 5, "name": "tree"}]
    got = class_colors(cats)
    assert got[0] == (0, 0, 0) and got[1] == (110, 170, 235)
    many = class_colors([{"id": i, "name": f"c{i}"} for i in range(60)])
    assert len(set(many.values())) == 60
    first = [many[i] for i in range(len(DISTINCT))]
    # every pair of the first colours is far apart (L1 >= 60): no "similar purples"
    assert min(sum(abs(a - b) for a, b in zip(x, y)) for x, y in itertools.combinations(first, 2)) >= 60


def test_resize_labels_is_nearest_and_keeps_classes():
    lab = np.zeros((40, 60), np.uint8)
    lab[10:30, 20:40] = 3
    small = render.resize_labels(lab, (20, 30))
    assert set(np.unique(small)) == {0, 3}
    assert small[10, 15] == 3 and small[0, 0] == 0
    assert np.array_equal(render.resize_labels(lab, (40, 60)), lab)


def test_colorize_fills_classes_and_draws_boundaries_opaque():
    lab = np.full((10, 10), 255, np.uint8)  # void everywhere ...
    lab[2:8, 2:8] = 1
    lab[4:6, 4:6] = 2
    lut = render.class_lut({0: (0, 0, 0), 1: (10, 200, 30), 2: (200, 10, 10)}, {0: "background", 1: "a", 2: "b"})
    rgba = render.colorize(lab, lut)
    assert rgba.shape == (10, 10, 4)
    assert rgba[0, 0, 3] == 0  # void: transparent
    assert tuple(rgba[3, 3, :3]) == (10, 200, 30) and rgba[3, 3, 3] == render.FILL_ALPHA  # inside class 1
    assert rgba[2, 2, 3] == 255  # its boundary: opaque
    assert tuple(rgba[4, 4, :3]) == (200, 10, 10)
    bg = render.colorize(np.zeros((3, 3), np.uint8), lut)
    assert not bg[..., 3].any()  # "background" is not drawn


def test_error_layer_counts_scored_pixels_only():
    gt = np.array([[1, 1, 255], [2, 2, 2]], np.uint8)
    pred = np.array([[1, 2, 0], [2, 0, 2]], np.uint8)
    rgba, err = render.error_layer(gt, pred, (255,))
    assert err == 2 / 5
    assert tuple(rgba[0, 1]) == tuple(rgba[1, 1]) == render.ERROR_RGBA  # wrong: red
    assert tuple(rgba[0, 0]) == render.RIGHT_RGBA and rgba[0, 2, 3] == 0  # right: darkened; void: untouched
    assert render.error_layer(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8))[1] is None


def test_instances_and_keypoints_are_drawn_in_their_class_colour():
    mask = np.zeros((50, 80), bool)
    mask[10:30, 20:50] = True
    objs = [render.InstanceDraw(3, (20, 10, 30, 20), mask, 0.87)]
    rgba = render.instances_layer(objs, (50, 80), (50, 80), {3: (0, 130, 200)}, {3: "car"})
    assert tuple(rgba[20, 35, :3]) == (0, 130, 200) and 0 < rgba[20, 35, 3] < 255  # the mask, filled
    assert tuple(rgba[29, 20, :3]) == (0, 130, 200) and rgba[29, 20, 3] == 255  # the box / outline
    assert not rgba[45, 5].any()
    kp = np.array([[10, 10, 2], [40, 10, 2], [40, 40, 0]], float)
    k = render.keypoints_layer([render.InstanceDraw(1, keypoints=kp)], [(1, 2), (2, 3)], (50, 50), (50, 50),
                               {1: (230, 25, 75)})
    assert tuple(k[10, 25, :3]) == (230, 25, 75)  # the skeleton line between the two located points
    assert k[25, 40, 3] == 0  # no line to an unlabelled point
    assert tuple(k[10, 10, :3]) == (255, 255, 255)  # a point


def test_encoders_and_placeholder():
    ph = render.placeholder((60, 120), "no photo found for this image")
    assert ph.shape == (60, 120, 3) and len(np.unique(ph.reshape(-1, 3), axis=0)) > 1  # text on grey
    png = Image.open(io.BytesIO(render.encode_png(np.zeros((4, 5, 4), np.uint8))))
    assert png.mode == "RGBA" and png.size == (5, 4)
    jpg = Image.open(io.BytesIO(render.encode_jpeg(np.zeros((4, 5, 3), np.uint8))))
    assert jpg.format == "JPEG" and jpg.size == (5, 4)
    assert render.fit_size(100, 400, 200) == (50, 200) and render.fit_size(10, 20, 200) == (10, 20)
