"""Image files to the encoder's input, exactly as docs/model-directory.md prescribes.

The service applies the same steps to uploads, so training must see images the
way the service will: EXIF orientation applied, 8-bit RGB whatever the mode,
alpha composited on white, stretched with Pillow's bilinear filter.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
ALPHA_BACKGROUND = (255, 255, 255)
PREPROCESSING = {"resize": "bilinear", "fit": "stretch", "alpha_background": list(ALPHA_BACKGROUND)}


class UnreadableImage(Exception):
    """A file that claims to be an image but Pillow cannot decode."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB from any mode, with transparency flattened onto white.

    High-depth greyscale is scaled, never clipped: 16-bit values v become
    v // 257, integers already within 0..255 and floats within 0..255 are kept,
    floats within 0..1 are multiplied by 255 (anything else is stretched from
    its minimum to its maximum). The service's decoder maps every mode value
    for value the same way; tests/test_training_images.py holds both to it.
    """
    # A malformed EXIF block keeps the pixels as stored, as browsers show them.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image) or image
    if image.mode.startswith(("I", "F")):
        image = _high_depth_to_l(image)
    if image.mode == "La":
        image = image.convert("LA")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    transparent = image.info.get("transparency")
    if image.mode.startswith("I;16"):
        grey = (values.astype(np.uint16) // 257).astype(np.uint8)
    else:
        grey = _scale_to_uint8(values)
    out = Image.fromarray(grey)
    if isinstance(transparent, int) and not isinstance(transparent, bool):
        out.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8)))
    return out


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 1:
            return np.floor(values * 255.0).astype(np.uint8)
        if low >= 0 and high <= 255:
            return np.floor(values).astype(np.uint8)
    else:
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 255:
            return values.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return (values // 257).astype(np.uint8)
    span = high - low or 1.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255 / span)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def load_rgb(source: str | Path | bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image to uint8 [H, W, 3], stretched to `size` = (H, W) when given.

    Every decoding failure becomes `UnreadableImage`, so callers that skip bad
    files need to catch one type.
    """
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(handle) as opened:
            opened.load()
            image = to_rgb(opened)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImage(
            f"{source if not isinstance(source, bytes) else '<bytes>'}: {error}"
        ) from error
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def looks_readable(path: Path) -> bool:
    """Cheap first-scan check: the header parses and Pillow's verify passes.

    Does not decode pixels, so a truncated JPEG still passes; decoding later
    catches those.
    """
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # Pillow raises many unrelated types for corrupt data
        return False
    return True


def resize_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretch an RGB uint8 array the same way files are stretched."""
    if image.shape[:2] == size:
        return image
    resized = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
