"""Products: the several photos of one product, read and removed together."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from app.dependencies import CatalogDep
from app.errors import Forbidden, NotFound, NotReady, Unauthorized, error_responses
from app.schemas import ItemResponse, ProductDeleteResponse, ProductResponse
from app.security import READ_SECURITY_DOC, ReadAccess, WriteAccess

router = APIRouter(prefix="/products", tags=["catalogue"])

ProductId = Annotated[str, Path(description="The product id given at index time.")]


@router.get(
    "/{product_id:path}",
    summary="A product's images",
    dependencies=[ReadAccess],
    openapi_extra=READ_SECURITY_DOC,
    responses=error_responses(NotFound, Unauthorized, Forbidden, NotReady),
)
async def get_product(catalog: CatalogDep, product_id: ProductId) -> ProductResponse:
    items = await run_in_threadpool(catalog.product_items, product_id)
    if not items:
        raise NotFound(f"no images of product {product_id!r}")
    return ProductResponse(product_id=product_id, items=[ItemResponse.of(i) for i in items])


@router.delete(
    "/{product_id:path}",
    summary="Delete all images of a product, in one transaction",
    dependencies=[WriteAccess],
    responses=error_responses(NotFound, Unauthorized, Forbidden, NotReady),
)
async def delete_product(catalog: CatalogDep, product_id: ProductId) -> ProductDeleteResponse:
    deleted = await run_in_threadpool(catalog.delete_product, product_id)
    if not deleted:
        raise NotFound(f"no images of product {product_id!r}")
    return ProductDeleteResponse(product_id=product_id, deleted=deleted)
