"""JPEGs decoded by TurboJPEG give exactly Pillow's pixels (images.decode_jpeg_for_model)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.errors import InvalidImage, PayloadTooLarge
from app.image_preparer import ImagePreparer
from app.images import decode_image, decode_jpeg_for_model, to_model_input
from app.model_bundle import ModelInfo

# Not square, so a swapped height and width shows.
SIZE = (24, 32)
DRAFT = (2 * SIZE[1], 2 * SIZE[0])


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients and noise: what JPEG's subsampling and DCT scaling act on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    pixels = np.stack(
        [
            128 + 100 * np.sin(6 * x + 3 * y + seed),
            128 + 100 * np.cos(5 * y - 2 * x),
            128 + 80 * np.sin(9 * x * y),
        ],
        axis=-1,
    )
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(
    width: int,
    height: int,
    *,
    seed: int = 0,
    mode: str = "RGB",
    subsampling: int = 2,
    progressive: bool = False,
    orientation: int | None = None,
) -> bytes:
    image = photo(width, height, seed).convert(mode)
    options: dict[str, Any] = {"quality": 85, "progressive": progressive}
    if mode == "RGB":
        options["subsampling"] = subsampling
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


CASES: dict[str, bytes] = {
    "photo 1/4 scale": jpeg(256, 256),
    "odd size, 1/2 scale": jpeg(257, 131, seed=1),
    "huge, 1/8 scale": jpeg(1200, 900, seed=2),
    "smaller than the model": jpeg(20, 30, seed=3),
    "4:4:4": jpeg(200, 120, seed=4, subsampling=0),
    "4:2:2": jpeg(200, 120, seed=5, subsampling=1),
    "progressive": jpeg(300, 200, seed=6, progressive=True),
    "progressive, 1/8 scale": jpeg(999, 777, seed=8, progressive=True, subsampling=0),
    "greyscale": jpeg(150, 100, seed=7, mode="L"),
    "greyscale, 1/4 scale": jpeg(260, 300, seed=9, mode="L"),
    **{f"EXIF orientation {o}": jpeg(180, 100, seed=10 + o, orientation=o) for o in range(1, 9)},
    **{f"EXIF orientation {o}, 1/4 scale": jpeg(301, 257, seed=20 + o, orientation=o)
       for o in (3, 6, 8)},
}  # fmt: skip


def pillow_pixels(data: bytes, *, max_pixels: int = 10**8) -> np.ndarray:
    """What the service's Pillow path feeds the model."""
    return to_model_input(decode_image(data, max_pixels=max_pixels, draft_size=DRAFT), SIZE)


def fast(data: bytes, *, max_pixels: int = 10**8) -> np.ndarray | None:
    return decode_jpeg_for_model(data, max_pixels=max_pixels, draft_size=DRAFT, size=SIZE)


@pytest.mark.parametrize("name", list(CASES))
def test_turbojpeg_decodes_a_jpeg_to_pillows_pixels_exactly(name: str) -> None:
    data = CASES[name]
    decoded = fast(data)
    assert decoded is not None, "fell back to Pillow"
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pillow_pixels(data))


def test_every_draft_scale_is_met_by_the_same_turbojpeg_scale() -> None:
    """Sizes either side of each scale's threshold, where a wrong scale would show."""
    for width, height in [(127, 127), (128, 128), (255, 129), (256, 256), (511, 300), (512, 512),
                          (1100, 515), (96, 2000)]:  # fmt: skip
        data = jpeg(width, height, seed=width)
        decoded = fast(data)
        assert decoded is not None, (width, height)
        np.testing.assert_array_equal(decoded, pillow_pixels(data), err_msg=f"{width}x{height}")


def test_what_turbojpeg_does_not_reproduce_is_left_to_pillow() -> None:
    png = io.BytesIO()
    photo(64, 64).save(png, "PNG")
    cmyk = io.BytesIO()
    photo(64, 64).convert("CMYK").save(cmyk, "JPEG")
    assert fast(png.getvalue()) is None
    assert fast(cmyk.getvalue()) is None
    assert fast(b"\xff\xd8\xff\xe0 not really a JPEG") is None
    assert fast(b"%PDF-1.4") is None
    # So small that TurboJPEG's 7/8 scale gives the same size as 1/1.
    assert fast(jpeg(7, 5)) is None
    np.testing.assert_array_equal(fast(jpeg(8, 9)), pillow_pixels(jpeg(8, 9)))


def test_uploads_pillow_refuses_are_refused_by_pillow() -> None:
    """No decode here for bombs or cut-off data: the Pillow path raises their errors."""
    good = jpeg(400, 300)
    assert fast(good, max_pixels=400 * 300 - 1) is None
    with pytest.raises(PayloadTooLarge):
        pillow_pixels(good, max_pixels=400 * 300 - 1)
    truncated = good[: len(good) // 2]  # the header is whole, the scan is cut off
    assert fast(truncated) is None
    with pytest.raises(InvalidImage, match="truncated"):
        pillow_pixels(truncated)


@pytest.fixture(scope="module")
def preparer(tmp_path_factory: pytest.TempPathFactory) -> ImagePreparer:
    model = ModelInfo(
        path=Path("unused"), model_id="m", image_size=SIZE, embedding_dim=8, match_threshold=0.9
    )
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data"))
    return ImagePreparer(model, settings)


def test_the_preparer_gives_the_same_pixels_either_way_and_keeps_a_copy(
    preparer: ImagePreparer,
) -> None:
    data = CASES["EXIF orientation 6, 1/4 scale"]
    prepared = preparer.prepare(data, keep_copy=True)
    np.testing.assert_array_equal(prepared.pixels, pillow_pixels(data))
    assert prepared.stored_copy is not None
    copy = Image.open(io.BytesIO(prepared.stored_copy))
    assert copy.size == (219, 256)  # turned upright: 257 x 301, longest side 256
    with pytest.raises(InvalidImage):
        preparer.prepare(data[: len(data) // 2])
