import os

import pytest

from segpipe.errors import UnsafePathError
from segpipe.storage.paths import check_relative_name, ensure_inside, safe_join


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "a/../../b", "/etc/passwd", "C:\\x.jpg", "\\\\server\\share\\x", "http://x/y.jpg",
     "file:///etc/passwd", "a\x00b.jpg", ""],
)
def test_unsafe_names_rejected(name, tmp_path):
    with pytest.raises(UnsafePathError) as e:
        safe_join(tmp_path, name, source="ann.json", where="images[0].file_name")
    assert "ann.json: images[0].file_name:" in str(e.value)


def test_normal_names_pass(tmp_path):
    assert check_relative_name("a/./b\\c.jpg") == "a/b/c.jpg"
    assert safe_join(tmp_path, "x/y.png") == tmp_path.resolve() / "x" / "y.png"


def test_symlink_escaping_root_rejected(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "link.jpg")
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        safe_join(root, "link.jpg")


def test_ensure_inside(tmp_path):
    assert ensure_inside(tmp_path, tmp_path / "a.png").name == "a.png"
    with pytest.raises(UnsafePathError):
        ensure_inside(tmp_path / "out", tmp_path / "elsewhere.png")
