"""The contract every format adapter passes (parametrised over the registry: a new format is tested here
as soon as it registers a reader and a writer).

From a canonical COCO dataset (non-overlapping instances, no crowd, no keypoints — what every
segmentation format can hold) each format must: write without loss, be detected as itself, validate
clean, read back the same images with the same sizes, and give back pixel-identical label maps (by
class name) and, if it holds instances, pixel-identical instance masks. Nothing may be written outside
the output folder.
"""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.execution.cluster import ClusterSpec
from segpipe.formats import all_formats, detect_format, get_format
from segpipe.formats.derive import derive_class_map, derive_instances
from segpipe.pipeline.convert import Conversion, convert
from segpipe.pipeline.validate import validate_path
from tests.datagen import make_coco

#: Formats whose reader needs inputs this canonical dataset does not have (predictions with scores; volume
#: slices: ``nifti`` passes the same contract on synthetic volumes in tests/modalities/test_nifti_reader.py;
#: ``yolo`` polygons hold no holes, which the canonical objects have: it passes the same checks on objects
#: it can hold, and counts the holes, in tests/formats/test_yolo.py).
NOT_ROUND_TRIPPABLE = {"coco_results", "nifti", "yolo"}
ROUND_TRIP = sorted(s.name for s in all_formats() if s.reader and s.writer and s.name not in NOT_ROUND_TRIPPABLE)


@pytest.fixture(scope="module")
def canonical(tmp_path_factory):
    src = make_coco(tmp_path_factory.mktemp("canon"), n_images=4, objects=4, overlaps=False, crowd=False,
                    keypoints=False)
    return src


def _read(path, fmt):
    spec = get_format(fmt)
    reader = spec.reader(path)
    out = {}
    for s in reader.samples():
        m = spec.materialize(s, reader.meta)
        out[s.image.file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]] = (s, m, reader.meta)
    return out


def _named_class_map(m, meta):
    cm, _ = derive_class_map(m, meta)
    names = {c.id: c.name for c in meta.categories}
    if cm is None:
        return None
    lut = np.array([names.get(i, "void" if i == m.void_value else ("" if i == 0 else f"?{i}"))
                    for i in range(int(cm.max()) + 1)], dtype=object)
    out = lut[cm]
    # Unannotated pixels: COCO leaves them as background 0, VOC names class 0 "background", panoptic
    # calls them VOID — the same "not labelled" in each convention.
    out[(out == "background") | (out == "void")] = ""
    return out


@pytest.mark.parametrize("fmt", ROUND_TRIP)
def test_format_contract(fmt, canonical, tmp_path):
    outside_before = set(tmp_path.iterdir())
    dst = tmp_path / "out"
    rep = convert(Conversion(src=canonical, dst=dst, to=fmt), ClusterSpec(workers=0))
    holds = get_format(fmt).holds
    # Nothing is lost but what the format cannot hold by design (instance identity for semantic-only formats).
    allowed = set() if "instances" in holds else {"instance_identity_dropped"}
    assert set(rep["losses"]["totals"]) <= allowed, rep["losses"]["totals"]
    assert set(tmp_path.iterdir()) - outside_before == {dst}, "wrote outside the output folder"
    assert detect_format(dst) == fmt
    _, problems = validate_path(dst, fmt)
    assert not [p for p in problems if p.severity == "error"], [str(p) for p in problems]

    src, got = _read(canonical, "coco"), _read(dst, fmt)
    assert sorted(got) == sorted(src)
    for stem, (s0, m0, meta0) in src.items():
        s1, m1, meta1 = got[stem]
        assert (s1.image.width, s1.image.height) == (s0.image.width, s0.image.height)
        a, b = _named_class_map(m0, meta0), _named_class_map(m1, meta1)
        assert b is not None
        assert np.array_equal(a, b), f"{fmt}: label map of {stem} differs"
        if "instances" in holds:
            masks0 = sorted(im.rle["counts"] for im in derive_instances(m0, meta0)[0] if im.rle)
            masks1 = sorted(im.rle["counts"] for im in derive_instances(m1, meta1)[0] if im.rle)
            assert masks1 == masks0, f"{fmt}: instance masks of {stem} differ"


def test_contract_covers_the_registry():
    assert {"coco", "voc", "maskdir", "coco_panoptic", "segpipe_zarr"} <= set(ROUND_TRIP)
