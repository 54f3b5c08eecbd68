"""Which images a picture shows, chosen by one rule wherever it is drawn.

The per-epoch neighbour grids (`train --log-neighbours`) and the report's grid
pick their queries with the same rule and seed from the same held-out images,
so the report's grid is the last frame of the film the training wrote.
"""

from __future__ import annotations

import numpy as np


def _within_class_rank(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's position among its class's items, and its class's size."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(labels.size, dtype=np.int64)
    rank[order] = np.arange(labels.size) - starts[inverse[order]]
    return rank, counts[inverse]


def stratified_sample(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `limit` items, each class keeping its share.

    A uniform sample of a long-tailed catalogue would drop the small classes
    from the picture altogether; here every class shrinks by the same factor.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size <= limit:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(labels.size)
    rank, size = _within_class_rank(labels[shuffled])
    key = (rank + 0.5) / size
    return np.sort(shuffled[np.argsort(key, kind="stable")[:limit]])


def spread_queries(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` query indices, one per class before any class gets a second.

    Returned in class order, so a grid's rows read like a legend.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(labels.size)
    rank, _ = _within_class_rank(labels[shuffled])
    classes = np.unique(labels)
    class_turn = dict(zip(classes.tolist(), rng.permutation(classes.size).tolist(), strict=True))
    turn = np.array([class_turn[label] for label in labels[shuffled].tolist()], dtype=np.int64)
    chosen = shuffled[np.lexsort((turn, rank))[: min(count, labels.size)]]
    return chosen[np.lexsort((chosen, labels[chosen]))]
