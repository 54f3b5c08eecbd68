"""The catalogue interface: what the API needs from wherever items are stored.

Two backends implement it (`local`: SQLite + FAISS in this process; `milvus`: a
Milvus collection), chosen by configuration in `open_catalog`. Methods are
synchronous and thread-safe; routes call them off the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import Settings

Metadata = dict[str, Any]
MetadataFilter = dict[str, str | int | float | bool | None]


@dataclass(frozen=True)
class NewItem:
    id: str
    embedding: np.ndarray
    metadata: Metadata = field(default_factory=dict)
    product_id: str | None = None
    image: bytes | None = None


@dataclass(frozen=True)
class StoredItem:
    id: str
    metadata: Metadata
    product_id: str | None
    model_id: str
    created_at: str
    updated_at: str
    has_image: bool


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: Metadata
    product_id: str | None = None


@dataclass(frozen=True)
class UpsertOutcome:
    id: str
    created: bool


@dataclass(frozen=True)
class CatalogStats:
    count: int
    embedding_dim: int
    model_id: str | None
    backend: str
    index_type: str


class Catalog(ABC):
    """Items (id, embedding, metadata, image copy) and nearest-neighbour search over them."""

    @property
    @abstractmethod
    def model_id(self) -> str | None:
        """The model whose embeddings the catalogue holds; None while it is empty and new."""

    @abstractmethod
    def upsert(self, items: Sequence[NewItem]) -> list[UpsertOutcome]:
        """Insert or replace items by id, all or nothing, durable when it returns."""

    @abstractmethod
    def get(self, item_id: str) -> StoredItem | None: ...

    @abstractmethod
    def get_embedding(self, item_id: str) -> np.ndarray | None: ...

    @abstractmethod
    def get_image(self, item_id: str) -> bytes | None: ...

    @abstractmethod
    def delete(self, item_id: str) -> bool:
        """Remove an item; False when there was none."""

    @abstractmethod
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        min_score: float | None = None,
        metadata_filter: MetadataFilter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[list[Hit]]:
        """Top-k per query, best first; filters apply before the cut so k come back if k exist."""

    @abstractmethod
    def stats(self) -> CatalogStats: ...

    @abstractmethod
    def close(self) -> None:
        """Flush and release; the catalogue is unusable afterwards."""


def open_catalog(settings: Settings, *, model_id: str, embedding_dim: int) -> Catalog:
    """Open the configured backend for a model, refusing one that holds another model's vectors."""
    if settings.backend == "milvus":
        from app.milvus_catalog import MilvusCatalog

        return MilvusCatalog(settings, model_id=model_id, embedding_dim=embedding_dim)
    from app.local_catalog import LocalCatalog

    return LocalCatalog(settings, model_id=model_id, embedding_dim=embedding_dim)
