"""Limits, logs, CORS and start-up warnings of the service, through HTTP."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.observability import queued_logging
from tests.conftest import image_bytes
from tests.test_images import png_with_header_size


def test_per_file_and_per_request_file_count_limits(make_settings) -> None:
    settings = make_settings(max_file_bytes=3000, max_files_per_request=2)
    with TestClient(create_app(settings)) as c:
        big = image_bytes(1, size=(64, 64), fmt="BMP")
        assert len(big) > 3000
        r = c.post("/search", files={"file": ("big.bmp", big)})
        assert r.status_code == 413
        assert "LOOKALIKE_MAX_FILE_BYTES" in r.json()["error"]["message"]
        files = [("file", (f"{n}.png", image_bytes(n))) for n in range(3)]
        r = c.post("/index", files=files)
        assert r.status_code == 413
        assert "LOOKALIKE_MAX_FILES_PER_REQUEST" in r.json()["error"]["message"]
        assert c.get("/index").json()["count"] == 0


def test_a_decompression_bomb_is_refused_from_its_header(make_settings) -> None:
    with TestClient(create_app(make_settings(max_image_pixels=1_000_000))) as c:
        bomb = png_with_header_size(50_000, 50_000)
        r = c.post("/index", files={"file": ("bomb.png", bomb)}, data={"id": "bomb"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert c.get("/healthz").status_code == 200


def test_access_log_lines_in_json(make_settings, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_settings(log_format="json"))
    with TestClient(app) as c, caplog.at_level(logging.INFO, logger="lookalike.access"):
        c.get("/index/missing", headers={"X-Request-ID": "req-42"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lookalike.access"]
    assert lines[-1]["request_id"] == "req-42"
    assert lines[-1]["route"] == "/index/{item_id:path}"
    assert lines[-1]["status"] == 404
    assert lines[-1]["latency_ms"] >= 0


def test_cors_is_off_by_default_and_configurable(make_settings) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    with TestClient(create_app(make_settings())) as c:
        r = c.options("/search", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(make_settings(cors_origins="https://shop.example"))) as c:
        r = c.options("/search", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        r = c.options("/search", headers={**preflight, "Origin": "https://evil.example"})
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_an_open_service_warns_at_start_up(make_settings, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="lookalike"),
        TestClient(create_app(make_settings())),
    ):
        pass
    assert any("LOOKALIKE_API_KEY is not set" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="lookalike"),
        TestClient(create_app(make_settings(api_key="k"))),
    ):
        pass
    assert not any("LOOKALIKE_API_KEY" in r.getMessage() for r in caplog.records)


def test_reads_can_require_a_key(make_settings) -> None:
    with TestClient(create_app(make_settings(api_key="k", auth_reads=True))) as c:
        assert c.get("/index").status_code == 401
        assert c.get("/index", headers={"X-API-Key": "k"}).status_code == 200
        assert c.get("/index", headers={"Authorization": "Bearer k"}).status_code == 200
        assert c.get("/index", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert c.get("/index", headers={"Authorization": "Basic k"}).status_code == 401
        assert c.get("/healthz").status_code == 200
        query = {"file": ("q.png", image_bytes(1))}
        assert c.post("/search", files=query).status_code == 401
        assert c.post("/search", files=query, headers={"X-API-Key": "x"}).status_code == 403
        found = c.post("/search", files=query, headers={"Authorization": "bearer  k "})
        assert found.status_code == 200, found.text


def test_openapi_names_the_key_schemes_on_every_route_that_checks_keys(client) -> None:
    spec = client.get("/openapi.json").json()
    schemes = set(spec["components"]["securitySchemes"])
    assert schemes == {"APIKeyHeader", "HTTPBearer"}
    open_paths = {"/healthz", "/readyz", "/metrics", "/", "/static/{path}"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            expected: list[dict[str, list[str]]] | None = (
                None if path in open_paths else [{name: []} for name in sorted(schemes)]
            )
            assert operation.get("security") == expected, (method, path)


def test_queued_logging_writes_from_its_own_thread_and_flushes_at_exit() -> None:
    class Recorder(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[tuple[str, str]] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append((self.format(record), threading.current_thread().name))

    root = logging.getLogger()
    recorder = Recorder()
    root.addHandler(recorder)
    try:
        before = list(root.handlers)
        with queued_logging():
            assert recorder not in root.handlers
            logging.getLogger("lookalike.access").warning("GET / %d", 200)
        assert root.handlers == before
    finally:
        root.removeHandler(recorder)
    assert recorder.lines == [("GET / 200", recorder.lines[0][1])]
    assert recorder.lines[0][1] != threading.current_thread().name
