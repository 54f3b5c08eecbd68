"""New training classes made from old ones: each rotated or mirrored class is a class of its own.

A metric learned from a handful of classes keeps about as many directions as
there are classes and maps whatever it has not seen onto them, so it
generalises badly to new classes (digits trained on 0-4 retrieve 5-9 worse
than raw pixels do). Rotating or mirroring every image of a class gives a
class no training image belongs to, with the same stroke statistics: "2
rotated a quarter turn" is as distinct from "2" as "7" is. Training on them
multiplies the classes the embedding has to keep apart, the few-shot
literature's standard trick for Omniglot (Santoro et al., 2016; Vinyals et
al., 2016). It does not make the encoder rotation-invariant; it asks the
opposite, which is why it is not an augmentation.

Only the training split is expanded; validation, test and unseen classes keep
their images as they are. The expansion is virtual: index `t * n + i` is image
`i` under transform `t` (0 is the image itself), so nothing is copied and a
folder of files streams as before.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

# Each takes and returns [H, W, C]; the four that swap axes need square images.
TRANSFORMS: dict[str, Transform] = {
    "rot90": lambda image: np.rot90(image, 1, axes=(0, 1)),
    "rot180": lambda image: image[::-1, ::-1],
    "rot270": lambda image: np.rot90(image, 3, axes=(0, 1)),
    "flip": lambda image: image[:, ::-1],
    "vflip": lambda image: image[::-1],
    "transpose": lambda image: np.swapaxes(image, 0, 1),
    "transverse": lambda image: np.swapaxes(image[::-1, ::-1], 0, 1),
}
SWAP_AXES = frozenset({"rot90", "rot270", "transpose", "transverse"})
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "rotations": ("rot90", "rot180", "rot270"),
    "mirrors": ("flip", "vflip"),
    "dihedral": tuple(TRANSFORMS),
}


def parse_class_transforms(spec: str) -> tuple[str, ...]:
    """Presets (`none`, `rotations`, `mirrors`, `dihedral`) and names, comma-separated."""
    names: list[str] = []
    for part in filter(None, (part.strip() for part in spec.lower().split(","))):
        if part not in PRESETS and part not in TRANSFORMS:
            known = ", ".join([*PRESETS, *TRANSFORMS])
            raise ValueError(f"unknown class transform {part!r}; choose from {known}")
        for name in PRESETS.get(part, (part,)):
            if name not in names:
                names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class ClassExpansion:
    """The training set seen as `len(transforms) + 1` copies, each copy its own classes."""

    transforms: tuple[str, ...]
    base_size: int
    base_classes: int

    def __post_init__(self) -> None:
        unknown = [name for name in self.transforms if name not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown class transforms: {', '.join(unknown)}")

    @classmethod
    def check_image_size(cls, transforms: tuple[str, ...], image_size: tuple[int, int]) -> None:
        """Quarter turns of a non-square input would change its shape; refuse them early."""
        swapping = sorted(SWAP_AXES.intersection(transforms))
        if swapping and image_size[0] != image_size[1]:
            raise ValueError(
                f"class transforms {', '.join(swapping)} need a square --image-size, "
                f"got {image_size[0]}x{image_size[1]}"
            )

    @property
    def copies(self) -> int:
        return len(self.transforms) + 1

    @property
    def num_classes(self) -> int:
        return self.copies * self.base_classes

    def labels(self, base_labels: np.ndarray) -> np.ndarray:
        """Labels of every virtual index: copy t of class c is class `t * base_classes + c`."""
        base_labels = np.asarray(base_labels, dtype=np.int64).reshape(-1)
        return np.concatenate([base_labels + t * self.base_classes for t in range(self.copies)])

    def source(self, index: int) -> tuple[int, int]:
        """(image index, transform number) of a virtual index; transform 0 is none."""
        copy, image = divmod(int(index), self.base_size)
        return image, copy

    def apply(self, image: np.ndarray, copy: int) -> np.ndarray:
        if copy == 0:
            return image
        return np.ascontiguousarray(TRANSFORMS[self.transforms[copy - 1]](image))

    def images(self, pixels: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """The [n, H, W, C] images of a batch of virtual indices, from in-memory pixels."""
        return np.stack(
            [self.apply(pixels[image], copy) for image, copy in map(self.source, indices)]
        )

    def excluded(self, failed: Container[int]) -> Container[int]:
        """Virtual indices whose file failed to decode, from the reader's failed image indices."""
        return _Excluded(failed, self.base_size)


@dataclass(frozen=True)
class _Excluded:
    failed: Container[int]
    base_size: int

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and index % self.base_size in self.failed
