"""Micro-batching: concurrent requests share one encoder call.

A single worker takes every request that queued up while the previous model
call ran (and, if configured, waits `max_wait` for more), so under load the
encoder runs large batches and a lone request is never held back longer than
`max_wait`; with the default of zero it is not held back at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

EmbedFn = Callable[[np.ndarray], np.ndarray]


class MicroBatcher:
    """Gathers images from concurrent callers into batches for one embedding function."""

    def __init__(
        self,
        embed: EmbedFn,
        *,
        max_batch: int,
        max_wait_s: float,
        executor: Executor,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._embed = embed
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._executor = executor
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed [n, H, W, 3] images, sharing the model call with whoever else is waiting."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((images, future))
        return await future

    async def _gather(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        first = await self._queue.get()
        batch = [first]
        size = len(first[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while size < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(images, fut) for images, fut in batch if not fut.cancelled()]
            if not live:
                continue
            images = np.concatenate([images for images, _ in live])
            try:
                vectors = await loop.run_in_executor(self._executor, self._embed, images)
            except Exception as exc:  # the callers own the error
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(images))
            start = 0
            for part, fut in live:
                end = start + len(part)
                if not fut.done():
                    fut.set_result(vectors[start:end])
                start = end
