"""Cosine thresholds that turn a similarity score into a yes/no answer.

`match_threshold` answers "same class?" and `duplicate_threshold` answers "same image,
edited?". Each is the score that maximises F1 on held-out pairs, as TensorFlow
Similarity's `calibrate` does; "match" always means score >= threshold.

Pair sampling. F1 depends on how many negatives stand beside each positive, and the
natural ratio among all pairs of a labelled set is about 1 : number-of-classes, so a
threshold fitted to it would drift with the dataset rather than with the encoder. The
service is asked about two images whose relation nobody knows in advance, so we
calibrate at an even prior: as many negative pairs as positive ones, at most
`max_pairs // 2` of each, every pair distinct and drawn uniformly from its kind (all of
them when there are few). The precision reported is therefore precision at a 50 %
base rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_ENUMERATE_LIMIT = 2_000_000
"""Below this many candidate pairs every pair is listed; above it pairs are sampled."""

_SAMPLING_ROUNDS = 32

_PAIR_CHUNK_ELEMENTS = 1 << 21
"""Embedding values gathered at once when scoring pairs (16 MB per side in float64)."""


@dataclass(frozen=True)
class Calibration:
    """A threshold and how well it separated the pairs it was fitted on."""

    threshold: float
    precision: float
    recall: float
    f1: float
    pairs: int


def threshold_curve(scores: np.ndarray, same: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at every distinct score used as threshold, ascending.

    One sort and cumulative sums (O(P log P)) instead of re-counting per threshold, so
    reports can draw F1-vs-threshold and precision-recall curves from hundreds of
    thousands of pairs. Recall is non-increasing along the returned order.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    same = np.asarray(same, dtype=bool).reshape(-1)
    if scores.shape != same.shape or scores.size == 0:
        raise ValueError("scores and same must be non-empty and of equal length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    positives = int(same.sum())
    if positives == 0:
        raise ValueError("threshold_curve needs at least one positive pair")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    true_pos = np.cumsum(same[order])
    predicted = np.arange(1, ranked.size + 1)
    # Every pair tying with a threshold is on the same side of it, so only the last
    # position of each run of equal scores is a real operating point.
    last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
    thresholds = ranked[last_of_tie][::-1]
    tp = true_pos[last_of_tie][::-1].astype(np.float64)
    predicted_pos = predicted[last_of_tie][::-1].astype(np.float64)
    return {
        "thresholds": thresholds,
        "precision": tp / predicted_pos,
        "recall": tp / positives,
        "f1": 2.0 * tp / (predicted_pos + positives),
    }


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> Calibration:
    """F1-optimal threshold, placed midway to the next lower score so it is not on a pair."""
    curve = threshold_curve(scores, same)
    f1 = curve["f1"]
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    thresholds = curve["thresholds"]
    threshold = thresholds[best]
    if best > 0:
        threshold = (threshold + thresholds[best - 1]) / 2.0
    return Calibration(
        threshold=float(threshold),
        precision=float(curve["precision"][best]),
        recall=float(curve["recall"][best]),
        f1=float(f1[best]),
        pairs=int(np.asarray(scores).size),
    )


def _pair_scores(left: np.ndarray, right: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine similarity of left[i] and right[j], row by row, without an N x N matrix."""
    out = np.empty(i.size, dtype=np.float64)
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // left.shape[1])
    for start in range(0, i.size, chunk):
        a = left[i[start : start + chunk]].astype(np.float64)
        b = right[j[start : start + chunk]].astype(np.float64)
        out[start : start + chunk] = np.einsum("nd,nd->n", a, b)
    return out


