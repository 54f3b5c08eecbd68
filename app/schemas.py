"""Response bodies, with the descriptions and examples that /docs shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.catalog import Hit, StoredItem


class ItemError(BaseModel):
    code: str = Field(description="Machine-readable error code.", examples=["invalid_image"])
    message: str = Field(description="What went wrong, for people.")


class DuplicateOf(BaseModel):
    id: str = Field(description="A catalogue item this upload nearly duplicates.")
    score: float = Field(description="Their cosine similarity.")


class IndexItemResult(BaseModel):
    id: str | None = Field(description="The item's id (derived from the bytes when not given).")
    filename: str | None = Field(None, description="The uploaded file's name, if it had one.")
    status: Literal["created", "updated", "skipped", "error"] = Field(
        description="`created` for a new id, `updated` when it replaced an item, `skipped` "
        "when `on_duplicate=skip` kept it out, `error` if it was refused."
    )
    error: ItemError | None = Field(None, description="Why this item was not stored.")
    duplicates: list[DuplicateOf] = Field(
        default_factory=list,
        description="Items already in the catalogue scoring at least the model's "
        "duplicate threshold against this upload, best first.",
    )


class IndexResponse(BaseModel):
    indexed: int = Field(description="Items stored by this request.")
    failed: int = Field(description="Items refused; see `items` for why.")
    items: list[IndexItemResult] = Field(description="One entry per uploaded file, in order.")
    model_id: str = Field(description="The model that embedded them.")


class SearchHit(BaseModel):
    id: str = Field(examples=["sku-1"])
    product_id: str | None = Field(None, description="The product the image shows, if given.")
    score: float = Field(
        description="Cosine similarity in [-1, 1]; higher is more similar.", examples=[0.97]
    )
    metadata: dict[str, Any] = Field(description="The metadata stored with the item.")

    @classmethod
    def of(cls, hit: Hit) -> SearchHit:
        # Float rounding can put an identical image's score a hair above 1.
        score = min(1.0, max(-1.0, hit.score))
        return cls(id=hit.id, product_id=hit.product_id, score=score, metadata=hit.metadata)


class SearchResponse(BaseModel):
    results: list[SearchHit] = Field(description="Best match first.")
    k: int = Field(description="How many results were asked for.")
    model_id: str
    took_ms: float = Field(description="Server-side time for the search, in milliseconds.")


class SimilarityResponse(BaseModel):
    score: float = Field(description="Cosine similarity of the two images, in [-1, 1].")
    match: bool = Field(description="Whether score >= threshold.")
    threshold: float = Field(
        description="The threshold used: the model's calibrated match_threshold unless overridden."
    )
    model_id: str


class ItemResponse(BaseModel):
    id: str
    metadata: dict[str, Any]
    product_id: str | None = None
    model_id: str = Field(description="The model whose embedding is stored for this item.")
    created_at: str = Field(description="ISO 8601 UTC time the id was first indexed.")
    updated_at: str = Field(description="ISO 8601 UTC time of the last upsert.")
    has_image: bool = Field(description="Whether a kept copy is served at /index/{id}/image.")

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, item: StoredItem) -> ItemResponse:
        return cls.model_validate(item)


class DeleteResponse(BaseModel):
    id: str
    deleted: bool = True


class ReindexState(BaseModel):
    phase: str = Field(
        description="`embedding`, `building`, `switching`, `done` or `failed`.", examples=["done"]
    )
    model_dir: str
    model_id: str | None = Field(description="The new model's id, once read.")
    total: int = Field(description="Items to re-embed when it started.")
    done: int
    failed: int = Field(description="Kept copies that could not be decoded.")
    error: str | None = None

    model_config = ConfigDict(from_attributes=True)


class IndexStats(BaseModel):
    count: int = Field(description="Items in the catalogue.")
    embedding_dim: int
    model_id: str | None
    backend: str = Field(description="`local` (SQLite + FAISS) or `milvus`.")
    index_type: str = Field(description="Vector index in use, e.g. `flat` or `hnsw`.")
    reindex: ReindexState | None = Field(
        None, description="The last online reindex started since the service started."
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    model_id: str
    items: int


class ProductResponse(BaseModel):
    product_id: str
    items: list[ItemResponse] = Field(description="The product's images, oldest first.")


class ProductDeleteResponse(BaseModel):
    product_id: str
    deleted: list[str] = Field(description="Ids of the images removed.")


class FacetValue(BaseModel):
    value: Any
    count: int


class FacetsResponse(BaseModel):
    key: str
    values: list[FacetValue] = Field(description="Most common first.")


class DuplicateCluster(BaseModel):
    ids: list[str]
    size: int


class DuplicatesResponse(BaseModel):
    threshold: float = Field(
        description="Cosine similarity at or above which images count as copies."
    )
    clusters: list[DuplicateCluster] = Field(description="Largest first.")
    total: int = Field(description="Clusters in the whole catalogue.")
    page: int
    page_size: int
