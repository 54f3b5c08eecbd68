"""How good an embedding is for retrieval, measured the way the metric-learning literature does.

The figures follow pytorch-metric-learning's AccuracyCalculator so that numbers in
reports can be set beside published ones: R is the number of references sharing the
query's label (the query itself excluded in leave-one-out), R-precision is the share of
same-label items among the first R neighbours, and MAP@R = (1/R) * sum_{i<=R} P@i * rel(i).
Queries with R = 0 have no right answer and are skipped by every label-based figure, as
there (NMI, which needs no references, uses every query).

Embeddings are L2-normalised float32, so cosine similarity is FAISS's inner product.
Neighbours are searched in chunks of queries and the figures are accumulated chunk by
chunk, so memory stays bounded (chunk x k) even for 100k x 100k; no N x N matrix is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import faiss
import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_MAX_R = 10_000
"""Cap on R: the R-based figures look at no more than this many neighbours per query.

A class with more references than this is scored on its first `max_r` neighbours with
R taken as `max_r` (what AccuracyCalculator does when its `k` is below the largest class).
"""

_MAX_CHUNK_ELEMENTS = 1 << 22
"""Upper bound on chunk_rows * k, so a chunk's scores, ids and masks stay near 100 MB."""


def _as_embeddings(x: np.ndarray, name: str) -> np.ndarray:
    array = np.ascontiguousarray(x, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array, got shape {array.shape}")
    return array


def _flat_index(reference: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(reference)
    return index


def _search_chunks(
    index: faiss.IndexFlatIP,
    query: np.ndarray,
    k: int,
    *,
    exclude_self: bool,
    chunk_size: int,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first query row, scores, ids) chunk by chunk so callers never hold all N x k."""
    rows_per_chunk = max(1, min(chunk_size, _MAX_CHUNK_ELEMENTS // (k + 1)))
    for start in range(0, query.shape[0], rows_per_chunk):
        block = query[start : start + rows_per_chunk]
        if not exclude_self:
            scores, ids = index.search(block, k)
            yield start, scores, ids
            continue
        # Search one more and drop the query itself by id, not by score: exact
        # duplicates tie with it and may be ranked before it. If ties pushed it out of
        # the k + 1 returned, every returned item is an equally good non-self answer
        # and the last one is dropped instead.
        scores, ids = index.search(block, k + 1)
        rows = np.arange(start, start + block.shape[0])
        drop = ids == rows[:, None]
        drop[~drop.any(axis=1), -1] = True
        keep = ~drop
        yield (
            start,
            scores[keep].reshape(block.shape[0], k),
            ids[keep].reshape(block.shape[0], k),
        )


def nearest_neighbours(
    query: np.ndarray,
    reference: np.ndarray,
    k: int,
    *,
    exclude_self: bool,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by cosine similarity, best first, as (scores [N, k], reference ids [N, k]).

    `exclude_self=True` means query row i *is* reference row i (one set, leave-one-out),
    and that row is never its own neighbour even when exact duplicates tie with it.
    """
    query = _as_embeddings(query, "query")
    reference = _as_embeddings(reference, "reference")
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"dimension mismatch: query {query.shape[1]}, reference {reference.shape[1]}"
        )
    if exclude_self and query.shape[0] != reference.shape[0]:
        raise ValueError("exclude_self needs query and reference to be the same set")
    available = reference.shape[0] - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}], got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    index = _flat_index(reference)
    scores = np.empty((query.shape[0], k), dtype=np.float32)
    ids = np.empty((query.shape[0], k), dtype=np.int64)
    for start, chunk_scores, chunk_ids in _search_chunks(
        index, query, k, exclude_self=exclude_self, chunk_size=chunk_size
    ):
        scores[start : start + chunk_scores.shape[0]] = chunk_scores
        ids[start : start + chunk_ids.shape[0]] = chunk_ids
    return scores, ids


def _same_label_counts(
    query_labels: np.ndarray, reference_labels: np.ndarray, *, same_source: bool
) -> np.ndarray:
    """R for every query: how many references share its label, itself not counted."""
    classes, counts = np.unique(reference_labels, return_counts=True)
    position = np.clip(np.searchsorted(classes, query_labels), 0, len(classes) - 1)
    found = classes[position] == query_labels
    r = np.where(found, counts[position], 0)
    return r - 1 if same_source else r


