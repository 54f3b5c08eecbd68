"""One encoder trained from one seed: the inner loop of a run (training/train.py).

A run trains one member, or several for `--ensemble` (training/ensemble.py);
each member gets its own initial weights, batches and augmentations from its
seed, and its own early stopping on validation MAP@R.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.augment import AugmentConfig
from training.class_transforms import ClassExpansion
from training.datasets import ImageSet, Splits
from training.train import ConfigError, TrainConfig

if TYPE_CHECKING:
    import keras

    from training.evaluate import Embedder
    from training.trainer import FitResult, RetrievalValidation


@dataclass
class Member:
    """A trained encoder, the same network untrained (the baseline), its curves and augmenter."""

    encoder: keras.Model
    untrained: keras.Model
    fitted: FitResult
    augmenter: keras.Model


def fit_member(
    config: TrainConfig,
    seed: int,
    strategy: Any,
    splits: Splits,
    train_images: ImageSet,
    expansion: ClassExpansion | None,
    augment: AugmentConfig,
    reader: Any,
    embedder: Embedder,
) -> Member:
    """One encoder trained from `seed`: its own initial weights, batches and augmentations."""
    import keras

    from training.augment import build_augmenter
    from training.batching import PKSampler
    from training.distribute import for_inference
    from training.models import build_encoder
    from training.pipeline import training_batches
    from training.trainer import MetricLearner, fit

    classes_per_batch, examples_per_class = config.batch_shape
    unreadable = reader.failed if reader is not None else None
    sampler = PKSampler(
        train_images.labels if expansion is None else expansion.labels(train_images.labels),
        classes_per_batch,
        examples_per_class,
        seed=seed,
        excluded=(
            unreadable
            if expansion is None or unreadable is None
            else expansion.excluded(unreadable)
        ),
        core_classes=expansion.base_classes if expansion is not None else 0,
    )
    augmenter = build_augmenter(augment, seed=seed)
    image_size = config.encoder.image_size
    batches = training_batches(
        train_images,
        sampler,
        image_size=image_size,
        augmenter=augmenter,
        reader=reader,
        expansion=expansion,
    )
    with strategy.scope():
        encoder = build_encoder(config.encoder, seed=seed)
        untrained = keras.models.clone_model(encoder)
        untrained.set_weights(encoder.get_weights())
        num_classes = int(train_images.labels.max()) + 1
        if expansion is not None:
            num_classes = expansion.num_classes
        loss_layer, features, callbacks = _loss(config, encoder, num_classes)
        learner = MetricLearner(encoder, loss_layer, features)
    encoder, untrained = for_inference(strategy, encoder), for_inference(strategy, untrained)
    # Neighbour grids follow the first member only: every member would draw over the same files.
    if config.log_neighbours and seed == config.seed:
        from training.neighbour_log import neighbour_logs

        callbacks = callbacks + neighbour_logs(
            encoder,
            splits,
            config.log_neighbours,
            Path(config.out),
            image_size=image_size,
            seed=config.seed,
        )
    validation = _validation(config, splits, embedder, encoder, augmenter)
    fitted = fit(
        learner,
        batches,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        validation=validation,
        patience=config.early_stopping_patience,
        extra_callbacks=callbacks,
        verbose=config.verbose,
    )
    return Member(encoder, untrained, fitted, augmenter)


def _validation(
    config: TrainConfig,
    splits: Splits,
    embedder: Embedder,
    encoder: keras.Model,
    augmenter: keras.Model,
) -> RetrievalValidation | None:
    """What early stopping watches: MAP@R on validation images of the seen classes.

    Without labels it is near-duplicate retrieval instead (find each validation
    image from an augmented copy), where MAP@R is P@1 because R = 1.
    """
    from training.evaluate import duplicate_figures
    from training.metrics import retrieval_metrics
    from training.trainer import RetrievalValidation

    images = splits.validation
    if len(images) < 3:
        return None
    if config.unlabeled:
        identity = np.arange(len(images))

        def measure() -> dict[str, float]:
            original = embedder.embed(encoder, images)
            edited = embedder.embed(encoder, images, augmenter=augmenter)
            figures = duplicate_figures(edited, original, identity)
            return {"map_at_r": figures["precision_at_1"], **figures}

        return RetrievalValidation(measure)
    if len(np.unique(images.labels)) < 2:
        return None

    def measure_classes() -> dict[str, float]:
        figures = retrieval_metrics(
            embedder.embed(encoder, images), images.labels, ks=(1,), with_nmi=False
        )
        return {name: figures[name] for name in ("precision_at_1", "map_at_r", "r_precision")}

    return RetrievalValidation(measure_classes)


def _loss(
    config: TrainConfig, encoder: keras.Model, num_classes: int
) -> tuple[keras.layers.Layer, keras.Model | None, list[keras.callbacks.Callback]]:
    """The loss layer, the network it sees, and the callbacks it needs."""
    if config.classification_baseline:
        import keras

        from training.classification import SoftmaxHead
        from training.models import PROJECTION_LAYER

        features = keras.Model(encoder.inputs, encoder.get_layer(PROJECTION_LAYER).output)
        return SoftmaxHead(num_classes), features, []
    from training.losses import build_loss, loss_callbacks

    try:
        loss_layer = build_loss(
            config.loss,
            num_classes=num_classes,
            embedding_dim=config.encoder.embedding_dim,
            margin=config.margin,
            temperature=config.temperature,
            mining=config.mining,
            xbm_size=config.xbm_size,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return loss_layer, None, loss_callbacks(loss_layer, config.curriculum_epochs)
