"""The classification baseline: plain softmax cross-entropy, embedding taken before the head.

Musgrave et al. (2020) found a well-tuned classifier's penultimate layer close
to most metric-learning losses, so every loss is reported beside it. The head
sees the un-normalised projection; the exported encoder is the same network
with the head dropped and UnitNormalization kept, as for every loss.
"""

from __future__ import annotations

from typing import Any

import keras


class SoftmaxHead(keras.layers.Layer):
    """Dense logits over the training classes and their cross-entropy.

    Shaped like the metric losses, `call(labels, features) -> scalar`, so the
    trainer treats it as one more loss whose weights train and are not exported.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.logits = keras.layers.Dense(num_classes, name="class_logits")

    def build(self, labels_shape: Any, features_shape: Any = None) -> None:
        self.logits.build(features_shape)
        self.built = True

    def call(self, labels: Any, features: Any) -> Any:
        logits = self.logits(features)
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return keras.ops.mean(losses)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}
