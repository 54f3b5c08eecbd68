"""The encoder: a Keras model from the model directory, called as a compiled function.

`model.predict` per request costs tens of milliseconds of Python overhead; one
`tf.function` with a fixed input signature, traced and warmed up at start-up,
costs well under one. TensorFlow is imported here and nowhere else in `app/`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.jpeg_batch import JpegBatch, JpegPlan, graph_decoder, input_signature
from app.model_bundle import ModelInfo

log = logging.getLogger("lookalike.encoder")


def import_tensorflow(threads: int) -> Any:
    """Import TensorFlow quietly with a deliberate thread budget.

    Thread counts can only be set before TensorFlow runs its first op, so a
    second call in the same process (tests build many apps) keeps the first.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TensorFlow's C++ side announces oneDNN on stderr while importing, before any
    # log level applies (turning oneDNN off to silence it costs ~3x on CPU
    # convolutions), so the import alone runs with file descriptor 2 on /dev/null.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)

    tf.get_logger().setLevel(logging.ERROR)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass
    return tf


def serving_threads(cores: int) -> int:
    """TensorFlow's intra-op threads in a serving process: half the cores, at least one.

    Under load the model runs while other requests are decoded, searched and
    answered, so it has the cores only to itself when there is one request.
    With two cores, one thread measured faster at both batch 1 (1.2 against
    1.9 ms for the default model) and batch 32, and it takes 0.7 ms off a lone
    `/search`: a second intra-op thread spins against the decode pool and the
    event loop. Offline commands (import, reindex) keep every core.
    """
    return max(1, cores // 2)


class Encoder:
    """Embeds uint8 image batches; thread-safe, one model call at a time."""

    def __init__(
        self,
        info: ModelInfo,
        *,
        threads: int,
        warmup_batch: int = 1,
        decode_jpegs: bool = False,
    ) -> None:
        importing = time.perf_counter()
        tf = import_tensorflow(threads)
        import keras

        started = time.perf_counter()
        model = keras.saving.load_model(info.encoder_path, compile=False)
        height, width = info.image_size
        self.info = info
        self.tf = tf
        self._lock = threading.Lock()

        @tf.function(
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def embed(images: Any) -> Any:
            return model(tf.cast(images, tf.float32), training=False)

        # Its one concrete function, called directly: a tf.function call first
        # binds and matches its arguments against the traced signatures in
        # Python, 0.15-0.3 ms of the GIL per call (measured on 2 cores).
        self._embed = embed.get_concrete_function()
        self._embed_jpegs: Any = None
        if decode_jpegs:
            decode = graph_decoder(tf, info.image_size)

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, height, width, 3], tf.uint8),
                    *input_signature(tf, info.image_size),
                ]
            )
            def embed_jpegs(images: Any, *jpegs: Any) -> Any:
                pixels = tf.concat([images, decode(*jpegs)], 0)
                return model(tf.cast(pixels, tf.float32), training=False)

            self._embed_jpegs = embed_jpegs.get_concrete_function()
        for size in sorted({1, max(1, warmup_batch)}):
            out = self.embed(np.zeros((size, height, width, 3), dtype=np.uint8))
        if out.shape[1] != info.embedding_dim:
            raise ValueError(
                f"{info.encoder_path} outputs {out.shape[1]} dimensions, "
                f"model.json says {info.embedding_dim}"
            )
        # The import dominates a service's start-up: 4-13 s on 2 cores, warm or cold.
        log.info(
            "encoder %s (%dx%d -> %d): TensorFlow imported in %.2f s, model loaded and warmed up "
            "in %.2f s",
            info.model_id[:12],
            height,
            width,
            info.embedding_dim,
            started - importing,
            time.perf_counter() - started,
        )

    @property
    def decodes_jpegs(self) -> bool:
        """Whether `embed` takes JPEG plans (app/jpeg_batch.py)."""
        return self._embed_jpegs is not None

    def embed(self, images: np.ndarray, jpegs: Sequence[JpegPlan] = ()) -> np.ndarray:
        """[N, H, W, 3] uint8 and M JPEG plans -> [N + M, D] float32 L2-normalised, in that order.

        Raises whatever TensorFlow raises when a planned JPEG does not decode.
        """
        tf = self.tf
        with self._lock:
            if not jpegs:
                out = self._embed(tf.constant(images, dtype=tf.uint8))
            elif self._embed_jpegs is None:
                raise RuntimeError("this encoder was built without decode_jpegs")
            else:
                batch = JpegBatch.of(jpegs, self.info.image_size)
                out = self._embed_jpegs(tf.constant(images, dtype=tf.uint8), *batch.arrays())
        return np.asarray(out, dtype=np.float32)
