"""Random image edits applied in the input pipeline, never inside the exported encoder.

They do two jobs: regularise labelled training (small sets overfit fast), and
make the positives of unlabeled training, where two edited views of one image
are all that says "these match". The spec is a short string so it fits on a
command line and into model.json's provenance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each edit; 0 or False turns it off.

    crop: largest fraction of each side cut away before resizing back.
    rotate: largest rotation in degrees. color: brightness, contrast and
    saturation jitter as a fraction (hue moves by a tenth of it). blur: largest
    Gaussian sigma in pixels.
    """

    flip: bool = False
    crop: float = 0.0
    rotate: float = 0.0
    color: float = 0.0
    blur: float = 0.0

    @property
    def enabled(self) -> bool:
        return any(bool(value) for value in asdict(self).values())

    def describe(self) -> str:
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            if value is True:
                parts.append(item.name)
            elif value:
                parts.append(f"{item.name}={value:g}")
        return ",".join(parts) or "none"


NONE = AugmentConfig()
# Handwriting and letters are chiral, so no flips; they are grey, so no colour.
SHAPES = AugmentConfig(crop=0.15, rotate=12.0, blur=0.0)
PHOTOS = AugmentConfig(flip=True, crop=0.25, rotate=10.0, color=0.3, blur=1.0)
PRESETS = {"none": NONE, "shapes": SHAPES, "photos": PHOTOS}
DEFAULT_STRENGTH = {"flip": 1.0, "crop": 0.2, "rotate": 10.0, "color": 0.3, "blur": 1.0}


def parse_augment(spec: str) -> AugmentConfig:
    """`none`, a preset (`shapes`, `photos`), or edits like `flip,crop=0.2,rotate=15`.

    A bare edit name takes its default strength.
    """
    spec = spec.strip().lower()
    if spec in PRESETS:
        return PRESETS[spec]
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, raw = part.partition("=")
        name = name.strip()
        if name not in DEFAULT_STRENGTH:
            known = ", ".join([*PRESETS, *DEFAULT_STRENGTH])
            raise ValueError(f"unknown augmentation {name!r}; choose from {known}")
        try:
            strength = float(raw) if raw else DEFAULT_STRENGTH[name]
        except ValueError:
            raise ValueError(
                f"augmentation {name}={raw!r}: the strength must be a number"
            ) from None
        if strength < 0:
            raise ValueError(f"augmentation {name}: the strength must not be negative")
        values[name] = bool(strength) if name == "flip" else strength
    if values.get("crop", 0) >= 1:
        raise ValueError("augmentation crop must be below 1 (the fraction of each side cut away)")
    return AugmentConfig(**values)


def default_for(dataset: str) -> AugmentConfig:
    return SHAPES if dataset in ("digits", "glyphs") else PHOTOS


def build_augmenter(config: AugmentConfig, *, seed: int | None = None) -> keras.Sequential:
    """A Keras model of preprocessing layers mapping float 0..255 batches to the same.

    Each layer draws its own random transform per image, so two copies of one
    image in a batch come out as two different views.
    """
    import keras

    layers: list[keras.layers.Layer] = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.crop:
        # A negative zoom factor zooms in: a random crop stretched back to full size.
        layers.append(keras.layers.RandomZoom((-config.crop, 0.0), fill_mode="reflect", seed=seed))
        layers.append(
            keras.layers.RandomTranslation(
                config.crop / 2, config.crop / 2, fill_mode="reflect", seed=seed
            )
        )
    if config.rotate:
        layers.append(
            keras.layers.RandomRotation(config.rotate / 360.0, fill_mode="reflect", seed=seed)
        )
    if config.color:
        layers.append(
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=config.color / 2,
                contrast_factor=config.color,
                saturation_factor=(0.5 - config.color / 2, 0.5 + config.color / 2),
                hue_factor=config.color / 10,
                seed=seed,
            )
        )
    if config.blur:
        layers.append(
            keras.layers.RandomGaussianBlur(
                factor=1.0,
                kernel_size=2 * math.ceil(2 * config.blur) + 1,
                sigma=config.blur,
                value_range=(0, 255),
                seed=seed,
            )
        )
    return keras.Sequential(layers, name="augment")
