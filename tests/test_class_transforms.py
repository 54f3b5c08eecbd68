"""Rotated and mirrored classes as extra training classes (`--class-transforms`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.batching import PKSampler
from training.class_transforms import (
    PRESETS,
    TRANSFORMS,
    ClassExpansion,
    parse_class_transforms,
)
from training.datasets import ImageSet
from training.image_folder import FileReader


def asymmetric(seed: int = 0, side: int = 6) -> np.ndarray:
    """An image no rotation or mirror maps onto itself."""
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_the_dihedral_preset_makes_eight_distinct_pictures() -> None:
    image = asymmetric()
    pictures = [image] + [TRANSFORMS[name](image) for name in PRESETS["dihedral"]]
    assert len({p.tobytes() for p in pictures}) == 8
    assert all(p.shape == image.shape for p in pictures)


def test_transforms_are_the_rotations_and_mirrors_they_name() -> None:
    image = asymmetric()
    rot90 = TRANSFORMS["rot90"]
    np.testing.assert_array_equal(rot90(rot90(image)), TRANSFORMS["rot180"](image))
    np.testing.assert_array_equal(rot90(TRANSFORMS["rot180"](image)), TRANSFORMS["rot270"](image))
    np.testing.assert_array_equal(TRANSFORMS["flip"](image)[:, 0], image[:, -1])
    np.testing.assert_array_equal(TRANSFORMS["vflip"](image)[0], image[-1])
    np.testing.assert_array_equal(TRANSFORMS["transpose"](image)[1, 2], image[2, 1])
    # Counter-clockwise: the top row becomes the left column, read bottom to top.
    np.testing.assert_array_equal(rot90(image)[::-1, 0], image[0])


def test_parse_accepts_presets_and_names_and_rejects_the_rest() -> None:
    assert parse_class_transforms("none") == ()
    assert parse_class_transforms("Rotations") == ("rot90", "rot180", "rot270")
    assert parse_class_transforms("flip, rot180,flip") == ("flip", "rot180")
    assert len(parse_class_transforms("dihedral")) == 7
    with pytest.raises(ValueError, match="unknown class transform 'spin'"):
        parse_class_transforms("rot90,spin")


def test_quarter_turns_need_square_images() -> None:
    with pytest.raises(ValueError, match="square"):
        ClassExpansion.check_image_size(("flip", "rot90"), (32, 48))
    ClassExpansion.check_image_size(("flip", "rot180", "vflip"), (32, 48))
    ClassExpansion.check_image_size(PRESETS["dihedral"], (32, 32))


def test_virtual_indices_map_to_a_transformed_image_and_its_own_class() -> None:
    pixels = np.stack([asymmetric(seed) for seed in range(4)])
    labels = np.array([0, 1, 1, 2])
    expansion = ClassExpansion(("rot90", "flip"), base_size=4, base_classes=3)
    assert expansion.num_classes == 9
    virtual = expansion.labels(labels)
    np.testing.assert_array_equal(virtual, [0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 7, 8])
    assert expansion.source(9) == (1, 2)
    batch = expansion.images(pixels, np.array([0, 5, 11]))
    np.testing.assert_array_equal(batch[0], pixels[0])
    np.testing.assert_array_equal(batch[1], np.rot90(pixels[1]))
    np.testing.assert_array_equal(batch[2], pixels[3][:, ::-1])


def test_a_file_that_failed_is_excluded_in_every_copy() -> None:
    expansion = ClassExpansion(("rot180",), base_size=5, base_classes=5)
    excluded = expansion.excluded({2})
    assert 2 in excluded
    assert 7 in excluded
    assert 3 not in excluded
    assert 8 not in excluded
    sampler = PKSampler(
        expansion.labels(np.arange(5)), classes_per_batch=8, examples_per_class=1, excluded=excluded
    )
    for _ in range(5):
        assert not {2, 7} & set(sampler.next_batch().tolist())


def test_folder_and_memory_pipelines_give_the_same_transformed_batches(tmp_path: Path) -> None:
    from training.pipeline import training_batches

    pixels = np.stack([asymmetric(seed, side=8) for seed in range(6)])
    labels = np.array([0, 0, 1, 1, 2, 2])
    paths = []
    for index, image in enumerate(pixels):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    expansion = ClassExpansion(("rot90", "vflip"), base_size=6, base_classes=3)
    batches = []
    for images, reader in (
        (ImageSet(labels, images=pixels), None),
        (ImageSet(labels, paths=tuple(paths)), FileReader(tuple(paths), (8, 8))),
    ):
        sampler = PKSampler(expansion.labels(labels), 4, 2, seed=3)
        dataset = training_batches(
            images, sampler, image_size=(8, 8), reader=reader, expansion=expansion
        )
        x, y = next(iter(dataset))
        batches.append((np.asarray(x), np.asarray(y)))
    (memory_x, memory_y), (folder_x, folder_y) = batches
    np.testing.assert_array_equal(memory_y, folder_y)
    np.testing.assert_array_equal(memory_x, folder_x)
    assert memory_y.max() >= 3  # the batch holds transformed classes, not only originals
    index = int(np.flatnonzero(memory_y >= 3)[0])
    label = int(memory_y[index])
    copy, base_class = divmod(label, 3)
    candidates = [expansion.apply(p, copy) for p in pixels[labels == base_class]]
    assert any(np.array_equal(memory_x[index], c.astype(np.float32)) for c in candidates)


def test_real_classes_fill_half_of_every_batch_among_made_up_ones() -> None:
    expansion = ClassExpansion(PRESETS["dihedral"], base_size=50, base_classes=5)
    labels = expansion.labels(np.repeat(np.arange(5), 10))
    sampler = PKSampler(labels, classes_per_batch=10, examples_per_class=2, seed=0, core_classes=5)
    seen_made_up: set[int] = set()
    for _ in range(20):
        classes = labels[sampler.next_batch()].reshape(10, 2)[:, 0]
        assert len(set(classes.tolist())) == 10
        assert sorted(c for c in classes if c < 5) == [0, 1, 2, 3, 4]
        seen_made_up |= {int(c) for c in classes if c >= 5}
    assert len(seen_made_up) == 35  # every made-up class still gets its turn


def test_core_classes_give_way_when_too_few_others_exist() -> None:
    labels = np.repeat(np.arange(7), 3)  # 5 real classes, 2 made-up ones
    sampler = PKSampler(labels, classes_per_batch=6, examples_per_class=1, seed=0, core_classes=5)
    for _ in range(10):
        classes = labels[sampler.next_batch()]
        assert {5, 6} <= set(classes.tolist())
        assert len(set(classes.tolist())) == 6
