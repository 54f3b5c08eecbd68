"""Search by a region: a box in the uploaded image, embedded on its own.

A box is `x0,y0,x1,y1`, either in pixels of the upright image (after EXIF
rotation) or, when every value is between 0 and 1, as fractions of its width
and height, so a client can send a detector's box without knowing the size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from app.errors import InvalidField


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def fractional(self) -> bool:
        return all(0.0 <= v <= 1.0 for v in (self.x0, self.y0, self.x1, self.y1))


def parse_box(text: str | None) -> Box | None:
    if text is None or not text.strip():
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidField(f"box must be four numbers x0,y0,x1,y1; got {text!r}")
    box = Box(*values)
    if min(values) < 0:
        raise InvalidField("box coordinates must not be negative")
    if box.x1 <= box.x0 or box.y1 <= box.y0:
        raise InvalidField(f"box is empty or inverted: need x0 < x1 and y0 < y1, got {text!r}")
    return box


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The boxed region, refusing a box that leaves the image."""
    width, height = image.size
    if box.fractional:
        left, top = box.x0 * width, box.y0 * height
        right, bottom = box.x1 * width, box.y1 * height
    else:
        if box.x1 > width or box.y1 > height:
            raise InvalidField(
                f"box ({box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g}) is outside the "
                f"{width}x{height} image"
            )
        left, top, right, bottom = box.x0, box.y0, box.x1, box.y1
    pixels = (round(left), round(top), round(right), round(bottom))
    if pixels[2] - pixels[0] < 1 or pixels[3] - pixels[1] < 1:
        raise InvalidField(f"box covers less than one pixel of the {width}x{height} image")
    return image.crop(pixels)
