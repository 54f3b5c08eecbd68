"""Data for training: built-in sets, folders, splits and P x K batches (no TensorFlow)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.batching import PKSampler
from training.datasets import DataError, DataSource, ImageSet, load_digits, split
from training.image_folder import UNLABELED_CLASS, FileReader, scan_folder

FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"))


def class_image(label: int, index: int, size: int = 24) -> Image.Image:
    """Class = colour and stripe direction; index jitters brightness and offset."""
    rng = np.random.default_rng(label * 1000 + index)
    colour = np.array([(230, 40, 40), (40, 200, 60), (50, 60, 220), (200, 200, 40)][label % 4])
    y, x = np.mgrid[0:size, 0:size]
    stripes = ((x if label % 2 else y) + index) // 3 % 2
    pixels = stripes[..., None] * colour + rng.integers(0, 30, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_folder(root: Path, classes: int = 3, per_class: int = 6, *, corrupt: bool = True) -> Path:
    """Class sub-folders in PNG, JPEG and WebP, plus one garbage and one truncated file."""
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            suffix, fmt = FORMATS[index % len(FORMATS)]
            class_image(label, index).save(folder / f"{index}.{suffix}", fmt)
    if corrupt:
        (root / "class_0" / "garbage.jpg").write_bytes(b"this is not a JPEG")
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(noise).save(out, "JPEG")
        (root / "class_1" / "truncated.jpg").write_bytes(out.getvalue()[:2000])
    (root / "class_0" / "notes.txt").write_text("not an image, not counted")
    return root


def test_digits_are_uint8_rgb_at_the_requested_size() -> None:
    source = load_digits((32, 32))
    images = source.images.images
    assert images is not None
    assert images.shape == (1797, 32, 32, 3)
    assert images.dtype == np.uint8
    assert images.max() == 255
    assert (images[..., 0] == images[..., 2]).all()
    assert source.class_names == tuple("0123456789")


def numbered_source(labels: np.ndarray) -> DataSource:
    """Image i carries i in its pixels, so splits can be checked for overlap."""
    images = np.zeros((len(labels), 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    images[:, 0, 0, 1] = np.arange(len(labels)) // 256
    return DataSource("toy", tuple(str(c) for c in range(10)), ImageSet(labels, images=images))


def identities(part: ImageSet) -> set[int]:
    assert part.images is not None
    return {int(a) + 256 * int(b) for a, b in part.images[:, 0, 0, :2]}


def test_split_is_disjoint_stratified_and_holds_out_the_last_classes() -> None:
    labels = np.repeat(np.arange(10), 30)
    splits = split(numbered_source(labels), holdout_classes=5, seed=3)
    assert splits.train_classes == tuple("01234")
    assert splits.unseen_classes == tuple("56789")
    assert splits.unseen is not None
    assert set(np.unique(splits.unseen.labels)) == {5, 6, 7, 8, 9}
    parts = (splits.train, splits.validation, splits.test, splits.unseen)
    for part in parts[:3]:
        assert list(np.bincount(part.labels)) == [len(part) // 5] * 5
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (105, 15, 30)
    ids = [identities(part) for part in parts]
    assert sum(len(i) for i in ids) == 300
    assert len(set().union(*ids)) == 300
    again = split(numbered_source(labels), holdout_classes=5, seed=3)
    assert identities(again.test) == ids[2]


def test_validation_classes_are_set_aside_whole() -> None:
    labels = np.repeat(np.arange(10), 30)
    splits = split(numbered_source(labels), holdout_classes=4, validation_classes=2)
    assert splits.train_classes == tuple("0123")
    assert splits.validation_classes == ("4", "5")
    assert set(np.unique(splits.validation.labels)) == {4, 5}
    assert len(splits.validation) == 60
    assert len(splits.train) + len(splits.test) == 120
    with pytest.raises(DataError, match="validation-classes"):
        split(numbered_source(labels), holdout_classes=4, validation_classes=5)


def test_split_renumbers_seen_classes_contiguously() -> None:
    labels = np.repeat([2, 5, 7, 9], 5)
    source = DataSource(
        "toy", tuple("abcdefghij"), ImageSet(labels, images=np.zeros((20, 2, 2, 3), np.uint8))
    )
    splits = split(source, holdout_classes=1)
    assert set(np.unique(splits.train.labels)) == {0, 1, 2}
    assert splits.train_classes == ("c", "f", "h")
    assert splits.unseen_classes == ("j",)


def test_holding_out_too_many_classes_is_a_data_error() -> None:
    with pytest.raises(DataError, match="holdout"):
        split(load_digits((8, 8)), holdout_classes=9)


def test_folder_scan_reads_formats_and_skips_unreadable_files(tmp_path: Path) -> None:
    source = scan_folder(write_folder(tmp_path / "data"), progress=False)
    assert source.class_names == ("class_0", "class_1", "class_2")
    assert [p.name for p in source.skipped] == ["garbage.jpg"]
    paths = source.images.paths
    assert paths is not None
    assert len(paths) == 3 * 6 + 1  # the truncated JPEG passes the header scan
    assert {p.suffix for p in paths} == {".png", ".jpg", ".webp"}
    assert source.images.images is None


def test_truncated_files_are_counted_when_decoded(tmp_path: Path) -> None:
    source = scan_folder(write_folder(tmp_path / "data"), progress=False)
    assert source.images.paths is not None
    reader = FileReader(source.images.paths, (16, 16))
    decoded = [reader.read(i) for i in range(len(source.images.paths))]
    assert all(image.shape == (16, 16, 3) and image.dtype == np.uint8 for image in decoded)
    assert [p.name for p in reader.failed_paths] == ["truncated.jpg"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "no images"),
        (lambda root: write_folder(root / "one", classes=1, corrupt=False), "one class"),
    ],
    ids=["missing", "empty", "one-class"],
)
def test_unusable_folders_are_data_errors(tmp_path: Path, make, message: str) -> None:
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match=message):
        scan_folder(make(tmp_path), progress=False)


def test_unlabeled_folder_may_be_flat(tmp_path: Path) -> None:
    for index in range(4):
        class_image(0, index).save(tmp_path / f"{index}.png")
    with pytest.raises(DataError, match="--unlabeled"):
        scan_folder(tmp_path, progress=False)
    source = scan_folder(tmp_path, unlabeled=True, progress=False)
    assert source.class_names == (UNLABELED_CLASS,)
    assert len(source.images) == 4


def test_pk_batches_hold_p_classes_of_k_examples() -> None:
    labels = np.repeat(np.arange(7), [3, 10, 10, 10, 10, 10, 1])
    sampler = PKSampler(labels, classes_per_batch=4, examples_per_class=5, seed=0)
    seen = set()
    for batch in (sampler.next_batch() for _ in range(20)):
        assert batch.shape == (20,)
        batch_labels = labels[batch].reshape(4, 5)
        assert (batch_labels == batch_labels[:, :1]).all(), "grouped by class, K each"
        assert len(set(batch_labels[:, 0])) == 4, "P distinct classes"
        seen.update(batch.tolist())
    assert seen == set(range(len(labels))), "every image gets used"


def test_pk_sampler_caps_p_at_the_class_count_and_skips_excluded() -> None:
    labels = np.repeat(np.arange(3), 4)
    excluded = {0, 1}
    sampler = PKSampler(labels, classes_per_batch=8, examples_per_class=2, excluded=excluded)
    assert sampler.batch_size == 6
    for _ in range(10):
        assert not excluded & set(sampler.next_batch().tolist())


def test_unlabeled_pk_batches_repeat_each_image_as_its_views() -> None:
    sampler = PKSampler(np.arange(50), classes_per_batch=8, examples_per_class=2, seed=1)
    batch = sampler.next_batch().reshape(8, 2)
    assert (batch[:, 0] == batch[:, 1]).all()
    assert len(set(batch[:, 0])) == 8


def test_glyphs_render_every_character_of_at_least_one_face() -> None:
    from training.glyphs import CHARACTERS, load_glyphs

    try:
        source = load_glyphs((16, 16))
    except DataError:
        pytest.skip("no font faces installed (the system-deps script installs them)")
    images = source.images.images
    assert images is not None
    assert source.class_names == tuple(CHARACTERS)
    assert images.shape[1:] == (16, 16, 3)
    assert len(np.unique(source.images.labels)) == 62
    assert "faces" in source.description


def test_glyphs_keep_case_and_one_scale_across_faces() -> None:
    """Lower case is drawn smaller than capitals, and capitals the same size in every face."""
    from training.glyphs import CHARACTERS, load_glyphs

    try:
        source = load_glyphs((32, 32))
    except DataError:
        pytest.skip("no font faces installed (the system-deps script installs them)")
    images, labels = source.images.images, source.images.labels
    assert images is not None

    def ink_heights(character: str) -> np.ndarray:
        ink = images[labels == CHARACTERS.index(character), :, :, 0] < 128
        return ink.any(axis=2).sum(axis=1)

    assert (ink_heights("o") < ink_heights("O")).mean() > 0.9
    capitals = ink_heights("H")
    assert capitals.min() >= 0.8 * np.median(capitals)
    assert capitals.max() <= 1.2 * np.median(capitals)
