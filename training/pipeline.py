"""tf.data input pipelines: images in, float32 0..255 batches out.

In-memory sets are sliced in NumPy; folders are decoded by Pillow in parallel
`tf.numpy_function` calls (the same decoding the service uses) and prefetched,
so the encoder rarely waits and memory holds only the batches in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from training.batching import PKSampler
from training.class_transforms import ClassExpansion
from training.datasets import ImageSet
from training.image_folder import FileReader

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def reader_for(images: ImageSet, image_size: tuple[int, int]) -> FileReader | None:
    return FileReader(images.paths, image_size) if images.paths is not None else None


def _decode(
    reader: FileReader, image_size: tuple[int, int], expansion: ClassExpansion | None = None
) -> Callable[[Any], Any]:
    import tensorflow as tf

    read: Callable[[Any], np.ndarray] = reader.read
    if expansion is not None:

        def read(index: Any) -> np.ndarray:
            image, copy = expansion.source(int(index))
            return expansion.apply(reader.read(image), copy)

    def decode(index: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(read, [index], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (*image_size, 3))

    return decode


def training_batches(
    images: ImageSet,
    sampler: PKSampler,
    *,
    image_size: tuple[int, int],
    augmenter: keras.Model | None = None,
    reader: FileReader | None = None,
    expansion: ClassExpansion | None = None,
) -> tf.data.Dataset:
    """Endless (images, labels) P x K batches, augmented, decoded ahead of the trainer.

    With an `expansion` the sampler draws virtual indices (see
    training.class_transforms) and its labels are the expanded ones.
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    size = sampler.batch_size
    labels = images.labels if expansion is None else expansion.labels(images.labels)
    if images.images is not None:
        pixels = images.images

        def in_memory() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for batch in sampler:
                if expansion is None:
                    yield pixels[batch], labels[batch]
                else:
                    yield expansion.images(pixels, batch), labels[batch]

        dataset = tf.data.Dataset.from_generator(
            in_memory,
            output_signature=(
                tf.TensorSpec((size, *image_size, 3), tf.uint8),
                tf.TensorSpec((size,), tf.int64),
            ),
        )
    else:
        if reader is None:
            raise ValueError("a folder-backed ImageSet needs its FileReader")
        label_table = tf.constant(labels)
        decode = _decode(reader, image_size, expansion)
        dataset = (
            tf.data.Dataset.from_generator(
                lambda: iter(sampler), output_signature=tf.TensorSpec((size,), tf.int64)
            )
            .unbatch()
            .map(lambda i: (decode(i), tf.gather(label_table, i)), num_parallel_calls=autotune)
            .batch(size, drop_remainder=True)
        )
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y))
    if augmenter is not None and augmenter.layers:
        dataset = dataset.map(
            lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=autotune
        )
    return dataset.prefetch(autotune)


def inference_batches(
    images: ImageSet,
    *,
    image_size: tuple[int, int],
    batch_size: int = 256,
    reader: FileReader | None = None,
    augmenter: keras.Model | None = None,
) -> tf.data.Dataset:
    """Every image once, in order, as float32 batches (optionally augmented copies)."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    if images.images is not None:
        pixels = images.images

        def in_memory() -> Iterator[np.ndarray]:
            for start in range(0, len(pixels), batch_size):
                yield pixels[start : start + batch_size]

        dataset = tf.data.Dataset.from_generator(
            in_memory, output_signature=tf.TensorSpec((None, *image_size, 3), tf.uint8)
        )
    else:
        if reader is None:
            raise ValueError("a folder-backed ImageSet needs its FileReader")
        dataset = (
            tf.data.Dataset.range(len(images))
            .map(_decode(reader, image_size), num_parallel_calls=autotune)
            .batch(batch_size)
        )
    dataset = dataset.map(lambda x: tf.cast(x, tf.float32))
    if augmenter is not None and augmenter.layers:
        dataset = dataset.map(lambda x: augmenter(x, training=True), num_parallel_calls=autotune)
    return dataset.prefetch(autotune)


def embed(
    encoder: keras.Model,
    images: ImageSet,
    *,
    image_size: tuple[int, int],
    batch_size: int = 256,
    reader: FileReader | None = None,
    augmenter: keras.Model | None = None,
) -> np.ndarray:
    """[N, D] float32 embeddings, streamed batch by batch.

    `predict_on_batch` runs Keras' compiled predict function (traced once per
    model and batch shape), several times faster than calling layers eagerly.
    In-memory images skip tf.data altogether unless they are augmented.
    """
    if images.images is not None and augmenter is None:
        batches: Any = (
            images.images[start : start + batch_size].astype(np.float32)
            for start in range(0, len(images), batch_size)
        )
    else:
        batches = inference_batches(
            images, image_size=image_size, batch_size=batch_size, reader=reader, augmenter=augmenter
        )
    parts = [np.asarray(encoder.predict_on_batch(batch)) for batch in batches]
    if not parts:
        return np.zeros((0, int(encoder.output_shape[-1])), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def pixels(
    images: ImageSet,
    *,
    image_size: tuple[int, int],
    reader: FileReader | None = None,
    augmenter: keras.Model | None = None,
) -> np.ndarray:
    """uint8 [N, H, W, 3] for the raw-pixel baseline, at a size the caller keeps small."""
    if images.images is not None and augmenter is None:
        from training.image_files import resize_array

        return np.stack([resize_array(image, image_size) for image in images.images])
    batches = inference_batches(images, image_size=image_size, reader=reader, augmenter=augmenter)
    return np.concatenate([np.clip(np.asarray(b), 0, 255).astype(np.uint8) for b in batches])
