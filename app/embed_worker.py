"""Where a batch of images is decoded and embedded: on this thread, or in a worker process.

The service's event loop holds Python's GIL for most of every request it
parses and answers. Decoding and the model mostly run outside the GIL, but a
thread that runs them must take the GIL back after every call into C, and
waits for the loop each time: on the 2-core benchmark machine that wait, not
the work, set how fast searches went (benchmarks/RESULTS.md, issue 6). A
worker process has a GIL of its own, so the service sends it each batch in one
message and gets the vectors back in one: two hand-offs a batch, whatever the
batch holds.

`InlineEmbedder` does the work where it is called; `EmbedWorker` runs one in a
child process. Both take the same batch and answer per item, so one bad upload
fails only its own request.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol, cast

import numpy as np

from app.child_process import child_context
from app.config import Settings
from app.errors import EmbeddingUnavailable, LookalikeError
from app.image_preparer import ImagePreparer
from app.model_bundle import ModelInfo
from app.model_runtime import EmbeddingModel, RuntimeSpec, load_model, prepare_runtime
from app.regions import Box

log = logging.getLogger("lookalike.worker")

# A batch the worker has not answered by then is taken for a hung worker: it is
# killed and started again. Far above any batch (32 uploads at the pixel limit
# decode in a few seconds).
ANSWER_TIMEOUT_S = 120.0
# Loading TensorFlow (the fallback runtime) from a cold disk takes up to ~15 s.
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Upload:
    """Image bytes still to decode, and the region of them to embed."""

    data: bytes
    box: Box | None = None


# An upload (one image) or decoded pixels [n, H, W, 3]; answered with vectors
# [n, D], or with the exception the item's request raises.
Item = Upload | np.ndarray
Outcome = np.ndarray | BaseException


class BatchEmbedder(Protocol):
    def __call__(self, items: Sequence[Item]) -> list[Outcome]: ...

    def close(self) -> None: ...


def start_embedder(
    model: ModelInfo, settings: Settings, *, on_restart: Callable[[], None] | None = None
) -> BatchEmbedder:
    """Decoding and the model for `model`: in a worker process, or on the caller's threads.

    The first start of a model converts it to LiteRT (app/model_runtime.py).
    """
    spec = prepare_runtime(model, settings)
    if settings.embed_worker:
        return EmbedWorker(spec, settings, on_restart=on_restart)
    return InlineEmbedder(ImagePreparer(model, settings), load_model(spec))


class InlineEmbedder:
    """Decodes the uploads of a batch, then embeds every image in one model call.

    With `decode_threads` above one, a batch's uploads are decoded side by
    side (Pillow lets the GIL go while it decodes): the worker does, where no
    other thread wants its GIL; on the service's own threads it would only
    add hand-offs.
    """

    def __init__(
        self, preparer: ImagePreparer, model: EmbeddingModel, *, decode_threads: int = 1
    ) -> None:
        self._preparer = preparer
        self._model = model
        self._pool = (
            ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
            if decode_threads > 1
            else None
        )

    def __call__(self, items: Sequence[Item]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        pixels: list[np.ndarray] = []
        rows: list[tuple[int, int, int]] = []  # (item, first row, rows)
        count = 0
        for i, images in enumerate(self._decoded(items)):
            if isinstance(images, BaseException):  # its own request's 400/413/415/422
                outcomes[i] = images
                continue
            pixels.append(images)
            rows.append((i, count, len(images)))
            count += len(images)
        if pixels:
            try:
                vectors = self._model.embed(np.concatenate(pixels))
            except Exception as exc:
                for i, _, _ in rows:
                    outcomes[i] = exc
            else:
                for i, first, n in rows:
                    outcomes[i] = vectors[first : first + n]
        assert all(outcome is not None for outcome in outcomes)
        return cast(list[Outcome], outcomes)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _decoded(self, items: Sequence[Item]) -> list[np.ndarray | BaseException]:
        """Each item's pixels [n, H, W, 3], or the error its upload raised, in order."""
        uploads = sum(isinstance(item, Upload) for item in items)
        if self._pool is None or uploads < 2:
            return [self._pixels(item) for item in items]
        return list(self._pool.map(self._pixels, items))

    def _pixels(self, item: Item) -> np.ndarray | BaseException:
        if not isinstance(item, Upload):
            return item
        try:
            return self._preparer.prepare(item.data, box=item.box).pixels[None]
        except Exception as exc:
            return exc


