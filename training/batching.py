"""Class-balanced batches: P classes x K examples each.

Pair- and triplet-based losses learn only from positives that share a batch;
random batches of a 1,000-class catalogue hold almost none. Sampling P classes
and K of each guarantees P * K * (K - 1) positive pairs in every batch.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

import numpy as np


class PKSampler:
    """Endless index batches, each P distinct classes x K examples, grouped by class.

    Classes are visited in shuffled rounds and each class's examples in
    shuffled cycles, so every image is used about equally often. A class with
    fewer than K usable images repeats some, which with augmentation gives K
    different views; that is how unlabeled training (one image per class)
    makes its positives. Indices added to `excluded` (files that failed to
    decode) are never drawn again.
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        examples_per_class: int,
        *,
        seed: int = 0,
        excluded: Container[int] | None = None,
        core_classes: int = 0,
    ) -> None:
        """`core_classes`: labels below it fill half of every batch (or all of them fit).

        Training on made-up classes (training.class_transforms) must not starve
        the real ones: with 5 real classes among 40, a batch would otherwise hold
        one real class on average.
        """
        labels = np.asarray(labels).reshape(-1)
        if labels.size == 0:
            raise ValueError("no images to sample from")
        if classes_per_batch < 2 or examples_per_class < 1:
            raise ValueError("need at least 2 classes per batch and 1 example per class")
        present = np.unique(labels)
        self.members = [np.flatnonzero(labels == c) for c in present]
        self.classes_per_batch = min(classes_per_batch, len(self.members))
        core = [i for i, c in enumerate(present) if c < core_classes]
        rest = [i for i, c in enumerate(present) if c >= core_classes]
        self._groups = [core, rest] if core and rest else [core or rest]
        wanted = max(self.classes_per_batch // 2, self.classes_per_batch - len(rest))
        self._shares = [min(len(core), wanted)] if core and rest else []
        self.examples_per_class = examples_per_class
        self.excluded: Container[int] = excluded if excluded is not None else set()
        self._rng = np.random.default_rng(seed)
        self._class_queues: list[list[int]] = [[] for _ in self._groups]
        self._example_queues: dict[int, list[int]] = {}

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.examples_per_class

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> np.ndarray:
        chosen: list[int] = []
        batch: list[int] = []
        for group, wanted in enumerate(self._group_targets()):
            batch.extend(self._fill(group, wanted, chosen))
        return np.asarray(batch, dtype=np.int64)

    def _group_targets(self) -> list[int]:
        """Classes to take from each group; the last group fills what the others leave."""
        return [*self._shares, self.classes_per_batch - sum(self._shares)]

    def _fill(self, group: int, wanted: int, chosen: list[int]) -> list[int]:
        members = self._groups[group]
        queue = self._class_queues[group]
        batch: list[int] = []
        target = len(chosen) + wanted
        attempts = 0
        while len(chosen) < target:
            attempts += 1
            if attempts > 4 * len(members) + wanted:
                raise RuntimeError("too few classes with readable images to fill a batch")
            if not queue:
                queue.extend(members[i] for i in self._rng.permutation(len(members)))
            class_index = queue.pop()
            if class_index in chosen:
                continue
            examples = self._draw(class_index)
            if examples:
                chosen.append(class_index)
                batch.extend(examples)
        return batch

    def _draw(self, class_index: int) -> list[int]:
        """K examples of one class, or [] if none of its images can be read."""
        drawn: list[int] = []
        for _ in range(2 * self.examples_per_class + 2):
            queue = self._example_queues.get(class_index)
            if not queue:
                usable = [int(i) for i in self.members[class_index] if int(i) not in self.excluded]
                if not usable:
                    return []
                queue = self._rng.permutation(usable).tolist()
                self._example_queues[class_index] = queue
            index = queue.pop()
            if index not in self.excluded:
                drawn.append(index)
            if len(drawn) == self.examples_per_class:
                break
        while drawn and len(drawn) < self.examples_per_class:
            drawn.append(drawn[len(drawn) % len(drawn)])
        return drawn
