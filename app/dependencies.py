"""The per-app state built by the lifespan, and typed dependencies that hand it to routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from app.catalog import Catalog
from app.config import Settings
from app.embed_worker import BatchEmbedder
from app.embedding import ImageEmbedder
from app.errors import NotReady
from app.model_bundle import ModelInfo
from app.observability import Metrics
from app.serving_gate import ServingGate

if TYPE_CHECKING:
    from app.online_reindex import OnlineReindex


@dataclass
class AppState:
    settings: Settings
    model: ModelInfo
    embed: BatchEmbedder
    catalog: Catalog
    embedder: ImageEmbedder
    metrics: Metrics
    pool: ThreadPoolExecutor
    gate: ServingGate = field(default_factory=ServingGate)
    reindex: OnlineReindex | None = None
    ready: bool = True


async def get_state(request: Request) -> AsyncIterator[AppState]:
    """The app's state, held through the serving gate for the whole request."""
    state = await get_ungated_state(request)
    async with state.gate.use():
        yield state


async def get_ungated_state(request: Request) -> AppState:
    """The app's state for a route that enters `state.gate.use()` itself.

    FastAPI runs a generator dependency through an exit stack of its own;
    a route doing it in its body saves that on every request (about 50 us
    of the event loop's time per `/search`, benchmarks/RESULTS.md).
    """
    state: AppState | None = getattr(request.app.state, "lookalike", None)
    if state is None or not state.ready:
        raise NotReady("the service is starting or stopping; retry shortly")
    return state


def get_catalog(state: Annotated[AppState, Depends(get_state)]) -> Catalog:
    return state.catalog


def get_embedder(state: Annotated[AppState, Depends(get_state)]) -> ImageEmbedder:
    return state.embedder


def get_model(state: Annotated[AppState, Depends(get_state)]) -> ModelInfo:
    return state.model


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StateDep = Annotated[AppState, Depends(get_state)]
UngatedStateDep = Annotated[AppState, Depends(get_ungated_state)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
EmbedderDep = Annotated[ImageEmbedder, Depends(get_embedder)]
ModelDep = Annotated[ModelInfo, Depends(get_model)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
