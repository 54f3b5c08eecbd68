"""Encoders: uint8-range RGB of any size in, L2-normalised embeddings out.

Every encoder is a functional Keras model of built-in layers only, so that
`keras.saving.load_model` opens the exported file with no custom objects and
the service never imports this package:

    Input(None, None, 3) -> Resizing(H, W) -> preprocessing -> backbone
    -> Dense(embedding_dim, "projection") -> UnitNormalization("embedding")

Each backbone's own input preprocessing is part of the model as layers, so
the service feeds raw pixels whatever the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

BACKBONES = ("small_cnn", "efficientnetb0", "mobilenetv3small", "resnet50")
BACKBONE_LAYER = "backbone"
PROJECTION_LAYER = "projection"
EMBEDDING_LAYER = "embedding"
# keras.applications.resnet50.preprocess_input ("caffe"): RGB -> BGR, minus ImageNet means.
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


class ModelError(Exception):
    """An encoder cannot be built as asked (unknown backbone, missing weights file)."""


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides an encoder's architecture, recorded in provenance."""

    backbone: str = "small_cnn"
    image_size: tuple[int, int] = (32, 32)
    embedding_dim: int = 64
    width: int = 16
    depth: int = 3
    weights: str = "none"
    freeze: bool = False
    dropout: float = 0.0
    pooling: str = "avg"


POOLINGS = ("avg", "max", "flatten")


def build_encoder(spec: EncoderSpec, *, seed: int | None = None) -> keras.Model:
    """The encoder for `spec`; `weights` is "none", "imagenet" or a `.weights.h5` path."""
    import keras

    if spec.backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {spec.backbone!r}; choose from {', '.join(BACKBONES)}")
    if spec.embedding_dim < 1:
        raise ModelError("--embedding-dim must be positive")
    height, width = spec.image_size
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize")(inputs)
    backbone = _backbone(spec, seed=seed)
    if spec.freeze:
        backbone.trainable = False
    x = backbone(x)
    if spec.dropout:
        x = keras.layers.Dropout(spec.dropout, seed=seed, name="dropout")(x)
    initializer = keras.initializers.GlorotUniform(seed=seed)
    x = keras.layers.Dense(
        spec.embedding_dim, kernel_initializer=initializer, name=PROJECTION_LAYER
    )(x)
    outputs = keras.layers.UnitNormalization(name=EMBEDDING_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"encoder_{spec.backbone}")


def _backbone(spec: EncoderSpec, *, seed: int | None) -> keras.Model:
    """A model from float 0..255 images at `image_size` to one pooled feature vector."""
    import keras

    shape = (*spec.image_size, 3)
    weights = _weights_argument(spec)
    if spec.backbone == "small_cnn":
        if weights == "imagenet":
            raise ModelError("the small CNN has no ImageNet weights; use --weights none or a path")
        model = small_cnn(
            shape, width=spec.width, depth=spec.depth, pooling=spec.pooling, seed=seed
        )
        if weights is not None:
            model.load_weights(weights)
        return model
    if spec.backbone == "efficientnetb0":
        # Keras' EfficientNet rescales and normalises 0..255 input itself.
        application = keras.applications.EfficientNetB0(
            include_top=False, weights=weights, input_shape=shape, pooling="avg"
        )
        return _named(application, inputs=None)
    if spec.backbone == "mobilenetv3small":
        # include_preprocessing adds Rescaling(1/127.5, offset=-1) inside the model.
        application = keras.applications.MobileNetV3Small(
            include_top=False,
            weights=weights,
            input_shape=shape,
            pooling="avg",
            include_preprocessing=True,
        )
        return _named(application, inputs=None)
    inputs = keras.Input(shape=shape, name="backbone_input")
    x = caffe_preprocessing()(inputs)
    application = keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=shape, pooling="avg"
    )
    return _named(application, inputs=inputs, features=application(x))


def _named(application: keras.Model, *, inputs: Any, features: Any = None) -> keras.Model:
    import keras

    if inputs is None:
        return keras.Model(application.input, application.output, name=BACKBONE_LAYER)
    return keras.Model(inputs, features, name=BACKBONE_LAYER)


def _weights_argument(spec: EncoderSpec) -> str | None:
    weights = spec.weights
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"--weights {weights}: no such file (expected none, imagenet or a path)")
    if not path.name.endswith((".weights.h5", ".h5")):
        raise ModelError(f"--weights {weights}: expected a Keras .weights.h5 file")
    return str(path)


def caffe_preprocessing() -> keras.layers.Layer:
    """ResNet50's "caffe" preprocessing as a frozen 1x1 convolution.

    Swapping channels and subtracting means is linear, so one built-in layer
    with fixed weights does it, where a Lambda would need unsafe loading.
    """
    import keras

    swap = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for source, target in ((0, 2), (1, 1), (2, 0)):
        swap[0, 0, source, target] = 1.0
    bias = -np.asarray(CAFFE_BGR_MEANS, dtype=np.float32)
    return keras.layers.Conv2D(
        3,
        1,
        kernel_initializer=keras.initializers.Constant(swap),
        bias_initializer=keras.initializers.Constant(bias),
        trainable=False,
        name="caffe_preprocessing",
    )


def small_cnn(
    shape: tuple[int, int, int],
    *,
    width: int = 32,
    depth: int = 3,
    pooling: str = "avg",
    seed: int | None = None,
) -> keras.Model:
    """VGG-style blocks (conv-BN-ReLU x2, max-pool), channels doubling per block.

    Small enough to train on a laptop CPU in a minute at 32x32, and the depth
    option trades that for capacity at larger image sizes.
    """
    import keras

    if width < 1 or depth < 1:
        raise ModelError("--width and --depth must be positive")
    inputs = keras.Input(shape=shape, name="backbone_input")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for block in range(depth):
        filters = width * 2 ** min(block, 3)
        for conv in range(2):
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer=keras.initializers.HeNormal(
                    seed=None if seed is None else seed + block * 2 + conv
                ),
                name=f"block{block + 1}_conv{conv + 1}",
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=0.9, name=f"block{block + 1}_bn{conv + 1}"
            )(x)
            x = keras.layers.ReLU(name=f"block{block + 1}_relu{conv + 1}")(x)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = keras.layers.MaxPooling2D(name=f"block{block + 1}_pool")(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    elif pooling == "flatten":
        x = keras.layers.Flatten(name="pool")(x)
    else:
        raise ModelError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    return keras.Model(inputs, x, name=BACKBONE_LAYER)
