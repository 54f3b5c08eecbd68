"""ImagePreparer: JPEGs decoded small for the model, full-size for the kept copy, consistently."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from app.config import Settings
from app.image_preparer import ImagePreparer
from app.images import decode_image, to_model_input
from app.model_bundle import read_model_info


def photo(side: int) -> bytes:
    y, x = np.mgrid[0:side, 0:side] / side
    pixels = np.stack([200 * x, 200 * y, 100 + 80 * np.sin(8 * x * y)], axis=-1)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_model_input_is_near_a_full_decode_and_the_copy_keeps_its_size(
    model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None, model_dir=model_dir, data_dir=tmp_path, stored_image_size=128
    )
    model = read_model_info(model_dir)
    preparer = ImagePreparer(model, settings)
    data = photo(512)
    searched = preparer.prepare(data)
    indexed = preparer.prepare(data, keep_copy=True)
    np.testing.assert_array_equal(searched.pixels, indexed.pixels)
    full = to_model_input(decode_image(data, max_pixels=10**8), model.image_size)
    assert np.abs(searched.pixels.astype(float) - full).mean() < 2.0
    assert searched.stored_copy is None
    assert indexed.stored_copy is not None
    assert max(Image.open(io.BytesIO(indexed.stored_copy)).size) == 128
