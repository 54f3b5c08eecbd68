"""From uploaded bytes to embeddings and search hits, without blocking the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from app.batcher import MicroBatcher
from app.catalog import Catalog, Hit
from app.embed_worker import BatchEmbedder
from app.image_preparer import ImagePreparer, PreparedImage
from app.pipeline import (
    EmbedJob,
    EncoderJob,
    EncoderStage,
    IndexStage,
    Query,
    Result,
    SearchJob,
    SearchOptions,
    job_size,
)
from app.regions import Box


class ImageEmbedder:
    """Turns uploads into embeddings and hits without blocking the event loop.

    A search is one job for the encoder's and the index's threads
    (app/pipeline.py), its upload decoded where the model runs; index and
    similarity requests decode in the pool (they also keep a copy or compare
    two images) and send their pixels the same way, so every request shares
    the model calls.
    """

    def __init__(
        self,
        preparer: ImagePreparer,
        embed: BatchEmbedder,
        catalog: Catalog,
        pool: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`on_batch(images)` is told the size of each model call."""
        self.preparer = preparer
        self._pool = pool
        # The index's stage takes the queries waiting for it, as many as one
        # model call embeds: a flat scan costs mostly one pass over the vectors
        # however many queries share it. (At the default 32, below
        # vector_index.PARALLEL_FROM, FAISS stays on this thread: an OpenMP
        # team would spin against the event loop for the cores.)
        self._index: MicroBatcher[Query, list[Hit]] = MicroBatcher(
            IndexStage(catalog), max_batch=max_batch, max_wait_s=0, name="index"
        )
        self._encoder: MicroBatcher[EncoderJob, Result] = MicroBatcher(
            EncoderStage(embed, self._index, on_batch=on_batch),
            max_batch=max_batch,
            max_wait_s=max_wait_s,
            size=job_size,
            name="encoder",
        )

    async def start(self) -> None:
        await self._index.start()
        await self._encoder.start()

    async def stop(self) -> None:
        """Answer the jobs already handed over, then stop the threads."""
        await self._encoder.stop()
        await self._index.stop()

    async def prepare_async(
        self, data: bytes, *, keep_copy: bool = False, box: Box | None = None
    ) -> PreparedImage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: self.preparer.prepare(data, keep_copy=keep_copy, box=box)
        )

    async def embed_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        if not pixels:
            return np.zeros((0, self.preparer.model.embedding_dim), dtype=np.float32)
        vectors = await self._encoder.submit(EmbedJob(np.stack(pixels)))
        assert isinstance(vectors, np.ndarray)
        return vectors

    async def search(
        self, data: bytes, options: SearchOptions, box: Box | None = None
    ) -> list[Hit]:
        """The catalogue's hits for one upload (or its boxed region), best first."""
        hits = await self._encoder.submit(SearchJob(data, options, box))
        assert isinstance(hits, list)
        return hits
