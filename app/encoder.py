"""The encoder on TensorFlow: a Keras model from the model directory, as a compiled function.

`model.predict` per request costs tens of milliseconds of Python overhead; one
`tf.function` with a fixed input signature, traced and warmed up at start-up,
costs well under one. The service itself runs the LiteRT conversion made here
(app/model_runtime.py); this class embeds for the offline commands, for models
LiteRT cannot run, and checks each conversion. TensorFlow is imported here and
nowhere else in `app/`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from app.model_bundle import ModelInfo
from app.native_logs import silenced_stderr

log = logging.getLogger("lookalike.encoder")


def import_tensorflow(threads: int, *, quiet: bool = True) -> Any:
    """Import TensorFlow with a deliberate thread budget, quietly unless told otherwise.

    Thread counts can only be set before TensorFlow runs its first op, so a
    second call in the same process (tests build many apps) keeps the first.
    `quiet` silences stderr for the whole process while importing: false for a
    process that is serving, whose log lines would be lost for those seconds.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # Turning oneDNN off to silence its notice would cost ~3x on CPU convolutions.
    with silenced_stderr() if quiet else contextlib.nullcontext():
        import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass
    return tf


def serving_threads(cores: int) -> int:
    """The model's threads in a serving process (LiteRT's or TensorFlow's): half the cores.

    Under load the model runs while other requests are decoded, searched and
    answered, so it has the cores only to itself when there is one request.
    With two cores, one TensorFlow thread measured faster at both batch 1 (1.2
    against 1.9 ms for the default model) and batch 32, and it took 0.7 ms off
    a lone `/search`: a second intra-op thread spins against the decode pool
    and the event loop. Offline commands (import, reindex) keep every core.
    """
    return max(1, cores // 2)


class Encoder:
    """Embeds uint8 image batches; thread-safe, one model call at a time."""

    def __init__(
        self, info: ModelInfo, *, threads: int, warmup_batch: int = 1, quiet_import: bool = True
    ) -> None:
        importing = time.perf_counter()
        tf = import_tensorflow(threads, quiet=quiet_import)
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
        self._model = model
        for size in sorted({1, max(1, warmup_batch)}):
            out = self.embed(np.zeros((size, height, width, 3), dtype=np.uint8))
        if out.shape[1] != info.embedding_dim:
            raise ValueError(
                f"{info.encoder_path} outputs {out.shape[1]} dimensions, "
                f"model.json says {info.embedding_dim}"
            )
        # The import is most of a first start (conversion) or a TensorFlow-served one: 3-13 s.
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

    def embed(self, images: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] uint8 -> [N, D] float32, L2-normalised."""
        with self._lock:
            out = self._embed(self.tf.constant(images, dtype=self.tf.uint8))
        return np.asarray(out, dtype=np.float32)

    def to_litert(self) -> bytes:
        """The model as a LiteRT flatbuffer with the same uint8 input, weights frozen.

        Converted from the traced function rather than through a SavedModel
        (Keras' own export path): 0.2 s instead of 1.5 s, and the variables
        become constants, so batch normalisation folds into the convolutions.
        """
        converter = self.tf.lite.TFLiteConverter.from_concrete_functions([self._embed], self._model)
        converter.experimental_lower_to_saved_model = False
        flatbuffer: bytes = converter.convert()
        return flatbuffer
