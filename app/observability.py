"""Prometheus metrics and the access log, recorded by one ASGI middleware.

Each app owns its registry (no process-global collectors), so tests can build
as many apps as they like and a scrape shows only this app's numbers.

The middleware runs on the event loop for every request, so it makes no
system call: on a busy server the loop gives up the GIL during one and then
waits for a worker thread to hand it back (measured: a `uuid4` per request
took ~25 us of the loop's time instead of 1). Request ids come from a counter
behind a random prefix, and `serve` writes log lines from a thread of their
own (`queued_logging`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import logging.handlers
import os
import queue
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("lookalike.access")

REQUEST_ID_HEADER = "x-request-id"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lookalike_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lookalike_request_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embed_batch = Histogram(
            "lookalike_embed_batch_size",
            "Images per encoder call (micro-batching at work when above 1).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.embed_worker_restarts = Counter(
            "lookalike_embed_worker_restarts",
            "Times the embedding worker process was started again after it crashed or hung.",
            registry=self.registry,
        )
        self.index_items = Gauge(
            "lookalike_index_items", "Items in the catalogue index.", registry=self.registry
        )

    def observe_embed_batch(self, images: int) -> None:
        self.embed_batch.observe(images)

    def watch_index_size(self, count: Callable[[], float]) -> None:
        self.index_items.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ObservabilityMiddleware:
    """Request id, metrics and one access-log line per HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, json_logs: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.json_logs = json_logs
        # 32 hex digits like a UUID's; unique within this process, and across
        # processes but for a 1 in 2**64 chance.
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (
            _incoming_request_id(scope) or f"{self._id_prefix}{next(self._id_counter):016x}"
        )
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            self._log(request_id, method, scope.get("path", ""), route, status, elapsed)

    def _log(
        self, request_id: str, method: str, path: str, route: str, status: int, elapsed: float
    ) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        ms = round(elapsed * 1000, 2)
        if self.json_logs:
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": method,
                        "path": path,
                        "route": route,
                        "status": status,
                        "latency_ms": ms,
                    }
                )
            )
        else:
            access_log.info(
                "%s %s %s %d %.2fms rid=%s", method, path, route, status, ms, request_id
            )


def _incoming_request_id(scope: Scope) -> str | None:
    """A client's own request id, if it is short and printable, so logs can be joined."""
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return None


@contextlib.contextmanager
def queued_logging() -> Iterator[None]:
    """Hand log records to a thread that formats and writes them, for a server's lifetime.

    The root logger's handlers move behind a queue: a request's access-log line
    costs the event loop a record and a queue put, not a formatted write to
    stderr (a system call, with the GIL let go). Records still queued at exit
    are written before it returns.
    """
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    listener.start()
    try:
        yield
    finally:
        listener.stop()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
