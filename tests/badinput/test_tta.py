"""Bad --tta, --tta-scales and --ensemble options of ``segpipe prelabel``: one line naming the option (or the
model), exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.badinput._corpus import check_bad_input


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two U-Net state dicts of 3 and 4 classes, a landmark model, and ``imgs/`` with one photo."""
    from segpipe.models.registry import build_model

    root = tmp_path_factory.mktemp("tta")
    (root / "imgs").mkdir()
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(root / "imgs" / "a.png")
    torch.manual_seed(0)
    torch.save(build_model("unet", 3).state_dict(), root / "three.pth")
    torch.save(build_model("unet", 4).state_dict(), root / "four.pth")
    torch.save(build_model("hourglass", 4).state_dict(), root / "hourglass.pth")
    return root


#: (case, model, options, what the one line must name, what it must say)
CASES = [
    ("unknown --tta", "three.pth", ("--tta", "rotate"), "--tta", "flip+scale"),
    ("--tta-scales not numbers", "three.pth", ("--tta", "flip+scale", "--tta-scales", "0.5,big"), "--tta-scales",
     "big"),
    ("--tta-scales out of range", "three.pth", ("--tta", "flip+scale", "--tta-scales", "0,1"),
     "--tta-scales 0.0", "is not a scale in [0.25, 4.0]"),
    ("--tta-scales too large", "three.pth", ("--tta", "flip+scale", "--tta-scales", "1,9"),
     "--tta-scales 9.0", "is not a scale in [0.25, 4.0]"),
    ("--tta-scales twice the same", "three.pth", ("--tta", "flip+scale", "--tta-scales", "1,1"),
     "--tta-scales", "names a scale twice"),
    ("--tta-scales without flip+scale", "three.pth", ("--tta", "flip", "--tta-scales", "1,2"), "--tta-scales",
     "applies to --tta flip+scale"),
    ("--ensemble of other classes", "three.pth", ("--ensemble", "four.pth"), "--ensemble four.pth",
     "ensemble members must have the same classes"),
    ("--ensemble member missing", "three.pth", ("--ensemble", "nope.pth"), "nope.pth", "no such model file"),
    ("--tta on a landmarks model", "hourglass.pth", ("--tta", "flip"), "hourglass.pth",
     "--tta averages class probabilities of semantic models"),
]


@pytest.mark.parametrize(("case", "model", "extra", "name", "says"), CASES, ids=[c[0] for c in CASES])
def test_bad_averaging_option_is_one_line(models: Path, case: str, model: str, extra: tuple[str, ...], name: str,
                                          says: str) -> None:
    out = models / "o.zarr"
    arch = "hourglass" if model == "hourglass.pth" else "unet"
    check_bad_input("prelabel", "imgs", "--model", model, "--arch", arch, "--out", out.name, "-w", "0", *extra,
                    root=models, code=2, names=(name, says), outputs=[out])
    assert not out.exists(), case
