"""Retrieval figures for an encoder, always beside the baselines that give them meaning.

A P@1 of 0.97 sounds good until raw pixels score 0.98 on the same images; so
every set is measured with the trained encoder, the same architecture at its
initial weights ("untrained"), and mean-centred raw pixels. The `evaluate`
command repeats what `train` measured at export, for any model and data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.datasets import DataError, ImageSet, Splits, load_source, split
from training.image_folder import FileReader
from training.metrics import (
    linear_probe_accuracy,
    nearest_neighbours,
    raw_pixel_embeddings,
    retrieval_metrics,
)

if TYPE_CHECKING:
    import keras

    from training.calibration import Calibration

RAW_PIXELS = "raw_pixels"
UNTRAINED = "untrained_encoder"
TRAINED = "encoder"
RAW_PIXEL_MAX_SIDE = 32
"""Raw pixels are compared at the encoder's size but no larger than this: beyond
it they retrieve no better, and memory and k-means (for NMI) grow with every pixel."""
DUPLICATE_SAMPLE = 2_000
"""Near-duplicate checks use at most this many images: their pixels are held in memory."""
PROBE_MAX_TRAIN = 5_000
"""Training embeddings for the linear probe are a sample of at most this many."""
TABLE_FIGURES = ("precision_at_1", "r_precision", "map_at_r", "recall_at_5", "nmi")


@dataclass
class Evaluation:
    """figures[set][method][figure], plus what went wrong while reading files."""

    figures: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"sets": self.figures, "unreadable_files": self.unreadable}


def raw_pixel_size(image_size: tuple[int, int]) -> tuple[int, int]:
    scale = min(1.0, RAW_PIXEL_MAX_SIDE / max(image_size))
    return (max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale)))


class Embedder:
    """Embeds image sets with several encoders, decoding folder images once per set."""

    def __init__(self, image_size: tuple[int, int], batch_size: int = 256) -> None:
        self.image_size = image_size
        self.batch_size = batch_size
        self.readers: list[FileReader] = []

    def reader(self, images: ImageSet, size: tuple[int, int] | None = None) -> FileReader | None:
        if images.paths is None:
            return None
        reader = FileReader(images.paths, size or self.image_size)
        self.readers.append(reader)
        return reader

    def embed(
        self, encoder: keras.Model, images: ImageSet, augmenter: keras.Model | None = None
    ) -> np.ndarray:
        from training.pipeline import embed

        return embed(
            encoder,
            images,
            image_size=self.image_size,
            batch_size=self.batch_size,
            reader=self.reader(images),
            augmenter=augmenter,
        )

    def raw_pixels(self, images: ImageSet) -> np.ndarray:
        from training.pipeline import pixels

        size = raw_pixel_size(self.image_size)
        return raw_pixel_embeddings(
            pixels(images, image_size=size, reader=self.reader(images, size))
        )

    @property
    def unreadable(self) -> list[str]:
        return sorted({str(p) for reader in self.readers for p in reader.failed_paths})


def compare(
    encoders: Mapping[str, keras.Model],
    sets: Mapping[str, ImageSet],
    embedder: Embedder,
    *,
    probe_train: ImageSet | None = None,
    seed: int = 0,
) -> Evaluation:
    """Retrieval figures of every encoder and raw pixels on every labelled set.

    Each set is searched leave-one-out within itself, as pytorch-metric-learning's
    AccuracyCalculator does. With `probe_train`, the seen-classes set also gets
    linear-probe accuracy (a classifier fitted on `probe_train` embeddings).
    """
    result = Evaluation()
    for set_name, images in sets.items():
        if len(images) < 3 or len(np.unique(images.labels)) < 2:
            continue
        labels = images.labels
        methods: dict[str, dict[str, float]] = {}
        for name, encoder in encoders.items():
            embeddings = embedder.embed(encoder, images)
            methods[name] = retrieval_metrics(embeddings, labels, seed=seed)
            if probe_train is not None and set_name == "held_out_images" and len(probe_train):
                train = _probe_sample(probe_train, seed)
                methods[name]["linear_probe"] = linear_probe_accuracy(
                    embedder.embed(encoder, train), train.labels, embeddings, labels
                )
        methods[RAW_PIXELS] = retrieval_metrics(embedder.raw_pixels(images), labels, seed=seed)
        result.figures[set_name] = methods
    result.unreadable = embedder.unreadable
    return result


def _probe_sample(images: ImageSet, seed: int) -> ImageSet:
    if len(images) <= PROBE_MAX_TRAIN:
        return images
    chosen = np.random.default_rng(seed).choice(len(images), PROBE_MAX_TRAIN, replace=False)
    return images.subset(np.sort(chosen))


def near_duplicates(
    encoders: Mapping[str, keras.Model],
    images: ImageSet,
    embedder: Embedder,
    augmenter: keras.Model,
) -> tuple[dict[str, dict[str, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Find each image's original from an augmented copy: the unlabeled use case.

    Keep `images` to a few thousand: their pixels are held for the baseline.

    Queries are augmented copies, references the originals; P@1 is the share
    whose own original ranks first. Also returns the embeddings so the caller
    can calibrate the duplicate threshold without embedding twice.
    """
    identity = np.arange(len(images))
    figures: dict[str, dict[str, float]] = {}
    embedded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, encoder in encoders.items():
        original = embedder.embed(encoder, images)
        edited = embedder.embed(encoder, images, augmenter=augmenter)
        embedded[name] = (original, edited)
        figures[name] = duplicate_figures(edited, original, identity)
    from training.image_files import resize_array
    from training.pipeline import pixels

    full = embedder.image_size
    original_pixels = pixels(images, image_size=full, reader=embedder.reader(images))
    edited_pixels = pixels(
        images, image_size=full, reader=embedder.reader(images), augmenter=augmenter
    )
    size = raw_pixel_size(full)
    both = raw_pixel_embeddings(
        np.stack([resize_array(image, size) for image in (*original_pixels, *edited_pixels)])
    )
    figures[RAW_PIXELS] = duplicate_figures(both[len(images) :], both[: len(images)], identity)
    return figures, embedded