def _clustering_nmi(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """NMI of k-means clusters against labels: how well classes form separate clumps."""
    n_clusters = min(len(np.unique(labels)), embeddings.shape[0])
    predicted = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(embeddings)
    return float(normalized_mutual_info_score(labels, predicted))


def retrieval_metrics(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    reference_emb: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    max_r: int = DEFAULT_MAX_R,
    chunk_size: int = 4096,
    seed: int = 0,
    with_nmi: bool = True,
) -> dict[str, float]:
    """P@1, R-precision, MAP@R, recall@k and NMI, comparable with published figures.

    With no reference set the queries are searched among themselves, leave-one-out.
    recall@k is the metric-learning one (1 if any of the top k shares the label), not
    the information-retrieval one. Figures over zero eligible queries are 0.0.
    NMI needs a k-means over the queries, by far the slowest part on large or
    high-dimensional sets; `with_nmi=False` leaves it out (per-epoch validation).
    """
    query_emb = _as_embeddings(query_emb, "query_emb")
    query_labels = np.asarray(query_labels).reshape(-1)
    if query_labels.shape[0] != query_emb.shape[0]:
        raise ValueError("query_labels must have one label per query embedding")
    same_source = reference_emb is None
    if reference_emb is None:
        if reference_labels is not None:
            raise ValueError("reference_labels given without reference_emb")
        reference_emb, reference_labels = query_emb, query_labels
    elif reference_labels is None:
        raise ValueError("reference_emb needs reference_labels")
    else:
        reference_emb = _as_embeddings(reference_emb, "reference_emb")
        reference_labels = np.asarray(reference_labels).reshape(-1)
        if reference_labels.shape[0] != reference_emb.shape[0]:
            raise ValueError("reference_labels must have one label per reference embedding")
    if query_emb.shape[1] != reference_emb.shape[1]:
        raise ValueError("query and reference embeddings differ in dimension")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be positive, got {ks}")
    if max_r < 1:
        raise ValueError(f"max_r must be positive, got {max_r}")

    r = np.minimum(
        _same_label_counts(query_labels, reference_labels, same_source=same_source), max_r
    )
    available = reference_emb.shape[0] - int(same_source)
    k_search = min(max(max(ks, default=1), int(r.max())), available)
    totals = dict.fromkeys(("precision_at_1", "r_precision", "map_at_r"), 0.0)
    recall_hits = dict.fromkeys(ks, 0)
    eligible = 0
    if k_search >= 1:
        index = _flat_index(reference_emb)
        ranks = np.arange(1, k_search + 1)
        for start, _, ids in _search_chunks(
            index, query_emb, k_search, exclude_self=same_source, chunk_size=chunk_size
        ):
            chunk_r = r[start : start + ids.shape[0]]
            valid = chunk_r > 0
            chunk_r = chunk_r[valid]
            chunk_labels = query_labels[start : start + ids.shape[0]][valid]
            relevant = reference_labels[ids[valid]] == chunk_labels[:, None]
            eligible += int(valid.sum())
            totals["precision_at_1"] += float(relevant[:, 0].sum())
            for k in ks:
                recall_hits[k] += int(relevant[:, :k].any(axis=1).sum())
            within_r = relevant & (ranks[None, :] <= chunk_r[:, None])
            hits_in_r = np.cumsum(within_r, axis=1)
            totals["r_precision"] += float((hits_in_r[:, -1] / chunk_r).sum())
            precision_at_i = np.where(within_r, hits_in_r / ranks[None, :], 0.0)
            totals["map_at_r"] += float((precision_at_i.sum(axis=1) / chunk_r).sum())

    denominator = max(eligible, 1)
    result = {name: total / denominator for name, total in totals.items()}
    for k in ks:
        result[f"recall_at_{k}"] = recall_hits[k] / denominator
    if with_nmi:
        result["nmi"] = _clustering_nmi(query_emb, query_labels, seed)
    return result


def linear_probe_accuracy(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    test_emb: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Accuracy of a logistic regression on frozen embeddings.

    Retrieval figures reward tight clusters; this one asks only whether the classes are
    linearly separable, the usual check that an encoder has not thrown information away.
    Features are standardised so the default regularisation suits any embedding scale.
    """
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(_as_embeddings(train_emb, "train_emb"), np.asarray(train_labels).reshape(-1))
    predicted = probe.predict(_as_embeddings(test_emb, "test_emb"))
    return float(np.mean(predicted == np.asarray(test_labels).reshape(-1)))


def raw_pixel_embeddings(images: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline, so a trained encoder's figures have a floor to beat.

    Mean-centring (on these images) before normalising makes cosine similarity a
    correlation of pixel deviations rather than of overall brightness. An image equal
    to the mean stays the zero vector.
    """
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, ...] array, got shape {images.shape}")
    flat = images.reshape(images.shape[0], -1).astype(np.float32)
    flat -= flat.mean(axis=0, dtype=np.float64).astype(np.float32)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    flat /= np.where(norms > 0, norms, 1.0).astype(np.float32)
    return flat
