"""Losses that learn one vector per training class alongside the encoder.

ArcFace's class proxies and the triplet + cross-entropy classification head
are weights of the loss layer, not of the encoder: the trainer updates them
through `loss.trainable_variables` and they are simply left out of the
exported model, whose classes the service never sees anyway.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from training.metric_loss import MetricLoss, flatten_inputs
from training.miners import CurriculumMiner, Tensor
from training.pair_losses import TripletLoss


def _mean_cross_entropy(labels: Tensor, logits: Tensor) -> Tensor:
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


class ArcFaceLoss(MetricLoss):
    """Additive angular margin loss (ArcFace, Deng et al. 2019).

    Softmax cross-entropy over s * cos(angle to each L2-normalised class
    proxy), with the true class's angle widened by m. Where angle + m would
    pass pi (and cos(angle + m) stop falling), the penalty becomes
    cos(angle) - m sin(m), as in the authors' code.

    Args:
        num_classes: number of training classes; labels must be in
            [0, num_classes).
        embedding_dim: D, the width of the embeddings and the proxies.
        scale: s, the logit scale (an inverse temperature). Default 30, as in
            the paper for 512-d faces; on small embeddings and few classes a
            smaller s (e.g. 16) often trains more smoothly.
        margin: m, the additive angular margin in radians. Default 0.5.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        scale: float = 30.0,
        margin: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes <= 0 or embedding_dim <= 0:
            raise ValueError(
                f"num_classes and embedding_dim must be > 0, got {num_classes}, {embedding_dim}"
            )
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.scale = scale
        self.margin = margin
        self.proxies = self.add_weight(
            shape=(num_classes, embedding_dim),
            initializer="glorot_normal",
            trainable=True,
            name="proxies",
        )

    def call(self, labels: Tensor, embeddings: Tensor) -> Tensor:
        labels, embeddings = flatten_inputs(labels, embeddings)
        proxies = ops.normalize(self.proxies, axis=1)
        cos = ops.clip(ops.matmul(embeddings, ops.transpose(proxies)), -1.0, 1.0)
        sin = ops.sqrt(ops.clip(1.0 - cos * cos, 1e-7, 1.0))
        widened = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        widened = ops.where(
            ops.greater(cos, math.cos(math.pi - self.margin)),
            widened,
            cos - self.margin * math.sin(self.margin),
        )
        is_target = ops.equal(
            ops.expand_dims(labels, 1),
            ops.expand_dims(ops.arange(self.num_classes, dtype="int32"), 0),
        )
        logits = self.scale * ops.where(is_target, widened, cos)
        return _mean_cross_entropy(labels, logits)


class TripletCrossEntropyLoss(MetricLoss):
    """A metric loss plus softmax cross-entropy of a linear classification head.

    The head (Dense over `num_classes`) gives every example a class-level
    signal that a batch's few triplets lack; it is used only in training.

    Args:
        num_classes: number of training classes; labels must be in
            [0, num_classes).
        embedding_dim: D, the width of the embeddings the head reads.
        metric_loss: the metric part. Default `TripletLoss()` (margin 0.2,
            semi-hard); may be wrapped in a `CrossBatchMemory`.
        ce_weight: weight of the cross-entropy term. Default 1.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        metric_loss: MetricLoss | None = None,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes <= 0 or embedding_dim <= 0:
            raise ValueError(
                f"num_classes and embedding_dim must be > 0, got {num_classes}, {embedding_dim}"
            )
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.metric_loss = metric_loss if metric_loss is not None else TripletLoss()
        self.ce_weight = ce_weight
        self.head = keras.layers.Dense(num_classes, name="classifier", dtype="float32")
        self.head.build((None, embedding_dim))

    def call(self, labels: Tensor, embeddings: Tensor) -> Tensor:
        labels, embeddings = flatten_inputs(labels, embeddings)
        cross_entropy = _mean_cross_entropy(labels, self.head(embeddings))
        return self.metric_loss(labels, embeddings) + self.ce_weight * cross_entropy

    def curriculum_miners(self) -> list[CurriculumMiner]:
        return self.metric_loss.curriculum_miners()
