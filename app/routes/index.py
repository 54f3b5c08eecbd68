"""The catalogue: add, read, delete and browse items."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.catalog import Metadata, NewItem
from app.dependencies import CatalogDep, StateDep
from app.embedding import PreparedImage
from app.errors import (
    Forbidden,
    InvalidField,
    InvalidImage,
    LookalikeError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    error_responses,
)
from app.form_fields import derive_id, parse_metadata, validate_id
from app.images import THUMBNAIL_MEDIA_TYPE
from app.routes.uploads import read_upload
from app.schemas import (
    DeleteResponse,
    IndexItemResult,
    IndexResponse,
    IndexStats,
    ItemError,
    ItemResponse,
    SearchHit,
    SearchResponse,
)
from app.security import ReadAccess, WriteAccess

router = APIRouter(prefix="/index", tags=["catalogue"])


@dataclass(frozen=True)
class _Pending:
    """An upload decoded and validated, waiting for its embedding."""

    item_id: str
    metadata: Metadata
    image: PreparedImage


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
) -> IndexResponse:
    """Embeds every file and stores it with its id and metadata.

    With one file, a bad upload is answered with its error status. With several,
    the good ones are stored, the answer is 207 and each refused item says why.
    """
    settings = state.settings
    if len(file) > settings.max_files_per_request:
        raise PayloadTooLarge(
            f"at most {settings.max_files_per_request} files per request "
            "(LOOKALIKE_MAX_FILES_PER_REQUEST)"
        )
    ids = id or []
    metas = metadata or []
    if ids and len(ids) != len(file):
        raise InvalidField(f"got {len(ids)} ids for {len(file)} files; give one per file or none")
    if len(metas) not in (0, 1, len(file)):
        raise InvalidField(f"got {len(metas)} metadata fields for {len(file)} files")
    single = len(file) == 1

    async def prepare(i: int, upload: UploadFile) -> _Pending | LookalikeError:
        try:
            data = await read_upload(upload, settings.max_file_bytes)
            item_id = validate_id(ids[i], f"id[{i}]") if ids else derive_id(data)
            meta_text = metas[i] if len(metas) == len(file) else (metas[0] if metas else None)
            meta = parse_metadata(meta_text, "metadata" if single else f"metadata[{i}]")
            image = await state.embedder.prepare_async(data, keep_copy=True)
        except LookalikeError as exc:
            if single:
                raise
            return exc
        return _Pending(item_id, meta, image)

    pending = await asyncio.gather(*(prepare(i, f) for i, f in enumerate(file)))
    good = [p for p in pending if isinstance(p, _Pending)]
    vectors = await state.embedder.embed_pixels([p.image.pixels for p in good])
    items = [
        NewItem(id=p.item_id, embedding=v, metadata=p.metadata, image=p.image.stored_copy)
        for p, v in zip(good, vectors, strict=True)
    ]
    outcomes = iter(await run_in_threadpool(state.catalog.upsert, items))
    results: list[IndexItemResult] = []
    for upload, p in zip(file, pending, strict=True):
        if isinstance(p, LookalikeError):
            error = ItemError(code=p.code, message=p.message)
            results.append(
                IndexItemResult(id=None, filename=upload.filename, status="error", error=error)
            )
        else:
            outcome = next(outcomes)
            status: Literal["created", "updated"] = "created" if outcome.created else "updated"
            results.append(IndexItemResult(id=outcome.id, filename=upload.filename, status=status))
    failed = len(file) - len(items)
    if failed:
        response.status_code = 207
    return IndexResponse(
        indexed=len(items), failed=failed, items=results, model_id=state.model.model_id
    )


@router.get("", summary="Catalogue statistics", dependencies=[ReadAccess])
async def index_stats(catalog: CatalogDep) -> IndexStats:
    stats = await run_in_threadpool(catalog.stats)
    return IndexStats(
        count=stats.count,
        embedding_dim=stats.embedding_dim,
        model_id=stats.model_id,
        backend=stats.backend,
        index_type=stats.index_type,
    )


@router.get(
    "/{item_id:path}/similar",
    summary="More like this: search by a stored item",
    dependencies=[ReadAccess],
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
        results=[SearchHit(id=h.id, score=h.score, metadata=h.metadata) for h in hits],
        k=k,
        model_id=state.model.model_id,
        took_ms=round((loop.time() - started) * 1000, 3),
    )


@router.get(
    "/{item_id:path}/image",
    summary="The kept copy of an item's image",
    dependencies=[ReadAccess],
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
    responses=error_responses(NotFound, Unauthorized, Forbidden, NotReady),
)
async def get_item(catalog: CatalogDep, item_id: ItemId) -> ItemResponse:
    item = await run_in_threadpool(catalog.get, item_id)
    if item is None:
        raise NotFound(f"no item with id {item_id!r}")
    return ItemResponse(
        id=item.id,
        metadata=item.metadata,
        product_id=item.product_id,
        model_id=item.model_id,
        created_at=item.created_at,
        updated_at=item.updated_at,
        has_image=item.has_image,
    )


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
