"""Cross-batch memory (XBM, Wang et al. 2020) for any pair-based loss.

A CPU batch of a few dozen images sees few negatives. Embeddings drift slowly
once training settles, so those of recent batches are still good references:
XBM keeps them in a queue and compares each new batch against the batch plus
the queue, for the price of one matrix product.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from training.metric_loss import MetricLoss, PairLoss, flatten_inputs, not_self
from training.miners import CurriculumMiner, Tensor


class CrossBatchMemory(MetricLoss):
    """Wraps a `PairLoss`: queries are the batch, references the batch plus memory.

    The memory is a ring buffer of non-trainable variables holding the most
    recent `size` embeddings and labels, enqueued after the loss is computed
    (so a query never meets its own copy) and never differentiated through.
    Empty slots are excluded, so with an empty memory the loss equals the
    wrapped loss on the batch alone.

    Args:
        loss: the pair-based loss to feed with extra references.
        size: number of past embeddings kept; 0 < size.
        embedding_dim: D, the width of the embeddings.
    """

    def __init__(self, loss: PairLoss, size: int, embedding_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if size <= 0 or embedding_dim <= 0:
            raise ValueError(
                f"memory size and embedding_dim must be > 0, got {size}, {embedding_dim}"
            )
        self.loss = loss
        self.size = size
        self.embedding_dim = embedding_dim
        self.memory = self.add_weight(
            shape=(size, embedding_dim), initializer="zeros", trainable=False, name="memory"
        )
        self.memory_labels = self.add_weight(
            shape=(size,), dtype="int32", initializer="zeros", trainable=False, name="labels"
        )
        self.filled = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="filled"
        )
        self.position = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="position"
        )

    def call(self, labels: Tensor, embeddings: Tensor) -> Tensor:
        labels, embeddings = flatten_inputs(labels, embeddings)
        n = ops.shape(embeddings)[0]
        occupied = ops.less(ops.arange(self.size, dtype="int32"), self.filled)
        allowed = ops.concatenate(
            [not_self(n, n), ops.broadcast_to(ops.expand_dims(occupied, 0), (n, self.size))],
            axis=1,
        )
        refs = ops.concatenate([embeddings, ops.stop_gradient(self.memory)], axis=0)
        ref_labels = ops.concatenate([labels, self.memory_labels], axis=0)
        loss = self.loss.compute(labels, embeddings, ref_labels, refs, allowed)
        self.enqueue(labels, embeddings)
        return loss

    def enqueue(self, labels: Tensor, embeddings: Tensor) -> None:
        """Write the batch over the oldest slots; a batch larger than the memory keeps its tail."""
        labels = labels[-self.size :]
        embeddings = ops.stop_gradient(embeddings[-self.size :])
        k = ops.shape(embeddings)[0]
        slots = ops.expand_dims(ops.mod(self.position + ops.arange(k, dtype="int32"), self.size), 1)
        self.memory.assign(ops.scatter_update(self.memory, slots, embeddings))
        self.memory_labels.assign(ops.scatter_update(self.memory_labels, slots, labels))
        self.position.assign(ops.mod(self.position + k, self.size))
        self.filled.assign(ops.minimum(self.filled + k, self.size))

    def curriculum_miners(self) -> list[CurriculumMiner]:
        return self.loss.curriculum_miners()
