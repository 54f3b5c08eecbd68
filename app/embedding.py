"""From uploaded bytes to embeddings and search hits, without blocking the event loop.

Index, search and the bulk jobs decode the same way (the same JPEG draft
scale), so an image searched for finds its own indexed copy with a score of
1.0, not 0.99.

The model sees a JPEG decoded at the smallest DCT scale still at least twice
its input size (Pillow's draft mode), then the antialiased resize training
uses: a 256-pixel upload for a 32-pixel model is decoded at a quarter of its
width and height, for about half the cost, and the model input differs from a
full decode's by about 0.3/255 per pixel on average. The copy the catalogue keeps
is decoded again at its own, larger size, so it is no smaller for this.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from app.batcher import MicroBatcher
from app.catalog import Catalog, Hit
from app.config import Settings
from app.images import decode_image, plan_jpeg, sniff_format, thumbnail_bytes, to_model_input
from app.jpeg_batch import JpegPlan
from app.model_bundle import ModelInfo
from app.pipeline import (
    EmbedFn,
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
from app.regions import Box, crop

if TYPE_CHECKING:
    from app.encoder import Encoder


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray
    stored_copy: bytes | None


class ImagePreparer:
    """The one decoding policy: upload bytes -> model input (+ the copy the catalogue keeps)."""

    def __init__(self, model: ModelInfo, settings: Settings) -> None:
        self.model = model
        self._max_pixels = settings.max_image_pixels
        self._keep = settings.keep_images
        self._stored_side = settings.stored_image_size
        height, width = model.image_size
        self._draft = (2 * width, 2 * height)
        side = settings.stored_image_size
        self._copy_draft = (max(width, side), max(height, side))

    def prepare(
        self, data: bytes, *, keep_copy: bool = False, box: Box | None = None
    ) -> PreparedImage:
        """Decode (raising the API's image errors) into model input and, optionally, a copy.

        A box is cut from the full-resolution decode (pixel boxes refer to the
        original size, which JPEG draft decoding would change).
        """
        draft = None if box is not None else self._draft
        image = decode_image(data, max_pixels=self._max_pixels, draft_size=draft)
        if box is not None:
            image = crop(image, box)
        pixels = to_model_input(image, self.model.image_size)
        if not (keep_copy and self._keep):
            return PreparedImage(pixels=pixels, stored_copy=None)
        if box is None and sniff_format(data) == "JPEG":
            image = decode_image(data, max_pixels=self._max_pixels, draft_size=self._copy_draft)
        return PreparedImage(pixels=pixels, stored_copy=thumbnail_bytes(image, self._stored_side))

    def plan(self, data: bytes) -> JpegPlan | None:
        """How the encoder's graph decodes this upload to `prepare`'s pixels, if it can."""
        return plan_jpeg(
            data, max_pixels=self._max_pixels, draft_size=self._draft, size=self.model.image_size
        )

    def sample_plan(self) -> JpegPlan | None:
        """A plan for a JPEG of the size uploads usually are, to warm up the encoder's graph."""
        height, width = self.model.image_size
        out = io.BytesIO()
        Image.new("RGB", (8 * width, 8 * height), (128, 64, 32)).save(out, "JPEG")
        return self.plan(out.getvalue())

    def prepare_stored_copy(self, stored: bytes) -> PreparedImage:
        """Model input from a kept copy, for re-embedding without the original upload."""
        image = decode_image(stored, max_pixels=self._max_pixels)
        return PreparedImage(pixels=to_model_input(image, self.model.image_size), stored_copy=None)


class ImageEmbedder:
    """Turns uploads into embeddings and hits without blocking the event loop.

    A search is one job for the encoder's and the index's threads
    (app/pipeline.py); index and similarity requests decode in the pool (they
    also keep a copy or compare two images) and send their pixels to the
    encoder's thread, so every request shares the model calls.
    """

    def __init__(
        self,
        preparer: ImagePreparer,
        embed: EmbedFn,
        catalog: Catalog,
        pool: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        plan_jpegs: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        """`plan_jpegs`: `embed` takes JPEG plans, so JPEG searches are decoded inside it.

        `on_batch(images, decoded_in_model)` is told the size of each model call.
        """
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
            EncoderStage(preparer, embed, self._index, plan_jpegs=plan_jpegs, on_batch=on_batch),
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


def warm_up_decoding(encoder: Encoder, preparer: ImagePreparer) -> None:
    """Run the encoder's JPEG graph once at start-up, so the first search does not pay for it."""
    plan = preparer.sample_plan() if encoder.decodes_jpegs else None
    if plan is not None:
        height, width = preparer.model.image_size
        encoder.embed(np.zeros((0, height, width, 3), dtype=np.uint8), [plan])
