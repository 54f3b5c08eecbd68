"""The catalogue interface: what the API needs from wherever items are stored.

Two backends implement it (`local`: SQLite + FAISS in this process; `milvus`: a
Milvus collection), chosen by configuration in `open_catalog`. Methods are
synchronous and thread-safe; routes call them off the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import Settings
from app.errors import FeatureUnavailable

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
        group_by_product: bool = False,
    ) -> list[list[Hit]]:
        """Top-k per query, best first; filters apply before the cut so k come back if k exist.

        With `group_by_product`, the best image of each product counts once (an
        item without a product is its own group), so k products come back, not
        k photos of one shoe.
        """

    @abstractmethod
    def stats(self) -> CatalogStats: ...

    def product_items(self, product_id: str) -> list[StoredItem]:
        """Every image of one product, in the order they were first indexed."""
        raise FeatureUnavailable(f"{type(self).__name__} does not group items by product yet")

    def delete_product(self, product_id: str) -> list[str]:
        """Remove all images of a product in one transaction; the ids removed."""
        raise FeatureUnavailable(f"{type(self).__name__} does not group items by product yet")

    def facets(self, key: str, limit: int) -> list[tuple[object, int]]:
        """(value, count) of one metadata key over the whole catalogue, most common first."""
        raise FeatureUnavailable(f"{type(self).__name__} does not count facets yet")

    def near_duplicate_pairs(self, threshold: float, neighbours: int) -> list[tuple[str, str]]:
        """Pairs of items scoring at least `threshold`, among each item's nearest neighbours."""
        raise FeatureUnavailable(f"{type(self).__name__} does not find duplicates yet")

    @abstractmethod
    def close(self) -> None:
        """Flush and release; the catalogue is unusable afterwards."""


def open_catalog(
    settings: Settings,
    *,
    model_id: str,
    embedding_dim: int,
    on_checked: Callable[[], None] | None = None,
) -> Catalog:
    """Open the configured backend for a model, refusing one that holds another model's vectors.

    `on_checked` is called once the catalogue has accepted the model and before
    its slow part (loading the index), so a start-up can prepare the model
    meanwhile and a refused start prepares nothing. Milvus can only check a
    loaded collection: it calls `on_checked` first and refuses after loading.
    """
    if settings.backend == "milvus":
        from app.milvus_catalog import MilvusCatalog

        if on_checked is not None:
            on_checked()
        return MilvusCatalog(settings, model_id=model_id, embedding_dim=embedding_dim)
    from app.local_catalog import LocalCatalog

    return LocalCatalog(
        settings, model_id=model_id, embedding_dim=embedding_dim, on_checked=on_checked
    )


# For each query: the hits found at a depth, and whether the index may hold more.
Fetch = Callable[[int], list[tuple[list[Hit], bool]]]


def deepen_until_k(fetch: Fetch, k: int, *, group_by_product: bool) -> list[list[Hit]]:
    """Search deeper until every query has k results (or k products), or nothing is left.

    Filters, exclusions and grouping all drop candidates after the index has
    cut its list, so a fixed depth would silently return fewer than k.
    """
    depth = k * 4 if group_by_product else k
    while True:
        rows = fetch(depth)
        picked = [_pick(hits, k, group_by_product) for hits, _ in rows]
        if all(len(p) >= k or not more for p, (_, more) in zip(picked, rows, strict=True)):
            return picked
        depth *= 4


def _pick(hits: list[Hit], k: int, group_by_product: bool) -> list[Hit]:
    if not group_by_product:
        return hits[:k]
    seen: set[str] = set()
    out: list[Hit] = []
    for hit in hits:
        group = f"p:{hit.product_id}" if hit.product_id else f"i:{hit.id}"
        if group not in seen:
            seen.add(group)
            out.append(hit)
            if len(out) == k:
                break
    return out
