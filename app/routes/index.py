"""The catalogue: add, read, delete and browse items."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.dependencies import CatalogDep, StateDep
from app.errors import (
    Forbidden,
    InvalidField,
    InvalidImage,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    error_responses,
)
from app.images import THUMBNAIL_MEDIA_TYPE
from app.indexing import OnDuplicate, index_uploads
from app.schemas import (
    DeleteResponse,
    FacetsResponse,
    FacetValue,
    IndexResponse,
    IndexStats,
    ItemResponse,
    ReindexState,
    SearchHit,
    SearchResponse,
)
from app.security import READ_SECURITY_DOC, ReadAccess, WriteAccess

router = APIRouter(prefix="/index", tags=["catalogue"])


ItemId = Annotated[str, Path(description="The item's id (any Unicode, 1-256 characters).")]


@router.post(
    "",
    summary="Index one or many images (upsert by id)",
    dependencies=[WriteAccess],
    responses={
        207: {"model": IndexResponse, "description": "Some items were stored, some refused."},
        **error_responses(
            InvalidImage,
            Unauthorized,
            Forbidden,
            PayloadTooLarge,
            UnsupportedMediaType,
            InvalidField,
            NotReady,
        ),
    },
)
async def index_images(
    state: StateDep,
    response: Response,
    file: Annotated[
        list[UploadFile],
        File(description="One or more images (repeat the field). JPEG, PNG, WebP, GIF, BMP, TIFF."),
    ],
    id: Annotated[
        list[str] | None,
        Form(
            description="Ids, one per file in the same order; omit to derive each id from the "
            "image bytes (`sha256:...`). Re-using an id replaces that item."
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        Form(
            description="JSON objects, one per file in the same order, or a single one for all.",
            examples=['{"name": "red shoe", "category": "shoes"}'],
        ),
    ] = None,
    product_id: Annotated[
        list[str] | None,
        Form(
            description="The product each image shows (one per file, or one for all); a "
            "product has many images and `group_by=product` searches return one per product.",
        ),
    ] = None,
    on_duplicate: Annotated[
        OnDuplicate,
        Form(
            description="What to do with an upload that nearly duplicates a catalogue item "
            "(score >= the model's duplicate threshold): `allow` stores it and reports the "
            "duplicates, `skip` does not store it, `reject` refuses it with 409."
        ),
    ] = "allow",
) -> IndexResponse:
    """Embeds every file and stores it with its id and metadata.

    With one file, a bad upload is answered with its error status. With several,
    the good ones are stored, the answer is 207 and each refused item says why.
    Every item lists the catalogue items it nearly duplicates.
    """
    body, status = await index_uploads(
        state, file, id or [], metadata or [], product_id or [], on_duplicate
    )
    response.status_code = status
    return body


@router.get(
    "",
    summary="Catalogue statistics and reindex progress",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
)
async def index_stats(state: StateDep) -> IndexStats:
    stats = await run_in_threadpool(state.catalog.stats)
    reindex = state.reindex.status if state.reindex is not None else None
    return IndexStats(
        **dataclasses.asdict(stats),
        reindex=ReindexState.model_validate(reindex) if reindex is not None else None,
    )


@router.get(
    "/facets",
    summary="Values of a metadata key with their counts",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    responses=error_responses(InvalidField, Unauthorized, Forbidden, NotReady),
)
async def facets(
    catalog: CatalogDep,
    key: Annotated[str, Query(min_length=1, max_length=256, description="Metadata key.")],
    limit: Annotated[int, Query(ge=1, le=1000, description="Most values returned.")] = 100,
) -> FacetsResponse:
    """Counts come from an index of metadata values, so they cost one indexed query."""
    values = await run_in_threadpool(catalog.facets, key, limit)
    return FacetsResponse(
        key=key,
        values=[FacetValue(value=v, count=n) for v, n in values],
    )


@router.get(
    "/{item_id:path}/similar",
    summary="More like this: search by a stored item",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    responses=error_responses(NotFound, InvalidField, Unauthorized, Forbidden, NotReady),
)
async def similar_items(
    state: StateDep,
    item_id: ItemId,
    k: Annotated[int, Query(ge=1, le=100, description="How many results.")] = 10,
) -> SearchResponse:
    loop = asyncio.get_running_loop()
    started = loop.time()
    vector = await run_in_threadpool(state.catalog.get_embedding, item_id)
    if vector is None:
        raise NotFound(f"no item with id {item_id!r}")
    hits = await run_in_threadpool(
        lambda: state.catalog.search(vector[None, :], k, exclude_ids=[item_id])[0]
    )
    return SearchResponse(
        results=[SearchHit.of(h) for h in hits],
        k=k,
        model_id=state.model.model_id,
        took_ms=round((loop.time() - started) * 1000, 3),
    )


@router.get(
    "/{item_id:path}/image",
    summary="The kept copy of an item's image",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    response_class=Response,
    responses={
        200: {"content": {THUMBNAIL_MEDIA_TYPE: {}}, "description": "The stored copy."},
        **error_responses(NotFound, Unauthorized, Forbidden, NotReady),
    },
)
async def item_image(catalog: CatalogDep, item_id: ItemId) -> Response:
    data = await run_in_threadpool(catalog.get_image, item_id)
    if data is None:
        raise NotFound(f"no stored image for id {item_id!r}")
    return Response(
        data, media_type=THUMBNAIL_MEDIA_TYPE, headers={"Cache-Control": "private, max-age=60"}
    )


@router.get(
    "/{item_id:path}",
    summary="One item's metadata",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    responses=error_responses(NotFound, Unauthorized, Forbidden, NotReady),
)
async def get_item(catalog: CatalogDep, item_id: ItemId) -> ItemResponse:
    item = await run_in_threadpool(catalog.get, item_id)
    if item is None:
        raise NotFound(f"no item with id {item_id!r}")
    return ItemResponse.of(item)


@router.delete(
    "/{item_id:path}",
    summary="Delete an item",
    dependencies=[WriteAccess],
    responses=error_responses(NotFound, Unauthorized, Forbidden, NotReady),
)
async def delete_item(catalog: CatalogDep, item_id: ItemId) -> DeleteResponse:
    if not await run_in_threadpool(catalog.delete, item_id):
        raise NotFound(f"no item with id {item_id!r}")
    return DeleteResponse(id=item_id)
