"""`python -m training train | evaluate | report | litert`: the command line, free of TensorFlow.

Parsing imports nothing heavy, so `--help` and argument errors answer at once;
TensorFlow is configured (threads, quiet logs) and imported only when a
command runs. Errors the user can fix print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.distribute import STRATEGIES
from training.models import BACKBONES, POOLINGS, EncoderSpec
from training.report import ReportOptions
from training.train import DEFAULT_LOSS, TrainConfig

# Mirrors training.losses.LOSS_NAMES / training.miners.MINING_NAMES (a test
# keeps them equal): importing those modules would import TensorFlow.
LOSS_CHOICES = (
    "contrastive",
    "triplet",
    "npairs",
    "multisimilarity",
    "supcon",
    "triplet_ce",
    "arcface",
)
MINING_CHOICES = ("easy", "semi-hard", "hard", "curriculum")
EXIT_USAGE = 2


def _image_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    try:
        size = (int(height), int(width or height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or HxW") from None
    if min(size) < 8:
        raise argparse.ArgumentTypeError("image size must be at least 8 pixels")
    return size


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    spec = EncoderSpec()
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train image encoders with metric learning and measure them against baselines.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train an encoder and export a model directory",
        description="Train an encoder, evaluate it beside raw pixels and an untrained encoder, "
        "calibrate its thresholds and export models/<name>/ (docs/model-directory.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = train.add_argument_group("data")
    data.add_argument(
        "--data",
        default=defaults.data,
        help="digits (built in), glyphs (installed fonts), cifar10 (downloads), "
        "or a folder of class sub-folders",
    )
    data.add_argument("--out", type=Path, default=defaults.out, help="model directory to write")
    data.add_argument(
        "--unlabeled",
        action="store_true",
        help="every image its own class; positives are two augmented views",
    )
    data.add_argument(
        "--holdout-classes",
        type=_non_negative,
        default=defaults.holdout_classes,
        metavar="N",
        help="hold out the last N classes (sorted) and evaluate on them",
    )
    data.add_argument(
        "--validation-classes",
        type=_non_negative,
        default=defaults.validation_classes,
        metavar="N",
        help="set the N classes before the held-out ones aside for early stopping, so it "
        "rewards generalising to new classes (replaces --validation-fraction)",
    )
    data.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        help="share of each seen class's images held out for the reported figures",
    )
    data.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="share of each seen class's images used for early stopping",
    )
    data.add_argument(
        "--image-size",
        type=_image_size,
        default=spec.image_size,
        metavar="N|HxW",
        help="encoder input size (the exported encoder resizes any input to it)",
    )
    data.add_argument(
        "--augment",
        default=defaults.augment,
        help="auto (shapes for digits/glyphs, photos otherwise), none, shapes, photos, "
        "or edits such as flip,crop=0.2,rotate=15,color=0.3,blur=1",
    )
    data.add_argument(
        "--class-transforms",
        default=defaults.class_transforms,
        help="train on rotated/mirrored copies of each class as extra classes, so few labelled "
        "classes still teach an embedding that separates new ones: none, rotations, mirrors, "
        "dihedral, or names from rot90,rot180,rot270,flip,vflip,transpose,transverse",
    )

    model = train.add_argument_group("encoder")
    model.add_argument("--backbone", choices=BACKBONES, default=spec.backbone)
    model.add_argument(
        "--width", type=_positive, default=spec.width, help="small_cnn: first block's filters"
    )
    model.add_argument("--depth", type=_positive, default=spec.depth, help="small_cnn: conv blocks")
    model.add_argument("--embedding-dim", type=_positive, default=spec.embedding_dim)
    model.add_argument(
        "--weights", default=spec.weights, help="none, imagenet, or a .weights.h5 path"
    )
    model.add_argument(
        "--freeze",
        action="store_true",
        help="train only the projection head on frozen backbone features",
    )
    model.add_argument(
        "--dropout", type=float, default=spec.dropout, help="dropout before the projection"
    )
    model.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=spec.pooling,
        help="small_cnn: how the last feature map becomes one vector (flatten keeps where "
        "things are, which transfers better to unseen classes of aligned images)",
    )

    loss = train.add_argument_group("loss")
    loss.add_argument("--loss", choices=LOSS_CHOICES, default=DEFAULT_LOSS)
    loss.add_argument(
        "--margin",
        type=float,
        default=None,
        help="contrastive/triplet margin, multi-similarity epsilon, ArcFace angle "
        "(default: the paper's)",
    )
    loss.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="npairs/supcon temperature; ArcFace scale is 1/temperature",
    )
    loss.add_argument(
        "--mining",
        choices=MINING_CHOICES,
        default=defaults.mining,
        help="triplet mining (curriculum: easy, then semi-hard)",
    )
    loss.add_argument(
        "--curriculum-epochs",
        type=_non_negative,
        default=defaults.curriculum_epochs,
        help="with --mining curriculum: epochs of easy triplets first",
    )
    loss.add_argument(
        "--xbm-size",
        type=_non_negative,
        default=defaults.xbm_size,
        help="cross-batch memory: recent embeddings kept as extra negatives",
    )
    loss.add_argument(
        "--classification-baseline",
        action="store_true",
        help="train with softmax cross-entropy instead; embedding = normalised penultimate layer",
    )

    fitting = train.add_argument_group("optimisation")
    fitting.add_argument("--epochs", type=_positive, default=defaults.epochs, help="at most")
    fitting.add_argument("--steps-per-epoch", type=_positive, default=defaults.steps_per_epoch)
    fitting.add_argument(
        "--classes-per-batch",
        type=_positive,
        default=None,
        metavar="P",
        help="classes in each batch (default: 80 images per batch, so 10; unlabeled: 40 images)",
    )
    fitting.add_argument(
        "--examples-per-class",
        type=_positive,
        default=None,
        metavar="K",
        help="images of each class in each batch (default 8; unlabeled: 2 views of each image)",
    )
    fitting.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (AdamW); default 0.01, or 0.001 to fine-tune "
        "pretrained application weights",
    )
    fitting.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    fitting.add_argument(
        "--early-stopping-patience",
        type=_non_negative,
        default=defaults.early_stopping_patience,
        help="epochs without better validation MAP@R before stopping (0: never)",
    )
    fitting.add_argument("--seed", type=int, default=defaults.seed)
    fitting.add_argument(
        "--ensemble",
        type=_positive,
        default=defaults.ensemble,
        metavar="N",
        help="train N encoders from seeds seed..seed+N-1 and export them as one (N x "
        "--embedding-dim dimensions): steadier on unseen classes, N times the training and "
        "embedding cost",
    )
    fitting.add_argument(
        "--log-neighbours",
        type=_non_negative,
        default=defaults.log_neighbours,
        metavar="N",
        help="after each epoch draw N held-out queries and their nearest neighbours "
        "into OUT/neighbours/epoch-NNN.png (0: off)",
    )

    devices = train.add_argument_group("devices")
    devices.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=defaults.strategy,
        help="tf.distribute: mirrored over this machine's GPUs, multiworker over the "
        "machines in TF_CONFIG; the loss still sees the whole P x K batch",
    )
    devices.add_argument(
        "--replicas",
        type=_non_negative,
        default=defaults.replicas,
        metavar="N",
        help="mirrored: use N GPUs (0: all); without GPUs, N logical CPU devices "
        "(to try it out: no faster)",
    )

    _runtime_options(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a model directory on data, beside raw pixels and an untrained encoder",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("--model", type=Path, default=Path("models/default"))
    evaluate.add_argument("--data", default="digits", help="digits, glyphs, cifar10 or a folder")
    evaluate.add_argument(
        "--holdout-classes",
        type=_non_negative,
        default=None,
        help="default: the model's own split when --data is what it trained on",
    )
    evaluate.add_argument("--seed", type=int, default=None, help="default: the model's split seed")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _runtime_options(evaluate)

    litert = commands.add_parser(
        "litert",
        help="add the LiteRT file to a model directory exported without one",
        description="Convert encoder.keras for LiteRT and write encoder.tflite, its probe and "
        "model.json's litert entry, so the service starts without converting it. The "
        "model_id does not change.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    litert.add_argument(
        "--model", type=Path, default=Path("models/default"), help="model directory"
    )
    _runtime_options(litert)

    shown = ReportOptions()
    report = commands.add_parser(
        "report",
        help="draw a model's embeddings, neighbours, thresholds and confusion into PNGs + HTML",
        description="Write PNG figures, report.json and a self-contained index.html about a "
        "model on held-out data (the split evaluate uses).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report.add_argument(
        "--model", type=Path, default=Path("models/default"), help="model directory"
    )
    report.add_argument("--data", default="digits", help="digits, glyphs, cifar10 or a folder")
    report.add_argument(
        "--out", type=Path, required=True, help="report folder to write, e.g. reports/NAME/"
    )
    report.add_argument("--k", type=_positive, default=shown.k, help="neighbours per query")
    report.add_argument(
        "--queries", type=_positive, default=shown.queries, help="rows of each neighbour grid"
    )
    report.add_argument(
        "--max-images", type=_positive, default=shown.max_images, help="held-out images drawn"
    )
    report.add_argument(
        "--holdout-classes",
        type=_non_negative,
        default=None,
        help="default: the model's own split when --data is what it trained on",
    )
    report.add_argument("--seed", type=int, default=None, help="default: the model's split seed")
    _runtime_options(report)
    return parser


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument(
        "--threads",
        type=_non_negative,
        default=0,
        help="TensorFlow threads (0: the cores this process may use)",
    )
    runtime.add_argument("--verbose", action="store_true", help="keep TensorFlow's own logging")
    runtime.add_argument("--quiet", action="store_true", help="no progress bars")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=args.data,
        out=args.out,
        unlabeled=args.unlabeled,
        holdout_classes=args.holdout_classes,
        validation_classes=args.validation_classes,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        encoder=EncoderSpec(
            backbone=args.backbone,
            image_size=args.image_size,
            embedding_dim=args.embedding_dim,
            width=args.width,
            depth=args.depth,
            weights=args.weights,
            freeze=args.freeze,
            dropout=args.dropout,
            pooling=args.pooling,
        ),
        loss=args.loss,
        margin=args.margin,
        temperature=args.temperature,
        mining=args.mining,
        curriculum_epochs=args.curriculum_epochs,
        xbm_size=args.xbm_size,
        classification_baseline=args.classification_baseline,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        classes_per_batch=args.classes_per_batch,
        examples_per_class=args.examples_per_class,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=args.augment,
        class_transforms=args.class_transforms,
        early_stopping_patience=args.early_stopping_patience,
        log_neighbours=args.log_neighbours,
        seed=args.seed,
        ensemble=args.ensemble,
        verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2),
        progress=not args.quiet,
        strategy=args.strategy,
        replicas=args.replicas,
    )


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean "fix the command or the data", not "a bug"."""
    from training.datasets import DataError
    from training.export import ContractError
    from training.models import ModelError
    from training.train import ConfigError

    return (DataError, ModelError, ContractError, ConfigError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from training.runtime import configure

    configure(threads=args.threads, verbose=args.verbose, seed=getattr(args, "seed", None))
    try:
        if args.command == "train":
            return _train(train_config(args))
        if args.command == "litert":
            from training.export import add_litert

            litert = add_litert(args.model)["litert"]
            print(
                f"wrote {args.model / litert['file']} (LiteRT within "
                f"{litert['max_difference']:.1e} of Keras on its probe)"
            )
            return 0
        if args.command == "report":
            from training.report import run_report

            options = ReportOptions(
                k=args.k,
                queries=args.queries,
                max_images=args.max_images,
                holdout_classes=args.holdout_classes,
                seed=args.seed,
                progress=not args.quiet,
            )
            return run_report(args.model, args.data, args.out, options)
        from training.evaluate import run_evaluate

        return run_evaluate(
            args.model,
            args.data,
            holdout_classes=args.holdout_classes,
            seed=args.seed,
            as_json=args.json,
            progress=not args.quiet,
        )
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _train(config: TrainConfig) -> int:
    from training.evaluate import format_table
    from training.train import train

    result = train(config)
    meta = result.model_json
    evaluation = meta["evaluation"]
    print()
    print(format_table(result.figures) if result.figures else "no labelled held-out set to score")
    if result.duplicates:
        print()
        print("near-duplicate retrieval (augmented copy -> its original):")
        for method, row in result.duplicates.items():
            print(
                f"  {method:<18} P@1 {row['precision_at_1']:.4f}  recall@5 {row['recall_at_5']:.4f}"
            )
    calibration = evaluation.get("calibration")
    print()
    if calibration:
        print(
            f"match_threshold {meta['match_threshold']:.4f} "
            f"(precision {calibration['precision']:.3f}, recall {calibration['recall']:.3f}, "
            f"F1 {calibration['f1']:.3f} on {calibration['pairs']} held-out pairs)"
        )
    if "duplicate_threshold" in meta:
        print(f"duplicate_threshold {meta['duplicate_threshold']:.4f}")
    if result.skipped:
        shown = ", ".join(result.skipped[:5]) + (" ..." if len(result.skipped) > 5 else "")
        print(f"skipped {len(result.skipped)} unreadable files: {shown}")
    members = meta["provenance"].get("ensemble", [])
    kept = (
        "members' weights of epochs "
        + ", ".join(f"{m['best_epoch']} of {m['epochs']}" for m in members)
        if members
        else f"weights of epoch {result.best_epoch} of {result.epochs_run}"
    )
    print(
        f"exported {config.out} (model_id {meta['model_id'][:12]}; {kept}; {result.seconds:.0f} s)"
    )
    if "litert" not in meta:
        print("  without encoder.tflite: the service converts the model at its first start")
    return 0
