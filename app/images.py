"""Uploaded bytes to the RGB pixels the encoder was trained on.

The service must see an image exactly as training did (docs/model-directory.md,
"Preprocessing"): EXIF orientation applied, every colour mode brought to 8-bit
RGB with alpha composited on white, then a bilinear stretch to the model's size.
Anything that deviates here silently shifts every embedding, so this module is
the one place that turns bytes into pixels.

Uploads are untrusted: the type comes from the magic bytes, the pixel count is
checked from the header before anything is decoded, and every decoder failure
leaves as one of our `LookalikeError`s, never as a Pillow exception.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidImage, LookalikeError, PayloadTooLarge, UnsupportedMediaType

ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "JPEG": "image/jpeg",
        "PNG": "image/png",
        "WEBP": "image/webp",
        "GIF": "image/gif",
        "BMP": "image/bmp",
        "TIFF": "image/tiff",
    }
)

THUMBNAIL_FORMAT = "JPEG"
THUMBNAIL_MEDIA_TYPE = MEDIA_TYPES[THUMBNAIL_FORMAT]

_WHITE = (255, 255, 255)

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)

# Sizes of the BMP info headers Pillow reads; "BM" alone also starts plain text.
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

_ROTATES_90 = frozenset({5, 6, 7, 8})


def sniff_format(data: bytes) -> str:
    """The image format named by the magic bytes; a client's content-type is never trusted."""
    if not data:
        raise InvalidImage("empty image data")
    head = bytes(data[:32])
    for magic, fmt in _SIGNATURES:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    cut_bmp = head[:2] == b"BM" and len(head) < 18
    if cut_bmp or any(magic.startswith(head) for magic, _ in _SIGNATURES):
        raise InvalidImage(f"image data is truncated ({len(data)} bytes)")
    raise UnsupportedMediaType(
        f"unsupported image type{_describe(head)}; accepted: {', '.join(sorted(ACCEPTED_FORMATS))}"
    )


def _describe(head: bytes) -> str:
    if head.startswith(b"%PDF"):
        return " (PDF)"
    if head[4:8] == b"ftyp":
        return " (HEIF/AVIF/MP4 container)"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return " (XML, SVG or HTML text)"
    return ""


def decode_image(
    data: bytes, *, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode an upload into an upright 8-bit RGB image, refusing bombs before decoding.

    `draft_size` is Pillow's (width, height): for JPEG, libjpeg then decodes at the
    smallest 1/2, 1/4 or 1/8 scale whose result is still at least that large in
    both dimensions (after EXIF rotation), which is several times faster for
    photos much larger than the model input. Other formats ignore it.

    The pixel limit is the lower of `max_pixels` and Pillow's own
    `Image.MAX_IMAGE_PIXELS`, so an image Pillow would only warn about is refused
    too instead of being decoded.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if draft_size is not None and min(draft_size) < 1:
        raise ValueError(f"draft_size must be positive, got {draft_size}")
    fmt = sniff_format(data)
    limit = _pixel_limit(max_pixels)
    try:
        image = _open_within_limit(data, fmt, limit)
        if draft_size is not None and fmt == "JPEG":
            _draft(image, draft_size)
        image.load()
        _apply_orientation(image)
        return _to_rgb(image)
    except LookalikeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        message = f"{fmt} image is over the limit of {limit} pixels (decompression-bomb guard)"
        raise PayloadTooLarge(message) from exc
    except MemoryError as exc:
        raise PayloadTooLarge(f"{fmt} image is too large to decode in memory") from exc
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        message = f"could not decode the {fmt} image (corrupt or truncated): {reason}"
        raise InvalidImage(message) from exc


def to_model_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Stretch to the model's (H, W) exactly as training does, as uint8 [H, W, 3].

    Pillow's bilinear filter widens its support when it shrinks, so this is an
    antialiased resize; the encoder's own Resizing layer then has nothing to do.
    """
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be a positive (H, W), got {size}")
    rgb = _to_rgb(image)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


def thumbnail_bytes(image: Image.Image, longest_side: int) -> bytes:
    """A small, metadata-free RGB JPEG of the image, for the catalogue's kept copy.

    Kept copies are re-embedded when the model changes, so they are encoded at
    quality 90 without chroma subsampling (colour is often what tells products
    apart) and carry no EXIF, which would otherwise rotate them a second time.
    Images already small enough are re-encoded, never enlarged.
    """
    if longest_side < 1:
        raise ValueError(f"longest_side must be positive, got {longest_side}")
    rgb = _to_rgb(image)
    width, height = rgb.size
    scale = longest_side / max(width, height)
    if scale < 1:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    rgb.save(out, THUMBNAIL_FORMAT, quality=90, subsampling=0)
    return out.getvalue()


def load_for_model(data: bytes, *, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Bytes straight to the encoder's uint8 [H, W, 3] input, decoding JPEGs in draft mode.

    Draft decoding is never smaller than `size`, so the bilinear stretch still
    shrinks; pixels differ from a full decode only by libjpeg's DCT scaling.
    """
    height, width = size
    image = decode_image(data, max_pixels=max_pixels, draft_size=(width, height))
    return to_model_input(image, size)


def _pixel_limit(max_pixels: int) -> int:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, int(pillow_limit))


def _too_many_pixels(width: int, height: int, limit: int) -> str:
    return f"image is {width}x{height} = {width * height} pixels, over the limit of {limit} pixels"


def _open(data: bytes, fmt: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[fmt])
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"not a readable {fmt} image: the header is corrupt") from exc


def _open_within_limit(data: bytes, fmt: str, limit: int) -> Image.Image:
    """The opened (not decoded) image, refused when its header is empty or over the limit."""
    image = _open(data, fmt)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"{fmt} header gives an empty image ({width}x{height})")
    if width * height > limit:
        raise PayloadTooLarge(_too_many_pixels(width, height, limit))
    return image


def _draft(image: Image.Image, draft_size: tuple[int, int]) -> None:
    width, height = draft_size
    if _orientation(image) in _ROTATES_90:
        width, height = height, width
    image.draft("RGB", (width, height))


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:
        return 1


def _apply_orientation(image: Image.Image) -> None:
    # A malformed EXIF block should not cost the user an otherwise good image;
    # browsers show such files unrotated too.
    if _orientation(image) == 1:
        return
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:
        return


def _to_rgb(image: Image.Image) -> Image.Image:
    """Every Pillow mode to 8-bit RGB, alpha and transparency composited on white."""
    if image.mode.startswith(("I", "F")):
        image = _high_depth_to_l(image)
    if image.mode == "La":
        image = image.convert("LA")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale to 8-bit by scaling, never by clipping.

    Within the ranges the training side handles, the mapping is the same value
    for value, or a 16-bit upload would embed differently from its training
    twin: 16-bit data is v // 257 (65535 -> 255), integers up to 255 and floats
    above 1 up to 255 are already 8-bit, floats in [0, 1] are scaled by 255.
    Anything else (negative, wider than 16 bits) is stretched from its own
    minimum to maximum instead of being clipped.
    """
    values = np.asarray(image)
    transparent = image.info.get("transparency")
    alpha = None
    if isinstance(transparent, int) and not isinstance(transparent, bool):
        alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
    if image.mode.startswith("I;16"):
        grey = (values.astype(np.uint16) // 257).astype(np.uint8)
    else:
        grey = _scale_to_uint8(values)
    out = Image.fromarray(grey)
    if alpha is not None:
        out.putalpha(Image.fromarray(alpha))
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
