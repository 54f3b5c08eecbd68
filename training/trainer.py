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
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from training.distribute import (
    distribute_batches,
    fit_log,
    gather_replicas,
    replica_share,
    synchronised_batch_norm,
)

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
        if not loss_layer.built:
            # Under tf.distribute, variables cannot be made inside a train step.
            loss_layer.build((None,), self.features.output_shape)

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.encoder(inputs, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    @property
    def trained_variables(self) -> list[Any]:
        return self.features.trainable_variables + self.loss_layer.trainable_variables

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Under a strategy Keras builds the model from a sample batch that it
        # first reduces across replicas, which MultiWorkerMirroredStrategy
        # cannot do for an (images, labels) pair (keras-team/keras#20585).
        # Every layer here is built when made; only the optimizer is left.
        if self._distribute_strategy is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trained_variables)

    def train_step(self, data: Any) -> dict[str, Any]:
        images, labels = data
        with tf.GradientTape() as tape:
            embeddings = self.features(images, training=True)
            # Several replicas: the loss sees the whole global batch (training.distribute).
            labels, embeddings = gather_replicas(labels, embeddings)
            loss = self.loss_layer(labels, embeddings)
            regularisation = self.features.losses
            if regularisation:
                loss = loss + tf.add_n(regularisation)
            share = replica_share(loss)
        variables = self.trained_variables
        gradients = tape.gradient(share, variables)
        self.optimizer.apply(gradients, variables)
        self.loss_tracker.update_state(loss)
        return {"loss": fit_log(self.loss_tracker.result())}


class RetrievalValidation(keras.callbacks.Callback):
    """Adds `val_<figure>` figures from `measure()` to each epoch's logs.

    Listed before EarlyStopping, which reads the same logs dict. `measure`
    embeds a small held-out set with the encoder as it is now; validation
    sets are a tenth of the data, so this costs little next to the epoch.
    """

    def __init__(self, measure: Callable[[], dict[str, float]]) -> None:
        super().__init__()
        self.measure = measure

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        for name, value in self.measure().items():
            logs[f"val_{name}"] = value


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds per epoch for the history, so runs can be compared on cost.

    Kept out of the epoch logs, which the progress bar prints beside its own timing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


@dataclass(frozen=True)
class FitResult:
    """Per-epoch curves, epochs run, and the 1-based epoch whose weights were kept."""

    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int


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
) -> FitResult:
    """Train, stopping early when validation MAP@R stalls.

    With a validation set the best epoch's weights are restored at the end
    (patience 0 means never stop early but still keep the best epoch), so what
    is exported is the epoch that validated best. `batches` are global
    batches; a learner built under a `tf.distribute` strategy's scope trains
    on all its replicas, each embedding a share (see training.distribute).
    """
    with learner.distribute_strategy.scope():
        learner.compile(optimizer=make_optimizer(lr, epochs * steps_per_epoch, weight_decay))
    timer = EpochTimer()
    callbacks: list[keras.callbacks.Callback] = [timer, *extra_callbacks]
    if validation is not None:
        stopping = keras.callbacks.EarlyStopping(
            monitor=VALIDATION_METRIC,
            mode="max",
            patience=patience if patience > 0 else epochs,
            restore_best_weights=True,
            min_delta=1e-4,
        )
        callbacks += [validation, stopping]
    with synchronised_batch_norm(learner):
        history = learner.fit(
            distribute_batches(learner.distribute_strategy, batches),
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
    curves["seconds"] = timer.seconds
    epochs_run = len(timer.seconds)
    best = stopping.best_epoch + 1 if validation is not None else epochs_run
    return FitResult(curves, epochs_run, best)
