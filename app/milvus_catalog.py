"""The `milvus` backend: a Milvus collection is the truth and answers the searches.

An API process keeps no rows and no index of its own, so any number of replicas
can share one collection; every read asks for Strong consistency, so a replica
sees each write that any replica has acknowledged. Each row carries the model_id
of its embedding: that is how a process started with another model notices the
collection is not its to extend.

Milvus has no blob type, so the kept image copy is stored base64-encoded in a
VARCHAR (at most 65,535 bytes); a copy that does not fit is re-encoded at a
lower JPEG quality, then smaller, until it does.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pymilvus import DataType, MilvusClient, MilvusException

from app.catalog import (
    Catalog,
    CatalogStats,
    Hit,
    MetadataFilter,
    NewItem,
    StoredItem,
    UpsertOutcome,
    deepen_until_k,
)
from app.config import Settings
from app.errors import InvalidField, ModelMismatch
from app.milvus_filters import (
    all_of,
    field_in,
    matches,
    metadata_expression,
    string_literal,
)

log = logging.getLogger("lookalike.catalog")

ID_MAX_BYTES = 1024  # 256 characters of up to 4 UTF-8 bytes each
TEXT_MAX_BYTES = 1024
MODEL_ID_MAX_BYTES = 128
TIME_MAX_BYTES = 32
IMAGE_MAX_BYTES = 65_535
MAX_LIMIT = 16_384  # Milvus' largest topk
SCAN_PAGE = 1024
STRONG = "Strong"
ITEM_FIELDS = ["id", "metadata", "product_id", "model_id", "created_at", "updated_at", "has_image"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_object(text: str, setting: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidField(f"{setting} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidField(f"{setting} must be a JSON object")
    return value


def reindex_hint(settings: Settings) -> str:
    # `reindex` works on a local catalogue; a collection is re-filled from one.
    return (
        "re-embed the local catalogue with "
        f"`python -m app reindex --model {settings.model_dir}` and copy it into a new "
        "collection with `python -m app migrate --to milvus`, or set "
        "LOOKALIKE_MILVUS_COLLECTION to another collection"
    )


def encode_image(jpeg: bytes, limit: int = IMAGE_MAX_BYTES) -> str:
    """Base64 of the kept JPEG, re-encoded smaller when the VARCHAR cannot hold it."""
    text = base64.b64encode(jpeg).decode("ascii")
    if len(text) <= limit:
        return text
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25, 0.125):
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resized = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        for quality in (80, 65, 50):
            out = io.BytesIO()
            resized.save(out, "JPEG", quality=quality)
            text = base64.b64encode(out.getvalue()).decode("ascii")
            if len(text) <= limit:
                log.debug("kept copy re-encoded to fit Milvus: %s q%d", size, quality)
                return text
    raise InvalidField("the kept image copy does not fit in a Milvus VARCHAR")


def _check_integers(value: object) -> None:
    """Milvus' JSON holds 64-bit integers only; larger ones would fail the whole batch."""
    if isinstance(value, dict):
        for inner in value.values():
            _check_integers(inner)
    elif isinstance(value, list):
        for inner in value:
            _check_integers(inner)
    elif isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise InvalidField("metadata integers must fit in 64 bits with the milvus backend")


def _exact(
    found: Sequence[Any],
    limit: int,
    min_score: float | None,
    metadata_filter: MetadataFilter | None,
) -> tuple[list[Hit], bool]:
    """Milvus' hits that truly qualify, and whether a deeper search could find more."""
    hits: list[Hit] = []
    for hit in found:
        score = float(hit["distance"])
        if min_score is not None and score < min_score:
            return hits, False
        metadata = dict(hit["entity"].get("metadata") or {})
        if metadata_filter and not matches(metadata, metadata_filter):
            continue
        hits.append(
            Hit(
                id=str(hit["id"]),
                score=score,
                metadata=metadata,
                product_id=hit["entity"].get("product_id"),
            )
        )
    return hits, len(found) == limit < MAX_LIMIT


