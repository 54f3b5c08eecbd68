"""Labelled image sets and the splits every experiment is measured on.

A set is either held in memory (the built-in digits, glyphs and CIFAR-10 are
small) or named by file paths (folders, streamed from disk while training).
Both kinds share one type so that splitting, batching and evaluation never ask
which kind they have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.image_files import resize_array

BUILT_IN = ("digits", "cifar10", "glyphs")


class DataError(Exception):
    """The data cannot be trained or evaluated on; the message says why and what to do."""


@dataclass(frozen=True)
class ImageSet:
    """Images with integer labels: `images` in memory, or `paths` read on demand."""

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: tuple[Path, ...] | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("an ImageSet holds either images or paths")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, indices: np.ndarray) -> ImageSet:
        indices = np.asarray(indices, dtype=np.int64)
        if self.images is not None:
            return ImageSet(self.labels[indices], images=self.images[indices])
        assert self.paths is not None
        return ImageSet(self.labels[indices], paths=tuple(self.paths[i] for i in indices))

    def relabelled(self, labels: np.ndarray) -> ImageSet:
        return ImageSet(np.asarray(labels, dtype=np.int64), images=self.images, paths=self.paths)


@dataclass(frozen=True)
class DataSource:
    """A whole data set before splitting, with what was skipped while reading it."""

    name: str
    class_names: tuple[str, ...]
    images: ImageSet
    skipped: tuple[Path, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Splits:
    """Train, validation and test images of the seen classes, and the unseen classes.

    `validation` drives early stopping and `test` is reported, so the figure
    reported was never used to choose anything. `unseen` holds every image of
    the held-out classes, which training never sees. `validation` is either
    some images of every seen class or, with `validation_classes`, every image
    of classes set aside for it.
    """

    train: ImageSet
    validation: ImageSet
    test: ImageSet
    unseen: ImageSet | None
    train_classes: tuple[str, ...]
    unseen_classes: tuple[str, ...] = field(default=())
    validation_classes: tuple[str, ...] = field(default=())


def load_source(
    name: str,
    *,
    image_size: tuple[int, int],
    unlabeled: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> DataSource:
    """Any `--data` value: a built-in set by name, otherwise a folder."""
    if name == "digits":
        return load_digits(image_size)
    if name == "cifar10":
        return load_cifar10(image_size)
    if name == "glyphs":
        from training.glyphs import load_glyphs

        return load_glyphs(image_size, seed=seed)
    from training.image_folder import scan_folder

    return scan_folder(Path(name), unlabeled=unlabeled, progress=progress)


def load_digits(image_size: tuple[int, int] = (32, 32)) -> DataSource:
    """scikit-learn's 1,797 handwritten digits as uint8 RGB, stretched like any upload.

    The originals are 8x8 with values 0..16; they are scaled to 0..255 first so
    the encoder sees the same range as it would from a photo.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    grey = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    images = np.stack([resize_array(image, image_size) for image in rgb])
    labels = bunch.target.astype(np.int64)
    return DataSource("digits", tuple(str(d) for d in range(10)), ImageSet(labels, images=images))


def load_cifar10(image_size: tuple[int, int] = (32, 32)) -> DataSource:
    """CIFAR-10 via keras.datasets (downloads once, so it needs internet the first time)."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:  # urllib and tarfile errors alike mean "not available"
        raise DataError(f"could not load CIFAR-10 (it downloads on first use): {error}") from error
    images = np.concatenate([x_train, x_test]).astype(np.uint8)
    if images.shape[1:3] != image_size:
        images = np.stack([resize_array(image, image_size) for image in images])
    labels = np.concatenate([y_train, y_test]).reshape(-1).astype(np.int64)
    names = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    return DataSource("cifar10", names, ImageSet(labels, images=images))


def split(
    source: DataSource,
    *,
    holdout_classes: int = 0,
    validation_classes: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
    min_classes: int = 2,
) -> Splits:
    """Class-disjoint unseen classes, then a stratified image split of the rest.

    The held-out classes are the last `holdout_classes` in sorted class order,
    so `--holdout-classes 5` on digits trains on 0-4 and tests on 5-9 as in
    Musgrave et al.'s reality check; any rerun holds out the same ones.
    Training labels are renumbered 0..C-1 because classification heads and
    class proxies need contiguous labels. `min_classes=1` suits unlabeled
    training, where the classes only score retrieval.

    With `validation_classes`, the classes just before the held-out ones are
    set aside whole for early stopping instead of a fraction of every seen
    class's images: stopping then rewards generalising to new classes, which
    is what held-out classes measure.
    """
    names = source.class_names
    present = np.unique(source.images.labels)
    set_aside = holdout_classes + validation_classes
    if min(holdout_classes, validation_classes) < 0 or len(present) - set_aside < min_classes:
        raise DataError(
            f"--holdout-classes {holdout_classes} and --validation-classes {validation_classes} "
            f"leave fewer than {min_classes} of the {len(present)} classes to train on"
        )
    seen_ids = present[: len(present) - set_aside]
    validation_ids = present[len(seen_ids) : len(present) - holdout_classes]
    unseen_ids = present[len(present) - holdout_classes :]
    if validation_classes == 1:
        raise DataError("--validation-classes needs at least 2 classes to score retrieval on")
    if validation_classes:
        validation_fraction = 0.0
    labels = source.images.labels
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for class_id in seen_ids:
        members = rng.permutation(np.flatnonzero(labels == class_id))
        n_test, n_val = _split_counts(len(members), test_fraction, validation_fraction)
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    renumber = np.full(int(present.max()) + 1, -1, dtype=np.int64)
    renumber[seen_ids] = np.arange(len(seen_ids))

    def seen_part(key: str) -> ImageSet:
        indices = np.sort(np.concatenate(parts[key]))
        chosen = source.images.subset(indices)
        return chosen.relabelled(renumber[chosen.labels])

    unseen = None
    if holdout_classes:
        unseen = source.images.subset(np.flatnonzero(np.isin(labels, unseen_ids)))
    validation = seen_part("validation")
    if validation_classes:
        validation = source.images.subset(np.flatnonzero(np.isin(labels, validation_ids)))
    return Splits(
        train=seen_part("train"),
        validation=validation,
        test=seen_part("test"),
        unseen=unseen,
        train_classes=tuple(names[i] for i in seen_ids),
        unseen_classes=tuple(names[i] for i in unseen_ids),
        validation_classes=tuple(names[i] for i in validation_ids),
    )


def _split_counts(n: int, test_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """Per-class test and validation counts, leaving at least one image to train on.

    A class with three or more images contributes at least one to test, so
    every seen class can be queried; validation takes what is left after that.
    """
    n_test = round(n * test_fraction)
    n_val = round(n * validation_fraction)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    n_test = min(n_test, n - 1)
    n_val = min(n_val, n - 1 - n_test)
    return n_test, n_val


def hide_labels(images: ImageSet) -> ImageSet:
    """Every image its own class, for training without labels."""
    return images.relabelled(np.arange(len(images), dtype=np.int64))
