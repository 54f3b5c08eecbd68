"""JPEG searches decoded inside the encoder's model call, exactly as Pillow decodes them.

Decoding a search upload with Pillow on the encoder's thread gives the GIL
back and waits for it again several times per image (open, decode, resize,
copy out); under load the event loop holds the GIL, and those waits, not the
decoding, set the service's throughput (benchmarks/RESULTS.md, issue 6). Here
the thread only reads each JPEG's header with Pillow (no pixels) and makes one
TensorFlow call per batch that decodes, turns upright, resizes and embeds
every image without the GIL.

The pixels equal `images.decode_image` + `images.to_model_input` bit for bit:
libjpeg-turbo's integer DCT at the same draft scale (1/2, 1/4, 1/8) with
fancy upsampling, then Pillow's bilinear resize as exact fixed-point matrix
products (app/pillow_resample.py). `images.plan_jpeg` admits only what that
covers: baseline or progressive 8-bit JPEGs in RGB or greyscale whose resize
geometry has been checked against Pillow; everything else goes through Pillow.

TensorFlow is not imported here: `graph_decoder` builds on the module the
encoder imported (app/encoder.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.pillow_resample import ResizePlan

RATIOS = (1, 2, 4, 8)


@dataclass(frozen=True, eq=False)
class JpegPlan:
    """One JPEG upload and how the graph turns it into model input (from `images.plan_jpeg`)."""

    data: bytes
    scale: int  # libjpeg's DCT scale denominator, as Pillow's draft chose it
    orientation: int  # EXIF orientation 1-8, applied after decoding
    resize: ResizePlan  # from the upright decoded size to the model's


@dataclass(frozen=True)
class JpegBatch:
    """Plans as the graph's input arrays; weight matrices are zero-padded to the widest image."""

    data: np.ndarray  # [N] object (bytes)
    scale_index: np.ndarray  # [N] int32, index into RATIOS
    orientation: np.ndarray  # [N] int32
    vertical_first: np.ndarray  # [N] bool
    horizontal: np.ndarray  # [N, out W, widest] float64
    vertical: np.ndarray  # [N, out H, tallest] float64

    @classmethod
    def of(cls, plans: Sequence[JpegPlan], out_size: tuple[int, int]) -> JpegBatch:
        """Arrays for `plans`, resized to the model's (H, W)."""
        height, width = out_size
        n = len(plans)
        widest = max((p.resize.horizontal.shape[1] for p in plans), default=1)
        tallest = max((p.resize.vertical.shape[1] for p in plans), default=1)
        horizontal = np.zeros((n, width, widest), dtype=np.float64)
        vertical = np.zeros((n, height, tallest), dtype=np.float64)
        for i, plan in enumerate(plans):
            h_weights, v_weights = plan.resize.horizontal, plan.resize.vertical
            horizontal[i, :, : h_weights.shape[1]] = h_weights
            vertical[i, :, : v_weights.shape[1]] = v_weights
        data = np.empty(n, dtype=object)
        data[:] = [p.data for p in plans]
        return cls(
            data=data,
            scale_index=np.array([RATIOS.index(p.scale) for p in plans], dtype=np.int32),
            orientation=np.array([p.orientation for p in plans], dtype=np.int32),
            vertical_first=np.array([p.resize.vertical_first for p in plans], dtype=bool),
            horizontal=horizontal,
            vertical=vertical,
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        """In the order `graph_decoder`'s function takes them."""
        return (
            self.data,
            self.scale_index,
            self.orientation,
            self.vertical_first,
            self.horizontal,
            self.vertical,
        )


def input_signature(tf: Any, out_size: tuple[int, int]) -> list[Any]:
    """TensorSpecs of `JpegBatch.arrays()`."""
    height, width = out_size
    return [
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.bool),
        tf.TensorSpec([None, width, None], tf.float64),
        tf.TensorSpec([None, height, None], tf.float64),
    ]


def graph_decoder(tf: Any, out_size: tuple[int, int]) -> Callable[..., Any]:
    """A function, for use inside a `tf.function`, from `JpegBatch.arrays()` to uint8 [N, H, W, 3].

    A JPEG libjpeg cannot decode raises (tf.errors.InvalidArgumentError) for
    the whole call; the caller then decodes that batch with Pillow, which names
    the upload at fault.
    """
    height, width = out_size
    half = float(1 << 21)
    one = float(1 << 22)

    def decode(data: Any, scale_index: Any) -> Any:
        def at(ratio: int) -> Callable[[], Any]:
            return lambda: tf.io.decode_jpeg(
                data,
                channels=3,
                ratio=ratio,
                fancy_upscaling=True,
                try_recover_truncated=False,
                acceptable_fraction=1.0,
                dct_method="INTEGER_ACCURATE",
            )

        return tf.switch_case(scale_index, [at(r) for r in RATIOS])

    def upright(image: Any, orientation: Any) -> Any:
        def transpose(x: Any) -> Any:
            return tf.transpose(x, [1, 0, 2])

        # Pillow's exif_transpose for orientations 1-8, as array operations.
        return tf.switch_case(
            orientation - 1,
            [
                lambda: image,
                lambda: tf.reverse(image, [1]),
                lambda: tf.reverse(image, [0, 1]),
                lambda: tf.reverse(image, [0]),
                lambda: transpose(image),
                lambda: transpose(tf.reverse(image, [0])),
                lambda: transpose(tf.reverse(image, [0, 1])),
                lambda: transpose(tf.reverse(image, [1])),
            ],
        )

    def rounded(sums: Any) -> Any:
        return tf.clip_by_value(tf.floor((sums + half) / one), 0.0, 255.0)

    def resize(values: Any, horizontal: Any, vertical: Any, vertical_first: Any) -> Any:
        shape = tf.shape(values)
        h_weights = horizontal[:, : shape[1]]
        v_weights = vertical[:, : shape[0]]

        def rows_first() -> Any:
            out = rounded(tf.einsum("hwc,ow->hoc", values, h_weights))
            return rounded(tf.einsum("hwc,ph->pwc", out, v_weights))

        def columns_first() -> Any:
            out = rounded(tf.einsum("hwc,ph->pwc", values, v_weights))
            return rounded(tf.einsum("hwc,ow->hoc", out, h_weights))

        out = tf.cond(vertical_first, columns_first, rows_first)
        return tf.ensure_shape(tf.cast(out, tf.uint8), [height, width, 3])

    def decode_batch(
        data: Any,
        scale_index: Any,
        orientation: Any,
        vertical_first: Any,
        horizontal: Any,
        vertical: Any,
    ) -> Any:
        def one(i: Any) -> Any:
            # float64 from here on: oneDNN rewrites uint8 transposes with a
            # complaint on stderr on CPUs without AVX-512.
            image = tf.cast(decode(data[i], scale_index[i]), tf.float64)
            return resize(
                upright(image, orientation[i]), horizontal[i], vertical[i], vertical_first[i]
            )

        return tf.map_fn(
            one,
            tf.range(tf.shape(data)[0]),
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8),
        )

    return decode_batch
