"""Decoding uploads: formats, colour modes, orientation, bombs and broken files.

Every image is built in memory with Pillow so the suite needs no fixtures on disk.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from app.errors import InvalidImage, LookalikeError, PayloadTooLarge, UnsupportedMediaType
from app.images import (
    ACCEPTED_FORMATS,
    THUMBNAIL_MEDIA_TYPE,
    decode_image,
    load_for_model,
    sniff_format,
    thumbnail_bytes,
    to_model_input,
)

LIMIT = 40_000_000
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def quadrants(width: int = 64, height: int = 48) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    image = Image.new("RGB", (width, height))
    w, h = width // 2, height // 2
    image.paste(RED, (0, 0, w, h))
    image.paste(GREEN, (w, 0, width, h))
    image.paste(BLUE, (0, h, w, height))
    image.paste(YELLOW, (w, h, width, height))
    return image


def gradient(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
        axis=-1,
    ).astype(np.uint8)
    return Image.fromarray(pixels)


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def png_with_header_size(width: int, height: int) -> bytes:
    """A real tiny PNG whose IHDR (with a valid CRC) claims another size."""
    data = bytearray(encode(Image.new("RGB", (4, 4), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# Formats


FORMAT_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": 95},
    "PNG": {},
    "WEBP": {"lossless": True},
    "GIF": {},
    "BMP": {},
    "TIFF": {},
}


def test_accepted_formats_are_the_documented_six() -> None:
    assert frozenset(FORMAT_OPTIONS) == ACCEPTED_FORMATS


@pytest.mark.parametrize("fmt", sorted(FORMAT_OPTIONS))
def test_each_accepted_format_decodes_to_rgb(fmt: str) -> None:
    data = encode(quadrants(), fmt, **FORMAT_OPTIONS[fmt])

    assert sniff_format(data) == fmt
    image = decode_image(data, max_pixels=LIMIT)

    assert image.mode == "RGB"
    assert image.size == (64, 48)
    tol = 12 if fmt == "JPEG" else 0
    assert close(pixel(image, 5, 5), RED, tol)
    assert close(pixel(image, 60, 44), YELLOW, tol)


def test_camera_mpo_is_a_jpeg_and_gives_its_first_image() -> None:
    frames = [Image.new("RGB", (64, 48), RED), Image.new("RGB", (64, 48), BLUE)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])

    assert sniff_format(data) == "JPEG"
    image = decode_image(data, max_pixels=LIMIT, draft_size=(16, 12))

    assert image.size == (16, 12)
    assert close(pixel(image, 8, 6), RED)


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"MM\x00*\x00\x00\x00\x08", "TIFF"),
        (b"II+\x00\x08\x00\x00\x00", "TIFF"),
        (b"GIF87a\x01\x00\x01\x00", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
    ],
)
def test_sniff_recognises_other_spellings_of_the_magic(head: bytes, fmt: str) -> None:
    assert sniff_format(head) == fmt


UNSUPPORTED = {
    "random": random.Random(0).randbytes(512),
    "text": b"hello, this is not an image\n",
    "bm_text": b"BMW 3 series, blue, 2019 model, very good condition",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10"/>',
    "svg_bare": b'\xef\xbb\xbf  <svg width="10" height="10"></svg>',
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    "jpeg2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 64,
    "riff_wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64,
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_other_types_are_415(name: str) -> None:
    data = UNSUPPORTED[name]
    with pytest.raises(UnsupportedMediaType, match="accepted: BMP, GIF, JPEG, PNG, TIFF, WEBP"):
        sniff_format(data)
    with pytest.raises(UnsupportedMediaType):
        decode_image(data, max_pixels=LIMIT)


def test_the_415_message_says_what_it_saw() -> None:
    with pytest.raises(UnsupportedMediaType, match="PDF"):
        sniff_format(UNSUPPORTED["pdf"])
    with pytest.raises(UnsupportedMediaType, match="SVG"):
        sniff_format(UNSUPPORTED["svg"])


def test_empty_data_is_invalid() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        sniff_format(b"")
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", max_pixels=LIMIT)


def test_a_cut_off_magic_is_truncated_not_unsupported() -> None:
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(b"\x89PN", max_pixels=LIMIT)


# Orientation


@pytest.mark.parametrize(
    ("orientation", "size", "corners"),
    [
        # corners: colour expected at top-left, top-right, bottom-left, bottom-right
        (1, (64, 48), (RED, GREEN, BLUE, YELLOW)),
        (3, (64, 48), (YELLOW, BLUE, GREEN, RED)),
        (6, (48, 64), (BLUE, RED, YELLOW, GREEN)),
        (8, (48, 64), (GREEN, YELLOW, RED, BLUE)),
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, size: tuple[int, int], corners: tuple[tuple[int, int, int], ...]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(quadrants(), "JPEG", quality=95, exif=exif.tobytes())

    image = decode_image(data, max_pixels=LIMIT)

    assert image.size == size
    w, h = size
    found = [pixel(image, x, y) for x, y in [(3, 3), (w - 4, 3), (3, h - 4), (w - 4, h - 4)]]
    assert all(close(f, c) for f, c in zip(found, corners, strict=True)), found


def test_exif_orientation_in_png_is_applied_too() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(quadrants(), "PNG", exif=exif.tobytes())

    image = decode_image(data, max_pixels=LIMIT)

    assert image.size == (48, 64)
    assert pixel(image, 47, 0) == RED


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_malformed_exif_does_not_cost_the_image() -> None:
    data = encode(quadrants(), "JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*garbage")

    image = decode_image(data, max_pixels=LIMIT)

    assert image.size == (64, 48)


# Colour modes


def test_cmyk_tiff_converts_exactly() -> None:
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    image.paste((0, 0, 0, 255), (0, 0, 4, 8))

    decoded = decode_image(encode(image, "TIFF"), max_pixels=LIMIT)

    assert decoded.mode == "RGB"
    assert pixel(decoded, 6, 0) == RED
    assert pixel(decoded, 0, 0) == (0, 0, 0)


def test_cmyk_jpeg_with_adobe_inverted_channels() -> None:
    image = Image.new("CMYK", (16, 16), (255, 0, 255, 0))
    data = encode(image, "JPEG", quality=95)
    assert b"Adobe" in data

    decoded = decode_image(data, max_pixels=LIMIT)

    assert decoded.mode == "RGB"
    assert close(pixel(decoded, 8, 8), GREEN)


def test_greyscale_becomes_three_equal_channels() -> None:
    image = Image.linear_gradient("L").resize((32, 32))

    decoded = decode_image(encode(image, "PNG"), max_pixels=LIMIT)

    pixels = np.asarray(decoded)
    assert pixels.shape == (32, 32, 3)
    assert (pixels[..., 0] == np.asarray(image)).all()
    assert (pixels[..., 0] == pixels[..., 1]).all()
    assert (pixels[..., 1] == pixels[..., 2]).all()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(fmt: str) -> None:
    values = np.array([[0, 255, 256, 32768, 65280, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"

    decoded = decode_image(encode(image, fmt), max_pixels=LIMIT)

    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 0, 0, 127, 254, 255]


def test_16_bit_greyscale_with_a_transparent_value() -> None:
    values = np.array([[0, 1000, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG", transparency=1000)

    decoded = decode_image(data, max_pixels=LIMIT)

    assert np.asarray(decoded)[0].tolist() == [[0, 0, 0], [255, 255, 255], [255, 255, 255]]


def test_32_bit_integer_beyond_16_bits_is_stretched() -> None:
    values = np.array([[-100, 0, 1_000_000]], dtype=np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"

    decoded = decode_image(encode(image, "TIFF"), max_pixels=LIMIT)

    row = np.asarray(decoded)[0, :, 0].tolist()
    assert row[0] == 0
    assert row[2] == 255
    assert row[0] <= row[1] <= row[2]


def test_32_bit_integer_holding_16_bit_data_is_16_bit() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.int32)

    decoded = decode_image(encode(Image.fromarray(values), "TIFF"), max_pixels=LIMIT)

    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 127, 255]


def test_32_bit_integer_holding_8_bit_data_is_kept() -> None:
    values = np.array([[0, 128, 255]], dtype=np.int32)

    decoded = decode_image(encode(Image.fromarray(values), "TIFF"), max_pixels=LIMIT)

    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 128, 255]


def test_float_in_unit_range_is_scaled_by_255() -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    image = Image.fromarray(values)
    assert image.mode == "F"

    decoded = decode_image(encode(image, "TIFF"), max_pixels=LIMIT)

    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 127, 255]


def test_float_in_8_bit_range_is_kept() -> None:
    values = np.array([[0.0, 2.0, 200.5]], dtype=np.float32)

    decoded = decode_image(encode(Image.fromarray(values), "TIFF"), max_pixels=LIMIT)

    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 2, 200]


def test_float_outside_unit_range_is_stretched() -> None:
    values = np.array([[-2.0, 0.0, 6.0, np.nan]], dtype=np.float32)

    decoded = decode_image(encode(Image.fromarray(values), "TIFF"), max_pixels=LIMIT)

    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 64, 255, 64]


def test_palette_with_transparency_becomes_white() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
    image.paste(1, (4, 0, 8, 8))

    for fmt in ("PNG", "GIF"):
        decoded = decode_image(encode(image, fmt, transparency=0), max_pixels=LIMIT)
        assert decoded.mode == "RGB"
        assert pixel(decoded, 0, 0) == (255, 255, 255), fmt
        assert pixel(decoded, 7, 7) == BLUE, fmt


def test_palette_without_transparency_keeps_its_colours() -> None:
    image = quadrants().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)

    decoded = decode_image(encode(image, "PNG"), max_pixels=LIMIT)

    assert pixel(decoded, 3, 3) == RED


def test_alpha_is_composited_on_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (10, 20, 30, 0))
    image.putpixel((1, 0), (10, 20, 30, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))

    decoded = decode_image(encode(image, "PNG"), max_pixels=LIMIT)

    assert decoded.mode == "RGB"
    assert pixel(decoded, 0, 0) == (255, 255, 255)
    assert pixel(decoded, 1, 0) == (10, 20, 30)
    assert close(pixel(decoded, 2, 0), (127, 127, 127), tol=1)


def test_greyscale_alpha_is_composited_on_white() -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (40, 255))

    decoded = decode_image(encode(image, "PNG"), max_pixels=LIMIT)

    assert pixel(decoded, 0, 0) == (255, 255, 255)
    assert pixel(decoded, 1, 0) == (40, 40, 40)


def test_rgb_with_a_transparent_colour_becomes_white() -> None:
    data = encode(quadrants(), "PNG", transparency=RED)

    decoded = decode_image(data, max_pixels=LIMIT)

    assert pixel(decoded, 0, 0) == (255, 255, 255)
    assert pixel(decoded, 63, 47) == YELLOW


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_one_bit_becomes_black_and_white(fmt: str) -> None:
    image = Image.new("1", (8, 1), 0)
    image.putpixel((7, 0), 1)

    decoded = decode_image(encode(image, fmt), max_pixels=LIMIT)

    assert decoded.mode == "RGB"
    assert pixel(decoded, 0, 0) == (0, 0, 0)
    assert pixel(decoded, 7, 0) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_image_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE, GREEN)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3

    decoded = decode_image(data, max_pixels=LIMIT)

    assert close(pixel(decoded, 8, 8), RED, tol=4)


# Broken files


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_invalid(fmt: str) -> None:
    data = encode(gradient(256, 256), fmt)

    with pytest.raises(InvalidImage, match=f"could not decode the {fmt} image"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", sorted(FORMAT_OPTIONS))
def test_header_only_is_invalid(fmt: str) -> None:
    data = encode(quadrants(), fmt, **FORMAT_OPTIONS[fmt])

    with pytest.raises(InvalidImage):
        decode_image(data[:12], max_pixels=LIMIT)


def test_truncation_setting_is_left_alone() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", sorted(FORMAT_OPTIONS))
def test_damaged_files_only_ever_raise_our_errors(fmt: str) -> None:
    data = encode(gradient(48, 32), fmt, **FORMAT_OPTIONS[fmt])
    rng = random.Random(fmt)
    damaged = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 25))]
    for _ in range(40):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        damaged.append(bytes(corrupt))

    for sample in damaged:
        try:
            image = decode_image(sample, max_pixels=LIMIT)
        except LookalikeError:
            continue
        assert image.mode == "RGB"


# Bombs


@pytest.mark.parametrize(
    "size",
    [(8000, 6000), (50_000, 50_000)],
    ids=["over-our-limit", "over-pillows-limit-too"],
)
def test_bomb_is_refused_from_the_header_without_decoding(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    loads: list[object] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    data = png_with_header_size(*size)
    assert len(data) < 200

    with pytest.raises(PayloadTooLarge, match="over the limit of 40000000 pixels"):
        decode_image(data, max_pixels=LIMIT)
    assert loads == []


def test_pixel_limit_is_the_configured_one() -> None:
    data = png_with_header_size(2000, 1000)

    expected = "2000x1000 = 2000000 pixels, over the limit of 1999999 pixels"
    with pytest.raises(PayloadTooLarge, match=expected):
        decode_image(data, max_pixels=1_999_999)


def test_pillow_bomb_error_is_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (100, 100)), "PNG")

    with pytest.raises(PayloadTooLarge, match="1000 pixels"):
        decode_image(data, max_pixels=LIMIT)


def test_pillow_bomb_warning_is_an_error_not_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (40, 40)), "PNG")

    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(PayloadTooLarge):
        decode_image(data, max_pixels=LIMIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PayloadTooLarge):
            decode_image(data, max_pixels=LIMIT)


# Model input


def test_to_model_input_is_a_bilinear_stretch_to_h_w() -> None:
    image = gradient(120, 80)

    pixels = to_model_input(image, (30, 50))

    assert pixels.shape == (30, 50, 3)
    assert pixels.dtype == np.uint8
    expected = np.asarray(image.resize((50, 30), Image.Resampling.BILINEAR))
    assert np.array_equal(pixels, expected)


def test_to_model_input_at_the_same_size_is_the_pixels() -> None:
    image = gradient(32, 24)

    assert np.array_equal(to_model_input(image, (24, 32)), np.asarray(image))


def test_to_model_input_normalises_other_modes() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))

    pixels = to_model_input(image, (2, 2))

    assert (pixels == 255).all()


def test_load_for_model_matches_decode_then_resize_for_lossless_formats() -> None:
    data = encode(gradient(300, 200), "PNG")

    pixels = load_for_model(data, size=(64, 96), max_pixels=LIMIT)

    full = to_model_input(decode_image(data, max_pixels=LIMIT), (64, 96))
    assert np.array_equal(pixels, full)


# JPEG draft mode


def test_draft_decodes_jpeg_smaller_but_never_below_the_request() -> None:
    data = encode(gradient(1600, 1200), "JPEG", quality=95)

    image = decode_image(data, max_pixels=LIMIT, draft_size=(224, 224))

    assert image.size == (400, 300)
    for request in [(224, 224), (399, 100), (401, 100), (100, 301), (1600, 1200), (2000, 50)]:
        image = decode_image(data, max_pixels=LIMIT, draft_size=request)
        assert image.size[0] >= min(request[0], 1600), request
        assert image.size[1] >= min(request[1], 1200), request


def test_draft_accounts_for_exif_rotation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(gradient(400, 200), "JPEG", quality=95, exif=exif.tobytes())

    image = decode_image(data, max_pixels=LIMIT, draft_size=(150, 90))

    assert image.size[0] >= 150
    assert image.size[1] >= 90


def test_draft_pixels_are_close_to_a_full_decode() -> None:
    data = encode(gradient(1600, 1200), "JPEG", quality=95)

    drafted = load_for_model(data, size=(224, 224), max_pixels=LIMIT)
    full = to_model_input(decode_image(data, max_pixels=LIMIT), (224, 224))

    difference = np.abs(drafted.astype(int) - full.astype(int))
    assert drafted.shape == full.shape == (224, 224, 3)
    assert difference.mean() < 1.5
    assert difference.max() <= 12


def test_draft_is_ignored_for_other_formats() -> None:
    data = encode(gradient(400, 300), "PNG")

    assert decode_image(data, max_pixels=LIMIT, draft_size=(50, 50)).size == (400, 300)


# Thumbnails


def test_thumbnail_round_trips_through_decode() -> None:
    data = thumbnail_bytes(quadrants(640, 480), 64)

    assert THUMBNAIL_MEDIA_TYPE == "image/jpeg"
    assert sniff_format(data) == "JPEG"
    image = decode_image(data, max_pixels=LIMIT)
    assert image.size == (64, 48)
    assert close(pixel(image, 3, 3), RED)
    assert close(pixel(image, 60, 44), YELLOW)


def test_thumbnail_never_enlarges_and_flattens_alpha() -> None:
    image = Image.new("RGBA", (20, 10), (0, 0, 0, 0))

    decoded = decode_image(thumbnail_bytes(image, 256), max_pixels=LIMIT)

    assert decoded.size == (20, 10)
    assert close(pixel(decoded, 5, 5), (255, 255, 255), tol=2)


def test_thumbnail_of_a_rotated_photo_is_not_rotated_again() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    upload = encode(quadrants(), "JPEG", quality=95, exif=exif.tobytes())
    upright = decode_image(upload, max_pixels=LIMIT)

    thumb = decode_image(thumbnail_bytes(upright, 32), max_pixels=LIMIT)

    assert thumb.size == (24, 32)
    assert close(pixel(thumb, 2, 2), BLUE, tol=20)
    assert b"Exif" not in thumbnail_bytes(upright, 32)
