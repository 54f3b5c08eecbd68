"""In-memory vector indexes over catalogue keys, behind one small interface.

The SQLite catalogue is the source of truth; an index only answers "which keys
are nearest" and can always be rebuilt from it. Implementations are named for
what they are and chosen in one place, `build_index`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from app.config import Settings
from app.flat_scan import batched_top_k

# FAISS's bundled stubs describe the raw SWIG signatures, not the numpy-friendly
# wrappers it installs at import time, so it is used untyped.
faiss: Any = _faiss


# Below this many vectors in one call, FAISS runs on the calling thread alone.
# OpenMP's thread count is per calling thread, and the service runs many
# one-query searches and one-item writes at once on worker threads: an OpenMP
# team per request only spins against the others' (single-query flat search was
# ten times slower with two threads than with one on a busy 2-core machine).
# Bulk work (rebuilds, batched searches) still gets every configured thread.
PARALLEL_FROM = 64

# From this many queries in one unfiltered call, the flat index multiplies the
# batch by its vectors in one pass (app/flat_scan.py) rather than letting FAISS
# read them once per query. One core, 8 queries: 4.1 against 7.4 ms at 100k x
# 64, 0.45 against 0.78 ms at 10k x 64, 145 against 211 ms at 1M x 128; at 4
# queries about even (2.9 against 3.1 ms at 100k). Bulk calls (PARALLEL_FROM
# and up) keep FAISS on every core.
BATCHED_SCAN_FROM = 4


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS team, which the flat index's batched scan runs on.

    An OpenMP-layered BLAS (FAISS's own) follows the per-call OpenMP count set
    by `_use_threads`; a pthreads one (numpy's OpenBLAS) keeps a team of its
    own, one thread per core, that spins against the model and the event loop:
    with it, 100k-item searches at 16 clients fell from 392 to 329 req/s.
    """
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(user_api="blas").select(threading_layer="pthreads").limit(
        limits=threads
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class VectorIndex(ABC):
    """Maximum inner product search over int64 keys."""

    kind: str = ""

    def __init__(self, dim: int, *, threads: int = 0) -> None:
        self.dim = dim
        self.threads = threads or _cores()

    def _use_threads(self, n: int) -> None:
        """Set this thread's FAISS (OpenMP) thread count for a call over n vectors."""
        faiss.omp_set_num_threads(self.threads if n >= PARALLEL_FROM else 1)

    @abstractmethod
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under keys that are not in the index yet."""

    @abstractmethod
    def remove(self, keys: np.ndarray) -> None:
        """Forget keys; unknown keys are ignored."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, keys) per query, best first, -1 keys padding short rows.

        `allowed` restricts the search to those keys, so a selective metadata
        filter still yields k results when k exist.
        """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def serialize(self) -> bytes:
        """The whole index as bytes, for a snapshot file that `load` reads back."""

    @abstractmethod
    def load(self, path: Path) -> None: ...

    def replace(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert: drop whatever the keys held, then add the new vectors."""
        self.remove(keys)
        self.add(keys, vectors)


def _as_keys(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [N, {dim}], got {out.shape}")
    return out


class FlatIndex(VectorIndex):
    """Exact search: a full inner-product scan, memory-bandwidth bound, always right.

    Keys live in a plain `IndexIDMap`. `IndexIDMap2` adds a reverse hash map,
    needed only to reconstruct a vector by key, which nothing here does; at
    1M items it cost 42 MB, its rebuild on every snapshot load, and about half
    again on every removal. Snapshots written by `IndexIDMap2` still load.
    """

    kind = "flat"

    def __init__(self, dim: int, *, threads: int = 0) -> None:
        super().__init__(dim, threads=threads)
        self._index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._use_threads(len(keys))
            self._index.add_with_ids(_as_vectors(vectors, self.dim), _as_keys(keys))

    def remove(self, keys: np.ndarray) -> None:
        if len(keys):
            self._index.remove_ids(_as_keys(keys))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_vectors(queries, self.dim)
        params = None
        if allowed is not None:
            allowed = _as_keys(allowed)
            if not len(allowed):
                return _empty(len(queries), k)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        # Before the batched scan too: its heap updates are an OpenMP loop, and a
        # team left at the default size spins on the other core after each batch.
        self._use_threads(len(queries))
        if params is None and BATCHED_SCAN_FROM <= len(queries) < PARALLEL_FROM:
            return self._batched_search(queries, k)
        scores, keys = self._index.search(queries, k, params=params)
        return scores, keys

    def _batched_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(self._index.ntotal)
        if not n:
            return _empty(len(queries), k)
        flat = faiss.downcast_index(self._index.index)
        # Views of FAISS's own arrays, valid while the caller holds the index
        # (the catalogue's read lock): no copy of the vectors per search.
        vectors = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
        ids = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        scores, rows = batched_top_k(vectors, queries, k)
        return scores, np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def serialize(self) -> bytes:
        return bytes(faiss.serialize_index(self._index))

    def load(self, path: Path) -> None:
        index = faiss.read_index(str(path))
        flat = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else None
        if not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{path} is not a flat inner-product index")
        if index.d != self.dim:
            raise ValueError(f"snapshot has dimension {index.d}, expected {self.dim}")
        self._index = index


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def build_index(settings: Settings, dim: int) -> VectorIndex:
    """The one place that turns configuration into an index."""
    if settings.index_type == "flat":
        return FlatIndex(dim, threads=settings.threads)
    from app.hnsw_index import HnswIndex

    return HnswIndex(
        dim,
        threads=settings.threads,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )
