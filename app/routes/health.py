"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.dependencies import StateDep
from app.errors import NotReady, error_responses
from app.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: model and index loaded",
    responses=error_responses(NotReady),
)
async def readyz(state: StateDep) -> Readiness:
    stats = await run_in_threadpool(state.catalog.stats)
    return Readiness(status="ready", model_id=state.model.model_id, items=stats.count)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
