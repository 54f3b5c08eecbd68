"""One training run, from a `--data` value to an exported model directory.

Read top to bottom it is the whole method: split (seen classes into train /
validation / test, optional unseen classes), P x K batches with augmentation,
train with early stopping on validation MAP@R (one encoder, or several from
consecutive seeds joined into one for `--ensemble`), measure on held-out data beside
raw pixels and the untrained encoder, calibrate thresholds, export.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.augment import AugmentConfig, default_for, parse_augment
from training.class_transforms import ClassExpansion, parse_class_transforms
from training.datasets import DataSource, ImageSet, Splits, hide_labels, load_source, split
from training.models import EncoderSpec

if TYPE_CHECKING:
    import keras

    from training.calibration import Calibration
    from training.trainer import FitResult

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
    ensemble: int = 1  # encoders trained from seeds seed, seed+1, ...; exported side by side
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
    from training.distribute import make_strategy, output_directory
    from training.ensemble import ensemble_encoder, member_seeds, merged_history
    from training.evaluate import (
        UNTRAINED,
        Embedder,
        calibrate_match,
        compare,
        duplicate_check,
        evaluation_sets,
    )
    from training.member import fit_member
    from training.pipeline import reader_for

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
    reader = reader_for(train_images, image_size)
    embedder = Embedder(image_size)
    try:
        seeds = member_seeds(config.seed, config.ensemble)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    members = [
        fit_member(
            config, seed, strategy, splits, train_images, expansion, augment, reader, embedder
        )
        for seed in seeds
    ]
    encoder = ensemble_encoder([m.encoder for m in members])
    untrained = ensemble_encoder([m.untrained for m in members])
    augmenter = members[0].augmenter
    fitted = members[0].fitted

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
    if len(members) > 1:
        provenance["ensemble"] = [
            {"seed": seed, "epochs": m.fitted.epochs_run, "best_epoch": m.fitted.best_epoch}
            for seed, m in zip(seeds, members, strict=True)
        ]
    figures = _evaluation_json(evaluation.figures, duplicates, calibration, duplicate_calibration)
    model_json = _export(
        encoder,
        config,
        calibration,
        duplicate_calibration,
        provenance,
        figures,
        merged_history([m.fitted for m in members]),
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
            "ensemble": config.ensemble,
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
