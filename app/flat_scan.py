"""Exact top-k for a batch of queries in one pass over the vectors.

FAISS's flat search reads every stored vector once per query below its BLAS
threshold, so a batch of 16 queries reads a 100k x 64 catalogue (25.6 MB)
sixteen times: 21-29 ms on one core of the 2-core benchmark machine. Its BLAS
path, above the threshold, cost 5 ms even for one query. This scan multiplies
each block of vectors by all the queries at once (numpy's BLAS: the vectors
are read once per batch) and pushes the scores into FAISS's own top-k heaps:
5.7-7.1 ms for the same 16 queries, 3.8 against 11.3 ms for 8, with the same
answers (among equal scores at the k-th place, which are kept is as arbitrary
as in FAISS's search).

Each call into numpy or FAISS here lets the GIL go and must take it back, a
wait of up to a switch interval (5 ms) when another thread is busy in Python;
so the scan makes few of them: a product and a heap update per block of a
million scores, then one sort. Beside a thread spinning in Python, 8 queries
took 17 ms this way (FAISS's own search 18 ms; with a transposed copy of each
block as a third call, 22 ms; an earlier version that selected candidates
with a dozen numpy calls, 48 ms).
"""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np

faiss: Any = _faiss  # untyped, as in app/vector_index.py

# Scores computed per BLAS call (a block of vectors x every query): 4 MB,
# whatever the catalogue's size and the batch's.
_BLOCK_SCORES = 1 << 20


def batched_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row numbers) of `vectors` by inner product per query, best first.

    Rows short of k (fewer vectors than k) are padded as FAISS's flat search
    pads them: row -1, score -inf.
    """
    n, nq = len(vectors), len(queries)
    scores = np.empty((nq, k), dtype=np.float32)
    rows = np.empty((nq, k), dtype=np.int64)
    heaps = faiss.float_minheap_array_t()  # a min-heap keeps the k largest
    heaps.k, heaps.nh = k, nq
    heaps.val, heaps.ids = faiss.swig_ptr(scores), faiss.swig_ptr(rows)
    heaps.heapify()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    block_rows = max(1, _BLOCK_SCORES // max(nq, 1))
    for start in range(0, n, block_rows):
        # [nq, rows], the heaps' layout, straight from BLAS. The other way round,
        # [rows, nq], BLAS computes faster, but the copy that transposes it for
        # the heaps made the whole scan slower: 5.2 against 3.6 ms for 8 queries,
        # 12.7 against 10.0 for 32, at 100k x 64 on one core.
        block = queries @ vectors[start : start + block_rows].T
        heaps.addn(block.shape[1], faiss.swig_ptr(block), start, 0, nq)
    heaps.reorder()
    if n < k:
        scores[rows < 0] = -np.inf  # the heaps start from the lowest finite float
    return scores, rows
