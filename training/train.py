"""One training run, from a `--data` value to an exported model directory.

Read top to bottom it is the whole method: split (seen classes into train /
validation / test, optional unseen classes), P x K batches with augmentation,
train with early stopping on validation MAP@R, measure on held-out data beside
raw pixels and the untrained encoder, calibrate thresholds, export.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.augment import AugmentConfig, default_for, parse_augment
from training.class_transforms import ClassExpansion, parse_class_transforms
from training.datasets import DataSource, ImageSet, Splits, hide_labels, load_source, split
from training.models import EncoderSpec

if TYPE_CHECKING:
    import keras

    from training.calibration import Calibration
    from training.evaluate import Embedder
    from training.trainer import FitResult, RetrievalValidation

DEFAULT_LOSS = "multisimilarity"


class ConfigError(Exception):
    """Options that contradict each other or the data."""


@dataclass(frozen=True)
class TrainConfig:
    """Every choice a run makes; recorded whole in model.json's provenance."""

    data: str = "digits"
    out: Path = Path("models/default")
    unlabeled: bool = False
    holdout_classes: int = 0
    validation_classes: int = 0
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    loss: str = DEFAULT_LOSS
    margin: float | None = None
    temperature: float | None = None
    mining: str = "semi-hard"
    curriculum_epochs: int = 0
    xbm_size: int = 0
    classification_baseline: bool = False
    epochs: int = 8
    steps_per_epoch: int = 50
    classes_per_batch: int | None = None  # see batch_shape
    examples_per_class: int | None = None
    lr: float | None = None  # see learning_rate
    weight_decay: float = 1e-4
    augment: str = "auto"
    class_transforms: str = "none"
    early_stopping_patience: int = 4
    log_neighbours: int = 0  # queries in a neighbour grid drawn after each epoch
    seed: int = 0
    verbose: int = 1
    progress: bool = True
    strategy: str = "default"  # default | mirrored | multiworker, see training.distribute
    replicas: int = 0  # mirrored: GPUs to use (0: all), or CPU devices without GPUs

    def augment_config(self, dataset: str) -> AugmentConfig:
        return default_for(dataset) if self.augment == "auto" else parse_augment(self.augment)

    @property
    def learning_rate(self) -> float:
        """`lr`, else 0.01, or 0.001 when fine-tuning pretrained weights.

        Steps large enough to train a network from scratch in a few hundred
        steps would wreck pretrained features; a frozen backbone is safe.
        """
        if self.lr is not None:
            return self.lr
        fine_tuning = self.encoder.weights.lower() != "none" and not self.encoder.freeze
        return 1e-3 if fine_tuning else 1e-2

    @property
    def batch_shape(self) -> tuple[int, int]:
        """(P, K): 10 classes x 8 images, or unlabeled 40 images x 2 views.

        Either way a batch holds 80 images; without labels, more distinct
        images per batch means more negatives, which is what that mode learns from.
        """
        k = self.examples_per_class or (2 if self.unlabeled else 8)
        p = self.classes_per_batch or max(2, 80 // k)
        return p, k

    @property
    def loss_name(self) -> str:
        return "softmax_classification" if self.classification_baseline else self.loss


@dataclass
class TrainResult:
    model_json: dict[str, Any]
    figures: dict[str, dict[str, dict[str, float]]]
    duplicates: dict[str, dict[str, float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    skipped: list[str]


def train(config: TrainConfig) -> TrainResult:
    """Train, evaluate and export; raises DataError for data that cannot be used."""
    started = time.perf_counter()
    import keras

    from training.augment import build_augmenter
    from training.batching import PKSampler
    from training.distribute import for_inference, make_strategy, output_directory
    from training.evaluate import (
        UNTRAINED,
        Embedder,
        calibrate_match,
        compare,
        duplicate_check,
        evaluation_sets,
    )
    from training.models import build_encoder
    from training.pipeline import reader_for, training_batches
    from training.trainer import MetricLearner, fit

    try:  # before anything runs a TensorFlow op, which fixes the devices
        p, k = config.batch_shape
        strategy = make_strategy(config.strategy, config.replicas, batch_size=p * k)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    out = output_directory(strategy, config.out)
    config = replace(config, out=out, replicas=strategy.num_replicas_in_sync)
    image_size = config.encoder.image_size
    source = load_source(
        config.data,
        image_size=image_size,
        unlabeled=config.unlabeled,
        seed=config.seed,
        progress=config.progress,
    )
    splits = _split(source, config)
    try:
        augment = config.augment_config(source.name)
    except ValueError as error:
        raise ConfigError(f"--augment: {error}") from error
    if config.unlabeled and not augment.enabled:
        raise ConfigError("--unlabeled makes positives by augmentation; --augment none leaves none")
    train_images = hide_labels(splits.train) if config.unlabeled else splits.train
    expansion = _class_expansion(config, train_images)
    classes_per_batch, examples_per_class = config.batch_shape
    reader = reader_for(train_images, image_size)
    unreadable = reader.failed if reader is not None else None
    sampler = PKSampler(
        train_images.labels if expansion is None else expansion.labels(train_images.labels),
        classes_per_batch,
        examples_per_class,
        seed=config.seed,
        excluded=(
            unreadable
            if expansion is None or unreadable is None
            else expansion.excluded(unreadable)
        ),
        core_classes=expansion.base_classes if expansion is not None else 0,
    )
    augmenter = build_augmenter(augment, seed=config.seed)
    batches = training_batches(
        train_images,
        sampler,
        image_size=image_size,
        augmenter=augmenter,
        reader=reader,
        expansion=expansion,
    )

    with strategy.scope():
        encoder = build_encoder(config.encoder, seed=config.seed)
        untrained = keras.models.clone_model(encoder)
        untrained.set_weights(encoder.get_weights())
        num_classes = int(train_images.labels.max()) + 1
        if expansion is not None:
            num_classes = expansion.num_classes
        loss_layer, features, callbacks = _loss(config, encoder, num_classes)
        learner = MetricLearner(encoder, loss_layer, features)
    encoder, untrained = for_inference(strategy, encoder), for_inference(strategy, untrained)
    if config.log_neighbours:
        from training.neighbour_log import neighbour_logs

        callbacks = callbacks + neighbour_logs(
            encoder,
            splits,
            config.log_neighbours,
            Path(config.out),
            image_size=image_size,
            seed=config.seed,
        )

    embedder = Embedder(image_size)
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

    encoders = {"encoder": encoder, UNTRAINED: untrained}
    labelled = len(source.class_names) >= 2
    evaluation = compare(
        encoders,
        evaluation_sets(splits) if labelled else {},
        embedder,
        probe_train=splits.train,
        seed=config.seed,
    )
    duplicates, duplicate_calibration = duplicate_check(
        encoders, splits.test, embedder, augmenter, seed=config.seed
    )
    calibration = calibrate_match(encoder, splits, embedder, seed=config.seed)
    failed = reader.failed_paths if reader is not None else ()
    skipped = sorted({*map(str, source.skipped), *map(str, failed), *embedder.unreadable})
    provenance = _provenance(config, source, splits, augment, fitted, skipped)
    figures = _evaluation_json(evaluation.figures, duplicates, calibration, duplicate_calibration)
    model_json = _export(
        encoder, config, calibration, duplicate_calibration, provenance, figures, fitted.history
    )
    return TrainResult(
        model_json,
        evaluation.figures,
        duplicates,
        fitted.epochs_run,
        fitted.best_epoch,
        time.perf_counter() - started,
        skipped,
    )


def _class_expansion(config: TrainConfig, train_images: ImageSet) -> ClassExpansion | None:
    """The virtual extra classes `--class-transforms` asks for, or None."""
    try:
        transforms = parse_class_transforms(config.class_transforms)
        ClassExpansion.check_image_size(transforms, config.encoder.image_size)
    except ValueError as error:
        raise ConfigError(f"--class-transforms: {error}") from error
    if not transforms:
        return None
    return ClassExpansion(
        transforms, base_size=len(train_images), base_classes=int(train_images.labels.max()) + 1
    )


def _split(source: DataSource, config: TrainConfig) -> Splits:
    return split(
        source,
        holdout_classes=config.holdout_classes,
        validation_classes=config.validation_classes,
        test_fraction=config.test_fraction,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
        min_classes=1 if config.unlabeled else 2,
    )


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


def _provenance(
    config: TrainConfig,
    source: DataSource,
    splits: Splits,
    augment: AugmentConfig,
    fitted: FitResult,
    skipped: list[str],
) -> dict[str, Any]:
    spec = asdict(config.encoder)
    spec["image_size"] = list(config.encoder.image_size)
    return {
        "dataset": source.name,
        "dataset_description": source.description,
        "loss": config.loss_name,
        "epochs": fitted.epochs_run,
        "best_epoch": fitted.best_epoch,
        "unlabeled": config.unlabeled,
        "encoder": spec,
        "training": {
            "epochs_max": config.epochs,
            "steps_per_epoch": config.steps_per_epoch,
            "classes_per_batch": config.batch_shape[0],
            "examples_per_class": config.batch_shape[1],
            "lr": config.learning_rate,
            "weight_decay": config.weight_decay,
            "margin": config.margin,
            "temperature": config.temperature,
            "mining": config.mining,
            "curriculum_epochs": config.curriculum_epochs,
            "xbm_size": config.xbm_size,
            "augment": augment.describe(),
            "class_transforms": list(parse_class_transforms(config.class_transforms)),
            "early_stopping_patience": config.early_stopping_patience,
            "seed": config.seed,
            "strategy": config.strategy,
            "replicas": config.replicas,
        },
        "split": {
            "seed": config.seed,
            "holdout_classes": config.holdout_classes,
            "validation_classes": list(splits.validation_classes),
            "test_fraction": config.test_fraction,
            "validation_fraction": config.validation_fraction,
            "train_images": len(splits.train),
            "validation_images": len(splits.validation),
            "test_images": len(splits.test),
            "unseen_images": len(splits.unseen) if splits.unseen is not None else 0,
            "unseen_classes": list(splits.unseen_classes),
        },
        "skipped_files": len(skipped),
    }


def _calibration_json(calibration: Calibration | None) -> dict[str, float] | None:
    if calibration is None:
        return None
    return {
        "threshold": calibration.threshold,
        "precision": calibration.precision,
        "recall": calibration.recall,
        "f1": calibration.f1,
        "pairs": calibration.pairs,
    }


def _evaluation_json(
    figures: dict[str, dict[str, dict[str, float]]],
    duplicates: dict[str, dict[str, float]],
    calibration: Calibration | None,
    duplicate_calibration: Calibration | None,
) -> dict[str, Any]:
    """Headline figures (held-out images, trained encoder) first, then everything measured."""
    headline = figures.get("held_out_images", {}).get("encoder", {})
    result: dict[str, Any] = {
        key: headline[key]
        for key in ("precision_at_1", "r_precision", "map_at_r")
        if key in headline
    }
    unseen = figures.get("held_out_classes", {}).get("encoder", {})
    if unseen:
        result["unseen_classes_map_at_r"] = unseen["map_at_r"]
    result["sets"] = figures
    if duplicates:
        result["near_duplicates"] = duplicates
    result["calibration"] = _calibration_json(calibration)
    if duplicate_calibration is not None:
        result["duplicate_calibration"] = _calibration_json(duplicate_calibration)
    return result


def _export(
    encoder: keras.Model,
    config: TrainConfig,
    calibration: Calibration | None,
    duplicate_calibration: Calibration | None,
    provenance: dict[str, Any],
    evaluation: dict[str, Any],
    history: dict[str, list[float]],
) -> dict[str, Any]:
    from training.export import export_model

    # With no labelled pairs to calibrate on (a flat unlabeled folder), the
    # duplicate threshold is the only honest "match".
    threshold = (
        calibration.threshold
        if calibration is not None
        else (duplicate_calibration.threshold if duplicate_calibration is not None else 0.5)
    )
    return export_model(
        encoder,
        Path(config.out),
        image_size=config.encoder.image_size,
        match_threshold=threshold,
        duplicate_threshold=duplicate_calibration.threshold if duplicate_calibration else None,
        provenance=provenance,
        evaluation=evaluation,
        history=history,
    )