def _stored(row: dict[str, Any]) -> StoredItem:
    return StoredItem(
        id=row["id"],
        metadata=dict(row["metadata"] or {}),
        product_id=row["product_id"],
        model_id=row["model_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        has_image=bool(row["has_image"]),
    )


def _facet(value: object) -> tuple[int, object] | None:
    """A scalar's facet, numbers of equal value together (1 and 1.0), as the local backend."""
    if value is None or isinstance(value, bool):
        return 0, value
    if isinstance(value, int | float):
        return 1, value
    if isinstance(value, str):
        return 2, value
    return None


class MilvusCatalog(Catalog):
    """A Milvus collection (a server, or Milvus Lite for a `.db` URI) as the catalogue."""

    def __init__(self, settings: Settings, *, model_id: str, embedding_dim: int) -> None:
        self._settings = settings
        self._dim = embedding_dim
        self._model_id = model_id
        self._name = settings.milvus_collection
        self._index_params = _json_object(
            settings.milvus_index_params, "LOOKALIKE_MILVUS_INDEX_PARAMS"
        )
        self._search_params = _json_object(
            settings.milvus_search_params, "LOOKALIKE_MILVUS_SEARCH_PARAMS"
        )
        if settings.milvus_uri.endswith(".db"):
            Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        self._client = MilvusClient(uri=settings.milvus_uri, token=settings.milvus_token)
        try:
            self._open_collection()
            self._check_model()
        except BaseException:
            self._client.close()
            raise

    # start-up ---------------------------------------------------------------

    def _schema(self) -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_BYTES, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self._dim)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("product_id", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, nullable=True)
        schema.add_field("model_id", DataType.VARCHAR, max_length=MODEL_ID_MAX_BYTES)
        schema.add_field("created_at", DataType.VARCHAR, max_length=TIME_MAX_BYTES)
        schema.add_field("updated_at", DataType.VARCHAR, max_length=TIME_MAX_BYTES)
        schema.add_field("has_image", DataType.BOOL)
        schema.add_field("image", DataType.VARCHAR, max_length=IMAGE_MAX_BYTES, nullable=True)
        return schema

    def _open_collection(self) -> None:
        index = self._client.prepare_index_params()
        index.add_index(
            "embedding",
            index_type=self._settings.milvus_index_type,
            metric_type="IP",
            params=self._index_params,
        )
        if not self._client.has_collection(self._name):
            try:
                self._client.create_collection(
                    self._name,
                    schema=self._schema(),
                    consistency_level=STRONG,
                    description="Lookalike catalogue: image embeddings (IP on unit vectors)",
                )
                log.info("created Milvus collection %r", self._name)
            except MilvusException:
                if not self._client.has_collection(self._name):  # another replica won the race
                    raise
        if not self._client.list_indexes(self._name, field_name="embedding"):
            try:
                # Nothing to build in a new collection; pymilvus' wait would only sleep.
                self._client.create_index(self._name, index, sync=False)
            except MilvusException:
                if not self._client.list_indexes(self._name, field_name="embedding"):
                    raise
        # What the collection was built with, which may predate today's settings.
        index_name = self._client.list_indexes(self._name, field_name="embedding")[0]
        described = self._client.describe_index(self._name, index_name)
        self._index_type = str(described.get("index_type", self._settings.milvus_index_type))
        fields = {f["name"]: f for f in self._client.describe_collection(self._name)["fields"]}
        dim = int(fields.get("embedding", {}).get("params", {}).get("dim", -1))
        if dim != self._dim or not set(ITEM_FIELDS) <= set(fields):
            raise ModelMismatch(
                f"Milvus collection {self._name!r} was not made by Lookalike for "
                f"{self._dim}-dimensional embeddings (it has dim {dim}); "
                "set LOOKALIKE_MILVUS_COLLECTION to another collection"
            )
        self._client.load_collection(self._name)

    def _check_model(self) -> None:
        other = self._client.query(
            self._name,
            filter=f"model_id != {string_literal(self._model_id)}",
            output_fields=["model_id"],
            limit=1,
            consistency_level=STRONG,
        )
        if other:
            count = self._count()
            raise ModelMismatch(
                f"the catalogue in Milvus collection {self._name!r} holds {count} embeddings "
                f"made by model {str(other[0]['model_id'])[:12]}, but the service loads model "
                f"{self._model_id[:12]} from {self._settings.model_dir}; embeddings of two "
                "models cannot be mixed: " + reindex_hint(self._settings)
            )

    # helpers ----------------------------------------------------------------

    def _query(self, expression: str, fields: list[str]) -> list[dict[str, Any]]:
        return list(
            self._client.query(
                self._name, filter=expression, output_fields=fields, consistency_level=STRONG
            )
        )

    def _one(self, item_id: str, fields: list[str]) -> dict[str, Any] | None:
        rows = self._query(f"id == {string_literal(item_id)}", fields)
        return rows[0] if rows else None

    def _count(self) -> int:
        rows = self._query("", ["count(*)"])
        return int(rows[0]["count(*)"])

    def _search_params_for(self, limit: int, min_score: float | None) -> dict[str, Any]:
        params = dict(self._search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), limit)  # HNSW needs ef >= topk
        if min_score is not None:
            # Milvus' radius is an exclusive bound; the exact cut happens on the hits.
            params["radius"] = min_score - 1e-6
        return {"metric_type": "IP", "params": params}

    # the interface ----------------------------------------------------------

    @property
    def model_id(self) -> str | None:
        return self._model_id

    def upsert(self, items: Sequence[NewItem]) -> list[UpsertOutcome]:
        if not items:
            return []
        unique_ids = list(dict.fromkeys(i.id for i in items))
        created_at = {
            r["id"]: r["created_at"]
            for r in self._query(field_in("id", unique_ids), ["id", "created_at"])
        }
        now = _now()
        outcomes: list[UpsertOutcome] = []
        rows: dict[str, dict[str, Any]] = {}
        for item in items:
            outcomes.append(UpsertOutcome(id=item.id, created=item.id not in created_at))
            created_at.setdefault(item.id, now)
            # Last write wins when one request repeats an id.
            rows[item.id] = self._row(item, created_at[item.id], now)
        self._client.upsert(self._name, list(rows.values()))
        return outcomes

    def restore(self, items: Sequence[NewItem], stamps: Sequence[tuple[str, str]]) -> None:
        """Write items with the (created_at, updated_at) they had elsewhere, for a migration."""
        rows = [self._row(i, *stamp) for i, stamp in zip(items, stamps, strict=True)]
        if rows:
            self._client.upsert(self._name, rows)

    def updated_at(self, item_ids: Sequence[str]) -> dict[str, str]:
        """When each id that is here was last written; the ids absent are missing."""
        if not item_ids:
            return {}
        rows = self._query(field_in("id", item_ids), ["id", "updated_at"])
        return {r["id"]: r["updated_at"] for r in rows}

    def _row(self, item: NewItem, created_at: str, updated_at: str) -> dict[str, Any]:
        vector = np.asarray(item.embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self._dim:
            raise InvalidField(f"embeddings must have {self._dim} dimensions")
        _check_integers(item.metadata)
        return {
            "id": item.id,
            "embedding": vector.tolist(),
            "metadata": item.metadata,
            "product_id": item.product_id,
            "model_id": self._model_id,
            "created_at": created_at,
            "updated_at": updated_at,
            "has_image": item.image is not None,
            "image": None if item.image is None else encode_image(item.image),
        }

    def delete(self, item_id: str) -> bool:
        if self._one(item_id, ["id"]) is None:
            return False
        self._client.delete(self._name, filter=f"id == {string_literal(item_id)}")
        return True

    def get(self, item_id: str) -> StoredItem | None:
        row = self._one(item_id, ITEM_FIELDS)
        return None if row is None else _stored(row)

    def get_embedding(self, item_id: str) -> np.ndarray | None:
        row = self._one(item_id, ["embedding"])
        return None if row is None else np.asarray(row["embedding"], dtype=np.float32)

    def get_image(self, item_id: str) -> bytes | None:
        row = self._one(item_id, ["image"])
        if row is None or not row["image"]:
            return None
        return base64.b64decode(row["image"])

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
        vectors = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self._dim).tolist()
        expression = all_of(
            metadata_expression(metadata_filter) if metadata_filter else "",
            field_in("id", exclude_ids, negate=True) if exclude_ids else "",
        )

        def fetch(depth: int) -> list[tuple[list[Hit], bool]]:
            limit = min(depth, MAX_LIMIT)
            found = self._client.search(
                self._name,
                data=vectors,
                limit=limit,
                filter=expression,
                output_fields=["metadata", "product_id"],
                search_params=self._search_params_for(limit, min_score),
                consistency_level=STRONG,
            )
            return [_exact(hits, limit, min_score, metadata_filter) for hits in found]

        return deepen_until_k(fetch, k, group_by_product=group_by_product)

    def product_items(self, product_id: str) -> list[StoredItem]:
        rows = self._query(f"product_id == {string_literal(product_id)}", ITEM_FIELDS)
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [_stored(r) for r in rows]

    def delete_product(self, product_id: str) -> list[str]:
        expression = f"product_id == {string_literal(product_id)}"
        ids = [str(r["id"]) for r in self._query(expression, ["id"])]
        if ids:
            self._client.delete(self._name, filter=expression)
        return ids

    def _scan(self, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        """Every row, in pages; for whole-catalogue jobs, not requests."""
        pages = self._client.query_iterator(
            self._name,
            batch_size=SCAN_PAGE,
            output_fields=fields,
            consistency_level=STRONG,
        )
        try:
            while rows := pages.next():
                yield rows
        finally:
            pages.close()

    def facets(self, key: str, limit: int) -> list[tuple[object, int]]:
        counts: Counter[tuple[int, object]] = Counter()
        # Not narrowed by `exists`: Milvus Lite's would skip keys holding null.
        for rows in self._scan(["metadata"]):
            for row in rows:
                metadata = row["metadata"] or {}
                if key in metadata:
                    facet = _facet(metadata[key])
                    if facet is not None:
                        counts[facet] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0], str(kv[0][1])))
        return [(value, n) for (_, value), n in ranked[:limit]]

    def near_duplicate_pairs(self, threshold: float, neighbours: int) -> list[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        for rows in self._scan(["id", "embedding"]):
            found = self._client.search(
                self._name,
                data=[r["embedding"] for r in rows],
                limit=min(neighbours + 1, MAX_LIMIT),
                search_params=self._search_params_for(neighbours + 1, threshold),
                consistency_level=STRONG,
            )
            for row, hits in zip(rows, found, strict=True):
                for hit in hits:
                    other = str(hit["id"])
                    if other != row["id"] and float(hit["distance"]) >= threshold:
                        pairs.add((min(row["id"], other), max(row["id"], other)))
        return sorted(pairs)

    def stats(self) -> CatalogStats:
        return CatalogStats(
            count=self._count(),
            embedding_dim=self._dim,
            model_id=self._model_id,
            backend="milvus",
            index_type=self._index_type,
        )

    def close(self) -> None:
        self._client.close()
