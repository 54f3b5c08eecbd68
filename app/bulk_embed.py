"""Embedding many images offline (import, reindex) through a tf.data pipeline.

Decoding runs in parallel inside tf.data while the encoder works on the previous
batch, so a bulk job keeps every core busy instead of alternating between
Pillow and the model on one. Unreadable images are reported per record, never
fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.encoder import Encoder
from app.errors import LookalikeError
from app.image_preparer import PreparedImage

Prepare = Callable[[bytes], PreparedImage]


@dataclass(frozen=True)
class EmbeddedBatch:
    tokens: list[Any]
    vectors: np.ndarray
    stored_copies: list[bytes | None]
    failures: list[tuple[Any, str]]


def embed_stream(
    encoder: Encoder,
    records: Iterable[tuple[Any, bytes]],
    prepare: Prepare,
    *,
    batch_size: int = 64,
) -> Iterator[EmbeddedBatch]:
    """Yield embeddings for (token, image bytes) records, in input order, a batch at a time."""
    tf = encoder.tf
    height, width = encoder.info.image_size
    tokens: list[Any] = []

    def generate() -> Iterator[tuple[int, bytes]]:
        for token, data in records:
            tokens.append(token)
            yield len(tokens) - 1, data

    def decode(data: bytes) -> tuple[np.ndarray, bytes, bytes]:
        try:
            prepared = prepare(bytes(data))
        except LookalikeError as exc:
            return np.zeros((height, width, 3), np.uint8), b"", exc.message.encode()
        return prepared.pixels, prepared.stored_copy or b"", b""

    def decode_op(position: Any, data: Any) -> tuple[Any, Any, Any, Any]:
        pixels, copy, error = tf.numpy_function(decode, [data], (tf.uint8, tf.string, tf.string))
        pixels.set_shape((height, width, 3))
        copy.set_shape(())
        error.set_shape(())
        return position, pixels, copy, error

    dataset = (
        tf.data.Dataset.from_generator(
            generate,
            output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.string)),
        )
        .map(decode_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(2)
    )
    for positions, pixels, copies, errors in dataset.as_numpy_iterator():
        ok = np.array([not e for e in errors], dtype=bool)
        vectors = (
            encoder.embed(pixels[ok])
            if ok.any()
            else np.zeros((0, encoder.info.embedding_dim), np.float32)
        )
        yield EmbeddedBatch(
            tokens=[tokens[p] for p, good in zip(positions, ok, strict=True) if good],
            vectors=vectors,
            stored_copies=[bytes(c) or None for c, good in zip(copies, ok, strict=True) if good],
            failures=[
                (tokens[p], e.decode())
                for p, e, good in zip(positions, errors, ok, strict=True)
                if not good
            ],
        )
