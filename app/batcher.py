"""Micro-batching: concurrent requests share one trip to a worker thread.

Callers on the event loop hand a job to one worker thread and await its
result. The thread takes every job that queued up while it ran the previous
batch (and, if configured, waits `max_wait` for more), runs them together, and
hands all their results back to the event loop in one call. Under load the
encoder runs large batches, and a lone request is never held back longer than
`max_wait`; with the default of zero it is not held back at all.

Every hand-off between threads is paid for on the event loop, the part of the
service that runs out first on a small machine: a submit, a wake-up, a
future's callback, and the wait to take the GIL back from a busy thread. So a
job carries all of its off-loop work (decode, embed, search) with it, and the
loop pays one queue put per request and one wake-up per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")

_STOP = object()


@dataclass(frozen=True)
class Forward:
    """A batch function's answer for a job that goes on to another batcher's thread.

    The caller keeps waiting, and the next stage answers it: stages in a row
    overlap (one embeds the next batch while the other searches this one) and
    each batches whatever queued up for it, with no trip through the event loop.
    """

    to: MicroBatcher[Any, Any]
    job: Any


# What a batch function returns per job: its result, the exception its caller
# raises, or where the job goes next.
RunBatch = Callable[[Sequence[JobT]], Sequence["ResultT | BaseException | Forward"]]


class MicroBatcher(Generic[JobT, ResultT]):
    """Runs jobs from concurrent callers in batches, on one thread of its own.

    `run_batch` gets the jobs in arrival order and returns one result,
    exception or `Forward` per job, so one bad upload fails its own request,
    not the batch. `size` counts a job's images towards `max_batch` (a job is
    never split).
    """

    def __init__(
        self,
        run_batch: RunBatch[JobT, ResultT],
        *,
        max_batch: int,
        max_wait_s: float,
        size: Callable[[JobT], int] = lambda job: 1,
        name: str = "micro-batcher",
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish the jobs already queued, then end the thread.

        Stop a stage before the stage it forwards to, so what it forwards is answered.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)

    async def submit(self, job: JobT) -> ResultT:
        """The job's result, computed in a batch with whatever else is waiting."""
        if self._thread is None or self._loop is None:
            raise RuntimeError("MicroBatcher is not running: start() was not called, or stop() was")
        future: asyncio.Future[ResultT] = self._loop.create_future()
        self._queue.put((job, future))
        return await future

    def _accept(self, job: JobT, future: asyncio.Future[Any]) -> None:
        """Queue a job forwarded from another stage's thread, with its caller's future."""
        if self._thread is None:
            self._answer([future], [RuntimeError("the next stage of this job has stopped")])
        else:
            self._queue.put((job, future))

    # the worker thread ---------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch, stopping = self._gather()
            if batch:
                self._run(batch)
            if stopping:
                return

    def _gather(self) -> tuple[list[tuple[JobT, asyncio.Future[ResultT]]], bool]:
        """The next batch (blocking for its first job), and whether stop() was called."""
        item = self._queue.get()
        batch: list[tuple[JobT, asyncio.Future[ResultT]]] = []
        size = 0
        deadline = time.monotonic() + self._max_wait
        while True:
            if item is _STOP:
                return batch, True
            pair = cast(tuple[JobT, "asyncio.Future[ResultT]"], item)
            batch.append(pair)
            size += self._size(pair[0])
            if size >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return batch, False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return batch, False

    def _run(self, batch: list[tuple[JobT, asyncio.Future[ResultT]]]) -> None:
        # A caller that gave up (client gone, timeout) needs no work done for it.
        live = [(job, future) for job, future in batch if not future.cancelled()]
        if not live:
            return
        jobs = [job for job, _ in live]
        outcomes: Sequence[ResultT | BaseException | Forward]
        try:
            outcomes = self._run_batch(jobs)
            if len(outcomes) != len(jobs):
                raise RuntimeError(f"{len(outcomes)} results for a batch of {len(jobs)} jobs")
        except Exception as exc:  # the callers own the error
            outcomes = [exc] * len(jobs)
        futures: list[asyncio.Future[ResultT]] = []
        answers: list[ResultT | BaseException] = []
        for (_, future), outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, Forward):
                outcome.to._accept(outcome.job, future)
            else:
                futures.append(future)
                answers.append(outcome)
        if futures:
            self._answer(futures, answers)

    def _answer(
        self, futures: list[asyncio.Future[Any]], outcomes: list[Any | BaseException]
    ) -> None:
        """Settle the callers' futures on the event loop, with one wake-up for them all."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            self._loop.call_soon_threadsafe(_deliver, futures, outcomes)


def _deliver(futures: list[asyncio.Future[Any]], outcomes: list[Any | BaseException]) -> None:
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
