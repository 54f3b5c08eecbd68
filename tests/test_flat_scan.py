"""The batched flat scan against a full sort, and the flat index's two search paths."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from app.flat_scan import batched_top_k
from app.vector_index import BATCHED_SCAN_FROM, FlatIndex, limit_blas_threads

BLOCK_ROWS = 65536  # the vectors one block holds at 16 queries


def small_integers(n: int, dim: int = 16, *, seed: int = 0) -> np.ndarray:
    """Vectors whose inner products float32 computes exactly, so ties are real ties."""
    return np.random.default_rng(seed).integers(-2, 3, size=(n, dim)).astype(np.float32)


def assert_exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int, scores: np.ndarray, rows: np.ndarray
) -> None:
    """The k best scores, best first, each from a distinct row that has that score.

    Which of several rows tied at the k-th score comes back is not specified
    (FAISS's heaps decide), so rows are checked through their scores.
    """
    every = queries @ vectors.T
    best = -np.sort(-every, axis=1)[:, :k]
    found = min(k, len(vectors))
    np.testing.assert_array_equal(scores[:, :found], best)
    assert (rows[:, found:] == -1).all()
    assert np.isneginf(scores[:, found:]).all()
    for q in range(len(queries)):
        picked = rows[q, :found]
        assert len(set(picked.tolist())) == found
        np.testing.assert_array_equal(every[q, picked], scores[q, :found])


@pytest.mark.parametrize("n", [1, 5, 300, BLOCK_ROWS + 1000])
@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("nq", [1, 4, 16])
def test_matches_a_full_sort_ties_included(n: int, k: int, nq: int) -> None:
    vectors = small_integers(n)
    queries = small_integers(nq, seed=1)
    scores, rows = batched_top_k(vectors, queries, k)
    assert_exact_top_k(vectors, queries, k, scores, rows)


def test_many_queries_span_many_blocks() -> None:
    # 64 queries make blocks of 16k vectors: the heaps carry over five of them.
    vectors = small_integers(BLOCK_ROWS + 5000, seed=2)
    queries = small_integers(64, seed=3)
    scores, rows = batched_top_k(vectors, queries, 20)
    assert_exact_top_k(vectors, queries, 20, scores, rows)


def test_same_answers_as_faiss_search() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(20_000, 32)).astype(np.float32)
    queries = rng.normal(size=(8, 32)).astype(np.float32)
    index = faiss.IndexFlatIP(32)
    index.add(vectors)
    want_scores, want_rows = index.search(queries, 15)
    scores, rows = batched_top_k(vectors, queries, 15)
    assert rows.tolist() == want_rows.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_nothing_to_scan_is_all_padding() -> None:
    scores, rows = batched_top_k(np.zeros((0, 16), np.float32), small_integers(4), 3)
    assert (rows == -1).all()
    assert np.isneginf(scores).all()


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_answers_a_batch_as_it_answers_each_query() -> None:
    n = 20_000
    index = FlatIndex(32)
    vectors = unit(n, seed=4)
    ids = np.random.default_rng(5).permutation(10 * n)[:n]
    index.add(ids, vectors)
    index.remove(ids[:2000:7])
    queries = np.concatenate([vectors[:6], unit(6, seed=6)])
    assert len(queries) >= BATCHED_SCAN_FROM
    batch_scores, batch_keys = index.search(queries, 25)
    for q, query in enumerate(queries):
        one_scores, one_keys = index.search(query[None, :], 25)
        assert batch_keys[q].tolist() == one_keys[0].tolist()
        np.testing.assert_allclose(batch_scores[q], one_scores[0], atol=1e-6)
    assert not set(batch_keys.ravel().tolist()) & set(ids[:2000:7].tolist())


def test_blas_limit_caps_numpys_team_and_leaves_openmp_alone() -> None:
    def threads() -> dict[tuple[str, str], int]:
        return {
            (i["internal_api"], str(i.get("threading_layer"))): i["num_threads"]
            for i in threadpool_info()
        }

    before = threads()
    limit_blas_threads(1)
    after = threads()
    assert after[("openblas", "pthreads")] == 1
    assert {k: v for k, v in after.items() if k[1] != "pthreads"} == {
        k: v for k, v in before.items() if k[1] != "pthreads"
    }
