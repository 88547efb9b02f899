import io

import numpy as np
import pytest
from PIL import Image

from segpipe.errors import ImageDecodeError
from segpipe.storage.images import (
    image_size,
    read_image,
    read_label_map,
    read_palette,
    write_label_png,
)


def test_palette_png_read_as_indices(tmp_path):
    labels = np.array([[0, 1, 2], [255, 20, 1]], dtype=np.uint8)
    pal = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0]], dtype=np.uint8)
    write_label_png(tmp_path / "m.png", labels, pal)
    got = read_label_map(tmp_path / "m.png")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)
    assert read_palette(tmp_path / "m.png")[1].tolist() == [128, 0, 0]


def test_16bit_stays_16bit(tmp_path):
    labels = np.array([[0, 300], [65535, 7]], dtype=np.uint16)
    write_label_png(tmp_path / "m.png", labels)
    got = read_label_map(tmp_path / "m.png")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, labels)


def test_rgb_mask_rejected(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "m.png")
    with pytest.raises(ImageDecodeError, match="single-channel"):
        read_label_map(tmp_path / "m.png")


def test_truncated_file_is_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError) as e:
        read_image(tmp_path / "t.png")
    assert "t.png" in str(e.value)


def test_decompression_bomb_is_error(tmp_path):
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="larger than the limit"):
        read_label_map(tmp_path / "big.png", max_pixels=1000)


def test_not_an_image(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        read_image(tmp_path / "x.png")


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[0, :5] = 255  # a mark in the top-left corner of the stored grid
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    assert image_size(tmp_path / "r.jpg") == (10, 20)
    assert image_size(tmp_path / "r.jpg", exif=False) == (20, 10)
    up = read_image(tmp_path / "r.jpg")
    assert up.shape == (20, 10, 3)
    raw = read_image(tmp_path / "r.jpg", exif=False)
    assert raw.shape == (10, 20, 3)


def test_modes_decode_to_rgb(tmp_path):
    for mode in ("L", "RGBA", "CMYK", "P", "I;16"):
        Image.new(mode, (3, 2)).save(tmp_path / f"m.{'tif' if mode in ('CMYK', 'I;16') else 'png'}")
        p = tmp_path / f"m.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
        assert read_image(p).shape == (2, 3, 3)
