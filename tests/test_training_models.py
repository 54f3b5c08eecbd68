"""Encoders, augmentation and the command line, below the level of a whole run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.cli import LOSS_CHOICES, MINING_CHOICES, build_parser
from training.models import BACKBONES, EncoderSpec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keras():
    from training.runtime import configure

    configure(seed=0)
    import keras

    return keras


def one_step(keras, encoder, *, steps: int = 1) -> None:
    """Train `encoder` for `steps` SupCon steps on random images of 4 classes.

    Eagerly: tracing a MobileNet train step takes far longer than running one.
    """
    from training.losses import build_loss
    from training.trainer import MetricLearner

    learner = MetricLearner(encoder, build_loss("supcon", num_classes=4, embedding_dim=8))
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (steps * 8, *encoder.get_layer("resize").output.shape[1:])).astype(
        "float32"
    )
    labels = np.tile(np.repeat(np.arange(4), 2), steps)
    learner.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b != "small_cnn"])
def test_application_backbones_build_to_the_contract(keras, backbone: str) -> None:
    from training.export import check_encoder
    from training.models import build_encoder

    spec = EncoderSpec(backbone=backbone, image_size=(32, 32), embedding_dim=8)
    encoder = build_encoder(spec, seed=0)
    check_encoder(encoder, (32, 32), 8)
    assert encoder.layers[-1].__class__.__name__ == "UnitNormalization"
    assert encoder.get_layer("resize").__class__.__name__ == "Resizing"


@pytest.mark.parametrize(("pooling", "features"), [("avg", 16), ("max", 16), ("flatten", 256)])
def test_small_cnn_pooling_sets_what_the_projection_sees(
    keras, pooling: str, features: int
) -> None:
    """Flatten keeps the 4x4 map of a 16x16 input after two pools: 4 * 4 * 16 features."""
    from training.export import check_encoder
    from training.models import build_encoder

    spec = EncoderSpec(image_size=(16, 16), embedding_dim=8, width=8, depth=2, pooling=pooling)
    encoder = build_encoder(spec, seed=0)
    check_encoder(encoder, (16, 16), 8)
    assert encoder.get_layer("backbone").output.shape[-1] == features


def test_unknown_pooling_is_a_model_error() -> None:
    from training.models import ModelError, build_encoder

    with pytest.raises(ModelError, match="pooling"):
        build_encoder(EncoderSpec(image_size=(16, 16), pooling="median"))


@pytest.mark.slow
def test_mobilenet_trains_a_step_and_exports_a_loadable_model(keras, tmp_path: Path) -> None:
    from training.export import export_model
    from training.models import build_encoder

    encoder = build_encoder(
        EncoderSpec(backbone="mobilenetv3small", image_size=(32, 32), embedding_dim=8), seed=0
    )
    one_step(keras, encoder)
    meta = export_model(
        encoder,
        tmp_path / "m",
        image_size=(32, 32),
        match_threshold=0.5,
        provenance={"dataset": "random", "loss": "supcon", "epochs": 1},
        evaluation={},
    )
    assert (
        meta["model_id"]
        == hashlib.sha256((tmp_path / "m" / "encoder.keras").read_bytes()).hexdigest()
    )
    assert json.loads((tmp_path / "m" / "model.json").read_text()) == meta
    assert not list((tmp_path / "m").glob(".export-*")), "staging directory cleaned up"
    loaded = keras.saving.load_model(tmp_path / "m" / "encoder.keras")
    batch = np.random.default_rng(1).uniform(0, 255, (2, 50, 40, 3)).astype("float32")
    np.testing.assert_allclose(loaded(batch), encoder(batch), atol=1e-5)


def test_resnet_preprocessing_matches_keras_caffe_mode(keras) -> None:
    from training.models import caffe_preprocessing

    images = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    ours = np.asarray(caffe_preprocessing()(images))
    theirs = keras.applications.resnet50.preprocess_input(images.copy())
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_freeze_trains_only_the_projection(keras) -> None:
    from training.models import PROJECTION_LAYER, build_encoder

    encoder = build_encoder(
        EncoderSpec(image_size=(16, 16), width=4, depth=1, embedding_dim=8, freeze=True), seed=0
    )
    backbone = encoder.get_layer("backbone")
    before = [w.copy() for w in backbone.get_weights()]
    projection = encoder.get_layer(PROJECTION_LAYER).get_weights()[0].copy()
    one_step(keras, encoder, steps=2)
    for old, new in zip(before, backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # kernels and BatchNorm statistics alike
    assert not np.allclose(projection, encoder.get_layer(PROJECTION_LAYER).get_weights()[0])


def test_unknown_weights_file_is_a_model_error(tmp_path: Path) -> None:
    from training.models import ModelError, build_encoder

    with pytest.raises(ModelError, match="no such file"):
        build_encoder(EncoderSpec(weights=str(tmp_path / "missing.weights.h5")))


@pytest.mark.parametrize("spec", ["photos", "flip,crop=0.2,rotate=15,color=0.3,blur=1"])
def test_augmentation_changes_images_but_not_shape_or_dtype(keras, spec: str) -> None:
    from training.augment import build_augmenter, parse_augment

    y, x = np.mgrid[0:24, 0:24]
    image = np.stack([x * 10, y * 10, (x + y) * 5], axis=-1).astype("float32")
    batch = np.stack([image] * 4)
    out = np.asarray(build_augmenter(parse_augment(spec), seed=0)(batch, training=True))
    assert out.shape == batch.shape
    assert out.dtype == np.float32
    assert not np.allclose(out, batch)
    assert not np.allclose(out[0], out[1]), "each image gets its own random edit"
    assert out.min() >= -1
    assert out.max() <= 256


def test_augment_spec_parsing() -> None:
    from training.augment import NONE, parse_augment

    assert parse_augment("none") == NONE
    config = parse_augment("flip, crop=0.3, blur")
    assert (config.flip, config.crop, config.blur, config.rotate) == (True, 0.3, 1.0, 0.0)
    assert parse_augment(config.describe()) == config
    for bad in ("sparkle", "crop=big", "crop=1.5", "rotate=-3"):
        with pytest.raises(ValueError, match="augmentation"):
            parse_augment(bad)


def test_cli_choices_mirror_the_losses_module() -> None:
    from training.losses import LOSS_NAMES, MINING_NAMES

    assert LOSS_CHOICES == LOSS_NAMES
    assert set(MINING_CHOICES) == set(MINING_NAMES)


def test_every_option_is_in_train_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    options = [
        "--data",
        "--out",
        "--unlabeled",
        "--holdout-classes",
        "--image-size",
        "--embedding-dim",
        "--loss",
        "--margin",
        "--temperature",
        "--mining",
        "--curriculum-epochs",
        "--xbm-size",
        "--epochs",
        "--steps-per-epoch",
        "--classes-per-batch",
        "--examples-per-class",
        "--lr",
        "--seed",
        "--backbone",
        "--width",
        "--depth",
        "--weights",
        "--freeze",
        "--augment",
        "--early-stopping-patience",
        "--classification-baseline",
        "--threads",
        "--pooling",
        "--class-transforms",
    ]
    missing = [option for option in options if option not in text]
    assert not missing


def test_help_answers_without_importing_tensorflow() -> None:
    script = (
        "import sys, contextlib, io\n"
        "from training.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['train', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_training_never_imports_the_service() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "training").glob("*.py")
        if any(
            line.lstrip().startswith(("import app", "from app"))
            for line in path.read_text().splitlines()
        )
    ]
    assert not offenders


def test_weights_path_loads_a_saved_backbone(keras, tmp_path: Path) -> None:
    from training.models import build_encoder

    spec = EncoderSpec(image_size=(16, 16), width=4, depth=1, embedding_dim=8)
    trained = build_encoder(spec, seed=1).get_layer("backbone")
    path = tmp_path / "backbone.weights.h5"
    trained.save_weights(path)
    loaded = build_encoder(EncoderSpec(**{**spec.__dict__, "weights": str(path)}), seed=2)
    for old, new in zip(
        trained.get_weights(), loaded.get_layer("backbone").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(old, new)


def test_every_train_option_reaches_the_config() -> None:
    from training.cli import train_config

    args = build_parser().parse_args(
        [
            *("train", "--data", "glyphs", "--out", "models/x", "--unlabeled"),
            *("--holdout-classes", "3", "--image-size", "48x40", "--augment", "flip,blur=0.5"),
            *(
                "--validation-classes",
                "2",
                "--test-fraction",
                "0.3",
                "--validation-fraction",
                "0.2",
            ),
            *("--backbone", "resnet50", "--width", "5", "--depth", "2", "--embedding-dim", "12"),
            *("--weights", "imagenet", "--freeze", "--dropout", "0.1", "--loss", "triplet"),
            *("--pooling", "max", "--class-transforms", "mirrors"),
            *("--margin", "0.3", "--temperature", "0.5", "--mining", "curriculum"),
            *("--curriculum-epochs", "2", "--xbm-size", "256", "--classification-baseline"),
            *("--epochs", "3", "--steps-per-epoch", "7", "--classes-per-batch", "6"),
            *("--examples-per-class", "3", "--lr", "0.02", "--weight-decay", "0.001"),
            *("--early-stopping-patience", "1", "--seed", "9", "--threads", "1", "--quiet"),
        ]
    )
    config = train_config(args)
    spec = config.encoder
    assert (config.data, str(config.out), config.unlabeled, config.holdout_classes) == (
        "glyphs",
        "models/x",
        True,
        3,
    )
    assert (spec.image_size, spec.backbone, spec.width, spec.depth, spec.embedding_dim) == (
        (48, 40),
        "resnet50",
        5,
        2,
        12,
    )
    assert (spec.weights, spec.freeze, spec.dropout) == ("imagenet", True, 0.1)
    assert (spec.pooling, config.class_transforms) == ("max", "mirrors")
    assert (config.loss, config.margin, config.temperature, config.mining) == (
        "triplet",
        0.3,
        0.5,
        "curriculum",
    )
    assert (config.curriculum_epochs, config.xbm_size, config.classification_baseline) == (
        2,
        256,
        True,
    )
    assert (config.epochs, config.steps_per_epoch, config.classes_per_batch) == (3, 7, 6)
    assert (config.examples_per_class, config.lr, config.weight_decay) == (3, 0.02, 0.001)
    assert (config.early_stopping_patience, config.seed, config.augment) == (1, 9, "flip,blur=0.5")
    assert (config.validation_classes, config.test_fraction, config.validation_fraction) == (
        2,
        0.3,
        0.2,
    )
    assert args.threads == 1
    assert config.verbose == 0


def test_batches_hold_80_images_by_default() -> None:
    from training.train import TrainConfig

    assert TrainConfig().batch_shape == (10, 8)
    assert TrainConfig(unlabeled=True).batch_shape == (40, 2)
    assert TrainConfig(examples_per_class=4).batch_shape == (20, 4)
    assert TrainConfig(classes_per_batch=3, examples_per_class=5).batch_shape == (3, 5)