def duplicate_figures(
    query: np.ndarray, reference: np.ndarray, identity: np.ndarray
) -> dict[str, float]:
    """P@1 and recall@5 of finding row i of `reference` from row i of `query`.

    Computed from neighbour ids directly: `retrieval_metrics` would also
    cluster for NMI, with one cluster per image here.
    """
    _, ids = nearest_neighbours(query, reference, min(5, len(reference)), exclude_self=False)
    hits = ids == identity[:, None]
    return {
        "precision_at_1": float(hits[:, 0].mean()),
        "recall_at_5": float(hits.any(axis=1).mean()),
    }


def duplicate_check(
    encoders: Mapping[str, keras.Model],
    images: ImageSet,
    embedder: Embedder,
    augmenter: keras.Model,
    *,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], Calibration | None]:
    """Near-duplicate figures on (a sample of) `images`, and the duplicate threshold.

    The threshold is the F1-optimal similarity between an original and its
    augmented copy against other images, for the encoder named "encoder".
    """
    from training.calibration import calibrate_duplicate_threshold

    if len(images) > DUPLICATE_SAMPLE:
        chosen = np.random.default_rng(seed).choice(len(images), DUPLICATE_SAMPLE, replace=False)
        images = images.subset(np.sort(chosen))
    if len(images) < 2 or not augmenter.layers:
        return {}, None
    figures, embedded = near_duplicates(encoders, images, embedder, augmenter)
    original, edited = embedded[TRAINED]
    return figures, calibrate_duplicate_threshold(original, edited, seed=seed)


def calibrate_match(
    encoder: keras.Model, splits: Splits, embedder: Embedder, *, seed: int = 0
) -> Calibration | None:
    """F1-optimal match threshold on held-out images, unseen classes included when there are.

    None when there are no two labelled classes to make pairs from (a flat
    unlabeled folder).
    """
    from training.calibration import calibrate_threshold

    parts = [(embedder.embed(encoder, splits.test), splits.test.labels)]
    if splits.unseen is not None:
        # Unseen classes keep their source ids; shift them past the renumbered seen ones.
        offset = int(splits.test.labels.max()) + 1
        parts.append((embedder.embed(encoder, splits.unseen), splits.unseen.labels + offset))
    embeddings = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    try:
        return calibrate_threshold(embeddings, labels, seed=seed)
    except ValueError:
        return None


def format_table(
    figures: Mapping[str, Mapping[str, Mapping[str, float]]],
    columns: tuple[str, ...] = TABLE_FIGURES,
) -> str:
    """A plain-text table: one block per set, one row per method, trained first."""
    shown = [
        c
        for c in (*columns, "linear_probe")
        if any(c in row for methods in figures.values() for row in methods.values())
    ]
    header = f"{'set':<18} {'method':<18} " + " ".join(f"{c:>14}" for c in shown)
    lines = [header, "-" * len(header)]
    for set_name, methods in figures.items():
        for method, row in methods.items():
            cells = " ".join(f"{row[c]:>14.4f}" if c in row else f"{'':>14}" for c in shown)
            lines.append(f"{set_name:<18} {method:<18} {cells}")
    return "\n".join(lines)


def evaluation_sets(splits: Splits) -> dict[str, ImageSet]:
    sets = {"held_out_images": splits.test}
    if splits.unseen is not None:
        sets["held_out_classes"] = splits.unseen
    return sets


def run_evaluate(
    model_dir: Path,
    data: str,
    *,
    holdout_classes: int | None,
    seed: int | None,
    as_json: bool,
    progress: bool,
) -> int:
    """The `evaluate` command: this model on this data, beside both baselines."""
    import keras

    from training.export import read_model_json

    meta = read_model_json(model_dir)
    provenance = meta.get("provenance", {})
    image_size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
    source = load_source(data, image_size=image_size, progress=progress)
    settings = provenance.get("split", {}) if provenance.get("dataset") == source.name else {}
    if holdout_classes is None:
        holdout_classes = int(settings.get("holdout_classes", 0))
    if seed is None:
        seed = int(settings.get("seed", 0))
    # On the data it was trained on, the model is measured on exactly the
    # images it held out at export. On other data nothing was seen: half of
    # each class's images are queries, the other half fit the linear probe.
    splits = split(
        source,
        holdout_classes=holdout_classes,
        validation_classes=len(settings.get("validation_classes", [])),
        test_fraction=float(settings.get("test_fraction", 0.5)),
        validation_fraction=float(settings.get("validation_fraction", 0.0)),
        seed=seed,
    )
    sets = evaluation_sets(splits)
    probe = splits.train
    encoder = keras.saving.load_model(model_dir / "encoder.keras", compile=False)
    untrained = keras.models.clone_model(encoder)
    embedder = Embedder(image_size)
    evaluation = compare(
        {TRAINED: encoder, UNTRAINED: untrained}, sets, embedder, probe_train=probe, seed=seed
    )
    if not evaluation.figures:
        raise DataError(f"{data}: too few images or classes to evaluate on")
    if as_json:
        json.dump(
            {"model": str(model_dir), "data": source.name, **evaluation.to_json()},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(f"model {model_dir} ({meta.get('model_id', '?')[:12]}) on {source.name}")
        print(format_table(evaluation.figures))
        if source.skipped or evaluation.unreadable:
            print(f"skipped {len(source.skipped) + len(evaluation.unreadable)} unreadable files")
    return 0
