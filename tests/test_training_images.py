"""Training decodes image files exactly as the contract says, and as the service does.

The service's decoder (app/images.py) and training's (training/image_files.py)
are written separately because neither side may import the other; this test is
where they are held to the same pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.image_files import UnreadableImage, load_rgb, looks_readable, to_rgb

SIZE = (12, 16)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def gradient(width: int = 20, height: int = 14) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 12, y * 18, (x + y) * 7], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def images_in_every_mode() -> dict[str, bytes]:
    rgb = gradient()
    rgba = rgb.copy()
    rgba.putalpha(
        Image.fromarray(
            (np.arange(rgb.size[0] * rgb.size[1]) % 256)
            .astype(np.uint8)
            .reshape(rgb.size[1], rgb.size[0])
        )
    )
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    grey16 = Image.fromarray((np.arange(280).reshape(14, 20) * 230).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    return {
        "rgb_png": encode(rgb, "PNG"),
        "rgba_png": encode(rgba, "PNG"),
        "la_png": encode(rgb.convert("LA"), "PNG"),
        "palette_transparent_png": encode(palette, "PNG", transparency=3),
        "grey_png": encode(rgb.convert("L"), "PNG"),
        "grey16_png": encode(grey16, "PNG"),
        "cmyk_jpeg": encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "exif_rotated_jpeg": encode(rgb, "JPEG", quality=95, exif=exif),
        "webp": encode(rgb, "WEBP", lossless=True),
        "gif": encode(palette, "GIF"),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
    }


@pytest.mark.parametrize(("name", "data"), sorted(images_in_every_mode().items()))
def test_every_mode_becomes_rgb_uint8_like_the_service(name: str, data: bytes) -> None:
    from app.images import decode_image, to_model_input

    ours = load_rgb(data, SIZE)
    assert ours.shape == (*SIZE, 3)
    assert ours.dtype == np.uint8
    theirs = to_model_input(decode_image(data, max_pixels=10**8), SIZE)
    np.testing.assert_array_equal(ours, theirs)


def test_alpha_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert (load_rgb(encode(transparent, "PNG")) == 255).all()


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    wide = gradient(20, 10)
    assert load_rgb(encode(wide, "JPEG", exif=exif)).shape == (20, 10, 3)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16))
    assert to_rgb(Image.open(io.BytesIO(encode(grey16, "PNG")))).getpixel((1, 1)) == (255, 255, 255)


def test_stretch_uses_pillow_bilinear() -> None:
    image = gradient(40, 30)
    expected = np.asarray(image.resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(load_rgb(encode(image, "PNG"), SIZE), expected)


def test_unreadable_files_raise_one_error_type(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    truncated = tmp_path / "truncated.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = encode(Image.fromarray(noise), "PNG")
    truncated.write_bytes(whole[: len(whole) // 2])
    assert not looks_readable(garbage)
    for path in (garbage, truncated):
        with pytest.raises(UnreadableImage):
            load_rgb(path)
