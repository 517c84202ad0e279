"""Image loading: every odd mode becomes 8-bit RGB; unreadable files give errors naming file, sample, field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from comm_tower.data.errors import DataError
from comm_tower.data.images import load_image


def _roundtrip(img: Image.Image, fmt: str = "PNG", **kw) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    buf.seek(0)
    return load_image(buf)


def test_rgba_is_composited_onto_white_by_default_or_onto_the_given_colour():
    img = Image.new("RGBA", (2, 1))
    img.putpixel((0, 0), (10, 20, 30, 255))  # opaque: kept
    img.putpixel((1, 0), (10, 20, 30, 0))  # transparent: background shows
    out = _roundtrip(img)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (10, 20, 30)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    assert load_image(buf, background=(122, 116, 104)).getpixel((1, 0)) == (122, 116, 104)


def test_half_transparent_pixel_blends_with_the_background():
    img = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    value = _roundtrip(img).getpixel((0, 0))[0]
    assert abs(value - round(255 * (1 - 128 / 255))) <= 1


@pytest.mark.parametrize("mode,color", [("L", 77), ("LA", (77, 0)), ("1", 1)])
def test_grayscale_and_bilevel_become_rgb(mode, color):
    out = _roundtrip(Image.new(mode, (3, 3), color))
    expected = {"L": 77, "LA": 255, "1": 255}[mode]  # LA with alpha 0 shows the white background
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (expected,) * 3


def test_palette_with_transparency_uses_the_background():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    out = _roundtrip(img)
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = np.asarray(_roundtrip(img))[..., 0]
    # independent: 8-bit value = round(v / 65535 * 255); clipping would give 255 for all non-zero values
    assert out.tolist() == [[round(v / 65535 * 255) for v in values[0]]]
    assert out.tolist() == [[0, 100, 128, 255]]


def test_32_bit_int_and_float_images_are_scaled_to_their_range():
    from comm_tower.data.images import to_rgb

    wide = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, round(1000 / 65535 * 255), 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    odd = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32))
    assert np.asarray(to_rgb(odd))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_is_converted():
    img = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan
    r, g, b = _roundtrip(img, "JPEG", quality=100).getpixel((4, 4))
    assert r < 10 and g > 245 and b > 245


def test_missing_file_names_file_sample_field_and_fix(tmp_path):
    with pytest.raises(DataError) as info:
        load_image(tmp_path / "x.jpg", index=17, field="image")
    msg = str(info.value)
    assert msg.startswith("image 'x.jpg' in sample 17 (field 'image'): file not found")
    assert "fix:" in msg and info.value.index == 17 and info.value.field == "image"


def test_corrupt_and_truncated_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image at all")
    with pytest.raises(
        DataError, match=r"image 'junk.jpg' in sample 3 \(field 'image'\): cannot identify image"
    ):
        load_image(junk, index=3)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(
        DataError, match=r"image 'cut.jpg' in sample 4 \(field 'image'\): corrupt or unreadable"
    ):
        load_image(cut, index=4)
