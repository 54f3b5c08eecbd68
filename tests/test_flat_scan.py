"""The batched flat scan against a full sort, and the flat index's two search paths."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from app.flat_scan import BLOCK_ROWS, batched_top_k
from app.vector_index import BATCHED_SCAN_FROM, FlatIndex, limit_blas_threads


def small_integers(n: int, dim: int = 16, *, seed: int = 0) -> np.ndarray:
    """Vectors whose inner products float32 computes exactly, so ties are real ties."""
    return np.random.default_rng(seed).integers(-2, 3, size=(n, dim)).astype(np.float32)


def reference(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every score sorted: best first, the lower row first among equals."""
    scores = queries @ vectors.T
    rows = np.stack([np.lexsort((np.arange(len(vectors)), -s)) for s in scores])[:, :k]
    taken = np.take_along_axis(scores, rows, axis=1)
    pad = max(0, k - len(vectors))
    return (
        np.pad(taken, ((0, 0), (0, pad)), constant_values=-np.inf),
        np.pad(rows, ((0, 0), (0, pad)), constant_values=-1),
    )


@pytest.mark.parametrize("n", [1, 5, 300, BLOCK_ROWS + 1000])
@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("nq", [1, 4, 9])
def test_matches_a_full_sort_ties_included(n: int, k: int, nq: int) -> None:
    vectors = small_integers(n)
    queries = small_integers(nq, seed=1)
    scores, rows = batched_top_k(vectors, queries, k)
    want_scores, want_rows = reference(vectors, queries, k)
    assert rows.tolist() == want_rows.tolist()
    np.testing.assert_array_equal(scores, want_scores)


def test_an_unlucky_sample_costs_candidates_not_exactness() -> None:
    # The threshold is sampled from the first block: put the worst matches there.
    vectors = small_integers(BLOCK_ROWS + 5000, seed=2)
    query = small_integers(1, seed=3)
    vectors = vectors[np.argsort(vectors @ query[0], kind="stable")]
    scores, rows = batched_top_k(vectors, np.repeat(query, 4, axis=0), 20)
    want_scores, want_rows = reference(vectors, query, 20)
    assert all(r == want_rows[0].tolist() for r in rows.tolist())
    np.testing.assert_array_equal(scores[0], want_scores[0])


def test_nothing_to_scan_is_all_padding() -> None:
    scores, rows = batched_top_k(np.zeros((0, 16), np.float32), small_integers(4), 3)
    assert (rows == -1).all()
    assert np.isneginf(scores).all()


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_answers_a_batch_as_it_answers_each_query() -> None:
    index = FlatIndex(32)
    vectors = unit(5000, seed=4)
    ids = np.random.default_rng(5).permutation(1_000_000)[:5000]
    index.add(ids, vectors)
    index.remove(ids[::7])
    queries = np.concatenate([vectors[:6], unit(6, seed=6)])
    assert len(queries) >= BATCHED_SCAN_FROM
    batch_scores, batch_keys = index.search(queries, 25)
    for q, query in enumerate(queries):
        one_scores, one_keys = index.search(query[None, :], 25)
        assert batch_keys[q].tolist() == one_keys[0].tolist()
        np.testing.assert_allclose(batch_scores[q], one_scores[0], atol=1e-6)
    assert not set(batch_keys.ravel().tolist()) & set(ids[::7].tolist())


def test_flat_index_batch_pads_past_its_size() -> None:
    index = FlatIndex(32)
    index.add(np.array([11, 12, 13]), unit(3, seed=7))
    scores, keys = index.search(unit(BATCHED_SCAN_FROM, seed=8), 5)
    assert all(sorted(row[:3]) == [11, 12, 13] for row in keys.tolist())
    assert (keys[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all()
    _, none = FlatIndex(32).search(unit(BATCHED_SCAN_FROM, seed=9), 2)
    assert (none == -1).all()


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
