"""What one POST /index does: decode, embed, check for duplicates, upsert, report per item.

Each upload succeeds or fails on its own, so one bad photo in a batch of
thirty does not cost the other twenty-nine; only a single-file request turns
its item's error into the response status.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from app.catalog import Metadata, NewItem
from app.dependencies import AppState
from app.errors import Duplicate, InvalidField, LookalikeError, PayloadTooLarge
from app.form_fields import derive_id, parse_metadata, validate_id
from app.image_preparer import PreparedImage
from app.routes.uploads import read_upload
from app.schemas import DuplicateOf, IndexItemResult, IndexResponse, ItemError

OnDuplicate = Literal["allow", "skip", "reject"]
DUPLICATES_REPORTED = 5


@dataclass(frozen=True)
class _Pending:
    """An upload decoded and validated, waiting for its embedding."""

    item_id: str
    metadata: Metadata
    product_id: str | None
    image: PreparedImage
    duplicates: list[DuplicateOf] = field(default_factory=list)


def _per_file(values: list[str], count: int, name: str) -> list[str | None]:
    """One value per file: none given, one for all, or exactly one each."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise InvalidField(f"got {len(values)} {name} fields for {count} files")
    return list(values)


def duplicate_threshold(state: AppState) -> float:
    configured = state.settings.duplicate_threshold
    if configured is not None:
        return configured
    return state.model.duplicate_threshold or max(state.model.match_threshold, 0.95)


async def index_uploads(
    state: AppState,
    files: list[UploadFile],
    ids: list[str],
    metadata: list[str],
    product_ids: list[str],
    on_duplicate: OnDuplicate,
) -> tuple[IndexResponse, int]:
    """Index the uploads; the response body and its status (200, or 207 if any failed)."""
    settings = state.settings
    if len(files) > settings.max_files_per_request:
        raise PayloadTooLarge(
            f"at most {settings.max_files_per_request} files per request "
            "(LOOKALIKE_MAX_FILES_PER_REQUEST)"
        )
    if ids and len(ids) != len(files):
        raise InvalidField(f"got {len(ids)} ids for {len(files)} files; give one per file or none")
    metas = _per_file(metadata, len(files), "metadata")
    products = _per_file(product_ids, len(files), "product_id")
    single = len(files) == 1

    async def prepare(i: int, upload: UploadFile) -> _Pending | LookalikeError:
        try:
            data = await read_upload(upload, settings.max_file_bytes)
            item_id = validate_id(ids[i], f"id[{i}]") if ids else derive_id(data)
            meta = parse_metadata(metas[i], "metadata" if single else f"metadata[{i}]")
            product = products[i]
            if product is not None:
                product = validate_id(product, "product_id")
            image = await state.embedder.prepare_async(data, keep_copy=True)
        except LookalikeError as exc:
            if single:
                raise
            return exc
        return _Pending(item_id, meta, product, image)

    pending = await asyncio.gather(*(prepare(i, f) for i, f in enumerate(files)))
    good = [p for p in pending if isinstance(p, _Pending)]
    vectors = await state.embedder.embed_pixels([p.image.pixels for p in good])
    threshold = duplicate_threshold(state)
    neighbours = (
        await run_in_threadpool(
            lambda: state.catalog.search(vectors, DUPLICATES_REPORTED + 1, min_score=threshold)
        )
        if len(good)
        else []
    )

    outcome_of: dict[int, LookalikeError | str] = {}
    to_store: list[tuple[int, NewItem]] = []
    for position, (p, vector, hits) in enumerate(zip(good, vectors, neighbours, strict=True)):
        p.duplicates.extend(DuplicateOf(id=h.id, score=h.score) for h in hits if h.id != p.item_id)
        del p.duplicates[DUPLICATES_REPORTED:]
        if p.duplicates and on_duplicate == "reject":
            error = Duplicate(
                f"{p.item_id!r} looks like {p.duplicates[0].id!r} already in the catalogue "
                f"(score {p.duplicates[0].score:.3f} >= {threshold:.3f})"
            )
            if single:
                raise error
            outcome_of[position] = error
        elif p.duplicates and on_duplicate == "skip":
            outcome_of[position] = "skipped"
        else:
            to_store.append(
                (
                    position,
                    NewItem(
                        id=p.item_id,
                        embedding=vector,
                        metadata=p.metadata,
                        product_id=p.product_id,
                        image=p.image.stored_copy,
                    ),
                )
            )
    outcomes = await run_in_threadpool(state.catalog.upsert, [item for _, item in to_store])
    for (position, _), stored in zip(to_store, outcomes, strict=True):
        outcome_of[position] = "created" if stored.created else "updated"

    results: list[IndexItemResult] = []
    good_position = iter(range(len(good)))
    for upload, entry in zip(files, pending, strict=True):
        if isinstance(entry, LookalikeError):
            results.append(_failed(upload, None, entry))
            continue
        outcome = outcome_of[next(good_position)]
        if isinstance(outcome, LookalikeError):
            results.append(_failed(upload, entry, outcome))
        else:
            results.append(
                IndexItemResult(
                    id=entry.item_id,
                    filename=upload.filename,
                    status=outcome,
                    duplicates=entry.duplicates,
                )
            )
    failed = sum(r.status == "error" for r in results)
    body = IndexResponse(
        indexed=len(to_store), failed=failed, items=results, model_id=state.model.model_id
    )
    return body, (207 if failed else 200)


def _failed(upload: UploadFile, pending: _Pending | None, error: LookalikeError) -> IndexItemResult:
    return IndexItemResult(
        id=pending.item_id if pending else None,
        filename=upload.filename,
        status="error",
        error=ItemError(code=error.code, message=error.message),
        duplicates=pending.duplicates if pending else [],
    )
