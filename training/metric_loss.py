"""The shape every Lookalike loss has: `loss_layer(labels, embeddings) -> scalar`.

Losses are Keras layers rather than `keras.losses.Loss` so that those with
weights of their own (ArcFace's class proxies, triplet + cross-entropy's
classification head) expose them as `trainable_variables`: the trainer
differentiates w.r.t. `encoder.trainable_variables + loss.trainable_variables`,
and those weights never become part of the exported encoder. Stateless losses
still work in `model.compile(loss=SupConLoss())`: Keras wraps any callable.
A model saved while compiled with one of them records the loss in its file,
and `keras.saving.load_model` then needs this package (or `compile=False`),
so export the encoder uncompiled.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from training.miners import CurriculumMiner, Tensor

_MASKED_LOGIT = -1e9


def flatten_inputs(labels: Tensor, embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """Labels as int32 [N] (Keras hands them over as float [N, 1] through compile)."""
    return ops.cast(ops.reshape(labels, (-1,)), "int32"), ops.cast(embeddings, "float32")


def cosine_similarity(queries: Tensor, refs: Tensor) -> Tensor:
    """[Nq, Nr] cosine similarities of unit vectors."""
    return ops.matmul(queries, ops.transpose(refs))


def not_self(nq: Tensor, nr: Tensor) -> Tensor:
    """[Nq, Nr] mask that is False where reference i is query i itself.

    By convention the reference set starts with the queries, so this is the
    one place that knows which comparisons are an example with itself.
    """
    return ops.not_equal(
        ops.expand_dims(ops.arange(nq, dtype="int32"), 1),
        ops.expand_dims(ops.arange(nr, dtype="int32"), 0),
    )


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the masked entries; 0 (not NaN) when there are none."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def masked_logsumexp(values: Tensor, mask: Tensor, include_zero: bool = False) -> Tensor:
    """log(sum(exp(values))) over each row's masked entries.

    With `include_zero`, log(1 + sum(exp(values))), the soft-plus-of-many form
    of multi-similarity. Masked entries become a large negative logit rather
    than -inf so that empty rows keep finite gradients.
    """
    logits = ops.where(mask, values, _MASKED_LOGIT)
    if include_zero:
        logits = ops.concatenate([ops.zeros_like(logits[:, :1]), logits], axis=1)
    return ops.logsumexp(logits, axis=1)


class MetricLoss(keras.layers.Layer):
    """Base of every loss: `call(labels, embeddings)` returns a float32 scalar.

    `labels` are int [N] or [N, 1]; `embeddings` are float [N, D] and already
    L2-normalised, so cosine similarity is a dot product. Computation is kept
    in float32 even under a mixed-precision policy.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        # Nothing depends on input shapes: weights are made in __init__, so the
        # trainer's optimizer sees them before the first step.
        self.built = True

    def call(self, labels: Tensor, embeddings: Tensor) -> Tensor:
        raise NotImplementedError

    def curriculum_miners(self) -> list[CurriculumMiner]:
        """Miners that a `MiningCurriculum` callback should switch; none by default."""
        return []


class PairLoss(MetricLoss):
    """A loss over query-reference similarities (pytorch-metric-learning's `ref_emb`).

    Subclasses implement `compute`; on its own a batch is its own reference
    set, and `CrossBatchMemory` passes the batch plus a memory of earlier
    batches instead, so any pair loss gains many more negatives for free.
    """

    def call(self, labels: Tensor, embeddings: Tensor) -> Tensor:
        labels, embeddings = flatten_inputs(labels, embeddings)
        n = ops.shape(embeddings)[0]
        return self.compute(labels, embeddings, labels, embeddings, not_self(n, n))

    def compute(
        self,
        query_labels: Tensor,
        queries: Tensor,
        ref_labels: Tensor,
        refs: Tensor,
        allowed: Tensor,
    ) -> Tensor:
        """The loss of queries [Nq, D] against references [Nr, D].

        `allowed` [Nq, Nr] is False for comparisons that must not count
        (a query with itself, empty memory slots).
        """
        raise NotImplementedError
