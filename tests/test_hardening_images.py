"""Issue 18: one image-reading function for every loader (``adlib.data.base.open_image`` and
``to_rgb``): modes converted by value (16-bit, 32-bit, float, palette, alpha, 1-bit); corrupt,
truncated and decompression-bomb files refused with the file named. Images are written here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data_layouts import make_mvtec

from adlib.data import DataError, ImageTransform, get_dataset
from adlib.data.base import open_image, to_rgb

RAMP8 = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))  # 4 x 16 grey ramp, 0..240


def _rgb(img: Image.Image) -> np.ndarray:
    out = np.asarray(to_rgb(img))
    assert out.dtype == np.uint8 and out.shape == (*img.size[::-1], 3)
    return out


def test_grey_modes_are_read_by_value():
    want = np.repeat(RAMP8[..., None], 3, axis=-1)
    assert np.array_equal(_rgb(Image.fromarray(RAMP8)), want)
    # 16-bit: the same ramp scaled to 0..65535 (PIL's convert("RGB") would give pure white)
    v16 = (RAMP8.astype(np.uint16) * 257).astype(np.uint16)
    img16 = Image.fromarray(v16)
    assert img16.mode.startswith("I;16")
    assert np.abs(_rgb(img16).astype(int) - want).max() <= 1
    # 32-bit integer grey holding 16-bit values
    assert np.abs(_rgb(Image.fromarray(v16.astype(np.int32))).astype(int) - want).max() <= 1
    # 32-bit integer grey holding 8-bit values stays as it is
    assert np.array_equal(_rgb(Image.fromarray(RAMP8.astype(np.int32))), want)
    # float in [0, 1] is scaled; float in [0, 255] is taken as it is
    assert np.abs(_rgb(Image.fromarray((RAMP8 / 255.0).astype(np.float32))).astype(int) - want).max() <= 1
    assert np.array_equal(_rgb(Image.fromarray(RAMP8.astype(np.float32))), want)
    with pytest.raises(DataError, match="NaN or inf"):
        to_rgb(Image.fromarray(np.full((4, 4), np.nan, np.float32)))
    # 1-bit
    bits = Image.fromarray(RAMP8 > 100).convert("1")
    assert set(np.unique(_rgb(bits))) == {0, 255}


def test_palette_and_alpha_keep_their_colours():
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 200, 10, 30] + [0] * (256 * 3 - 6))
    pal.putdata([0, 1])
    assert _rgb(pal)[0].tolist() == [[0, 0, 0], [200, 10, 30]]
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], np.uint8))
    assert _rgb(rgba)[0].tolist() == [[10, 20, 30], [40, 50, 60]]
    la = Image.merge(
        "LA", [Image.fromarray(np.array([[7, 9]], np.uint8)), Image.fromarray(np.array([[0, 255]], np.uint8))]
    )
    assert _rgb(la)[0].tolist() == [[7, 7, 7], [9, 9, 9]]


def test_a_16_bit_test_image_is_not_read_as_white(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    ds = get_dataset("mvtec", "bottle", "test", root=tmp_path, transform=ImageTransform(resize=None, normalize=False))
    path = ds.records[0].image_path
    grey = np.asarray(Image.open(path).convert("L"))
    Image.fromarray((grey.astype(np.uint16) * 257).astype(np.uint16)).save(path)  # same picture, 16 bits per pixel
    x = ds[0].image
    assert x.max() < 1.0 and np.allclose(x[0].numpy() * 255, grey, atol=1.01)


def test_corrupt_truncated_and_bomb_files_are_named(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.fromarray(RAMP8).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read image") as e:
        open_image(path, "RGB")
    assert str(path) in str(e.value)
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="cannot read image") as e:
        open_image(path)
    assert str(path) in str(e.value)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels: more than twice the limit
    with pytest.raises(DataError, match="refused image") as e:
        open_image(path, "RGB")
    assert str(path) in str(e.value) and "decompression bomb" in str(e.value).lower()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # over the limit, under twice: a warning in PIL
    with pytest.raises(DataError, match="refused image"):
        open_image(path, "RGB")
