"""The per-app state built by the lifespan, and typed dependencies that hand it to routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.batcher import MicroBatcher
from app.catalog import Catalog
from app.config import Settings
from app.embedding import ImageEmbedder
from app.encoder import Encoder
from app.errors import NotReady
from app.model_bundle import ModelInfo
from app.observability import Metrics


@dataclass
class AppState:
    settings: Settings
    model: ModelInfo
    encoder: Encoder
    catalog: Catalog
    embedder: ImageEmbedder
    metrics: Metrics
    pool: ThreadPoolExecutor
    batcher: MicroBatcher
    model_pool: ThreadPoolExecutor
    ready: bool = True


def get_state(request: Request) -> AppState:
    state: AppState | None = getattr(request.app.state, "lookalike", None)
    if state is None or not state.ready:
        raise NotReady("the service is starting or stopping; retry shortly")
    return state


def get_catalog(request: Request) -> Catalog:
    return get_state(request).catalog


def get_embedder(request: Request) -> ImageEmbedder:
    return get_state(request).embedder


def get_model(request: Request) -> ModelInfo:
    return get_state(request).model


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StateDep = Annotated[AppState, Depends(get_state)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
EmbedderDep = Annotated[ImageEmbedder, Depends(get_embedder)]
ModelDep = Annotated[ModelInfo, Depends(get_model)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
