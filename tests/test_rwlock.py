"""The readers-writer lock: readers together, writers alone, writers not starved."""

from __future__ import annotations

import threading

from app.rwlock import ReadWriteLock

WAIT = 10  # seconds; only a guard against a deadlocked test, never a measurement


def test_readers_share_the_lock() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=WAIT)

    def reader() -> None:
        with lock.read():
            inside.wait()  # all three readers must be inside at once to pass

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    reader()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)


def test_a_writer_waits_for_readers_and_excludes_them() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reading = threading.Event()
    release_reader = threading.Event()

    def reader() -> None:
        with lock.read():
            events.append("read")
            reading.set()
            release_reader.wait(WAIT)
            events.append("read done")

    def writer() -> None:
        with lock:
            events.append("write")

    r = threading.Thread(target=reader)
    r.start()
    assert reading.wait(WAIT)
    w = threading.Thread(target=writer)
    w.start()
    w.join(0.2)
    assert w.is_alive(), "the writer must wait for the reader"
    release_reader.set()
    r.join(WAIT)
    w.join(WAIT)
    assert events == ["read", "read done", "write"]


def test_a_waiting_writer_goes_before_later_readers() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_in.set()
            release_first.wait(WAIT)

    def writer() -> None:
        with lock.write():
            order.append("write")

    def late_reader() -> None:
        with lock.read():
            order.append("late read")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    assert first_in.wait(WAIT)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    while not lock._writers_waiting:
        threading.Event().wait(0.01)
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    release_first.set()
    for t in threads:
        t.join(WAIT)
    assert order == ["write", "late read"]


def test_the_lock_is_released_when_the_block_raises() -> None:
    lock = ReadWriteLock()
    for block in (lock.read, lock.write, lambda: lock):
        try:
            with block():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
    with lock.write():
        pass
    with lock.read():
        pass
