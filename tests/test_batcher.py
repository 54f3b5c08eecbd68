"""MicroBatcher: concurrent callers' jobs run together on its thread, each with its own answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from app.batcher import Forward, MicroBatcher


class Doubler:
    """A batch function that records the batches it saw and refuses negative numbers."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, jobs: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(jobs))
        self.threads.add(threading.current_thread().name)
        return [ValueError(f"negative: {j}") if j < 0 else 2 * j for j in jobs]


def test_concurrent_jobs_share_a_batch_and_get_their_own_results() -> None:
    work = Doubler()

    async def main() -> list[int | BaseException]:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            work, max_batch=8, max_wait_s=0.5, name="test-batcher"
        )
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(j) for j in [1, 2, -3, 4]), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert results[:2] == [2, 4]
    assert isinstance(results[2], ValueError)
    assert results[3] == 8
    assert sorted(j for batch in work.batches for j in batch) == [-3, 1, 2, 4]
    assert len(work.batches) < 4, "the jobs waiting together were run together"
    assert work.threads == {"test-batcher"}


def test_batches_respect_the_size_limit_counted_in_images() -> None:
    work = Doubler()

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            work, max_batch=4, max_wait_s=0.5, size=lambda job: job
        )
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(j) for j in [3, 1, 2, 2, 5]))
        finally:
            await batcher.stop()

    asyncio.run(main())
    # A job is never split, so a batch passes the limit only by its last job.
    for batch in work.batches:
        assert sum(batch[:-1]) < 4
    assert sorted(j for batch in work.batches for j in batch) == [1, 2, 2, 3, 5]


def test_a_failing_batch_function_fails_every_caller_of_that_batch() -> None:
    def broken(jobs: Sequence[int]) -> list[int | BaseException]:
        raise RuntimeError("model crashed")

    async def main() -> list[int | BaseException]:
        batcher: MicroBatcher[int, int] = MicroBatcher(broken, max_batch=8, max_wait_s=0.2)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(j) for j in range(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_stop_answers_queued_jobs_and_later_submits_are_refused() -> None:
    release = threading.Event()
    seen: list[int] = []

    def slow(jobs: Sequence[int]) -> list[int | BaseException]:
        release.wait(5)
        seen.extend(jobs)
        return list(jobs)

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(slow, max_batch=1, max_wait_s=0)
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(j)) for j in range(3)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(batcher.stop())
        release.set()
        assert await asyncio.gather(*pending) == [0, 1, 2]
        await stopping
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.submit(9)

    asyncio.run(main())
    assert seen == [0, 1, 2]


def test_a_forwarded_job_is_answered_by_the_next_stage() -> None:
    second = Doubler()

    async def main() -> list[int | BaseException]:
        last: MicroBatcher[int, int] = MicroBatcher(second, max_batch=8, max_wait_s=0, name="last")

        def first(jobs: Sequence[int]) -> list[int | BaseException | Forward]:
            # Odd numbers are finished here, even ones go on to be doubled.
            return [Forward(last, j + 100) if j % 2 == 0 else j for j in jobs]

        head: MicroBatcher[int, int] = MicroBatcher(first, max_batch=8, max_wait_s=0.2)
        await last.start()
        await head.start()
        try:
            return await asyncio.gather(*(head.submit(j) for j in range(4)))
        finally:
            await head.stop()
            await last.stop()

    assert asyncio.run(main()) == [200, 1, 204, 3]
    assert second.threads == {"last"}
