"""In-memory vector indexes over catalogue keys, behind one small interface.

The SQLite catalogue is the source of truth; an index only answers "which keys
are nearest" and can always be rebuilt from it. Implementations are named for
what they are and chosen in one place, `build_index`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from app.config import Settings

# FAISS's bundled stubs describe the raw SWIG signatures, not the numpy-friendly
# wrappers it installs at import time, so it is used untyped.
faiss: Any = _faiss


class VectorIndex(ABC):
    """Maximum inner product search over int64 keys."""

    kind: str = ""

    def __init__(self, dim: int) -> None:
        self.dim = dim

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
    """Exact search: a full inner-product scan, memory-bandwidth bound, always right."""

    kind = "flat"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
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
        scores, keys = self._index.search(queries, k, params=params)
        return scores, keys

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def serialize(self) -> bytes:
        return bytes(faiss.serialize_index(self._index))

    def load(self, path: Path) -> None:
        index = faiss.read_index(str(path))
        if index.d != self.dim:
            raise ValueError(f"snapshot has dimension {index.d}, expected {self.dim}")
        self._index = index


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def build_index(settings: Settings, dim: int) -> VectorIndex:
    """The one place that turns configuration into an index."""
    if settings.index_type == "flat":
        return FlatIndex(dim)
    from app.hnsw_index import HnswIndex

    return HnswIndex(
        dim,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )
