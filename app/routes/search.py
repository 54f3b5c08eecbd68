"""Search the catalogue with an image, and compare two images."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field

from app.dependencies import AppState, StateDep, UngatedStateDep
from app.errors import (
    Forbidden,
    InvalidField,
    InvalidImage,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    error_responses,
)
from app.form_fields import parse_filter
from app.pipeline import SearchOptions
from app.regions import parse_box
from app.routes.form_body import openapi_body, validate_form
from app.routes.uploads import read_upload
from app.schemas import SearchHit, SearchResponse, SimilarityResponse
from app.security import READ_SECURITY_DOC, ReadAccess

router = APIRouter(tags=["search"])

BOX_DESCRIPTION = (
    "Embed only this region: `x0,y0,x1,y1` in pixels of the upright image, or as "
    "fractions of its width and height when all four are between 0 and 1."
)
BOX_EXAMPLES = ["0.1,0.2,0.6,0.9", "40,60,360,420"]
BOX_FIELD = Form(description=BOX_DESCRIPTION, examples=BOX_EXAMPLES)

IMAGE_ERRORS = error_responses(
    InvalidImage,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidField,
    Unauthorized,
    Forbidden,
    NotReady,
)


class SearchFields(BaseModel):
    """`/search`'s text fields (the image is the `file` part)."""

    k: int = Field(10, ge=1, le=100, description="How many results (1-100).")
    min_score: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Drop results scoring below this cosine similarity.",
    )
    filter: str | None = Field(
        None,
        description="Exact metadata matches as a JSON object; k results still come back "
        "when k items match.",
        examples=['{"category": "shoes"}'],
    )
    group_by: Literal["product"] | None = Field(
        None,
        description="`product`: the best image per product, k products (items without a "
        "product_id count as their own product).",
    )
    box: str | None = Field(None, description=BOX_DESCRIPTION, examples=BOX_EXAMPLES)


SEARCH_FILES = {"file": "The query image."}


@router.post(
    "/search",
    summary="Find catalogue items that look like an image",
    dependencies=[ReadAccess],
    responses=IMAGE_ERRORS,
    response_model=SearchResponse,
    openapi_extra={**READ_SECURITY_DOC, **openapi_body(SearchFields, files=SEARCH_FILES)},
)
async def search(state: UngatedStateDep, request: Request) -> Response:
    # The busiest endpoint: its body is read here rather than declared as Form()
    # parameters (app/routes/form_body.py), and it holds the serving gate itself
    # rather than through StateDep's generator dependency (app/dependencies.py).
    async with state.gate.use():
        return await _search(state, request)


async def _search(state: AppState, request: Request) -> Response:
    started = time.perf_counter()
    async with request.form() as form:
        fields, uploads = validate_form(form, SearchFields, files=SEARCH_FILES)
        options = SearchOptions(
            fields.k,
            min_score=fields.min_score,
            metadata_filter=parse_filter(fields.filter),
            group_by_product=fields.group_by == "product",
        )
        region = parse_box(fields.box)
        data = await read_upload(uploads["file"], state.settings.max_file_bytes)
    hits = await state.embedder.search(data, options, region)
    body = SearchResponse(
        results=[SearchHit.of(h) for h in hits],
        k=fields.k,
        model_id=state.model.model_id,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    # Serialised here, once: returned as a model, it would be validated again
    # before serialising, on the event loop of the busiest endpoint (~40 us).
    return Response(body.model_dump_json(), media_type="application/json")


@router.post(
    "/similarity",
    summary="Score two images and say whether they show the same thing",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    responses=IMAGE_ERRORS,
)
async def similarity(
    state: StateDep,
    file_a: Annotated[UploadFile, File(description="First image.")],
    file_b: Annotated[UploadFile, File(description="Second image.")],
    threshold: Annotated[
        float | None,
        Form(
            ge=-1.0,
            le=1.0,
            description="Override the model's calibrated match threshold for this request.",
        ),
    ] = None,
    box: Annotated[str | None, BOX_FIELD] = None,
    box_b: Annotated[str | None, Form(description="A box in `file_b`, like `box`.")] = None,
) -> SimilarityResponse:
    """`box` crops `file_a` (the query); `box_b` crops `file_b`."""
    limit = state.settings.max_file_bytes
    region_a, region_b = parse_box(box), parse_box(box_b)
    data_a, data_b = await read_upload(file_a, limit), await read_upload(file_b, limit)
    image_a, image_b = await asyncio.gather(
        state.embedder.prepare_async(data_a, box=region_a),
        state.embedder.prepare_async(data_b, box=region_b),
    )
    vectors = await state.embedder.embed_pixels([image_a.pixels, image_b.pixels])
    score = float(min(1.0, max(-1.0, float(vectors[0] @ vectors[1]))))
    used = state.model.match_threshold if threshold is None else threshold
    return SimilarityResponse(
        score=score, match=score >= used, threshold=used, model_id=state.model.model_id
    )