def _distinct(
    draw: Callable[[int], tuple[np.ndarray, np.ndarray]],
    n: int,
    count: int,
    rng: np.random.Generator,
    *,
    symmetric: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` distinct pairs from a sampler that may repeat itself."""
    keys = np.empty(0, dtype=np.int64)
    for _ in range(_SAMPLING_ROUNDS):
        if keys.size >= count:
            break
        i, j = draw(count - keys.size + count // 8 + 16)
        if symmetric:
            i, j = np.minimum(i, j), np.maximum(i, j)
        keys = np.unique(np.concatenate([keys, i * n + j]))
    if keys.size > count:
        keys = np.sort(rng.choice(keys, size=count, replace=False))
    return keys // n, keys % n


def _subset(
    i: np.ndarray, j: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if i.size > count:
        chosen = np.sort(rng.choice(i.size, size=count, replace=False))
        i, j = i[chosen], j[chosen]
    return i.astype(np.int64), j.astype(np.int64)


def _all_same_class_pairs(class_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered same-class pair, grouped by class size to stay vectorised."""
    sizes = np.bincount(class_of)
    by_class = np.argsort(class_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lefts, rights = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for size in np.unique(sizes[sizes > 1]):
        members = by_class[starts[sizes == size][:, None] + np.arange(size)[None, :]]
        a, b = np.triu_indices(size, k=1)
        lefts.append(members[:, a].reshape(-1))
        rights.append(members[:, b].reshape(-1))
    return np.concatenate(lefts), np.concatenate(rights)


def _class_pairs(
    labels: np.ndarray, count: int, *, same_class: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` distinct pairs, uniform over all same- or all different-class pairs.

    Sampling picks i with weight equal to its number of partners, then a partner
    uniformly, which makes every ordered pair equally likely without listing them.
    """
    n = labels.size
    _, class_of, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    class_of = class_of.reshape(-1)
    own = sizes[class_of]
    partners = (own - 1 if same_class else n - own).astype(np.float64)
    total = int(partners.sum()) // 2
    if total == 0 or count <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if same_class and total <= _ENUMERATE_LIMIT:
        return _subset(*_all_same_class_pairs(class_of), count, rng)
    if n * (n - 1) // 2 <= _ENUMERATE_LIMIT:
        i, j = np.triu_indices(n, k=1)
        keep = (class_of[i] == class_of[j]) == same_class
        return _subset(i[keep], j[keep], count, rng)

    by_class = np.argsort(class_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        i = rng.choice(n, size=m, p=partners / partners.sum())
        slot = rng.integers(0, partners[i].astype(np.int64))
        block = starts[class_of[i]]
        if same_class:
            # The class's last member stands in for i itself, which slot may hit.
            j = by_class[block + slot]
            j = np.where(j == i, by_class[block + own[i] - 1], j)
        else:
            j = by_class[np.where(slot < block, slot, slot + own[i])]
        return i.astype(np.int64), j.astype(np.int64)

    return _distinct(draw, n, min(count, total), rng, symmetric=True)


def _as_embeddings(x: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array, got shape {array.shape}")
    return array


def _labelled_pairs(
    scores_pos: np.ndarray, scores_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([scores_pos, scores_neg])
    same = np.concatenate([np.ones(scores_pos.size, bool), np.zeros(scores_neg.size, bool)])
    return scores, same


def _fit(scores_pos: np.ndarray, scores_neg: np.ndarray) -> Calibration:
    return _best_threshold(*_labelled_pairs(scores_pos, scores_neg))


def calibrate_threshold(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> Calibration:
    """The "same class" cosine threshold, F1-optimal on balanced held-out pairs.

    Pass embeddings of images the encoder was not trained on: on training images the
    classes look tighter than they will in service and the threshold comes out too high.
    """
    return _best_threshold(*class_pair_scores(embeddings, labels, max_pairs=max_pairs, seed=seed))


def class_pair_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same) of the balanced pairs `calibrate_threshold` fits on.

    Public so that reports draw their threshold curves from exactly the pairs
    the threshold was chosen on: same arguments, same pairs.
    """
    embeddings = _as_embeddings(embeddings, "embeddings")
    labels = np.asarray(labels).reshape(-1)
    if labels.size != embeddings.shape[0]:
        raise ValueError("labels must have one label per embedding")
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be at least 2, got {max_pairs}")
    rng = np.random.default_rng(seed)
    pos_i, pos_j = _class_pairs(labels, max_pairs // 2, same_class=True, rng=rng)
    neg_i, neg_j = _class_pairs(labels, pos_i.size, same_class=False, rng=rng)
    pos_i, pos_j = _subset(pos_i, pos_j, neg_i.size, rng)
    if pos_i.size == 0:
        raise ValueError(
            "calibration needs at least two classes and one class with two or more examples"
        )
    return _labelled_pairs(
        _pair_scores(embeddings, embeddings, pos_i, pos_j),
        _pair_scores(embeddings, embeddings, neg_i, neg_j),
    )


def calibrate_duplicate_threshold(
    original_emb: np.ndarray,
    augmented_emb: np.ndarray,
    *,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> Calibration:
    """The stricter "same image, edited" threshold for near-duplicate detection.

    Row i of `augmented_emb` must embed an augmented copy of image i. Positives are
    (original i, augmented i); negatives are (original i, augmented j), i != j, so both
    kinds compare a catalogue original with an edited upload. Same-class images count
    as different, which is what puts this threshold above the class match threshold.
    Balanced like `calibrate_threshold`.
    """
    original_emb = _as_embeddings(original_emb, "original_emb")
    augmented_emb = _as_embeddings(augmented_emb, "augmented_emb")
    if original_emb.shape != augmented_emb.shape:
        raise ValueError("original_emb and augmented_emb must have the same shape")
    n = original_emb.shape[0]
    if n < 2:
        raise ValueError("duplicate calibration needs at least two images")
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be at least 2, got {max_pairs}")
    rng = np.random.default_rng(seed)
    half = min(n, max_pairs // 2)
    pos = np.sort(rng.choice(n, size=half, replace=False))

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        i = rng.integers(0, n, size=m)
        return i, (i + rng.integers(1, n, size=m)) % n

    neg_i, neg_j = _distinct(draw, n, half, rng, symmetric=False)
    pos, _ = _subset(pos, pos, neg_i.size, rng)
    return _fit(
        _pair_scores(original_emb, augmented_emb, pos, pos),
        _pair_scores(original_emb, augmented_emb, neg_i, neg_j),
    )
