"""The one decoding policy: upload bytes -> model input, and the copy the catalogue keeps.

Index, search and the bulk jobs decode the same way (the same JPEG draft
scale), so an image searched for finds its own indexed copy with a score of
1.0, not 0.99.

The model sees a JPEG decoded at the smallest DCT scale still at least twice
its input size (Pillow's draft mode), then the antialiased resize training
uses: a 256-pixel upload for a 32-pixel model is decoded at a quarter of its
width and height, for about half the cost, and the model input differs from a
full decode's by about 0.3/255 per pixel on average. The copy the catalogue keeps
is decoded again at its own, larger size, so it is no smaller for this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.images import decode_image, sniff_format, thumbnail_bytes, to_model_input
from app.model_bundle import ModelInfo
from app.regions import Box, crop


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray
    stored_copy: bytes | None


class ImagePreparer:
    def __init__(self, model: ModelInfo, settings: Settings) -> None:
        self.model = model
        self._max_pixels = settings.max_image_pixels
        self._keep = settings.keep_images
        self._stored_side = settings.stored_image_size
        height, width = model.image_size
        self._draft = (2 * width, 2 * height)
        side = settings.stored_image_size
        self._copy_draft = (max(width, side), max(height, side))

    def prepare(
        self, data: bytes, *, keep_copy: bool = False, box: Box | None = None
    ) -> PreparedImage:
        """Decode (raising the API's image errors) into model input and, optionally, a copy.

        A box is cut from the full-resolution decode (pixel boxes refer to the
        original size, which JPEG draft decoding would change).
        """
        keep = keep_copy and self._keep
        draft = None if box is not None else self._draft
        image = decode_image(data, max_pixels=self._max_pixels, draft_size=draft)
        if box is not None:
            image = crop(image, box)
        pixels = to_model_input(image, self.model.image_size)
        if not keep:
            return PreparedImage(pixels=pixels, stored_copy=None)
        if box is None and sniff_format(data) == "JPEG":
            image = decode_image(data, max_pixels=self._max_pixels, draft_size=self._copy_draft)
        return PreparedImage(pixels=pixels, stored_copy=thumbnail_bytes(image, self._stored_side))

    def prepare_stored_copy(self, stored: bytes) -> PreparedImage:
        """Model input from a kept copy, for re-embedding without the original upload."""
        image = decode_image(stored, max_pixels=self._max_pixels)
        return PreparedImage(pixels=to_model_input(image, self.model.image_size), stored_copy=None)
