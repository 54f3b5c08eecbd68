"""Near-identical images across the whole catalogue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from app.dependencies import StateDep
from app.duplicates import clusters
from app.errors import Forbidden, InvalidField, NotReady, Unauthorized, error_responses
from app.indexing import duplicate_threshold
from app.schemas import DuplicateCluster, DuplicatesResponse
from app.security import READ_SECURITY_DOC, ReadAccess

router = APIRouter(tags=["catalogue"])


@router.get(
    "/duplicates",
    summary="Clusters of near-identical images",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    responses=error_responses(InvalidField, Unauthorized, Forbidden, NotReady),
)
async def duplicates(
    state: StateDep,
    threshold: Annotated[
        float | None,
        Query(
            ge=-1.0,
            le=1.0,
            description="Score at which two images count as copies; default: the model's "
            "calibrated duplicate threshold.",
        ),
    ] = None,
    neighbours: Annotated[
        int, Query(ge=1, le=256, description="Neighbours examined per image.")
    ] = 16,
    page: Annotated[int, Query(ge=1, description="Page number, from 1.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=500, description="Clusters per page.")] = 50,
) -> DuplicatesResponse:
    """Connected components over each image's close neighbours, found by the index's own k-NN
    search; cost grows with the catalogue (see benchmarks/RESULTS.md)."""
    used = duplicate_threshold(state) if threshold is None else threshold
    pairs = await run_in_threadpool(state.catalog.near_duplicate_pairs, used, neighbours)
    found = clusters(pairs)
    start = (page - 1) * page_size
    return DuplicatesResponse(
        threshold=used,
        clusters=[DuplicateCluster(ids=c, size=len(c)) for c in found[start : start + page_size]],
        total=len(found),
        page=page,
        page_size=page_size,
    )