class EmbedWorker:
    """An `InlineEmbedder` in a child process, started again if it dies or hangs.

    Called from one thread at a time (the encoder's stage). A batch the worker
    cannot answer (it crashed, or stopped answering) fails with
    `EmbeddingUnavailable` (503) and the next batch gets a fresh worker.
    """

    def __init__(
        self,
        spec: RuntimeSpec,
        settings: Settings,
        *,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._spec = spec
        self._settings = settings
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._start()

    def __call__(self, items: Sequence[Item]) -> list[Outcome]:
        with self._lock:
            if self._conn is None:
                self._start()
                if self._on_restart is not None:
                    self._on_restart()
            conn = self._conn
            assert conn is not None
            try:
                conn.send(list(items))
                if not conn.poll(ANSWER_TIMEOUT_S):
                    raise TimeoutError(f"no answer in {ANSWER_TIMEOUT_S:g} s")
                outcomes: list[Outcome] = conn.recv()
            except (OSError, EOFError, TimeoutError) as exc:
                code = self._stop(kill=True)
                log.error("the embedding worker failed (%s; exit code %s): restarting", exc, code)
                lost = EmbeddingUnavailable("the embedding worker restarted; retry the request")
                return [lost] * len(items)
            return outcomes

    def close(self) -> None:
        with self._lock:
            self._stop(kill=False)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def _start(self) -> None:
        started = time.perf_counter()
        context = child_context()
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child, self._spec, self._settings), name="embed-worker"
        )
        process.daemon = True
        process.start()
        child.close()
        try:
            if not parent.poll(START_TIMEOUT_S):
                raise TimeoutError(f"not ready in {START_TIMEOUT_S:g} s")
            ready, problem = parent.recv()
        except (OSError, EOFError, TimeoutError) as exc:
            ready, problem = False, f"{type(exc).__name__}: {exc}"
        if not ready:
            process.kill()
            process.join()
            parent.close()
            raise RuntimeError(f"the embedding worker did not start: {problem}")
        self._process, self._conn = process, parent
        log.info(
            "embedding worker %d ready in %.2f s (%s, %d thread%s)",
            process.pid,
            time.perf_counter() - started,
            "LiteRT" if self._spec.runtime == "litert" else "TensorFlow",
            self._spec.threads,
            "" if self._spec.threads == 1 else "s",
        )

    def _stop(self, *, kill: bool) -> int | None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None or conn is None:
            return None
        if not kill:
            with contextlib.suppress(OSError):
                conn.send(None)
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        conn.close()
        return int(process.exitcode) if process.exitcode is not None else None


def _serve(conn: Connection, spec: RuntimeSpec, settings: Settings) -> None:
    """The worker's main loop: one batch in, one list of outcomes out, until told to stop."""
    # Ctrl-C reaches the whole process group; the service stops its worker itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        embedder = InlineEmbedder(
            ImagePreparer(spec.info, settings),
            load_model(spec),
            decode_threads=settings.thread_count,
        )
    except BaseException as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    # This process lives for the model it loaded: keep its start-up out of full
    # collections, as the service does (app/main.py, freeze_start_up_objects).
    gc.collect()
    gc.freeze()
    conn.send((True, None))
    try:
        while True:
            try:
                items = conn.recv()
            except (EOFError, OSError):  # the service is gone
                return
            if items is None:
                return
            conn.send([_portable(outcome) for outcome in embedder(items)])
    finally:
        embedder.close()


def _portable(outcome: Outcome) -> Outcome:
    """An outcome that survives pickling: our errors as they are, others by their message."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, LookalikeError):
        return RuntimeError(f"{type(outcome).__name__}: {outcome}")
    return outcome
