"""Bad YOLO inputs: one error line naming the file and the line or key, the right exit code, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.badinput._corpus import check_bad_input, check_convert_refused, check_validate_one_error

GOOD_YAML = "train: images/train\nval: images/train\nnames: [a, b]\n"

#: (case, data.yaml, label text of images/train/x.png, strings the error line must name)
CASES = [
    ("class_outside_names", GOOD_YAML, "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", ["x.txt", "line 2", "class 7"]),
    ("negative_class", GOOD_YAML, "-1 0.5 0.5 0.2 0.2\n", ["x.txt", "line 1", "class -1"]),
    ("three_values", GOOD_YAML, "0 0.5 0.5\n", ["x.txt", "line 1", "got 2"]),
    ("odd_polygon", GOOD_YAML, "0 0.1 0.1 0.5 0.1 0.5 0.5 0.3\n", ["x.txt", "line 1", "got 7"]),
    ("not_a_number", GOOD_YAML, "0 0.5 nan 0.2 0.2\n", ["x.txt", "line 1", "not finite"]),
    ("text_coordinate", GOOD_YAML, "1 0.5 zz 0.2 0.2\n", ["x.txt", "line 1", "'zz'"]),
    ("coordinate_above_one", GOOD_YAML, "1 0.5 0.5 1.2 0.2\n", ["x.txt", "line 1", "outside [0, 1]"]),
    ("coordinate_negative", GOOD_YAML, "0 -0.1 0.1 0.5 0.1 0.5 0.5\n", ["x.txt", "line 1", "outside [0, 1]"]),
    ("fractional_class", GOOD_YAML, "0.5 0.5 0.5 0.2 0.2\n", ["x.txt", "line 1", "not an integer"]),
    ("binary_label", GOOD_YAML, b"\xff\xfe0 0.5\n", ["x.txt", "UTF-8"]),
    ("yaml_syntax", "train: [images/train\nnames: [a]\n", "", ["data.yaml", "not valid YAML"]),
    ("yaml_python_tag", "train: !!python/name:os.system\nnames: [a]\n", "", ["data.yaml", "not valid YAML"]),
    ("yaml_not_mapping", "- train\n- names\n", "", ["data.yaml", "mapping"]),
    ("names_gap", "train: images/train\nnames: {0: a, 2: c}\n", "", ["data.yaml", "names", "1 is missing"]),
    ("names_type", "train: images/train\nnames: 3\n", "", ["data.yaml", "names"]),
    ("nc_mismatch", "train: images/train\nnames: [a, b]\nnc: 3\n", "", ["data.yaml", "nc"]),
    ("duplicate_name", "train: images/train\nnames: [a, a]\n", "", ["data.yaml", "names[1]", "duplicate"]),
    ("split_escapes", "train: images/../../..\nnames: [a]\n", "", ["data.yaml", "train"]),
    ("split_absolute_outside", "train: /etc\nnames: [a]\n", "", ["data.yaml", "train", "outside"]),
    ("split_url", "train: https://example.com/x.zip\nnames: [a]\n", "", ["data.yaml", "train"]),
    ("split_missing", "train: images/nowhere\nnames: [a]\n", "", ["data.yaml", "train"]),
    ("list_escapes", "train: t.txt\nnames: [a]\n", "", ["t.txt", "line 1"]),
    ("pose_dataset", "train: images/train\nnames: [a]\nkpt_shape: [17, 3]\n", "", ["data.yaml", "kpt_shape"]),
]


def _case(root: Path, yaml_text: str, label: str | bytes) -> Path:
    ds = root / "ds"
    (ds / "images" / "train").mkdir(parents=True)
    (ds / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(ds / "images" / "train" / "x.png")
    (ds / "data.yaml").write_text(yaml_text)
    (ds / "t.txt").write_text("../../outside.png\n")
    lab = ds / "labels" / "train" / "x.txt"
    if isinstance(label, bytes):
        lab.write_bytes(label)
    else:
        lab.write_text(label)
    return ds


@pytest.mark.parametrize("case,yaml_text,label,names", CASES, ids=[c[0] for c in CASES])
def test_convert_refuses_with_one_line(tmp_path, case, yaml_text, label, names):
    _case(tmp_path, yaml_text, label)
    check_convert_refused(tmp_path, names)


@pytest.mark.parametrize("case,yaml_text,label,names", CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_validate_names_the_line(tmp_path, case, yaml_text, label, names):
    _case(tmp_path, yaml_text, label)
    check_validate_one_error(tmp_path, "yolo", names)


def test_strict_fails_on_what_yolo_cannot_hold(tmp_path):
    from tests.datagen import make_coco

    make_coco(tmp_path / "src", n_images=2, objects=3, overlaps=True, crowd=True, keypoints=False)
    check_bad_input("convert", "src/annotations.json", "out", "--to", "yolo", "--strict", "-w", "0", root=tmp_path,
                    code=1, names=["crowd_dropped", "holes_dropped"], outputs=[tmp_path / "out"])
    assert not (tmp_path / "out").exists()
