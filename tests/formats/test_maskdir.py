from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segpipe.core import rle as rle_ops
from segpipe.core.labelmap import parse_labelmap_txt
from segpipe.core.records import (
    Category,
    DatasetMeta,
    ImageInfo,
    Instance,
    InstanceMask,
    Materialized,
    Sample,
)
from segpipe.errors import UnsafePathError
from segpipe.formats import detect_format, get_format
from segpipe.formats.base import WriteOptions
from segpipe.formats.maskdir import MaskDirReader, MaskDirWriter, materialize_maskdir, validate_maskdir
from segpipe.storage.images import read_label_map, write_label_png


def _write(samples: list[Materialized], meta: DatasetMeta, out: Path, **opts):
    w = MaskDirWriter(out, meta, WriteOptions(**opts))
    w.prepare()
    r = w.write_shard(0, samples)
    w.finalize([r])
    return r.losses


def _dataset(root: Path, maps: dict[str, np.ndarray], labelmap: str | None) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, arr in maps.items():
        Image.new("RGB", (arr.shape[1], arr.shape[0])).save(root / "images" / f"{name}.png")
        write_label_png(root / "masks" / f"{name}.png", arr)
    if labelmap is not None:
        (root / "labelmap.txt").write_text(labelmap)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31)), min_size=1, max_size=3),
    st.booleans(),
)
def test_round_trip_pixel_identical(tmp_path_factory: pytest.TempPathFactory, shapes, wide: bool) -> None:
    tmp = tmp_path_factory.mktemp("md")
    n_labels = 300 if wide else 5
    lm = "".join(f"c{i}:::\n" for i in range(n_labels))
    void = 65535 if wide else 255
    maps = {}
    for k, (h, w, seed) in enumerate(shapes):
        rng = np.random.default_rng(seed)
        vals = np.array([0, 1, n_labels - 1, void])
        maps[f"s{k}"] = vals[rng.integers(0, 4, (h, w))].astype(np.uint16 if wide else np.uint8)
    _dataset(tmp / "src", maps, lm)
    r = MaskDirReader(tmp / "src")
    got = [materialize_maskdir(s, r.meta) for s in r.samples()]
    losses = _write(got, r.meta, tmp / "out")
    assert losses.lossless
    for name, arr in maps.items():
        out = read_label_map(tmp / "out/masks" / f"{name}.png")
        np.testing.assert_array_equal(out, arr)
        assert out.dtype == (np.uint16 if wide else np.uint8)
    entries = parse_labelmap_txt((tmp / "out/labelmap.txt").read_text())
    assert [e.name for e in entries] == [f"c{i}" for i in range(n_labels)]


def test_instances_to_maskdir_counts_losses(tmp_path: Path) -> None:
    meta = DatasetMeta("coco", (Category(3, "car"), Category(7, "person")))
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 1
    b = np.zeros((4, 4), np.uint8)
    b[1:3] = 1
    ims = (
        InstanceMask(Instance(1, 1, 3), rle_ops.encode(a)),
        InstanceMask(Instance(2, 1, 7, score=0.9), rle_ops.encode(b)),
        InstanceMask(Instance(3, 1, 7, bbox=(0, 0, 1, 1)), None),
    )
    m = Materialized(Sample(ImageInfo(1, "x.jpg", 4, 4)), ims)
    losses = _write([m], meta, tmp_path / "out", copy_images="none")
    t = losses.totals()
    assert t == {
        "box_only_no_mask": 1,
        "instance_identity_dropped": 2,
        "overlap_flattened_pixels": 4,
        "scores_dropped": 1,
    }
    np.testing.assert_array_equal(
        read_label_map(tmp_path / "out/masks/x.png"), [[1] * 4, [2] * 4, [2] * 4, [0] * 4]
    )
    assert (tmp_path / "out/labelmap.txt").read_text().splitlines()[1:4] == [
        "background:0,0,0::",
        "car:128,0,0::",
        "person:0,128,0::",
    ]


def test_detection_is_specific(tmp_path: Path) -> None:
    _dataset(tmp_path / "md", {"a": np.zeros((2, 2), np.uint8)}, None)
    assert detect_format(tmp_path / "md") == "maskdir"
    (tmp_path / "md/SegmentationClass").mkdir()
    assert detect_format(tmp_path / "md") == "voc"
    assert get_format("maskdir").reader is MaskDirReader


def test_scan_without_labelmap(tmp_path: Path) -> None:
    _dataset(tmp_path, {"a": np.array([[0, 4], [255, 4]], np.uint8)}, None)
    r = MaskDirReader(tmp_path)
    assert [c.name for c in r.meta.categories] == ["background", "class_1", "class_2", "class_3", "class_4"]


def test_writer_refuses_unsafe_names(tmp_path: Path) -> None:
    meta = DatasetMeta("coco", (Category(1, "a"),))
    m = Materialized(Sample(ImageInfo(1, "../x.png", 2, 2)), class_map=np.zeros((2, 2), np.uint8))
    w = MaskDirWriter(tmp_path / "out", meta)
    w.prepare()
    with pytest.raises(UnsafePathError):
        w.write_shard(0, [m])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_validate(tmp_path: Path) -> None:
    _dataset(
        tmp_path,
        {"a": np.array([[0, 9]], np.uint8), "b": np.zeros((2, 2), np.uint8)},
        "background:::\nx:::\n",
    )
    Image.new("RGB", (3, 3)).save(tmp_path / "images/b.png")  # size mismatch
    Image.new("RGB", (1, 1)).save(tmp_path / "images/c.png")  # no mask
    write_label_png(tmp_path / "masks/d.png", np.zeros((1, 1), np.uint16) + 1000)  # 16-bit, no image
    got = sorted(str(p) for p in validate_maskdir(tmp_path))
    assert got == sorted(
        [
            "error: masks/a.png: pixel values: values [9] are not in the label map (2 labels; 255 = void)",
            "error: masks/b.png: size: mask is 2x2 but image images/b.png is 3x3",
            "warning: images/c.png: image has no mask",
            "warning: masks/d.png: mask has no image (no images/d.*)",
            "error: masks/d.png: pixel values: values [1000] are not in the label map (2 labels; 255 = void)",
        ]
    )
