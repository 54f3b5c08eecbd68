"""The encoder converted for LiteRT at export, so that the service does not have to.

The service runs the encoder through LiteRT (app/model_runtime.py). Converting
it there means importing TensorFlow, 3-9 s of a start that otherwise takes
2-5 s with a million items. The exporter has TensorFlow loaded already and
converts in about a second. Beside the converted model it writes a probe: a
few images and the embeddings Keras gives them, so the service can check the
file with LiteRT alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

# Largest difference per embedding component allowed between LiteRT and Keras
# on the probe; float32 rounding in another order gives about 1e-7.
AGREEMENT = 1e-4
PROBE_SEED = 20261207


class LiteRtConversionError(Exception):
    """The encoder could not be converted, or its conversion disagrees with Keras."""


@dataclass(frozen=True)
class LiteRtConversion:
    """A converted encoder and the probe that shows it embeds as Keras does."""

    flatbuffer: bytes
    probe_images: np.ndarray
    probe_embeddings: np.ndarray
    max_difference: float


def convert_encoder(encoder: keras.Model, image_size: tuple[int, int]) -> LiteRtConversion:
    """Convert `encoder` for uint8 [N, H, W, 3] input and check it against Keras.

    The traced function is converted rather than a SavedModel (Keras' own
    export path): 0.2 s instead of 1.5 s, and the weights become constants,
    so batch normalisation folds into the convolutions.
    """
    import tensorflow as tf

    height, width = image_size

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)])
    def embed(images: Any) -> Any:
        return encoder(tf.cast(images, tf.float32), training=False)

    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [embed.get_concrete_function()], encoder
        )
        converter.experimental_lower_to_saved_model = False
        flatbuffer: bytes = converter.convert()
    except Exception as exc:  # the converter's errors are many and unnamed
        raise LiteRtConversionError(
            f"the LiteRT converter refused the encoder ({type(exc).__name__}: {exc})"
        ) from exc
    images = probe_images(height, width)
    expected = np.asarray(embed(tf.constant(images)), dtype=np.float32)
    try:
        got = run_litert(flatbuffer, images)
    except Exception as exc:
        raise LiteRtConversionError(
            f"LiteRT could not run the converted encoder ({type(exc).__name__}: {exc})"
        ) from exc
    gap = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
    if not gap <= AGREEMENT:
        raise LiteRtConversionError(
            f"the converted encoder differs from Keras by {gap:.2e} (more than {AGREEMENT})"
        )
    return LiteRtConversion(flatbuffer, images, expected, gap)


def probe_images(height: int, width: int) -> np.ndarray:
    """The images a conversion is checked on: flat, graded, sharp-edged and noisy.

    Noise alone keeps every activation in a middle range; flat and graded
    images reach the ends (an all-black image is how a test found XNNPACK
    normalising a zero embedding to NaN). The service checks its own
    conversions on the same set (app/model_runtime.py).
    """
    rows = np.repeat(np.linspace(0, 255, height)[:, None], width, axis=1)
    cols = np.repeat(np.linspace(0, 255, width)[None, :], height, axis=0)
    squares = (np.add.outer(np.arange(height) // 4, np.arange(width) // 4) % 2) * 255.0
    planes = [
        (np.zeros_like(rows),) * 3,
        (np.full_like(rows, 255),) * 3,
        (np.full_like(rows, 128),) * 3,
        (cols,) * 3,
        (rows, 255 - rows, np.full_like(rows, 64)),
        (squares,) * 3,
    ]
    shapes = np.rint(np.stack([np.stack(p, axis=-1) for p in planes])).astype(np.uint8)
    noise = np.random.default_rng(PROBE_SEED).integers(
        0, 256, size=(2, height, width, 3), dtype=np.uint8
    )
    return np.concatenate([shapes, noise])


def run_litert(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    """Embed `images` with LiteRT's builtin kernels.

    Not through the XNNPACK delegate the service uses, which announces itself
    on stderr from C++; the service checks the file on the probe with
    XNNPACK at its first start, and either agrees with Keras to about 1e-7.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    inputs = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inputs, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inputs, np.ascontiguousarray(images, dtype=np.uint8))
    interpreter.invoke()
    out: np.ndarray = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return np.array(out, dtype=np.float32)
