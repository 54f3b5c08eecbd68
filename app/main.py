"""The FastAPI application: built per call, its state created in the lifespan.

Nothing here lives at module level, so every test (and every replica) gets a
fresh app with its own catalogue, encoder and metrics.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from app.catalog import open_catalog
from app.catalog_store import peek_meta
from app.config import Settings
from app.dependencies import AppState
from app.embed_worker import BatchEmbedder, start_embedder
from app.embedding import ImageEmbedder
from app.encoder import serving_threads
from app.errors import ModelDirectoryError, install_error_handlers
from app.image_preparer import ImagePreparer
from app.model_bundle import ModelInfo, read_model_info
from app.observability import Metrics, ObservabilityMiddleware
from app.online_reindex import OnlineReindex
from app.request_limits import BodyLimitMiddleware
from app.routes import admin, duplicates, health, index, page, products, search
from app.vector_index import limit_blas_threads

log = logging.getLogger("lookalike")

DESCRIPTION = """
Image-similarity search. Index catalogue images with ids and metadata, then
search with an image or compare two. Scores are cosine similarities in [-1, 1].

Errors always have the shape `{"error": {"code": "...", "message": "..."}}`.
Writes need an API key (`X-API-Key` or `Authorization: Bearer`) when the
service is configured with `LOOKALIKE_API_KEY`.
"""


def serving_model(settings: Settings) -> ModelInfo:
    """The configured model, unless an online reindex moved the catalogue to another.

    A reindex records the new model's directory in the catalogue, so a restart
    (even a crash right after the switch) keeps serving the model the
    catalogue's embeddings belong to instead of refusing to start.
    """
    configured = read_model_info(settings.model_dir)
    if settings.backend != "local":
        return configured
    meta = peek_meta(settings.database_path)
    recorded_id, recorded_dir = meta.get("model_id"), meta.get("model_dir")
    if recorded_dir is None or recorded_id in (None, configured.model_id):
        return configured
    try:
        recorded = read_model_info(Path(recorded_dir))
    except ModelDirectoryError:
        return configured
    if recorded.model_id != recorded_id:
        return configured
    log.warning(
        "the catalogue was reindexed to %s: serving that model; set LOOKALIKE_MODEL_DIR=%s",
        recorded_dir,
        recorded_dir,
    )
    return recorded


def _build_state(settings: Settings, metrics: Metrics) -> AppState:
    # FAISS threads are set per call by the index (app/vector_index.py); numpy's
    # BLAS and the model get half the cores (app/encoder.py); the pool decodes
    # /index and /similarity uploads (searches decode where the model runs).
    threads = settings.thread_count
    limit_blas_threads(serving_threads(threads))
    model = serving_model(settings)
    # The embedding worker starts (and a new model converts, 5-10 s) while the
    # catalogue loads (0.5-2 s at a million items, 3-5 s without a snapshot),
    # once the catalogue has accepted the model: a refused start waits for nothing.
    with ThreadPoolExecutor(1, thread_name_prefix="start-embedder") as starter:
        started: list[Future[BatchEmbedder]] = []

        def start() -> None:
            started.append(
                starter.submit(
                    start_embedder, model, settings, on_restart=metrics.embed_worker_restarts.inc
                )
            )

        try:
            catalog = open_catalog(
                settings,
                model_id=model.model_id,
                embedding_dim=model.embedding_dim,
                on_checked=start,
            )
        except BaseException:
            for starting in started:
                with suppress(Exception):
                    starting.result().close()
            raise
        if not started:  # a backend that never called back
            start()
        try:
            embed = started[0].result()
        except BaseException:
            catalog.close()
            raise
    pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
    embedder = ImageEmbedder(
        ImagePreparer(model, settings),
        embed,
        catalog,
        pool,
        max_batch=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1000,
        on_batch=metrics.observe_embed_batch,
    )
    metrics.watch_index_size(lambda: float(catalog.stats().count))
    return AppState(
        settings=settings,
        model=model,
        embed=embed,
        catalog=catalog,
        embedder=embedder,
        metrics=metrics,
        pool=pool,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.api_key:
        log.warning(
            "LOOKALIKE_API_KEY is not set: anyone who can reach this service can change "
            "the catalogue"
        )
    state = await run_in_threadpool(_build_state, settings, app.state.metrics)
    state.reindex = OnlineReindex(state)
    await state.embedder.start()
    if app.state.freeze_gc:
        freeze_start_up_objects()
    app.state.lookalike = state
    log.info(
        "ready: model %s, %d items, http://%s:%d/docs",
        state.model.model_id[:12],
        state.catalog.stats().count,
        settings.host,
        settings.port,
    )
    try:
        yield
    finally:
        state.ready = False
        if state.reindex is not None:
            await state.reindex.cancel()
        await state.embedder.stop()
        await run_in_threadpool(state.embed.close)
        state.pool.shutdown(wait=True)
        await run_in_threadpool(state.catalog.close)
        app.state.lookalike = None


def freeze_start_up_objects() -> None:
    """Keep what start-up made out of every later full garbage collection.

    A full collection walks every object the process holds, and importing
    FastAPI and its company makes ~80k of them: about 40 ms with the GIL held,
    every 1.5-2 s under load, which stalled every request in flight (the
    service's p99 at 16 clients was 2.5-3x its p50). Frozen, the modules,
    routes and state still die by reference counting; only cycles among them
    would outlive the process's need for them, and these live as long as it.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """`freeze_gc` is for a process that serves this one app (`python -m app serve`).

    Tests and programs that make many apps leave it off: each app's start-up
    objects would stay frozen after the app is gone (`freeze_start_up_objects`).
    """
    settings = settings or Settings()
    app = FastAPI(
        title="Lookalike",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.freeze_gc = freeze_gc
    app.state.metrics = Metrics()
    app.state.lookalike = None
    install_error_handlers(app)
    app.include_router(index.router)
    app.include_router(search.router)
    app.include_router(products.router)
    app.include_router(duplicates.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(page.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=app.state.metrics,
        json_logs=settings.log_format == "json",
    )
    return app
