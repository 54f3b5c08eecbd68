"""The training loop: a custom train step inside `keras.Model.fit`.

`fit` brings the progress bar, callbacks and history; the step is ours because
a metric loss looks at the whole batch of embeddings and labels at once, and
its own weights (ArcFace proxies, a cross-entropy head) train beside the
encoder's without being part of it. Validation is retrieval on held-out
images, measured at each epoch's end, and early stopping keeps the best epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.metrics import retrieval_metrics

VALIDATION_METRIC = "val_map_at_r"


class MetricLearner(keras.Model):
    """Encoder + loss layer, trained together; only the encoder is exported.

    `features` is the network the loss sees: the encoder itself for metric
    losses, or the encoder up to its projection (before UnitNormalization) for
    the softmax classification baseline. Either way the weights are the
    encoder's.
    """

    def __init__(
        self,
        encoder: keras.Model,
        loss_layer: keras.layers.Layer,
        features: keras.Model | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.features = features if features is not None else encoder
        self.loss_layer = loss_layer
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.encoder(inputs, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def train_step(self, data: Any) -> dict[str, Any]:
        images, labels = data
        with tf.GradientTape() as tape:
            embeddings = self.features(images, training=True)
            loss = self.loss_layer(labels, embeddings)
            regularisation = self.features.losses
            if regularisation:
                loss = loss + tf.add_n(regularisation)
        variables = self.features.trainable_variables + self.loss_layer.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


class RetrievalValidation(keras.callbacks.Callback):
    """Adds `val_<figure>` retrieval figures to each epoch's logs.

    Listed before EarlyStopping, which reads the same logs dict. Validation
    sets are small (a tenth of the training classes' images), so embedding
    them every epoch costs little next to the epoch itself.
    """

    def __init__(
        self, embed: Callable[[keras.Model], np.ndarray], labels: np.ndarray, encoder: keras.Model
    ) -> None:
        super().__init__()
        self.embed = embed
        self.labels = labels
        self.encoder = encoder

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None or len(np.unique(self.labels)) < 2 or len(self.labels) < 3:
            return
        figures = retrieval_metrics(self.embed(self.encoder), self.labels, ks=(1,))
        for name in ("precision_at_1", "map_at_r", "r_precision"):
            logs[f"val_{name}"] = figures[name]


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds per epoch in the history, so runs can be compared on cost."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._started


def make_optimizer(lr: float, total_steps: int, weight_decay: float) -> keras.optimizers.Optimizer:
    """AdamW with a short warm-up and cosine decay: forgiving of the learning rate chosen."""
    warmup = max(1, min(100, total_steps // 10))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 10,
        decay_steps=max(1, total_steps - warmup),
        alpha=0.05,
        warmup_target=lr,
        warmup_steps=warmup,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)


def fit(
    learner: MetricLearner,
    batches: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    weight_decay: float = 1e-4,
    validation: RetrievalValidation | None = None,
    patience: int = 0,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> tuple[dict[str, list[float]], int]:
    """Train; returns the per-epoch history and the number of epochs actually run.

    With `patience` > 0 and a validation set, training stops when validation
    MAP@R has not improved for that many epochs and the best epoch's weights
    are restored, so what is exported is the epoch that validated best.
    """
    learner.compile(optimizer=make_optimizer(lr, epochs * steps_per_epoch, weight_decay))
    callbacks: list[keras.callbacks.Callback] = [EpochTimer(), *extra_callbacks]
    if validation is not None:
        callbacks.append(validation)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=VALIDATION_METRIC,
                mode="max",
                patience=patience if patience > 0 else epochs,
                restore_best_weights=True,
                min_delta=1e-4,
            )
        )
    history = learner.fit(
        batches,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    curves = {
        name: [float(v) if math.isfinite(float(v)) else 0.0 for v in values]
        for name, values in history.history.items()
    }
    return curves, len(curves.get("loss", []))
