"""Reindex without downtime: a new model's index is built beside the live one.

The service keeps answering with the old model while the kept image copies are
re-embedded and a new index is built. Then, with the serving gate closed for a
moment, the rows that changed meanwhile are caught up, one SQLite transaction
moves the catalogue to the new model, and model, encoder and index are swapped
together. A crash before that transaction leaves the old catalogue whole, one
after it the new one; a restart finds the new model through the catalogue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from starlette.concurrency import run_in_threadpool

from app.dependencies import AppState
from app.embed_worker import BatchEmbedder, start_embedder
from app.embedding import ImageEmbedder
from app.encoder import Encoder
from app.errors import FeatureUnavailable, InvalidField, LookalikeError, ReindexBusy
from app.image_preparer import ImagePreparer
from app.local_catalog import LocalCatalog
from app.model_bundle import ModelInfo, read_model_info
from app.reindex import Reindexer
from app.vector_index import VectorIndex

log = logging.getLogger("lookalike.reindex")

Phase = Literal["embedding", "building", "switching", "done", "failed"]


@dataclass
class ReindexStatus:
    model_dir: str
    phase: Phase = "embedding"
    model_id: str | None = None
    total: int = 0
    done: int = 0
    failed: int = 0
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


class OnlineReindex:
    def __init__(self, state: AppState) -> None:
        self._state = state
        self.status: ReindexStatus | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, model_dir: Path) -> ReindexStatus:
        if not isinstance(self._state.catalog, LocalCatalog):
            raise FeatureUnavailable("online reindex works on the local backend")
        if self.running:
            raise ReindexBusy("a reindex is already running; see GET /index")
        self.status = ReindexStatus(model_dir=str(model_dir))
        self._task = asyncio.create_task(self._run(model_dir, self.status), name="reindex")
        return self.status

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def cancel(self) -> None:
        if self.running and self._task is not None:
            self._task.cancel()

    async def _run(self, model_dir: Path, status: ReindexStatus) -> None:
        try:
            await self._reindex(model_dir, status)
            status.phase = "done"
        except asyncio.CancelledError:
            status.phase, status.error = "failed", "cancelled at shutdown"
            raise
        except LookalikeError as exc:
            status.phase, status.error = "failed", exc.message
        except Exception as exc:
            log.exception("reindex to %s failed", model_dir)
            status.phase, status.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            status.finished_at = time.time()

    async def _reindex(self, model_dir: Path, status: ReindexStatus) -> None:
        state = self._state
        catalog = state.catalog
        assert isinstance(catalog, LocalCatalog)
        model = await run_in_threadpool(read_model_info, model_dir)
        status.model_id = model.model_id
        if model.model_id == state.model.model_id:
            raise InvalidField(f"the service already serves model {model.model_id[:12]}")
        encoder = await run_in_threadpool(
            lambda: Encoder(
                model,
                threads=state.settings.thread_count,
                warmup_batch=state.settings.batch_max_size,
                # The service answers meanwhile: its access log must not go quiet.
                quiet_import=False,
            )
        )
        preparer = ImagePreparer(model, state.settings)
        reindexer = await run_in_threadpool(Reindexer, catalog.store, model, encoder, preparer)
        status.total = await run_in_threadpool(reindexer.pending_count)

        def progress(done: int, failed: int) -> None:
            status.done += done
            status.failed += failed

        await run_in_threadpool(lambda: reindexer.embed_pending(on_progress=progress))
        # The new model's searches are embedded where the old one's are; made
        # before the switch, so the gate stays closed only for the catch-up.
        embed = await run_in_threadpool(
            lambda: start_embedder(
                model, state.settings, on_restart=state.metrics.embed_worker_restarts.inc
            )
        )
        status.phase = "building"
        built_at = catalog.store.current_seq()
        try:
            index = await run_in_threadpool(self._build, catalog, reindexer, model)
            status.phase = "switching"
            async with state.gate.closed():
                await run_in_threadpool(self._switch, catalog, reindexer, index, built_at)
                await self._swap_embedder(model, embed, preparer)
        except BaseException:
            if state.embed is not embed:
                await run_in_threadpool(embed.close)
            raise
        log.info("reindexed %d items to model %s", status.done, model.model_id[:12])

    @staticmethod
    def _build(catalog: LocalCatalog, reindexer: Reindexer, model: ModelInfo) -> VectorIndex:
        index = catalog.new_index(model.embedding_dim)
        for keys, vectors in reindexer.fresh_embeddings():
            index.add(keys, vectors)
        return index

    @staticmethod
    def _switch(
        catalog: LocalCatalog, reindexer: Reindexer, index: VectorIndex, built_at: int
    ) -> None:
        """Catch up what changed while the index was built, then switch rows and index."""
        reindexer.embed_pending()
        index.remove(catalog.store.deleted_after(built_at))
        for keys, vectors in reindexer.fresh_embeddings(after_seq=built_at):
            index.replace(keys, vectors)
        result = reindexer.switch()
        catalog.adopt(result.model_id, index)

    async def _swap_embedder(
        self, model: ModelInfo, embed: BatchEmbedder, preparer: ImagePreparer
    ) -> None:
        state = self._state
        old_embedder, old_embed = state.embedder, state.embed
        embedder = ImageEmbedder(
            preparer,
            embed,
            state.catalog,
            state.pool,
            max_batch=state.settings.batch_max_size,
            max_wait_s=state.settings.batch_max_wait_ms / 1000,
            on_batch=state.metrics.observe_embed_batch,
        )
        await embedder.start()
        state.model, state.embed, state.embedder = model, embed, embedder
        await old_embedder.stop()
        await run_in_threadpool(old_embed.close)
