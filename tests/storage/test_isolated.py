import numpy as np
import pytest
from PIL import Image

from segpipe.errors import ImageDecodeError
from segpipe.storage.isolated import IsolatedDecoder


def test_crash_fails_one_image_and_decoder_recovers(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    poison = tmp_path / "poison.png"
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    Image.fromarray(arr).save(good)
    Image.fromarray(arr).save(poison)
    monkeypatch.setenv("SEGPIPE_FAULT_DECODE", "poison")
    with IsolatedDecoder() as dec:
        np.testing.assert_array_equal(dec.read_image(good), arr)
        with pytest.raises(ImageDecodeError, match="decoder crashed") as e:
            dec.read_image(poison)
        assert "poison.png" in str(e.value)
        np.testing.assert_array_equal(dec.read_image(good), arr)


def test_corrupt_file_is_a_plain_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with IsolatedDecoder() as dec, pytest.raises(ImageDecodeError, match="bad.jpg"):
        dec.read_image(bad)
